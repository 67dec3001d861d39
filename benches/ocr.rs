//! OCR benchmark: prints numbers, asserts nothing (results go in BENCHMARKS.md).
//!
//! On one generated 1080x2340 holdings screenshot: engine start-up, per-image latency and
//! images/s through the pipeline (prepare, pooled engine, extraction) at 1 and 2 at once, next
//! to the `tesseract` command-line tool on the same image in the same run.
//!
//!   cargo bench --bench ocr

#[path = "../tests/api/fixtures/mod.rs"]
#[expect(
    dead_code,
    reason = "the benchmark uses only part of the test fixtures"
)]
mod fixtures;
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_proxy::config::OcrConfig;
use chat_proxy::lifecycle::Lifecycle;
use chat_proxy::ocr::{
    EnginePool, ImageRequest, OcrService, Priority, Requester, UrlType, WorkerCommand,
};
use futures::StreamExt;

/// The benchmark asks as an interactive client would, without a key.
const BENCH: Requester<'static> = Requester {
    request_id: "bench",
    client_key_id: None,
    priority: Priority::Interactive,
};

fn main() {
    support::run(run());
}

/// A phone-sized holdings page: six fund cards, 1080x2340.
fn screenshot() -> Vec<u8> {
    let funds = vec![
        fixtures::yifangda(),
        fixtures::zhaoshang(),
        fixtures::zhongou(),
        fixtures::huaxia(),
        fixtures::xiaofei(),
        fixtures::xinxing(),
    ];
    let shot =
        fixtures::Screenshot::new(fixtures::Layout::CardsLabelAbove, 1080, "持有份额", funds);
    let full = image::load_from_memory(&shot.render())
        .expect("rendered")
        .to_rgb8();
    let (width, height) = (WIDTH, HEIGHT);
    let cropped =
        image::imageops::crop_imm(&full, 0, 0, width, height.min(full.height())).to_image();
    let mut page = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    image::imageops::overlay(&mut page, &cropped, 0, 0);
    fixtures::encode(&page, None)
}

const WIDTH: u32 = 1080;
const HEIGHT: u32 = 2340;

/// The pipeline with a pool of 2: what it finds, the time per image one at a time (the median
/// and the mean of 10), and images/s with 1 and 2 at once.
async fn pipeline(png: &[u8]) {
    let config = Arc::new(OcrConfig {
        pool_size: 2,
        worker_program: worker_command().program,
        ..OcrConfig::default()
    });
    let ocr = Arc::new(OcrService::new(config, &Lifecycle::new()).expect("service"));
    ocr.pool().preload().await.expect("engines");
    let request = || ImageRequest {
        url_type: UrlType::Upload,
        image_url: "bench.png".into(),
        upload: Some(Bytes::from(png.to_vec())),
    };
    let first = ocr
        .recognize(BENCH, request())
        .await
        .outcome
        .expect("recognised");
    let found: Vec<_> = first
        .data
        .funds
        .iter()
        .map(|f| format!("{} {}", f.fund_code, f.hold_share.as_deref().unwrap_or("-")))
        .collect();
    println!("found: {}", found.join(", "));
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        ocr.recognize(BENCH, request())
            .await
            .outcome
            .expect("recognised");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "one at a time: median {:.0} ms, mean {:.0} ms per image (10 images)",
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        mean_ms(&latencies)
    );
    for concurrency in [1, 2] {
        let images = 20;
        let started = Instant::now();
        futures::stream::iter(0..images)
            .for_each_concurrent(concurrency, |_| {
                let ocr = ocr.clone();
                let request = request();
                async move {
                    ocr.recognize(BENCH, request)
                        .await
                        .outcome
                        .expect("recognised");
                }
            })
            .await;
        let rate = images as f64 / started.elapsed().as_secs_f64();
        println!("{concurrency} at once: {rate:.2} images/s");
    }
}

fn mean_ms(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e3
}

async fn run() {
    let png = screenshot();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("holdings-1080x2340.png");
    std::fs::write(&path, &png).expect("write image");
    // To repeat the CLI's figures by hand: CHAT_PROXY_BENCH_OCR_PAGE=/tmp/page.png keeps a copy.
    if let Some(copy) = std::env::var_os("CHAT_PROXY_BENCH_OCR_PAGE") {
        std::fs::write(copy, &png).expect("write the page's copy");
    }
    println!(
        "image: {WIDTH}x{HEIGHT} PNG, {} KB; the pipeline's workers run with OMP_THREAD_LIMIT=1",
        png.len() / 1024
    );

    println!();
    println!("## Engine start-up");
    let mut starts = Vec::new();
    for _ in 0..3 {
        let pool = EnginePool::new(worker_command(), 1, 60_000, Lifecycle::new());
        let started = Instant::now();
        pool.preload().await.expect("engine starts");
        starts.push(started.elapsed());
    }
    println!(
        "one engine (chi_sim+eng): {:.0} ms (mean of 3)",
        mean_ms(&starts)
    );

    println!();
    println!("## Per image and images/s (chat-proxy pipeline, 2 engines, reused)");
    pipeline(&png).await;

    println!();
    println!("## tesseract command-line tool on the same image (--psm 6, same languages)");
    for (label, limit) in [
        ("OMP_THREAD_LIMIT=1", Some("1")),
        ("OMP_THREAD_LIMIT unset", None),
    ] {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let mut command = Command::new("tesseract");
            command
                .arg(&path)
                .args(["-", "-l", "chi_sim+eng", "--psm", "6"]);
            match limit {
                Some(v) => command.env("OMP_THREAD_LIMIT", v),
                None => command.env_remove("OMP_THREAD_LIMIT"),
            };
            let started = Instant::now();
            let output = command
                .output()
                .expect("tesseract CLI (apt-get install tesseract-ocr)");
            assert!(output.status.success());
            runs.push(started.elapsed());
        }
        println!(
            "{label}: {:.0} ms per image (mean of 5, process start included)",
            mean_ms(&runs)
        );
    }
    let started = Instant::now();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new("tesseract")
                .arg(&path)
                .args(["-", "-l", "chi_sim+eng", "--psm", "6"])
                .env("OMP_THREAD_LIMIT", "1")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("tesseract")
        })
        .collect();
    for mut child in children {
        child.wait().expect("tesseract ends");
    }
    println!(
        "2 CLI processes at once: {:.2} images/s",
        2.0 / started.elapsed().as_secs_f64()
    );
}

/// The worker binary cargo built with this benchmark.
fn worker_command() -> WorkerCommand {
    WorkerCommand::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_chat-proxy-ocr")),
        "chi_sim+eng",
    )
}
