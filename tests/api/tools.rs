//! The model calling OCR as a tool inside a streaming `/answer`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proxy::config::{Config, ImageParts};
use chat_proxy::demo::MockKnobs;
use serde_json::{Value, json};

use crate::eventually::eventually;
use crate::fixtures::holding_card;
use crate::helpers::{SseEvent, answer_text, last, names, read_events, spawn_app_with};
use crate::image_server::ImageServer;

fn allow_local_images(c: &mut Config) {
    c.ocr.allow_private_networks = true;
    c.ocr.oss_hosts = vec!["127.0.0.1".into()];
}

/// User `i`'s card: a distinct code and share. The shares end in 0 or 5: with this font and
/// size Tesseract sometimes reads a final "1" as "4" after binarization (recorded as open OCR
/// work); this test is about isolation, and OCR accuracy is the fixture suite's job.
fn card(i: usize) -> (String, String, Vec<u8>) {
    let code = format!("{:06}", 100_000 + i * 37);
    let share = format!(
        "{},{:03}.{}{}",
        1 + i % 90,
        (i * 7) % 1000,
        i % 10,
        if i % 2 == 0 { 0 } else { 5 }
    );
    let png = holding_card("易方达蓝筹精选混合", &code, &share);
    (code, share.replace(',', ""), png)
}

fn by_name<'a>(events: &'a [SseEvent], name: &str) -> Vec<&'a SseEvent> {
    events.iter().filter(|e| e.name == name).collect()
}

#[tokio::test]
async fn a_tool_call_streams_its_events_then_the_answer_and_is_logged() {
    let (code, share, png) = card(1);
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = spawn_app_with(
        MockKnobs {
            tool_fragment: 3,
            record_requests: true,
            ..MockKnobs::default()
        },
        allow_local_images,
    )
    .await;
    let url = server.url("img/a.png");
    let response = app
        .post_answer(&json!({"user_input": format!("How many shares do I hold? {url}")}))
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let events = read_events(response).await;
    let kinds = names(&events);
    assert_eq!(kinds.first(), Some(&"meta"));
    assert_eq!(kinds.last(), Some(&"done"), "{events:?}");
    let call = by_name(&events, "tool_call")[0];
    assert_eq!(call.data["name"], "ocr_image");
    let arguments: Value =
        serde_json::from_str(call.data["arguments"].as_str().expect("text")).expect("JSON args");
    assert_eq!(
        arguments["image_url"],
        url.as_str(),
        "fragments were assembled"
    );
    let result = by_name(&events, "tool_result")[0];
    assert_eq!(result.data["id"], call.data["id"]);
    assert_eq!(result.data["ok"], true);
    assert_eq!(result.data["fund_code"], code.as_str());
    let position = |n: &str| kinds.iter().position(|k| *k == n).expect("event present");
    assert!(position("tool_call") < position("tool_result"));
    let text = answer_text(&events);
    assert!(
        text.starts_with("Let me read that. "),
        "content in the tool-call chunk is relayed: {text}"
    );
    assert!(
        text.contains(&format!("fund {code} holds {share} shares.")),
        "{text}"
    );

    // The continuation carried the assistant's call and the tool's result.
    let sent = app.mock.requests();
    assert_eq!(sent.len(), 2);
    let messages = sent[1]["messages"].as_array().expect("messages");
    let assistant = &messages[messages.len() - 2];
    assert_eq!(assistant["tool_calls"][0]["id"], call.data["id"]);
    assert_eq!(messages[messages.len() - 1]["role"], "tool");

    // Logged: the chat row with its tool call, the OCR row under the same request id.
    let db = app.wait_for_rows(1).await;
    let row = db.chat_log(&request_id).await.expect("read").expect("row");
    let calls: Value =
        serde_json::from_str(row.tool_calls.as_deref().expect("tool calls")).expect("JSON");
    assert_eq!(calls[0]["result"]["fund_code"], code.as_str());
    let ocr_id = result.data["ocr_id"].as_str().expect("ocr id");
    let stored = eventually("the OCR row", Duration::from_secs(5), async || {
        db.ocr_result(ocr_id)
            .await
            .expect("read")
            .ok_or("no row yet")
    })
    .await;
    assert_eq!(stored.request_id, request_id);
    assert_eq!(stored.ocr_fund_code.as_deref(), Some(code.as_str()));
}

