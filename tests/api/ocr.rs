//! The OCR endpoints end to end: fixtures with known codes and shares, every error, SSRF
//! attempts, and load staying within the engine pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chat_proxy::demo::MockKnobs;
use serde_json::{Value, json};

use crate::eventually::eventually;
use crate::fixtures::catalogue;
use crate::helpers::{TestApp, spawn_app_with};
use crate::image_server::ImageServer;
use crate::process::is_running;

pub async fn ocr_app() -> TestApp {
    spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.pool_size = 2;
    })
    .await
}

pub async fn upload(
    app: &TestApp,
    path: &str,
    bytes: Vec<u8>,
    file_name: &str,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
    let form = reqwest::multipart::Form::new().part("image", part);
    app.client
        .post(app.url(path))
        .multipart(form)
        .send()
        .await
        .expect("upload sent")
}

/// Each fund's code, share and warnings, as `POST /ocr` returned them.
type Found = Vec<(String, Option<String>, Vec<String>)>;

fn funds_of(body: &Value) -> Found {
    body["data"]["funds"]
        .as_array()
        .expect("funds array")
        .iter()
        .map(|f| {
            let warnings = f["warnings"].as_array().expect("warnings array");
            (
                f["fund_code"].as_str().expect("code").to_owned(),
                f["hold_share"].as_str().map(str::to_owned),
                warnings
                    .iter()
                    .map(|w| w.as_str().expect("a warning").to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// How a page was read against what it shows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Score {
    codes: usize,
    codes_found: usize,
    false_codes: usize,
    shares: usize,
    shares_right: usize,
    /// A share reported that is not the page's held share: the worst outcome.
    shares_wrong: usize,
    /// A fund without a share whose warning is missing or not the expected one.
    warnings_wrong: usize,
}

impl Score {
    fn of(got: &Found, want: &Found) -> Self {
        let mut score = Self {
            codes: want.len(),
            shares: want.iter().filter(|w| w.1.is_some()).count(),
            ..Self::default()
        };
        for (code, share, warnings) in got {
            let Some(expected) = want.iter().find(|w| &w.0 == code) else {
                score.false_codes += 1;
                continue;
            };
            score.codes_found += 1;
            match (share, &expected.1) {
                (Some(got), Some(want)) if got == want => score.shares_right += 1,
                (Some(_), _) => score.shares_wrong += 1,
                (None, _) => {}
            }
            if share.is_none() && expected.1.is_none() && warnings != &expected.2 {
                score.warnings_wrong += 1;
            }
        }
        score
    }

    fn add(self, other: Self) -> Self {
        Self {
            codes: self.codes + other.codes,
            codes_found: self.codes_found + other.codes_found,
            false_codes: self.false_codes + other.false_codes,
            shares: self.shares + other.shares,
            shares_right: self.shares_right + other.shares_right,
            shares_wrong: self.shares_wrong + other.shares_wrong,
            warnings_wrong: self.warnings_wrong + other.warnings_wrong,
        }
    }
}

/// The scored accuracy test over the whole catalogue: every fixture must give exactly its codes,
/// shares and warnings, in page order. The score is printed (`--nocapture`) for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_yields_its_codes_and_shares_exactly() {
    let app = ocr_app().await;
    let shots = catalogue();
    // One at a time, so that every run reads the pages in the same order on the same worker
    // and the score is reproducible.
    let mut results = Vec::new();
    for (name, shot) in shots.iter().cloned() {
        let bytes = tokio::task::spawn_blocking({
            let shot = shot.clone();
            move || shot.render()
        })
        .await
        .expect("render");
        let response = upload(&app, "/ocr", bytes, &format!("{name}.img")).await;
        assert_eq!(response.status(), 200, "{name}");
        let body: Value = response.json().await.expect("JSON");
        results.push((name, shot, body));
    }
    let mut failures = Vec::new();
    let mut total = Score::default();
    for (name, shot, body) in results {
        let got = funds_of(&body);
        let want = shot.expected();
        let score = Score::of(&got, &want);
        total = total.add(score);
        if got != want {
            failures.push(format!(
                "{name}: got {got:?}, want {want:?}\n--- text ---\n{}\n--- end ---",
                body["data"]["text"].as_str().unwrap_or("")
            ));
            continue;
        }
        assert_eq!(
            body["data"]["fund_code"],
            want[0].0.as_str(),
            "{name}: first fund"
        );
        assert_eq!(
            body["data"]["hold_share"].as_str(),
            want[0].1.as_deref(),
            "{name}"
        );
        assert!(
            body["id"].is_string() && body["elapsed_ms"].is_u64(),
            "{name}: {body}"
        );
    }
    println!(
        "OCR accuracy over {} screenshots: codes {}/{}, false codes {}, shares {}/{} right, \
         {} wrong, {} wrong warnings",
        shots.len(),
        total.codes_found,
        total.codes,
        total.false_codes,
        total.shares_right,
        total.shares,
        total.shares_wrong,
        total.warnings_wrong
    );
    assert!(
        failures.is_empty(),
        "{} of {} fixtures wrong ({total:?}):\n{}",
        failures.len(),
        shots.len(),
        failures.join("\n\n")
    );
}

/// The image server for `oss` downloads: the fixture (`img/fund.png`), a 404
/// (`img/missing.png`), text, a large body, a PNG whose header claims 50,000 x 50,000 pixels,
/// and `img/redirect.png` redirecting to `redirect_to`.
async fn image_server(image: Vec<u8>, redirect_to: String) -> ImageServer {
    let images = HashMap::from([
        ("fund.png".to_owned(), image),
        ("text.png".to_owned(), b"this is not an image".to_vec()),
        ("big.png".to_owned(), vec![0u8; 300_000]),
        ("bomb.png".to_owned(), png_bomb()),
    ]);
    let redirects = HashMap::from([("redirect.png".to_owned(), redirect_to)]);
    ImageServer::with_redirects(images, redirects).await
}

/// A 1x1 PNG whose header is rewritten to 50,000 x 50,000 (CRC fixed): a decompression bomb.
fn png_bomb() -> Vec<u8> {
    let mut png = crate::fixtures::encode(&image::RgbImage::new(1, 1), None);
    // IHDR data starts at byte 16: width, height (big endian); CRC after its 13 bytes.
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn one_fund_png() -> (Vec<u8>, crate::fixtures::FundRow) {
    let (_, shot) = catalogue()
        .into_iter()
        .find(|(n, _)| *n == "detail-720-light")
        .expect("fixture");
    (shot.render(), shot.funds[0].clone())
}

async fn post_ocr(app: &TestApp, path: &str, body: Value) -> (u16, Value, String) {
    let response = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    (status, response.json().await.expect("JSON"), request_id)
}

#[tokio::test]
async fn json_requests_are_validated_naming_the_field() {
    let app = ocr_app().await;
    let cases = [
        (json!({"url_type": "oss"}), "image_url"),
        (json!({"image_url": 5, "url_type": "oss"}), "image_url"),
        (json!({"image_url": "", "url_type": "oss"}), "image_url"),
        (
            json!({"image_url": "https://a.oss.aliyuncs.com/x.png"}),
            "url_type",
        ),
        (
            json!({"image_url": "https://a.oss.aliyuncs.com/x.png", "url_type": 1}),
            "url_type",
        ),
        (
            json!({"image_url": "https://a.oss.aliyuncs.com/x.png", "url_type": "ftp"}),
            "url_type",
        ),
        (
            json!({"image_url": "https://a.oss.aliyuncs.com/x.png", "url_type": "upload"}),
            "url_type",
        ),
        (
            json!({"image_url": "not a url", "url_type": "oss"}),
            "image_url",
        ),
    ];
    for path in ["/ocr", "/ocr_handler"] {
        for (body, field) in &cases {
            let (status, error, _) = post_ocr(&app, path, body.clone()).await;
            assert_eq!(status, 400, "{path} {body}");
            let message = error["error"]["message"].as_str().expect("message");
            assert!(message.contains(field), "{body}: {message}");
        }
    }
    let response = app
        .client
        .post(app.url("/ocr"))
        .body("{nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn oss_download_then_get_and_patch_the_stored_result() {
    let (png, fund) = one_fund_png();
    let server = image_server(png, String::new()).await;
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.allow_private_networks = true;
        c.ocr.oss_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let url = server.url("img/fund.png");
    let (status, body, request_id) = post_ocr(
        &app,
        "/ocr_handler",
        json!({"image_url": url, "url_type": "oss"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["fund_code"], fund.code);
    assert_eq!(body["data"]["hold_share"], fund.expected_share().as_str());
    assert_eq!(body["data"]["funds"][0]["name"], fund.name);
    let id = body["id"].as_str().expect("id").to_owned();

    // The row lands in the background; GET reads it back (or the in-memory copy meanwhile).
    let stored = eventually("the stored result", Duration::from_secs(5), async || {
        let stored: Value = app
            .client
            .get(app.url(&format!("/ocr/{id}")))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        if stored["request_id"].is_string() {
            Ok(stored)
        } else {
            Err(stored)
        }
    })
    .await;
    assert_eq!(stored["request_id"], request_id.as_str(), "{stored}");
    assert_eq!(stored["url_type"], "oss");
    assert_eq!(stored["image_url"], url.as_str());
    assert_eq!(stored["data"]["fund_code"], fund.code);

    let corrected: Value = app
        .client
        .patch(app.url(&format!("/ocr/{id}")))
        .json(&json!({"update_fund_code": "110011", "update_hold_share": "99.5"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(corrected["update_fund_code"], "110011");
    assert_eq!(corrected["update_hold_share"], "99.5");
    assert_eq!(
        corrected["data"]["fund_code"], fund.code,
        "the OCR's own value is kept"
    );

    // Every fund at once: the first stands for the result's own pair; a later correction of
    // the pair leaves the list as it was.
    let funds = json!([
        {"fund_code": "000001", "hold_share": "1.5"},
        {"fund_code": "000002", "hold_share": null},
    ]);
    let patch = async |body: Value| -> Value {
        app.client
            .patch(app.url(&format!("/ocr/{id}")))
            .json(&body)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON")
    };
    let listed = patch(json!({ "update_funds": funds })).await;
    assert_eq!(listed["update_funds"], funds);
    assert_eq!(listed["update_fund_code"], "000001");
    assert_eq!(listed["update_hold_share"], "1.5");
    let pair = patch(json!({"update_hold_share": "2"})).await;
    assert_eq!(pair["update_hold_share"], "2");
    assert_eq!(pair["update_funds"], funds, "the list is kept");

    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"fund_code": "000001", "hold_share": "1"}))
        .collect();
    for (body, status) in [
        (json!({"update_fund_code": "12ab"}), 400),
        (json!({}), 400),
        (json!({"update_hold_share": "1,000"}), 400),
        (json!({"update_funds": [{"fund_code": "1234567"}]}), 400),
        (
            json!({"update_funds": [{"fund_code": "000001", "hold_share": "-1"}]}),
            400,
        ),
        (
            json!({"update_funds": [{"fund_code": "000001", "name": "x"}]}),
            400,
        ),
        (json!({ "update_funds": too_many }), 400),
    ] {
        let response = app
            .client
            .patch(app.url(&format!("/ocr/{id}")))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), status, "{body}");
    }
    let missing = app
        .client
        .get(app.url("/ocr/no-such-id"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    let missing = app
        .client
        .patch(app.url("/ocr/no-such-id"))
        .json(&json!({"update_fund_code": "110011"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn download_failures_map_to_their_statuses() {
    let (png, _) = one_fund_png();
    let server = image_server(png, String::new()).await;
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.allow_private_networks = true;
        c.ocr.oss_hosts = vec!["127.0.0.1".into()];
        c.ocr.max_image_bytes = 200_000;
    })
    .await;
    for (path, status, code) in [
        ("missing.png", 502, "image_download_failed"),
        ("text.png", 422, "image_undecodable"),
        ("big.png", 413, "image_too_large"),
        ("bomb.png", 413, "image_too_many_pixels"),
    ] {
        let url = server.url(&format!("img/{path}"));
        let (got, body, _) =
            post_ocr(&app, "/ocr", json!({"image_url": url, "url_type": "oss"})).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    // A closed port: the download fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (got, body, _) = post_ocr(
        &app,
        "/ocr",
        json!({"image_url": format!("http://{closed}/x.png"), "url_type": "oss"}),
    )
    .await;
    assert_eq!(got, 502, "{body}");
}

#[tokio::test]
async fn ssrf_attempts_are_refused() {
    let server = image_server(Vec::new(), "http://localhost:1/fund.png".into()).await;
    let app = spawn_app_with(MockKnobs::default(), |c| {
        // Even listed, internal addresses stay refused while allow_private_networks is false.
        c.ocr.oss_hosts = vec![
            "127.0.0.1".into(),
            "10.0.0.1".into(),
            "169.254.169.254".into(),
            "::1".into(),
            "[::1]".into(),
            "localhost".into(),
            "*.aliyuncs.com".into(),
        ];
    })
    .await;
    for url in [
        server.url("img/fund.png"),
        "http://10.0.0.1/x.png".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/x.png".to_owned(),
        "http://localhost/x.png".to_owned(),
        "file:///etc/passwd".to_owned(),
        "http://evil.example.com/x.png".to_owned(),
    ] {
        let (status, body, _) =
            post_ocr(&app, "/ocr", json!({"image_url": url, "url_type": "oss"})).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "image_url_not_allowed", "{url}");
    }
    // IPv6 forms that embed or hide an internal address, refused for the address itself.
    for host in [
        "[::127.0.0.1]",
        "[2002:7f00:1::1]",
        "[2001::1]",
        "[fec0::1]",
    ] {
        let url = format!("http://{host}/x.png");
        let (status, body, _) =
            post_ocr(&app, "/ocr", json!({"image_url": url, "url_type": "oss"})).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "image_url_not_allowed", "{url}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("not a public address"), "{url}: {message}");
    }

    // With private networks allowed for the test server, a redirect is still checked: here
    // to a host outside ocr.oss_hosts.
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.allow_private_networks = true;
        c.ocr.oss_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let (status, body, _) = post_ocr(
        &app,
        "/ocr",
        json!({"image_url": server.url("img/redirect.png"), "url_type": "oss"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("image_url_not_allowed")),
        "{body}"
    );
    // A user name and password in the URL would be sent on as Basic auth: refused, though the
    // host is allowed and the image is there.
    let with_credentials = format!("http://user:secret@{}/img/fund.png", server.addr);
    let (status, body, _) = post_ocr(
        &app,
        "/ocr",
        json!({"image_url": with_credentials, "url_type": "oss"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("image_url_not_allowed")),
        "{body}"
    );
    assert!(!body.to_string().contains("secret"), "{body}");
}

#[tokio::test]
async fn local_images_stay_inside_their_folder() {
    let (png, fund) = one_fund_png();
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("2024")).expect("mkdir");
    std::fs::write(root.path().join("2024/fund.png"), &png).expect("write");
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.local_root = root.path().to_owned()
    })
    .await;
    let (status, body, _) = post_ocr(
        &app,
        "/ocr",
        json!({"image_url": "2024/fund.png", "url_type": "7min_local"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["fund_code"], fund.code);
    for (path, status) in [
        ("../etc/passwd", 400),
        ("2024/../../x.png", 400),
        ("2024/none.png", 404),
    ] {
        let (got, body, _) = post_ocr(
            &app,
            "/ocr",
            json!({"image_url": path, "url_type": "7min_local"}),
        )
        .await;
        assert_eq!(got, status, "{path}: {body}");
    }
    assert!(
        root.path().join("2024/fund.png").exists(),
        "the source file is left alone"
    );
}

#[tokio::test]
async fn upload_errors() {
    let app = spawn_app_with(MockKnobs::default(), |c| c.ocr.max_image_bytes = 50_000).await;
    let response = upload(&app, "/ocr", b"plain text, not an image".to_vec(), "a.png").await;
    assert_eq!(response.status(), 422);
    let response = upload(&app, "/ocr_handler", vec![7u8; 60_000], "big.png").await;
    assert_eq!(response.status(), 413);
    let form = reqwest::multipart::Form::new().text("url_type", "upload");
    let response = app
        .client
        .post(app.url("/ocr"))
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400, "no image part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_load_stays_within_the_pool() {
    let app = Arc::new(ocr_app().await);
    let (png, fund) = one_fund_png();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let health = app.health().await;
                most = most.max(health["ocr"]["engines_busy"].as_u64().expect("busy"));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            most
        })
    };
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (app, png) = (app.clone(), png.clone());
            tokio::spawn(async move {
                let response = upload(&app, "/ocr", png, "fund.png").await;
                assert_eq!(response.status(), 200);
                response.json::<Value>().await.expect("JSON")
            })
        })
        .collect();
    for request in requests {
        let body = request.await.expect("request");
        assert_eq!(body["data"]["fund_code"], fund.code);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let most_busy = watcher.await.expect("watcher");
    assert!(
        (1..=2).contains(&most_busy),
        "8 requests ran on at most 2 engines: {most_busy}"
    );
    let health = app.health().await;
    assert_eq!(health["ocr"]["engines"], 2);
    assert!(
        health["ocr"]["engines_created"].as_u64() <= Some(2),
        "engines are reused: {health}"
    );
}

#[tokio::test]
async fn batch_jobs_run_in_the_background_and_report_each_item() {
    let (png, fund) = one_fund_png();
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::write(root.path().join("a.png"), &png).expect("write");
    std::fs::write(root.path().join("b.png"), &png).expect("write");
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.local_root = root.path().to_owned()
    })
    .await;

    let bad = [
        (json!([]), "items"),
        (json!({"items": "x"}), "items"),
        (
            json!([{"image_url": "a.png", "url_type": "7min_local"}, {"image_url": "b.png"}]),
            "items[1].url_type",
        ),
    ];
    for (body, field) in bad {
        let (status, error, _) = post_ocr(&app, "/ocr/jobs", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .expect("message")
                .contains(field),
            "{error}"
        );
    }

    let items = json!({"items": [
        {"image_url": "a.png", "url_type": "7min_local"},
        {"image_url": "missing.png", "url_type": "7min_local"},
        {"image_url": "b.png", "url_type": "7min_local"},
    ]});
    let (status, created, _) = post_ocr(&app, "/ocr/jobs", items).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["total"], 3);
    let job_url = app.url(created["status_url"].as_str().expect("status url"));
    let job = eventually("the job to finish", Duration::from_secs(10), async || {
        let job: Value = app
            .client
            .get(&job_url)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        if job["status"] == "done" {
            Ok(job)
        } else {
            Err(job)
        }
    })
    .await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(
        (job["done"].as_u64(), job["failed"].as_u64()),
        (Some(3), Some(1))
    );
    let items = job["items"].as_array().expect("items");
    assert_eq!(items[0]["status"], "ok");
    assert_eq!(items[0]["result"]["data"]["fund_code"], fund.code);
    assert_eq!(items[1]["status"], "error");
    assert_eq!(items[1]["error"]["code"], "image_not_found");
    assert_eq!(
        items[2]["result"]["data"]["hold_share"],
        fund.expected_share().as_str()
    );
    let missing = app
        .client
        .get(app.url("/ocr/jobs/nope"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn ocr_dir_deletes_a_file_only_once_its_row_is_stored() {
    let (png, fund) = one_fund_png();
    let images = tempfile::tempdir().expect("temp dir");
    std::fs::write(images.path().join("one.png"), &png).expect("write");
    std::fs::write(images.path().join("two.jpg"), &png).expect("write");
    std::fs::write(images.path().join("broken.png"), b"not an image").expect("write");
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = chat_proxy::config::Config::default();
    config.database.url = format!("sqlite://{}?mode=rwc", data.path().join("ocr.db").display());
    config.ocr.pool_size = 2;
    config.ocr.worker_program = env!("CARGO_BIN_EXE_chat-proxy-ocr").into();

    // The database away: nothing is deleted.
    let mut away = config.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    away.database.url = format!("mysql://root@{closed}/none");
    away.database.connect_timeout_ms = 500;
    let mut out = Vec::new();
    assert!(
        chat_proxy::ocr::dir_command::recognize_dir(&away, images.path(), &mut out)
            .await
            .is_err()
    );
    assert_eq!(std::fs::read_dir(images.path()).expect("dir").count(), 3);

    let mut out = Vec::new();
    let summary = chat_proxy::ocr::dir_command::recognize_dir(&config, images.path(), &mut out)
        .await
        .expect("run");
    assert_eq!(
        (summary.recognised, summary.failed, summary.deleted),
        (2, 1, 2)
    );
    let lines: Vec<Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        if line["file"].as_str().expect("file").ends_with("broken.png") {
            assert_eq!(line["status"], "error");
            assert_eq!(line["deleted"], false);
        } else {
            assert_eq!(line["data"]["fund_code"], fund.code, "{line}");
            assert_eq!(line["deleted"], true);
        }
    }
    let left: Vec<_> = std::fs::read_dir(images.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("broken.png")]);
    let db = chat_proxy::store::Database::connect_lazy(&config.database).expect("url");
    for line in &lines {
        let row = db
            .ocr_result(line["id"].as_str().expect("id"))
            .await
            .expect("read")
            .expect("row stored");
        assert_eq!(
            row.status,
            if line["status"] == "ok" {
                "ok"
            } else {
                "error"
            }
        );
    }
}

/// An app whose OCR workers start through a script that records each one's pid, then becomes
/// the real worker (`exec` keeps the pid).
async fn app_recording_workers(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut chat_proxy::config::Config),
) -> TestApp {
    let real = format!("exec '{}' \"$@\"", env!("CARGO_BIN_EXE_chat-proxy-ocr"));
    app_with_worker_script(dir, &real, tweak).await
}

/// An app whose OCR worker is `body`, run by a script that first records its pid.
async fn app_with_worker_script(
    dir: &std::path::Path,
    body: &str,
    tweak: impl FnOnce(&mut chat_proxy::config::Config),
) -> TestApp {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join("worker.sh");
    let pids = dir.join("pids");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho $$ >> '{}'\n{body}\n", pids.display()),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    spawn_app_with(MockKnobs::default(), |c| {
        c.ocr.pool_size = 1;
        c.ocr.worker_program = script;
        tweak(c);
    })
    .await
}

