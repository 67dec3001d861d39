//! `GET /metrics`: what it counts, and that Prometheus' own checker accepts the exposition.

use std::io::Write as _;
use std::process::{Command, Stdio};

use chat_proxy::demo::{Fault, MockKnobs};
use serde_json::json;

use crate::helpers::{TestApp, last, read_events, spawn_app_with};

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("text")
}

/// The value of one sample line, e.g. `chat_proxy_answers_total{status="ok"}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"))
        .parse()
        .expect("a number")
}

/// `promtool check metrics`, from Debian's `prometheus` package (scripts/deps.sh installs it).
fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package `prometheus`; `make test` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool ends");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool rejected:\n{report}\n{text}"
    );
    report
}

#[tokio::test]
async fn metrics_count_requests_answers_errors_and_pass_promtool() {
    let app = spawn_app_with(
        MockKnobs {
            tokens: Some(3),
            ..MockKnobs::default()
        },
        |_| {},
    )
    .await;
    for _ in 0..2 {
        let events = read_events(app.post_answer(&json!({"user_input": "counted"})).await).await;
        assert_eq!(last(&events).name, "done");
    }
    let invalid = app.post_answer(&json!({"user_input": ""})).await;
    assert_eq!(invalid.status(), 400);
    let missing = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    app.mock.set_knobs(|k| k.fault = Some(Fault::Status(500)));
    let failed = app
        .post_answer(&json!({"user_input": "fails", "stream": false}))
        .await;
    assert_eq!(failed.status(), 502);
    app.wait_for_rows(3).await;

    let text = scrape(&app).await;
    let requests = |method: &str, route: &str, status: u16| {
        sample(
            &text,
            &format!(
                "chat_proxy_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("POST", "/answer", 200), 2.0);
    assert_eq!(requests("POST", "/answer", 400), 1.0);
    assert_eq!(requests("POST", "/answer", 502), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert_eq!(
        sample(&text, "chat_proxy_answers_total{status=\"ok\"}"),
        2.0
    );
    assert_eq!(
        sample(&text, "chat_proxy_answers_total{status=\"error\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "chat_proxy_upstream_errors_total{kind=\"upstream_status\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "chat_proxy_time_to_first_token_seconds_count"),
        2.0
    );
    assert_eq!(sample(&text, "chat_proxy_queue_wait_seconds_count"), 3.0);
    assert_eq!(
        sample(&text, "chat_proxy_answer_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "chat_proxy_http_request_duration_seconds_count{method=\"POST\",route=\"/answer\",status=\"200\"}"
        ),
        2.0
    );
    // The process itself, from /proc.
    assert!(sample(&text, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&text, "process_open_fds") > 0.0);
    assert_eq!(sample(&text, "chat_proxy_upstream_permits"), 5.0);
    assert_eq!(sample(&text, "chat_proxy_upstream_permits_in_use"), 0.0);
    assert_eq!(sample(&text, "chat_proxy_queue_length"), 0.0);
    assert_eq!(sample(&text, "chat_proxy_answer_streams_open"), 0.0);
    assert_eq!(sample(&text, "chat_proxy_log_rows_written_total"), 3.0);
    assert_eq!(sample(&text, "chat_proxy_log_writer_database_up"), 1.0);
    assert_eq!(sample(&text, "chat_proxy_ocr_engines"), 2.0);
    promtool_check(&text);

    // The scrape itself is counted on the next one.
    let again = scrape(&app).await;
    assert_eq!(
        sample(
            &again,
            "chat_proxy_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_need_a_key_when_keys_are_set() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.auth.keys = vec!["client-key-0123456789".into()];
    })
    .await;
    let refused = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    let allowed = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("client-key-0123456789")
        .send()
        .await
        .expect("sent");
    assert_eq!(allowed.status(), 200);
    let text = allowed.text().await.expect("text");
    assert!(
        text.contains("status=\"401\""),
        "refusals are counted:\n{text}"
    );
}