#[tokio::test]
async fn parallel_interleaved_calls_each_get_their_result() {
    let (code_a, share_a, png_a) = card(2);
    let (code_b, share_b, png_b) = card(3);
    let server = ImageServer::start(HashMap::from([
        ("a.png".to_owned(), png_a),
        ("b.png".to_owned(), png_b),
    ]))
    .await;
    let app = spawn_app_with(
        MockKnobs {
            tool_fragment: 2,
            ..MockKnobs::default()
        },
        allow_local_images,
    )
    .await;
    let question = format!(
        "compare {} and {}",
        server.url("img/a.png"),
        server.url("img/b.png")
    );
    let events = read_events(app.post_answer(&json!({"user_input": question})).await).await;
    let calls = by_name(&events, "tool_call");
    let results = by_name(&events, "tool_result");
    assert_eq!((calls.len(), results.len()), (2, 2), "{events:?}");
    assert_ne!(calls[0].data["id"], calls[1].data["id"]);
    assert_eq!(results[0].data["fund_code"], code_a.as_str());
    assert_eq!(results[1].data["fund_code"], code_b.as_str());
    let text = answer_text(&events);
    assert!(
        text.contains(&format!("fund {code_a} holds {share_a}"))
            && text.contains(&format!("fund {code_b} holds {share_b}")),
        "{text}"
    );
    assert_eq!(last(&events).name, "done");
}

#[tokio::test]
async fn a_tool_error_goes_back_to_the_model_and_the_stream_goes_on() {
    let server = ImageServer::start(HashMap::from([(
        "text.png".to_owned(),
        b"not an image".to_vec(),
    )]))
    .await;
    let app = spawn_app_with(MockKnobs::default(), allow_local_images).await;
    let question = format!(
        "read {} and {}",
        server.url("img/text.png"),
        "http://10.1.2.3/x.png"
    );
    let events = read_events(app.post_answer(&json!({"user_input": question})).await).await;
    let results = by_name(&events, "tool_result");
    assert_eq!(results[0].data["ok"], false);
    assert_eq!(results[0].data["error"]["code"], "image_undecodable");
    assert_eq!(results[1].data["error"]["code"], "image_url_not_allowed");
    let text = answer_text(&events);
    assert!(
        text.contains("the tool failed: image_undecodable."),
        "{text}"
    );
    assert_eq!(last(&events).name, "done");
}

#[tokio::test]
async fn the_round_limit_stops_tool_use() {
    let app = spawn_app_with(
        MockKnobs {
            tool_loop: true,
            record_requests: true,
            tokens: Some(2),
            ..MockKnobs::default()
        },
        |c| c.tools.max_rounds = 2,
    )
    .await;
    let events = read_events(app.post_answer(&json!({"user_input": "loop please"})).await).await;
    assert_eq!(by_name(&events, "tool_call").len(), 2, "{events:?}");
    assert_eq!(last(&events).name, "done");
    let sent = app.mock.requests();
    assert_eq!(sent.len(), 3, "two rounds with tools, then one without");
    assert!(sent[0].get("tools").is_some() && sent[1].get("tools").is_some());
    assert!(sent[2].get("tools").is_none());
    // Each round's assistant message carries that round's text, not the answer so far.
    let messages = sent[2]["messages"].as_array().expect("messages");
    let assistants: Vec<&Value> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(assistants.len(), 2, "{messages:?}");
    for assistant in assistants {
        assert_eq!(assistant["content"], "Let me read that. ");
    }
}

#[tokio::test]
async fn non_streaming_answers_include_the_tool_calls() {
    let (code, _, png) = card(4);
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = spawn_app_with(MockKnobs::default(), allow_local_images).await;
    let body: Value = app
        .post_answer(
            &json!({"user_input": format!("shares? {}", server.url("img/a.png")), "stream": false}),
        )
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["tool_calls"][0]["name"], "ocr_image");
    assert_eq!(body["tool_calls"][0]["result"]["fund_code"], code.as_str());
    assert!(body["reply"].as_str().expect("reply").contains(&code));
}

#[tokio::test]
async fn image_parts_in_messages_are_read_by_url() {
    let (code, _, png) = card(5);
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = spawn_app_with(MockKnobs::default(), allow_local_images).await;
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what do I hold?"},
        {"type": "image_url", "image_url": {"url": server.url("img/a.png")}},
    ]}]});
    let events = read_events(app.post_answer(&body).await).await;
    assert_eq!(
        by_name(&events, "tool_result")[0].data["fund_code"],
        code.as_str()
    );
}

/// A user message with the image inline, as the chat page and Open WebUI send it.
fn inline_image_question(png: &[u8]) -> Value {
    use base64::Engine as _;
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what do I hold?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}