fn worker_pids(dir: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .map(|line| line.parse().expect("a pid"))
        .collect()
}

fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "killed {pid}");
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    eventually(what, Duration::from_secs(10), async || {
        if done() { Ok(()) } else { Err("not yet") }
    })
    .await;
}

#[tokio::test]
async fn a_worker_that_died_while_idle_is_replaced_unnoticed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = app_recording_workers(dir.path(), |_| {}).await;
    let (png, fund) = one_fund_png();
    let response = upload(&app, "/ocr", png.clone(), "fund.png").await;
    assert_eq!(response.status(), 200);
    let first = worker_pids(dir.path());
    assert_eq!(first.len(), 1, "one worker, started on first use");
    kill(first[0]);
    wait_until("the worker is gone", || !is_running(first[0])).await;

    let response = upload(&app, "/ocr", png, "fund.png").await;
    assert_eq!(response.status(), 200, "the dead worker was not handed out");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["fund_code"], fund.code);
    assert_eq!(worker_pids(dir.path()).len(), 2);
    assert_eq!(app.health().await["ocr"]["engines_created"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_work_fails_only_its_own_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = Arc::new(app_recording_workers(dir.path(), |_| {}).await);
    let (png, fund) = one_fund_png();
    let request = {
        let (app, png) = (app.clone(), png.clone());
        tokio::spawn(async move {
            let response = upload(&app, "/ocr", png, "fund.png").await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        })
    };
    wait_until("a worker starts", || !worker_pids(dir.path()).is_empty()).await;
    kill(worker_pids(dir.path())[0]);
    let (status, body) = request.await.expect("request");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "ocr_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("OCR worker")),
        "{body}"
    );

    let response = upload(&app, "/ocr", png, "fund.png").await;
    assert_eq!(response.status(), 200, "a fresh worker took its place");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["fund_code"], fund.code);
    assert_eq!(app.health().await["ocr"]["engines_busy"], 0);
}

