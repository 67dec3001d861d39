//! The `chat-proxy` binary as an operator runs it: layered config files, a bad key stopping
//! start-up with its name, the `listening on` line, SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/binary.rs"]
mod binary;
#[path = "support/eventually.rs"]
mod eventually;
#[path = "support/process.rs"]
mod process;
use binary::{
    Running, block_on, chat_proxy, children_of, override_file, private_override, shipped_config,
    start_listening,
};
use eventually::eventually;
use process::is_running;

#[test]
fn a_bad_value_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = override_file(dir.path(), "[limits]\nmax_queue = \"lots\"\n");
    let output = chat_proxy(&[&shipped_config(), &bad])
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("limits.max_queue"), "{stderr}");

    let output = chat_proxy(&[&shipped_config()])
        .env("CHAT_PROXY__LIMITS__MAX_CONCURRENT_UPSTREAM", "0")
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("limits.max_concurrent_upstream"),
        "{stderr}"
    );
}

#[test]
fn runs_on_the_shipped_config_logs_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(dir.path(), "");
    let mut command = chat_proxy(&[&shipped_config(), &local]);
    command.env("CHAT_PROXY__LOG__FORMAT", "text");
    let (mut running, addr, seen) = start_listening(command);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    assert!(
        seen.iter().any(|l| l.contains("demo")),
        "start-up names the demo model: {seen:?}"
    );

    let health = Command::new("curl")
        .args(["-sf", &format!("http://{addr}/health")])
        .output()
        .expect("curl runs");
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"status\":\"ok\""));

    let pid = running.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = block_on(eventually(
        "the server to stop on SIGTERM",
        Duration::from_secs(20),
        async || running.0.try_wait().expect("wait").ok_or("still running"),
    ));
    assert!(status.success(), "exit status {status}");
}

/// The soft and hard limits on open files of process `pid`, from `/proc`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open files line");
    let mut numbers = line.split_whitespace().skip(3);
    let soft = numbers.next().expect("soft").to_owned();
    (soft, numbers.next().expect("hard").to_owned())
}

#[test]
fn the_open_files_soft_limit_is_raised_to_the_hard_limit_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(dir.path(), "");
    // Started as a shell with a low soft limit would start it.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --config \"$1\" --config \"$2\"")
        .arg(env!("CARGO_BIN_EXE_chat-proxy"))
        .arg(shipped_config())
        .arg(&local)
        .env_remove("RUST_LOG");
    let (running, _, seen) = start_listening(command);
    let (soft, hard) = open_files_limits(running.0.id());
    assert_eq!(soft, hard, "raised to the hard limit");
    assert_ne!(soft, "256");
    assert!(
        seen.iter().any(|l| l.contains("open files limit raised")),
        "{seen:?}"
    );
}

#[test]
fn tesseract_runs_in_worker_processes_that_end_with_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(dir.path(), "[ocr]\npreload = true\npool_size = 2\n");
    let mut command = chat_proxy(&[&shipped_config(), &local]);
    command.env_remove("OMP_THREAD_LIMIT");
    let (mut running, _, _) = start_listening(command);
    let server = running.0.id();
    let workers = children_of(server);
    assert_eq!(workers.len(), 2, "one process per engine: {workers:?}");
    let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        !maps(server).contains("libtesseract"),
        "the server does not load libtesseract"
    );
    for &worker in &workers {
        assert!(maps(worker).contains("libtesseract"), "worker {worker}");
        let environ = std::fs::read(format!("/proc/{worker}/environ")).expect("environ");
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|var| var == b"OMP_THREAD_LIMIT=1"),
            "OMP_THREAD_LIMIT=1 is set before libtesseract loads in worker {worker}"
        );
    }
    // Even a server killed outright leaves no worker behind: their stdin closes.
    running.0.kill().expect("kill -9");
    running.0.wait().expect("reaped");
    block_on(eventually(
        "the workers to end with the server",
        Duration::from_secs(10),
        async || {
            let running: Vec<_> = workers.iter().filter(|pid| is_running(**pid)).collect();
            if running.is_empty() {
                Ok(())
            } else {
                Err(running)
            }
        },
    ));
}

