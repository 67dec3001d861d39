//! The release binary as a benchmark runs it: its own process, with a config written for the
//! run, read from /proc for its CPU time and memory.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// The release binary, running with a config for the benchmark.
pub struct Proxy {
    child: Child,
    pub addr: String,
}

impl Proxy {
    pub fn start(dir: &Path, base_url: &str, permits: usize) -> Self {
        Self::start_with(dir, base_url, permits, "")
    }

    /// `extra` is appended to the `[upstream]` section.
    pub fn start_with(dir: &Path, base_url: &str, permits: usize, extra: &str) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let config = dir.join(format!("bench-{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nbind = \"127.0.0.1:0\"\n\
                 [upstream]\nbase_url = \"{base_url}\"\nmodel = \"bench\"\n{extra}\n\
                 [limits]\nmax_concurrent_upstream = {permits}\nmax_queue = 100000\n\
                 [database]\nurl = \"sqlite://{}/bench-{tag}.db?mode=rwc\"\n\
                 [writer]\nspill_path = \"{}/spill-{tag}.jsonl\"\n\
                 [ocr]\npreload = false\n",
                dir.display(),
                dir.display()
            ),
        )
        .expect("write config");
        let (child, addr) = crate::support::start_proxy(&config);
        Self { child, addr }
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.child.id())).expect("proc file")
    }

    /// User and system CPU seconds of the proxy process so far.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        let stat = self.proc_file("stat");
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime), counted from `state` as field 3.
        let seconds = |field: &str| field.parse::<u64>().expect("CPU ticks") as f64 / 100.0;
        (seconds(fields[11]), seconds(fields[12]))
    }

    fn status_kib(&self, key: &str) -> u64 {
        self.proc_file("status")
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("status field")
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }
}

impl Drop for Proxy {
    /// SIGTERM (so a profiler wrapping it writes its output), then SIGKILL after 20 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
