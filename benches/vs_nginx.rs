//! chat-proxy beside nginx relaying the same stream: prints numbers, asserts nothing (results go
//! in BENCHMARKS.md).
//!
//!   scripts/deps.sh bench && cargo bench --bench vs_nginx
//!
//! One mock model in this process (first chunk after 100 ms, then 20 chunks 10 ms apart), and in
//! front of it, each as its own process: nginx from Debian (one worker, `proxy_buffering off`,
//! keep-alive to the mock) and the release proxy (its permit limit lifted, so nothing queues).
//! Each round sends 1,000 requests, 100 at a time, to each target in turn: direct to the mock,
//! nginx, `/answer` and `/v1/chat/completions`. Three rounds; the best of them is reported.
//! The CPU is the relaying process's own (the proxy, or nginx's worker), from /proc. The memory
//! per open stream is the RSS slope of the relaying process from 500 to 2,000 open streams.
//!
//! `CHAT_PROXY_BENCH_BEFORE=PATH` adds an earlier build of the binary as one more target
//! (`/answer`), in the same run and the same rounds: a before and after that the machine's
//! noise does not enter.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;
use futures::StreamExt;
use serde_json::json;

#[path = "support/proxy.rs"]
#[allow(
    dead_code,
    reason = "shared with the answer benchmark, which uses all of it"
)]
mod proxy;
mod support;
use proxy::Proxy;
use support::percentile;

const REQUESTS: usize = 1_000;
const CONCURRENCY: usize = 100;
const ROUNDS: usize = 3;

fn main() {
    support::run(run());
}

/// Where a request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Nginx,
    Answer,
    OpenAi,
    /// `/answer` of the build named by `CHAT_PROXY_BENCH_BEFORE`.
    BeforeAnswer,
}

impl Target {
    /// The targets of this run: the earlier build's only when it is given.
    fn all() -> Vec<Self> {
        let mut all = vec![Self::Direct, Self::Nginx, Self::Answer, Self::OpenAi];
        if before_binary().is_some() {
            all.push(Self::BeforeAnswer);
        }
        all
    }

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct to the mock",
            Self::Nginx => "nginx",
            Self::Answer => "chat-proxy /answer",
            Self::OpenAi => "chat-proxy /v1/chat/completions",
            Self::BeforeAnswer => "earlier build, /answer",
        }
    }
}

/// The earlier build to measure beside this one, if any.
fn before_binary() -> Option<PathBuf> {
    std::env::var_os("CHAT_PROXY_BENCH_BEFORE").map(PathBuf::from)
}

/// The addresses of one setup: the mock, nginx and the proxies in front of it.
struct Setup {
    mock: MockUpstream,
    nginx: Nginx,
    proxy: Proxy,
    before: Option<Proxy>,
}

impl Setup {
    async fn start(dir: &Path, knobs: MockKnobs) -> Self {
        let mock = MockUpstream::start(knobs, &Lifecycle::new())
            .await
            .expect("mock");
        let nginx = Nginx::start(dir, &mock.base_url());
        let proxy = Proxy::start(dir, &mock.base_url(), 100_000);
        let before = before_binary()
            .map(|binary| Proxy::start_binary(&binary, dir, &mock.base_url(), 100_000, "", ""));
        Self {
            mock,
            nginx,
            proxy,
            before,
        }
    }

    fn before(&self) -> &Proxy {
        self.before
            .as_ref()
            .expect("the earlier build runs when it is a target")
    }

    fn url(&self, target: Target) -> String {
        match target {
            Target::Direct => format!("{}/chat/completions", self.mock.base_url()),
            Target::Nginx => format!("http://{}/v1/chat/completions", self.nginx.addr),
            Target::Answer => format!("http://{}/answer", self.proxy.addr),
            Target::OpenAi => format!("http://{}/v1/chat/completions", self.proxy.addr),
            Target::BeforeAnswer => format!("http://{}/answer", self.before().addr),
        }
    }

    /// User and system CPU seconds so far of the process relaying `target` (none for direct).
    fn cpu(&self, target: Target) -> (f64, f64) {
        match target {
            Target::Direct => (0.0, 0.0),
            Target::Nginx => support::cpu_seconds(self.nginx.worker()),
            Target::Answer | Target::OpenAi => self.proxy.cpu_seconds(),
            Target::BeforeAnswer => self.before().cpu_seconds(),
        }
    }

    fn rss_kib(&self, target: Target) -> u64 {
        match target {
            Target::Nginx => self.nginx.worker_rss_kib(),
            Target::BeforeAnswer => self.before().rss_kib(),
            _ => self.proxy.rss_kib(),
        }
    }
}