#[test]
fn a_missing_or_broken_prompt_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prompts = dir.path().join("prompts");
    std::fs::create_dir(&prompts).expect("mkdir");
    std::fs::write(prompts.join("system.txt"), "Today is {{dat}}.").expect("write");
    let local = override_file(
        dir.path(),
        &format!(
            "[prompts]\ndir = \"{}\"\n[ocr]\npreload = false\n",
            prompts.display()
        ),
    );
    let output = chat_proxy(&[&shipped_config(), &local])
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("system.txt") && stderr.contains("dat"),
        "{stderr}"
    );

    std::fs::write(prompts.join("system.txt"), "Today is {{date}}.").expect("write");
    let output = chat_proxy(&[&shipped_config(), &local])
        .output()
        .expect("binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ocr_tool.txt"),
        "the missing template is named: {stderr}"
    );
}

#[test]
fn client_keys_come_from_the_environment_and_open_public_binds_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = private_override(dir.path(), "[ocr]\npreload = false\n");
    let mut command = chat_proxy(&[&shipped_config(), &local]);
    command.env(
        "CHAT_PROXY_CLIENT_KEYS",
        "env-key-0123456789abcd, other-key-0123456789",
    );
    let (_running, addr, _) = start_listening(command);
    let status = |key: Option<&str>| curl_answer(&addr, key, None, "hi");
    assert_eq!(status(None), "401");
    assert_eq!(status(Some("env-key-0123456789abcd")), "200");
    assert_eq!(status(Some("other-key-0123456789")), "200");

    let public = override_file(
        dir.path(),
        "[server]\nbind = \"0.0.0.0:0\"\n[ocr]\npreload = false\n",
    );
    let output = chat_proxy(&[&shipped_config(), &public])
        .env_remove("CHAT_PROXY_CLIENT_KEYS")
        .output()
        .expect("binary runs");
    assert!(!output.status.success(), "an open public bind is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.keys"));
}

/// Sends one non-streamed `/answer` with curl, with the key and request id if given, and
/// returns the HTTP status.
fn curl_answer(addr: &str, key: Option<&str>, request_id: Option<&str>, question: &str) -> String {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    if let Some(key) = key {
        curl.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    if let Some(request_id) = request_id {
        curl.args(["-H", &format!("x-request-id: {request_id}")]);
    }
    let body = format!(r#"{{"user_input":"{question}","stream":false}}"#);
    let output = curl
        .args(["-d", &body, &format!("http://{addr}/answer")])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The JSON log line that ends the exchange `request_id`.
fn finished_line(running: &Running, request_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = running
            .1
            .recv_timeout(left)
            .expect("an `answer finished` line");
        let json: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log.format = json gives JSON lines ({e}): {line}"));
        if json["fields"]["message"] == "answer finished"
            && json["fields"]["request_id"] == request_id
        {
            return json;
        }
    }
}

#[test]
fn json_logs_carry_the_request_span_and_user_text_only_when_allowed() {
    const KEY: &str = "log-test-key-0123456789";
    const QUESTION: &str = "my private question 9137";
    for user_text in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = private_override(
            dir.path(),
            &format!("[ocr]\npreload = false\n[log]\nformat = \"json\"\nuser_text = {user_text}\n"),
        );
        let mut command = chat_proxy(&[&shipped_config(), &local]);
        command.env("CHAT_PROXY_CLIENT_KEYS", KEY);
        let (running, addr, _) = start_listening(command);
        let request_id = format!("log-test-{user_text}");
        assert_eq!(
            curl_answer(&addr, Some(KEY), Some(&request_id), QUESTION),
            "200"
        );
        let line = finished_line(&running, &request_id);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["name"], "request", "{line}");
        assert_eq!(line["span"]["request_id"], request_id.as_str(), "{line}");
        assert_eq!(line["fields"]["status"], "ok");
        let text = line.to_string();
        assert!(
            !text.contains(KEY),
            "the client key is never logged: {text}"
        );
        if user_text {
            assert_eq!(line["fields"]["question"], QUESTION, "{line}");
            assert!(
                line["fields"]["reply"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty())
            );
        } else {
            assert!(
                !text.contains("9137"),
                "no user text unless allowed: {text}"
            );
            assert!(line["fields"].get("reply").is_none(), "{line}");
        }
    }
}
