//! OCR results and jobs belong to the key that made them, on SQLite and MariaDB; job items
//! waiting are capped per key and in all; a job can be cancelled by its owner; interactive OCR
//! goes before batch items.

use std::collections::HashMap;
use std::time::Duration;

use chat_proxy::config::Config;
use chat_proxy::demo::MockKnobs;
use reqwest::Method;
use serde_json::{Value, json};

use crate::eventually::eventually;
use crate::fixtures::holding_card;
use crate::helpers::{TestApp, last, read_events, spawn_app_with};
use crate::image_server::ImageServer;
use crate::mysql::TestDatabase;

const KEY_A: &str = "owner-a-key-0123456789";
const KEY_B: &str = "owner-b-key-0123456789";
const ADMIN: &str = "admin-key-0123456789ab";

fn with_keys(c: &mut Config, root: &std::path::Path) {
    c.auth.keys = vec![KEY_A.into(), KEY_B.into()];
    c.auth.admin_keys = vec![ADMIN.into()];
    c.ocr.local_root = root.to_owned();
    c.ocr.pool_size = 1;
    c.ocr.allow_private_networks = true;
    c.ocr.oss_hosts = vec!["127.0.0.1".into()];
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn local(name: &str) -> Value {
    json!({"image_url": name, "url_type": "7min_local"})
}

/// Waits until `key` reads the result back from the database (`updated_at` is set).
async fn stored(app: &TestApp, id: &str, key: &str) -> Value {
    eventually(
        "the OCR row to be stored",
        Duration::from_secs(20),
        async || match call(app, Method::GET, &format!("/ocr/{id}"), key, None).await {
            (200, body) if !body["updated_at"].is_null() => Ok(body),
            other => Err(other),
        },
    )
    .await
}

async fn results_and_jobs_belong_to_their_key(app: &TestApp) {
    let (status, result) = call(app, Method::POST, "/ocr", KEY_A, Some(local("a.png"))).await;
    assert_eq!(status, 200, "{result}");
    let id = result["id"].as_str().expect("id").to_owned();
    let path = format!("/ocr/{id}");
    // From memory, before its row is written, as from the database after.
    assert_eq!(call(app, Method::GET, &path, KEY_B, None).await.0, 404);
    stored(app, &id, KEY_A).await;
    let (status, body) = call(app, Method::GET, &path, KEY_B, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "as if it did not exist"
    );
    let correction = json!({"update_hold_share": "1.00"});
    let (status, _) = call(app, Method::PATCH, &path, KEY_B, Some(correction.clone())).await;
    assert_eq!(status, 404, "B cannot correct A's result");
    let (status, body) = call(app, Method::GET, &path, KEY_A, None).await;
    assert_eq!(
        (status, body["update_hold_share"].clone()),
        (200, Value::Null),
        "untouched"
    );
    let (status, body) = call(app, Method::PATCH, &path, KEY_A, Some(correction)).await;
    assert_eq!(
        (status, body["update_hold_share"].as_str()),
        (200, Some("1.00"))
    );
    let admin_fix = json!({"update_hold_share": "2.00"});
    let (status, body) = call(app, Method::PATCH, &path, ADMIN, Some(admin_fix)).await;
    assert_eq!(
        (status, body["update_hold_share"].as_str()),
        (200, Some("2.00")),
        "an admin corrects anything"
    );

    let (status, job) = call(
        app,
        Method::POST,
        "/ocr/jobs",
        KEY_A,
        Some(json!([local("a.png")])),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/ocr/jobs/{}", job["job_id"].as_str().expect("job id"));
    assert_eq!(call(app, Method::GET, &job_path, KEY_B, None).await.0, 404);
    assert_eq!(
        call(app, Method::DELETE, &job_path, KEY_B, None).await.0,
        404
    );
    assert_eq!(
        call(app, Method::DELETE, &job_path, ADMIN, None).await.0,
        404,
        "only the owner cancels"
    );
    assert_eq!(call(app, Method::GET, &job_path, KEY_A, None).await.0, 200);
    assert_eq!(call(app, Method::GET, &job_path, ADMIN, None).await.0, 200);
}

/// The model's OCR call inside B's `/answer` makes a result that is B's.
async fn a_tool_result_belongs_to_the_key_of_its_answer(app: &TestApp, url: &str) {
    let response = app
        .client
        .post(app.url("/answer"))
        .bearer_auth(KEY_B)
        .json(&json!({"user_input": format!("How many shares? {url}")}))
        .send()
        .await
        .expect("sent");
    let events = read_events(response).await;
    assert_eq!(last(&events).name, "done");
    let result = events
        .iter()
        .find(|e| e.name == "tool_result")
        .expect("a tool result");
    let id = result.data["ocr_id"]
        .as_str()
        .expect("the result's id")
        .to_owned();
    stored(app, &id, KEY_B).await;
    assert_eq!(
        call(app, Method::GET, &format!("/ocr/{id}"), KEY_A, None)
            .await
            .0,
        404
    );
}

async fn check_owners(database_url: Option<String>) {
    let root = tempfile::tempdir().expect("temp dir");
    let png = holding_card("易方达蓝筹精选混合", "005827", "12,345.67");
    std::fs::write(root.path().join("a.png"), &png).expect("write");
    let server = ImageServer::start(HashMap::from([("a.png".to_owned(), png)])).await;
    let app = spawn_app_with(MockKnobs::default(), |c| {
        with_keys(c, root.path());
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    results_and_jobs_belong_to_their_key(&app).await;
    a_tool_result_belongs_to_the_key_of_its_answer(&app, &server.url("img/a.png")).await;
}

#[tokio::test]
async fn ocr_results_and_jobs_belong_to_their_key_on_sqlite() {
    check_owners(None).await;
}

#[tokio::test]
async fn ocr_results_and_jobs_belong_to_their_key_on_mysql() {
    let database = TestDatabase::create().await;
    check_owners(Some(database.url())).await;
    database.drop_database().await;
}

/// Five copies of the fixture: a job of five items.
fn five() -> Value {
    json!((0..5).map(|_| local("a.png")).collect::<Vec<_>>())
}

#[tokio::test]
async fn waiting_job_items_are_capped_and_a_job_can_be_cancelled() {
    let root = tempfile::tempdir().expect("temp dir");
    let png = holding_card("易方达蓝筹精选混合", "005827", "12,345.67");
    std::fs::write(root.path().join("a.png"), &png).expect("write");
    let app = spawn_app_with(MockKnobs::default(), |c| {
        with_keys(c, root.path());
        c.ocr.max_job_items = 5;
        c.ocr.max_pending_items_per_key = 5;
        c.ocr.max_pending_items = 10;
    })
    .await;
    let (status, job) = call(&app, Method::POST, "/ocr/jobs", KEY_A, Some(five())).await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/ocr/jobs/{}", job["job_id"].as_str().expect("job id"));
    let (status, other) = call(&app, Method::POST, "/ocr/jobs", KEY_B, Some(five())).await;
    assert_eq!(status, 202, "{other}");
    let other_path = format!("/ocr/jobs/{}", other["job_id"].as_str().expect("job id"));

    // One engine: at most a couple of A's items have started, so three more pass A's cap.
    let three = json!([local("a.png"), local("a.png"), local("a.png")]);
    let response = app
        .client
        .post(app.url("/ocr/jobs"))
        .bearer_auth(KEY_A)
        .json(&three)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "too_many_pending_items");
    // The admin key is under its own cap, but not everyone's.
    let (status, body) = call(&app, Method::POST, "/ocr/jobs", ADMIN, Some(five())).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("ocr_busy")),
        "{body}"
    );

    // Interactive OCR goes before the waiting items of both jobs: it is answered once the
    // item running when it came is done, not after the queued ones.
    let (status, result) = call(&app, Method::POST, "/ocr", KEY_B, Some(local("a.png"))).await;
    assert_eq!(status, 200, "{result}");
    let mut done = 0;
    for (path, key) in [(&job_path, KEY_A), (&other_path, KEY_B)] {
        let (_, progress) = call(&app, Method::GET, path, key, None).await;
        done += progress["done"].as_u64().expect("done");
    }
    assert!(
        done <= 2,
        "the interactive request waited behind {done} batch items"
    );

    let (status, cancelled) = call(&app, Method::DELETE, &job_path, KEY_A, None).await;
    assert_eq!(
        (status, &cancelled["status"]),
        (200, &json!("cancelled")),
        "{cancelled}"
    );
    let count = |job: &Value, status: &str| {
        job["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|item| item["status"] == status)
            .count()
    };
    assert!(count(&cancelled, "cancelled") >= 2, "{cancelled}");
    // The items running when it was cancelled finish; none starts after.
    let settled = eventually(
        "the running items to finish",
        Duration::from_secs(20),
        async || {
            let (_, job) = call(&app, Method::GET, &job_path, KEY_A, None).await;
            if count(&job, "running") == 0 {
                Ok(job)
            } else {
                Err(job)
            }
        },
    )
    .await;
    assert_eq!(
        count(&settled, "cancelled"),
        count(&cancelled, "cancelled"),
        "{settled}"
    );
    assert_eq!(
        settled["done"].as_u64(),
        Some(5 - count(&cancelled, "cancelled") as u64)
    );
    // The cancelled items no longer count against A.
    let (status, body) = call(&app, Method::POST, "/ocr/jobs", KEY_A, Some(five())).await;
    assert_eq!(status, 202, "{body}");
}
