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
        Self::start_full(dir, base_url, permits, extra, "")
    }

    /// `extra` is appended to the `[upstream]` section, `limits` to `[limits]`.
    pub fn start_full(
        dir: &Path,
        base_url: &str,
        permits: usize,
        extra: &str,
        limits: &str,
    ) -> Self {
        let binary = crate::support::proxy_binary();
        Self::start_binary(&binary, dir, base_url, permits, extra, limits)
    }

    /// [`Self::start_full`] with another build of the binary (an earlier one, for a before and
    /// after in one run).
    pub fn start_binary(
        binary: &Path,
        dir: &Path,
        base_url: &str,
        permits: usize,
        extra: &str,
        limits: &str,
    ) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let config = dir.join(format!("bench-{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nbind = \"127.0.0.1:0\"\n\
                 [upstream]\nbase_url = \"{base_url}\"\nmodel = \"bench\"\n{extra}\n\
                 [limits]\nmax_concurrent_upstream = {permits}\nmax_queue = 100000\n{limits}\n\
                 [database]\nurl = \"sqlite://{}/bench-{tag}.db?mode=rwc\"\n\
                 [writer]\nspill_path = \"{}/spill-{tag}.jsonl\"\n\
                 [ocr]\npreload = false\n",
                dir.display(),
                dir.display()
            ),
        )
        .expect("write config");
        let (child, addr) = crate::support::start_proxy_binary(binary, &config);
        Self { child, addr }
    }

    /// User and system CPU seconds of the proxy process so far.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        crate::support::cpu_seconds(self.child.id())
    }

    pub fn rss_kib(&self) -> u64 {
        crate::support::status_kib(self.child.id(), "VmRSS:")
    }

    pub fn peak_rss_kib(&self) -> u64 {
        crate::support::status_kib(self.child.id(), "VmHWM:")
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
