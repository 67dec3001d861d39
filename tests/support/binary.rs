//! Running the `chat-proxy` binary as an operator does, shared by the test crates that need the
//! real process (`tests/binary.rs`, `tests/hostile.rs`).
#![allow(dead_code, reason = "each test crate uses a part of it")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::process::stat_fields;

/// Processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|fields| fields.get(1) == Some(&parent)))
        .collect()
}

/// Serves `router` on a loopback port until the runtime ends: a peer of the binary (an image
/// host, a trace receiver, a mock's counters).
pub async fn serve_peer(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    #[expect(clippy::disallowed_methods, reason = "a test peer, not the product")]
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Runs `work` to its end on a small runtime of its own (these tests have none).
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(work)
}

pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")
}

pub fn chat_proxy(configs: &[&Path]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-proxy"));
    for config in configs {
        command.arg("--config").arg(config);
    }
    command.env_remove("RUST_LOG");
    command
}

pub fn override_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("local.toml");
    std::fs::write(&path, text).expect("write override");
    path
}

/// Kills the child if a test fails half-way; `.1` yields its log lines after `listening on`.
pub struct Running(pub Child, pub mpsc::Receiver<String>);

/// A config beside the shipped one: a free port and a private data folder.
pub fn private_override(dir: &Path, extra: &str) -> PathBuf {
    override_file(
        dir,
        &format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{d}/chat.db?mode=rwc\"\n[writer]\nspill_path = \"{d}/spill.jsonl\"\n{extra}",
            d = dir.display()
        ),
    )
}

/// Starts the binary and waits for `listening on ADDR`; returns it with the address and the
/// log lines before it.
pub fn start_listening(mut command: Command) -> (Running, String, Vec<String>) {
    let child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("binary starts");
    let (log_tx, log_rx) = mpsc::channel();
    let mut running = Running(child, log_rx);
    let stderr = running.0.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let mut seen = Vec::new();
    let addr = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no listening line: {seen:?}"
        );
        let line = lines.next().expect("a log line").expect("utf-8");
        if let Some(rest) = line.split("listening on ").nth(1) {
            // Text or JSON lines: the address is what follows, up to a quote or the end.
            let addr = rest
                .trim()
                .split('"')
                .next()
                .expect("split yields one part");
            break addr.to_owned();
        }
        seen.push(line);
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    (running, addr, seen)
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