#[tokio::test]
async fn an_inline_image_is_named_to_the_model_and_read_without_a_download() {
    let (code, share, png) = card(8);
    // No image host is allowed: the image is in the request itself.
    let app = spawn_app_with(
        MockKnobs {
            record_requests: true,
            ..MockKnobs::default()
        },
        |_| {},
    )
    .await;
    let events = read_events(app.post_answer(&inline_image_question(&png)).await).await;
    let call = &by_name(&events, "tool_call")[0].data;
    assert_eq!(call["arguments"], r#"{"image_url":"attachment:1"}"#);
    let result = &by_name(&events, "tool_result")[0].data;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["fund_code"], code.as_str());
    assert_eq!(result["hold_share"], share.as_str());
    assert!(answer_text(&events).contains(&code));

    // The model got a name for the image, never its bytes.
    let sent = app.mock.requests();
    assert_eq!(
        sent[0]["messages"][1]["content"][1],
        json!({"type": "text", "text": "(image 1: attachment:1)"})
    );
    for request in &sent {
        assert!(!request.to_string().contains("base64"), "{request}");
    }
    let ocr_id = result["ocr_id"].as_str().expect("ocr_id");
    let row = eventually("the OCR row", Duration::from_secs(10), async || {
        app.database()
            .ocr_result(ocr_id)
            .await
            .expect("read")
            .ok_or("not yet")
    })
    .await;
    assert_eq!(row.url_type, "upload");
    let label = format!("data:image/png ({} bytes)", png.len());
    assert_eq!(row.image_url, label);
    // The log row keeps the question, and the image as its label only.
    let logs = app.wait_for_rows(1).await.chat_logs().await.expect("read");
    let logged: Value = serde_json::from_str(&logs[0].request_messages).expect("JSON");
    assert_eq!(logged[0]["content"][1]["image_url"]["url"], label.as_str());
    assert!(!logs[0].request_messages.contains("base64"));

    // A name this conversation never gave, or an inline image that is not one: the tool says
    // why, and the answer goes on.
    let unknown = json!({"user_input": "read attachment:7 please"});
    let bad_type = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:text/html;base64,PGI+"}},
    ]}]});
    for (body, code) in [
        (unknown, "invalid_arguments"),
        (bad_type, "invalid_request"),
    ] {
        let events = read_events(app.post_answer(&body).await).await;
        let result = &by_name(&events, "tool_result")[0].data;
        assert_eq!(result["ok"], false);
        assert_eq!(result["error"]["code"], code, "{result}");
        assert_eq!(last(&events).name, "done");
    }
}