/// The body each target gets: the same question, streamed, with usage, as the proxy sends it.
fn body(target: Target) -> serde_json::Value {
    match target {
        Target::Answer | Target::BeforeAnswer => json!({"user_input": "bench"}),
        _ => json!({
            "model": "bench", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "bench"}],
        }),
    }
}

/// The best figures of a target over the rounds: the round with the least CPU, and the
/// lowest p50 and p99.
#[derive(Clone, Copy)]
struct Best {
    user: f64,
    system: f64,
    p50: f64,
    p99: f64,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            user: f64::INFINITY,
            system: f64::INFINITY,
            p50: f64::INFINITY,
            p99: f64::INFINITY,
        }
    }
}

impl Best {
    fn cpu(self) -> f64 {
        self.user + self.system
    }
}

/// Sends one request and reads it to its end; the time to the first answer text.
async fn one(client: &reqwest::Client, url: &str, target: Target) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .json(&body(target))
        .send()
        .await
        .expect("request sent");
    assert!(response.status().is_success(), "{}", response.status());
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut seen = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the stream reads");
        if first.is_none() {
            seen.extend_from_slice(&chunk);
            // The first answer text: `"content":"x` in every wire form (not the empty role chunk).
            let text = String::from_utf8_lossy(&seen);
            if text
                .split("\"content\":\"")
                .skip(1)
                .any(|rest| !rest.starts_with('"'))
            {
                first = Some(started.elapsed());
            }
        }
    }
    first.expect("an answer came")
}

/// One round against `target`: ttft samples in ms, and the relaying process's user and system
/// CPU seconds per request.
async fn round(client: &reqwest::Client, setup: &Setup, target: Target) -> (Vec<f64>, (f64, f64)) {
    let url = setup.url(target);
    let cpu_before = setup.cpu(target);
    let samples: Vec<f64> = futures::stream::iter(0..REQUESTS)
        .map(|_| one(client, &url, target))
        .buffer_unordered(CONCURRENCY)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect()
        .await;
    // The proxy's log writer finishes its rows after the answers: let it, so they count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_after = setup.cpu(target);
    let per_request = |before: f64, after: f64| (after - before) / REQUESTS as f64;
    let cpu = (
        per_request(cpu_before.0, cpu_after.0),
        per_request(cpu_before.1, cpu_after.1),
    );
    (samples, cpu)
}

async fn run() {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4_000)
        .build()
        .expect("client");
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = Setup::start(
        dir.path(),
        MockKnobs {
            first_chunk_delay: Duration::from_millis(100),
            token_delay: Duration::from_millis(10),
            tokens: Some(20),
            ..MockKnobs::default()
        },
    )
    .await;
    let targets = Target::all();
    // Warm every path (connections, caches) before measuring.
    for &target in &targets {
        let url = setup.url(target);
        for _ in 0..3 {
            futures::future::join_all((0..CONCURRENCY).map(|_| one(&client, &url, target))).await;
        }
    }
    let mut best = vec![Best::default(); targets.len()];
    for _ in 0..ROUNDS {
        for (i, &target) in targets.iter().enumerate() {
            let (mut samples, (user, system)) = round(&client, &setup, target).await;
            let b = &mut best[i];
            if user + system < b.cpu() {
                (b.user, b.system) = (user, system);
            }
            b.p50 = b.p50.min(percentile(&mut samples, 50.0));
            b.p99 = b.p99.min(percentile(&mut samples, 99.0));
        }
    }
    println!(
        "## {REQUESTS} requests, {CONCURRENCY} at a time; mock ttft 100 ms, 20 chunks 10 ms apart; best of {ROUNDS} interleaved rounds"
    );
    println!(
        "| target | CPU per request | of it user + system | ttft p50 | ttft p99 | added p99 over direct |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let direct_p99 = best[0].p99;
    for (i, &target) in targets.iter().enumerate() {
        let b = best[i];
        let (cpu, split) = if target == Target::Direct {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.3} ms", b.cpu() * 1e3),
                format!("{:.3} + {:.3} ms", b.user * 1e3, b.system * 1e3),
            )
        };
        println!(
            "| {} | {cpu} | {split} | {:.1} ms | {:.1} ms | {:+.1} ms |",
            target.name(),
            b.p50,
            b.p99,
            b.p99 - direct_p99
        );
    }
    let nginx = best[1];
    let added = |b: Best| (b.p99 - direct_p99).max(0.0);
    println!();
    println!("| ratio to nginx | CPU per request | added ttft p99 |");
    println!("|---|---:|---:|");
    for (i, &target) in targets.iter().enumerate().skip(2) {
        println!(
            "| {} | {:.2}x | {:.2}x (+{:.1} ms vs +{:.1} ms) |",
            target.name(),
            best[i].cpu() / nginx.cpu(),
            added(best[i]) / added(nginx).max(0.1),
            added(best[i]),
            added(nginx)
        );
    }
    if let Some(before) = targets.iter().position(|&t| t == Target::BeforeAnswer) {
        let (now, then) = (best[2], best[before]);
        println!(
            "\n/answer, this build against the earlier one: CPU {:.2}x, added ttft p99 {:+.1} ms against {:+.1} ms",
            now.cpu() / then.cpu(),
            added(now),
            added(then)
        );
    }
    println!();
    drop(setup);
    memory_per_stream(&client, dir.path()).await;
}