#[tokio::test]
async fn a_recognition_past_the_time_limit_kills_its_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A worker that says it is ready, then never answers.
    let app = app_with_worker_script(dir.path(), "printf '\\000'\nexec sleep 600", |c| {
        c.ocr.preload = true;
        c.ocr.timeout_ms = 1_000;
    })
    .await;
    let preloaded = worker_pids(dir.path());
    assert_eq!(preloaded.len(), 1, "preload started the worker");
    let (png, _) = one_fund_png();
    let response = upload(&app, "/ocr", png, "fund.png").await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "ocr_timeout");
    // It would go on with a page nobody waits for: the worker is killed instead.
    wait_until("the overrunning worker is killed", || {
        !is_running(preloaded[0])
    })
    .await;
    let health = app.health().await;
    assert_eq!(health["ocr"]["engines_busy"], 0, "{health}");
}

#[tokio::test]
async fn a_worker_that_never_gets_ready_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = app_with_worker_script(dir.path(), "exec sleep 600", |c| {
        c.ocr.timeout_ms = 1_000;
    })
    .await;
    let (png, _) = one_fund_png();
    let response = upload(&app, "/ocr", png, "fund.png").await;
    assert_eq!(response.status(), 504);
    let pids = worker_pids(dir.path());
    assert_eq!(pids.len(), 1);
    wait_until("the stuck worker is killed", || !is_running(pids[0])).await;
    let health = app.health().await;
    assert_eq!(
        health["ocr"]["engines_busy"], 0,
        "the slot is free: {health}"
    );
}

