//! Shared by the benchmark programs: start the release binary and wait until it listens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `chat-proxy --config CONFIG` (quiet but for start-up) and returns it with the address
/// from its `listening on ADDR` line. `CHAT_PROXY_BENCH_WRAP="valgrind --tool=massif"` runs it
/// under a profiler.
pub fn start_proxy(config: &Path) -> (Child, String) {
    let wrap = std::env::var("CHAT_PROXY_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_chat-proxy"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_chat-proxy")),
    };
    let mut child = command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn,chat_proxy::startup=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("proxy starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("the proxy printed").expect("utf-8");
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().to_owned();
        }
    };
    // Keep reading so the proxy never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