/// The RSS slope of the relaying process from 500 to 2,000 open streams: a mock that sends one
/// chunk and then waits keeps them open.
async fn memory_per_stream(client: &reqwest::Client, dir: &Path) {
    println!("## Memory per open stream (RSS slope of the relaying process, 500 -> 2,000 open)");
    println!("| target | RSS at 500 | RSS at 2,000 | per open stream |");
    println!("|---|---:|---:|---:|");
    let mut slopes = Vec::new();
    let targets = Target::all();
    for &target in targets
        .iter()
        .filter(|&&t| t != Target::Direct && t != Target::OpenAi)
    {
        let setup = Setup::start(
            dir,
            MockKnobs {
                token_delay: Duration::from_secs(60),
                tokens: Some(2),
                ..MockKnobs::default()
            },
        )
        .await;
        let url = setup.url(target);
        let mut held = Vec::new();
        let mut rss = Vec::new();
        for goal in [500, 2_000] {
            while held.len() < goal {
                let opening = (held.len()..goal).map(|_| open_stream(client, &url, target));
                held.extend(futures::future::join_all(opening).await);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss.push(setup.rss_kib(target));
        }
        let slope = (rss[1] as f64 - rss[0] as f64) / 1_500.0;
        slopes.push(slope);
        println!(
            "| {} | {:.1} MB | {:.1} MB | {slope:.1} KiB |",
            target.name(),
            rss[0] as f64 / 1024.0,
            rss[1] as f64 / 1024.0
        );
        drop(held);
    }
    println!(
        "\nratio /answer to nginx: {:.2}x",
        slopes[1] / slopes[0].max(0.01)
    );
    if let Some(before) = slopes.get(2) {
        println!(
            "ratio /answer to the earlier build: {:.2}x",
            slopes[1] / before.max(0.01)
        );
    }
}

/// Opens a stream and reads its first chunk; the response is held open until dropped.
async fn open_stream(client: &reqwest::Client, url: &str, target: Target) -> reqwest::Response {
    let mut response = client
        .post(url)
        .json(&body(target))
        .send()
        .await
        .expect("request sent");
    let _ = response.chunk().await.expect("a first chunk");
    response
}

/// Debian's nginx as a child process with a configuration of its own, relaying to the mock.
struct Nginx {
    master: Child,
    addr: String,
    _prefix: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, mock_base_url: &str) -> Self {
        let upstream = mock_base_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let prefix = dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx folder");
        let config = prefix.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "worker_processes 1;\ndaemon off;\nerror_log {p}/logs/error.log warn;\n\
                 pid {p}/nginx.pid;\nworker_rlimit_nofile 20000;\n\
                 events {{ worker_connections 10000; }}\n\
                 http {{\n  access_log off;\n\
                   client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                   upstream mock {{ server {upstream}; keepalive 512; }}\n\
                   server {{\n    listen 127.0.0.1:{port};\n\
                     location / {{\n      proxy_pass http://mock;\n\
                       proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                       proxy_buffering off;\n    }}\n  }}\n}}\n",
                p = prefix.display()
            ),
        )
        .expect("nginx config");
        let master = Command::new(nginx_binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts (scripts/deps.sh bench installs it)");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            master,
            addr,
            _prefix: prefix,
        }
    }

    /// The one worker process (the master's child).
    fn worker(&self) -> u32 {
        let pid = self.master.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("nginx's children");
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("an nginx worker")
    }

    fn worker_rss_kib(&self) -> u64 {
        support::status_kib(self.worker(), "VmRSS:")
    }
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its worker too (SIGKILL would leave the worker).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let _ = self.master.wait();
    }
}