#[tokio::test]
async fn forwarded_image_parts_reach_the_model_as_they_are() {
    let (code, _, png) = card(9);
    let app = spawn_app_with(
        MockKnobs {
            record_requests: true,
            ..MockKnobs::default()
        },
        |c| c.tools.image_parts = ImageParts::Forward,
    )
    .await;
    let question = inline_image_question(&png);
    let events = read_events(app.post_answer(&question).await).await;
    let sent = app.mock.requests();
    assert_eq!(
        sent[0]["messages"][1]["content"],
        question["messages"][0]["content"]
    );
    // A model that copies the data URL into its call is read too.
    let result = &by_name(&events, "tool_result")[0].data;
    assert_eq!(result["fund_code"], code.as_str(), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_a_tool_run_cancels_cleanly() {
    let (_, _, png) = card(6);
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = spawn_app_with(MockKnobs::default(), allow_local_images).await;
    let response = app
        .post_answer(&json!({"user_input": format!("read {}", server.url("gated/a.png"))}))
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    loop {
        let event = futures::StreamExt::next(&mut events)
            .await
            .expect("open")
            .expect("well-formed");
        if event.event == "tool_call" {
            break;
        }
    }
    eventually(
        "the image request to arrive",
        Duration::from_secs(5),
        async || match server.gated_arrivals.load(Ordering::Acquire) {
            1 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    drop(events);
    let db = app.wait_for_rows(1).await;
    let row = db.chat_log(&request_id).await.expect("read").expect("row");
    assert_eq!(row.status, "cancelled");
    let calls: Value =
        serde_json::from_str(row.tool_calls.as_deref().expect("calls")).expect("JSON");
    assert_eq!(
        calls[0]["result"],
        Value::Null,
        "the OCR result was discarded"
    );
    server.open_gate();
    let health = app
        .wait_for_health("nothing held", |h| {
            h["upstream"]["permits_in_use"] == 0
                && h["ocr"]["engines_busy"] == 0
                && h["exchanges_open"] == 0
        })
        .await;
    assert_eq!(health["upstream"]["queue_length"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_are_free_while_tools_run() {
    let (_, _, png) = card(7);
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = Arc::new(
        spawn_app_with(
            MockKnobs {
                tokens: Some(3),
                ..MockKnobs::default()
            },
            allow_local_images,
        )
        .await,
    );
    let url = server.url("gated/a.png");
    let tool_users: Vec<_> = (0..5)
        .map(|_| {
            let (app, url) = (app.clone(), url.clone());
            tokio::spawn(async move {
                read_events(
                    app.post_answer(&json!({"user_input": format!("read {url}")}))
                        .await,
                )
                .await
            })
        })
        .collect();
    // All five permit holders are now in their tool run, waiting on the image.
    eventually(
        "five image requests to arrive",
        Duration::from_secs(10),
        async || match server.gated_arrivals.load(Ordering::Acquire) {
            5 => Ok(()),
            n => Err(n),
        },
    )
    .await;
    let health = app.health().await;
    assert_eq!(health["upstream"]["permits_in_use"], 0, "{health}");
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        read_events(
            app.post_answer(&json!({"user_input": "plain question"}))
                .await,
        )
        .await
    })
    .await
    .expect("a plain request is served while the tools run");
    assert_eq!(last(&plain).name, "done");
    assert!(
        !names(&plain).contains(&"queued"),
        "it did not have to wait"
    );
    server.open_gate();
    for user in tool_users {
        let events = user.await.expect("task");
        assert_eq!(last(&events).name, "done");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tool_users_each_get_only_their_own_image() {
    const USERS: usize = 200;
    let cards: Vec<(String, String, Vec<u8>)> = (0..USERS).map(card).collect();
    let images = cards
        .iter()
        .enumerate()
        .map(|(i, (_, _, png))| (format!("{i}.png"), png.clone()))
        .collect();
    let server = Arc::new(ImageServer::start(images).await);
    let app = Arc::new(
        spawn_app_with(
            MockKnobs {
                tool_fragment: 4,
                ..MockKnobs::default()
            },
            |c| {
                allow_local_images(c);
                c.limits.max_queue = 1_000;
            },
        )
        .await,
    );
    let tasks: Vec<_> = (0..USERS)
        .map(|i| {
            let (app, server) = (app.clone(), server.clone());
            tokio::spawn(async move {
                let url = server.url(&format!("img/{i}.png"));
                let response = app
                    .post_answer(&json!({"user_input": format!("user {i}: {url}")}))
                    .await;
                let request_id = response.headers()["x-request-id"]
                    .to_str()
                    .expect("ascii")
                    .to_owned();
                (i, request_id, read_events(response).await)
            })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        let (i, request_id, events) = task.await.expect("task");
        let (code, share, _) = &cards[i];
        assert_eq!(last(&events).name, "done", "user {i}: {events:?}");
        let text = answer_text(&events);
        assert_eq!(
            text,
            format!("Let me read that. From the screenshot: fund {code} holds {share} shares. "),
            "user {i} must see only their own image's result"
        );
        let result = by_name(&events, "tool_result")[0].data.clone();
        answered.push((
            i,
            request_id,
            result["ocr_id"].as_str().expect("ocr id").to_owned(),
        ));
    }
    let counters = app.mock.counters();
    assert!(
        counters.max_in_flight.load(Ordering::Acquire) <= 5,
        "the upstream never saw more than 5"
    );
    assert_eq!(counters.requests.load(Ordering::Acquire), USERS * 2);

    let db = app.wait_for_rows(USERS as u64).await;
    for (i, request_id, ocr_id) in answered {
        let (code, share, _) = &cards[i];
        let row = db
            .chat_log(&request_id)
            .await
            .expect("read")
            .expect("chat row");
        assert!(
            row.answer.contains(&format!("fund {code} holds {share}")),
            "user {i}: {}",
            row.answer
        );
        let ocr = eventually("the OCR row", Duration::from_secs(5), async || {
            db.ocr_result(&ocr_id)
                .await
                .expect("read")
                .ok_or("no row yet")
        })
        .await;
        assert_eq!(ocr.request_id, request_id, "user {i}");
        assert_eq!(
            ocr.ocr_fund_code.as_deref(),
            Some(code.as_str()),
            "user {i}"
        );
    }
}
