//! Shared by the benchmark programs: their runtime, starting the release binary and waiting
//! until it listens, reading a process's CPU time and memory from /proc, and percentiles.
#![allow(dead_code, reason = "each benchmark uses a part of it")]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Starts `chat-proxy --config CONFIG` (quiet but for start-up) and returns it with the address
/// from its `listening on ADDR` line. `CHAT_PROXY_BENCH_WRAP="valgrind --tool=massif"` runs it
/// under a profiler.
pub fn start_proxy(config: &Path) -> (Child, String) {
    start_proxy_binary(&proxy_binary(), config)
}

/// The binary benchmarks run: this build's, or `CHAT_PROXY_BENCH_BINARY` (an earlier build,
/// measured by the same program).
pub fn proxy_binary() -> PathBuf {
    std::env::var_os("CHAT_PROXY_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chat-proxy")))
}

/// [`start_proxy`] with another build of the binary: an earlier one, measured in the same run.
pub fn start_proxy_binary(binary: &Path, config: &Path) -> (Child, String) {
    let wrap = std::env::var("CHAT_PROXY_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
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

/// Runs a benchmark's `work` on two worker threads, the machine's two cores.
pub fn run<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(work)
}

/// User and system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from `state` as field 3.
    let seconds = |field: &str| field.parse::<u64>().expect("CPU ticks") as f64 / 100.0;
    (seconds(fields[11]), seconds(fields[12]))
}

/// A `kB` field of process `pid`'s `/proc/PID/status` (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("status field")
}

/// The `p`th percentile of `samples` (sorted in place).
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[rank(p, samples.len())]
}

/// The index of the `p`th percentile in `len` sorted samples.
pub fn rank(p: f64, len: usize) -> usize {
    (p / 100.0 * (len - 1) as f64).round() as usize
}
