//! Connection limits (header-read and idle timeouts) and CORS for browser front ends.

use std::time::{Duration, Instant};

use chat_proxy::demo::MockKnobs;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{last, read_events, spawn_app_with};

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(tcp: &mut TcpStream) -> (String, Instant) {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .expect("read");
    (
        String::from_utf8_lossy(&received).into_owned(),
        Instant::now(),
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.server.header_read_timeout_ms = 300;
    })
    .await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    // A slow client: part of a head, then a header line now and then, never the blank line.
    tcp.write_all(b"POST /answer HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(b"X-Slow: 1\r\n").await.expect("write");
    }
    let (received, closed) = read_until_closed(&mut tcp).await;
    assert!(
        received.is_empty(),
        "no response to half a head: {received}"
    );
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(300),
        "closed early: {after:?}"
    );

    // A client that connects and says nothing is closed the same way.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    read_until_closed(&mut silent).await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let app = spawn_app_with(MockKnobs::default(), |_| {}).await;
    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(80 * 1024)
    );
    // The server may stop reading once it has refused the head.
    let _ = tcp.write_all(head.as_bytes()).await;
    let (received, _) = read_until_closed(&mut tcp).await;
    assert!(
        received.starts_with("HTTP/1.1 431"),
        "{}",
        &received[..received.len().min(200)]
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_but_a_long_quiet_stream_is_not() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(3),
            // Each gap is longer than the idle timeout: the stream must still run to the end.
            token_delay: Duration::from_millis(400),
            ..MockKnobs::default()
        },
        |c| {
            c.server.idle_timeout_ms = 250;
            c.server.header_read_timeout_ms = 5_000;
            c.server.keepalive_ms = 60_000;
        },
    )
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    let body = json!({"user_input": "quiet stream", "stream": false}).to_string();
    let request = format!(
        "POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"usage\"") {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the slow answer arrived");
        received.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    let received = String::from_utf8_lossy(&received).into_owned();
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        received.contains("\"finish_reason\":\"stop\""),
        "{received}"
    );
    // Kept alive after the answer, then closed once idle for the timeout.
    let (rest, closed) = read_until_closed(&mut tcp).await;
    assert!(rest.is_empty(), "{rest}");
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(200),
        "closed too soon: {idle:?}"
    );
    assert!(
        idle < Duration::from_secs(4),
        "idle timeout ignored: {idle:?}"
    );

    let events = read_events(
        app.client
            .post(app.url("/answer"))
            .json(&json!({"user_input": "quiet sse"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(last(&events).name, "done", "{events:?}");
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = spawn_app_with(MockKnobs::default(), |_| {}).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/answer"))
        .header("Origin", "https://chat.example.com")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("sent");
    assert_eq!(preflight.status(), 405);
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_that_names_the_allowed_ones() {
    let app = spawn_app_with(MockKnobs::default(), |_| {}).await;
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/answer", "POST"),
        (reqwest::Method::PUT, "/v1/models", "GET"),
        (reqwest::Method::DELETE, "/health", "GET"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 405, "{method} {path}");
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(allow.contains(allowed), "{method} {path}: Allow {allow:?}");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "{method} {path}: {body}"
        );
    }
    // A path that does not exist at all is still 404.
    let missing = app
        .client
        .get(app.url("/no-such-endpoint"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn cors_preflight_allows_configured_origins_only_and_needs_no_key() {
    const KEY: &str = "client-key-0123456789";
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.cors.allowed_origins = vec!["https://chat.example.com".into()];
        c.auth.keys = vec![KEY.into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/answer"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, x-stainless-os",
            )
            .send()
    };
    let allowed = preflight("https://chat.example.com").await.expect("sent");
    assert_eq!(allowed.status(), 200);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ASCII");
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ASCII");
    for header in ["authorization", "x-stainless-os"] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }
    assert_eq!(headers["access-control-max-age"], "600");

    let other = preflight("https://evil.example.net").await.expect("sent");
    assert!(
        !other.headers().contains_key("access-control-allow-origin"),
        "an origin not configured is not allowed"
    );

    // The real request from the allowed origin carries the headers a browser needs to read it.
    let answer = app
        .client
        .post(app.url("/answer"))
        .header("Origin", "https://chat.example.com")
        .bearer_auth(KEY)
        .json(&json!({"user_input": "hi", "stream": false}))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ASCII");
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

const KEY_A: &str = "client-key-a-0123456789";
const KEY_B: &str = "client-key-b-0123456789";

async fn answer_as(app: &crate::helpers::TestApp, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/answer"))
        .bearer_auth(key)
        .json(&json!({"user_input": "fair"}))
        .send()
        .await
        .expect("sent")
}

async fn assert_limited(response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "{retry_after}");
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[tokio::test]
async fn one_key_cannot_hold_more_than_its_share_of_open_answers() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(2),
            first_chunk_delay: Duration::from_millis(400),
            ..MockKnobs::default()
        },
        |c| {
            c.auth.keys = vec![KEY_A.into(), KEY_B.into()];
            c.limits.per_key_max_concurrent = 2;
        },
    )
    .await;
    // Headers arrive at once, so both streams are open while the model is still thinking.
    let first = answer_as(&app, KEY_A).await;
    let second = answer_as(&app, KEY_A).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_limited(answer_as(&app, KEY_A).await, "client_concurrency_limit").await;
    let other = answer_as(&app, KEY_B).await;
    assert_eq!(other.status(), 200, "another key keeps its own share");

    for response in [first, second, other] {
        assert_eq!(last(&read_events(response).await).name, "done");
    }
    let again = answer_as(&app, KEY_A).await;
    assert_eq!(again.status(), 200, "finished answers free the key's slots");
    read_events(again).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(KEY_B)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("chat_proxy_client_limited_total{limit=\"concurrency\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_key_cannot_start_answers_faster_than_its_rate() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(1),
            ..MockKnobs::default()
        },
        |c| {
            c.auth.keys = vec![KEY_A.into(), KEY_B.into()];
            c.limits.per_key_requests_per_minute = 60;
            c.limits.per_key_burst = 2;
        },
    )
    .await;
    for _ in 0..2 {
        read_events(answer_as(&app, KEY_A).await).await;
    }
    assert_limited(answer_as(&app, KEY_A).await, "client_rate_limit").await;
    read_events(answer_as(&app, KEY_B).await).await;
    // One request per second refills.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let refilled = answer_as(&app, KEY_A).await;
    assert_eq!(refilled.status(), 200);
}