#[tokio::test]
async fn a_worker_that_exits_at_start_fails_the_request_with_its_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = app_with_worker_script(dir.path(), "exit 3", |_| {}).await;
    let (png, _) = one_fund_png();
    let response = upload(&app, "/ocr", png, "fund.png").await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "ocr_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exited with status 3")),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_the_same_413_code_on_every_route() {
    let app = spawn_app_with(MockKnobs::default(), |c| {
        c.server.max_body_bytes = 2_000;
        c.ocr.max_image_bytes = 10_000;
    })
    .await;
    // Over server.max_body_bytes, under the upload limit: a JSON body is capped like any other.
    let too_big = json!({"image_url": "x".repeat(20_000), "url_type": "oss"});
    let cases = [
        ("/answer", json!({"user_input": "x".repeat(3_000)})),
        ("/ocr", too_big.clone()),
        ("/ocr_handler", too_big.clone()),
        ("/ocr/jobs", json!([too_big])),
    ];
    for (path, body) in cases {
        let (status, error, _) = post_ocr(&app, path, body).await;
        assert_eq!(status, 413, "{path}");
        assert_eq!(error["error"]["code"], "body_too_large", "{path}: {error}");
    }
    // An upload over the limit: the image part is read as it streams in, so its own cap
    // (`ocr.max_image_bytes`) refuses it before the body's.
    let response = upload(&app, "/ocr", vec![7u8; 200_000], "huge.png").await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["code"], "image_too_large", "{error}");
}