#[tokio::test]
async fn without_keys_the_limits_apply_per_address() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(1),
            ..MockKnobs::default()
        },
        |c| {
            c.limits.per_key_requests_per_minute = 1;
            c.limits.per_key_burst = 1;
        },
    )
    .await;
    let first = app
        .post_answer(&json!({"user_input": "one", "stream": false}))
        .await;
    assert_eq!(first.status(), 200);
    let second = app
        .post_answer(&json!({"user_input": "two", "stream": false}))
        .await;
    assert_eq!(second.status(), 429);
    let retry_after: u64 = second.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((55..=60).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_its_connection_closed() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(8),
            token_delay: Duration::from_millis(150),
            ..MockKnobs::default()
        },
        |c| c.server.body_read_timeout_ms = 600,
    )
    .await;
    for path in ["/answer", "/ocr", "/ocr/jobs"] {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        // One byte a tick, far slower than the 40 bytes promised; the writes stop failing
        // silently once the server has closed.
        let trickle = async {
            for byte in b"{\"user_input\": \"a slow, slow question\"}" {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tcp.write_all(&[*byte]).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(1_200), trickle).await;
        let (received, closed) = read_until_closed(&mut tcp).await;
        assert!(received.starts_with("HTTP/1.1 408"), "{path}: {received}");
        assert!(received.contains("body_timeout"), "{path}: {received}");
        assert!(
            received.to_ascii_lowercase().contains("connection: close"),
            "{path}: {received}"
        );
        assert!(
            closed - started < Duration::from_secs(5),
            "{path}: closed after {:?}",
            closed - started
        );
    }
    // An answer streams for longer than the body timeout (8 chunks 150 ms apart): it is not cut.
    let events = read_events(app.post_answer(&json!({"user_input": "long"})).await).await;
    assert_eq!(last(&events).name, "done");
}
