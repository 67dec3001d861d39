//! Several `chat-proxy` binaries sharing one permit pool and one queue through real Redis
//! (`[cluster]`), in front of one mock whose counters see every upstream request.
//!
//! Runs when `CHAT_PROXY_TEST_REDIS_URL` is set (`make test` sets it after
//! `scripts/redis-up.sh`); each test uses a pool name of its own. The test of a Redis outage
//! starts a private `redis-server` on another port, so that it can stop it.
#![expect(
    clippy::disallowed_methods,
    reason = "the tests' clients are many users at once: they spawn their own tasks"
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_proxy::demo::{MockKnobs, MockUpstream};
use chat_proxy::lifecycle::Lifecycle;
use serde_json::{Value, json};

#[path = "support/binary.rs"]
mod binary;
#[path = "support/process.rs"]
#[allow(dead_code, reason = "used through `binary`, in part")]
mod process;
use binary::{Running, chat_proxy, private_override, shipped_config, start_listening};

const TOKENS: usize = 4;

fn redis_url() -> Option<String> {
    let url = std::env::var("CHAT_PROXY_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!(
            "skipped: set CHAT_PROXY_TEST_REDIS_URL (make test does, after scripts/redis-up.sh)"
        );
    }
    url
}

/// A pool name no other test (or earlier run) uses.
fn pool_name(test: &str) -> String {
    format!("test-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// The mock every instance calls, and a runtime for the test's own requests.
struct Upstream {
    runtime: tokio::runtime::Runtime,
    mock: MockUpstream,
    _lifecycle: Lifecycle,
}

impl Upstream {
    fn start(knobs: MockKnobs) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let lifecycle = Lifecycle::new();
        let mock = runtime
            .block_on(MockUpstream::start(knobs, &lifecycle))
            .expect("mock starts");
        Self {
            runtime,
            mock,
            _lifecycle: lifecycle,
        }
    }

    fn in_flight(&self) -> usize {
        self.mock.counters().in_flight.load(Ordering::Acquire)
    }

    fn max_in_flight(&self) -> usize {
        self.mock.counters().max_in_flight.load(Ordering::Acquire)
    }
}

/// One instance: the process, its address, and its folder.
struct Instance {
    process: Running,
    addr: String,
    /// Its id among the instances, from its start-up line.
    id: String,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(upstream: &Upstream, redis_url: &str, name: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = private_override(
            dir.path(),
            &format!(
                "[upstream]\nbase_url = \"{base}\"\n[ocr]\npreload = false\npool_size = 1\n\
                 [cluster]\nredis_url = \"{redis_url}\"\nname = \"{name}\"\n{extra}",
                base = upstream.mock.base_url(),
            ),
        );
        let (process, addr, seen) = start_listening(chat_proxy(&[&shipped_config(), &config]));
        let id = seen
            .iter()
            .find_map(|line| line.split("instance=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|id| id.trim_matches('"').to_owned())
            .unwrap_or_default();
        Self {
            process,
            addr,
            id,
            _dir: dir,
        }
    }

    /// `count` instances of one pool.
    fn start_many(
        count: usize,
        upstream: &Upstream,
        redis_url: &str,
        name: &str,
        extra: &str,
    ) -> Vec<Self> {
        (0..count)
            .map(|_| Self::start(upstream, redis_url, name, extra))
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }
}

fn limits(capacity: usize, lease_ms: u64) -> String {
    format!(
        "lease_ms = {lease_ms}\n[limits]\nmax_concurrent_upstream = {capacity}\nmax_queue = 5000\nqueue_timeout_ms = 120000\n"
    )
}

/// What one request got.
#[derive(Debug)]
struct Outcome {
    status: u16,
    body: Value,
}

/// Asks through `/answer` (or, for a `/v1/chat/completions` URL, the OpenAI-compatible door);
/// the outcome's `reply` is the answer's text either way.
async fn ask(client: &reqwest::Client, url: &str, question: &str) -> Outcome {
    let openai = url.ends_with("/v1/chat/completions");
    let body = if openai {
        json!({"model": "demo", "messages": [{"role": "user", "content": question}]})
    } else {
        json!({"user_input": question, "stream": false})
    };
    let response = match client.post(url).json(&body).send().await {
        Ok(response) => response,
        // The instance is gone (the test killed it).
        Err(err) => {
            return Outcome {
                status: 0,
                body: Value::String(err.to_string()),
            };
        }
    };
    let status = response.status().as_u16();
    let mut body: Value = response.json().await.unwrap_or(Value::Null);
    if openai && status == 200 {
        body["reply"] = body["choices"][0]["message"]["content"].clone();
    }
    Outcome { status, body }
}

fn echo(question: &str) -> String {
    (0..TOKENS).map(|i| format!("{question}#{i} ")).collect()
}

/// Sends `count` requests, `concurrency` at a time, spread over `instances` in turn; returns
/// each request's question and what it got.
async fn load(urls: Vec<String>, count: usize, concurrency: usize) -> Vec<(String, Outcome)> {
    let client = reqwest::Client::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _turn = gate.acquire_owned().await.expect("gate open");
            let question = format!("q{i}-{}", uuid::Uuid::new_v4().simple());
            let outcome = ask(&client, &url, &question).await;
            (question, outcome)
        }));
    }
    let mut outcomes = Vec::with_capacity(count);
    for task in tasks {
        outcomes.push(task.await.expect("request task"));
    }
    outcomes
}

fn answer_urls(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(|i| i.url("/answer")).collect()
}

async fn health(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("health answers")
        .json()
        .await
        .expect("health JSON")
}

/// Whether every instance's `/health` says `cluster` is `state` within 8 seconds.
async fn all_say(health_urls: &[String], state: &str) -> bool {
    for _ in 0..80 {
        let mut agree = 0;
        for url in health_urls {
            agree += usize::from(health(url).await["cluster"] == state);
        }
        if agree == health_urls.len() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn pool_key(name: &str, key: &str) -> String {
    format!("chat-proxy:{{{name}}}:pool:{key}")
}

#[test]
fn three_instances_never_pass_five_upstream_requests_and_never_mix_answers() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(15),
        token_delay: Duration::from_millis(5),
        ..MockKnobs::default()
    });
    let name = pool_name("cap");
    let instances = Instance::start_many(3, &upstream, &redis, &name, &limits(5, 2000));
    // Both front doors, on every instance.
    let urls: Vec<String> = instances
        .iter()
        .flat_map(|i| [i.url("/answer"), i.url("/v1/chat/completions")])
        .collect();
    let outcomes = upstream.runtime.block_on(load(urls, 1500, 300));
    for (question, outcome) in &outcomes {
        assert_eq!(outcome.status, 200, "{question}: {:?}", outcome.body);
        assert_eq!(
            outcome.body["reply"].as_str(),
            Some(echo(question).as_str()),
            "{question} got another request's answer"
        );
    }
    let counters = upstream.mock.counters();
    assert_eq!(counters.requests.load(Ordering::Acquire), 1500);
    assert_eq!(
        upstream.max_in_flight(),
        5,
        "the upstream saw more (or never) 5 requests at once over three instances"
    );
    // Every permit and ticket went back.
    assert!(eventually(Duration::from_secs(5), || {
        redis_cli(&redis, &["HLEN", &pool_key(&name, "leases")]) == "0"
            && redis_cli(&redis, &["ZCARD", &pool_key(&name, "queue")]) == "0"
    }));
    let report = upstream
        .runtime
        .block_on(health(&instances[0].url("/health")));
    assert_eq!(report["cluster"], "ok");
    assert_eq!(report["upstream"]["permits_total"], 5);
}

#[test]
fn requests_are_served_in_order_of_arrival_whichever_instance_they_reach() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(40),
        token_delay: Duration::from_millis(10),
        record_requests: true,
        ..MockKnobs::default()
    });
    let name = pool_name("order");
    let instances = Instance::start_many(3, &upstream, &redis, &name, &limits(1, 2000));
    let urls = answer_urls(&instances);
    let questions: Vec<String> = (0..12).map(|i| format!("order-{i:02}")).collect();
    let positions = upstream.runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for (i, question) in questions.iter().enumerate() {
            let client = client.clone();
            let url = urls[i % urls.len()].clone();
            let question = question.clone();
            tasks.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&json!({"user_input": question}))
                    .send()
                    .await
                    .expect("the instance answers");
                let text = response.text().await.expect("the stream");
                let position = text
                    .split("event: queued\ndata: ")
                    .nth(1)
                    .and_then(|rest| rest.lines().next())
                    .and_then(|data| serde_json::from_str::<Value>(data).ok())
                    .and_then(|queued| queued["position"].as_u64());
                assert!(text.contains("event: done"), "{question}: {text}");
                position
            }));
            // Each arrives well after the one before.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut positions = Vec::new();
        for task in tasks {
            positions.push(task.await.expect("request task"));
        }
        positions
    });
    let served: Vec<String> = upstream
        .mock
        .requests()
        .iter()
        .filter_map(|body| {
            body["messages"]
                .as_array()?
                .iter()
                .rev()
                .find(|m| m["role"] == "user")?["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(served, questions, "served out of arrival order");
    assert_eq!(upstream.max_in_flight(), 1);
    // The first found the permit free; the others saw their place in the one queue.
    assert_eq!(positions[0], None);
    for (i, position) in positions.iter().enumerate().skip(1) {
        assert!(
            position.is_some_and(|p| p >= 1 && p <= i as u64),
            "request {i} was told position {position:?}"
        );
    }
    assert!(
        positions.iter().flatten().any(|&p| p > 1),
        "positions are global: {positions:?}"
    );
}

#[test]
fn a_killed_instance_gives_its_permits_back_within_a_lease() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(100),
        token_delay: Duration::from_millis(50),
        ..MockKnobs::default()
    });
    let name = pool_name("kill");
    let lease_ms = 2000;
    let mut instances = Instance::start_many(3, &upstream, &redis, &name, &limits(5, lease_ms));
    let survivors = vec![instances[0].url("/answer"), instances[1].url("/answer")];
    let victim = instances[2].url("/answer");
    let leases = pool_key(&name, "leases");
    let victim_id = instances[2].id.clone();
    assert!(
        !victim_id.is_empty(),
        "the start-up line names the instance"
    );
    let victim_holds = || {
        redis_cli(&redis, &["HVALS", &leases])
            .lines()
            .any(|owner| owner == victim_id)
    };
    upstream.runtime.block_on(async {
        // The victim takes permits and queues work of its own.
        let doomed = tokio::spawn(load(vec![victim], 40, 40));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let survivors_load = tokio::spawn(load(survivors, 120, 30));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(victim_holds(), "the victim holds permits when it is killed");
        instances[2].kill();
        // Its leases come back within a lease (plus one renewal tick of the survivors).
        let limit = Duration::from_millis(lease_ms + 1500);
        assert!(
            eventually_async(limit, || !victim_holds()).await,
            "the dead instance's leases were not taken back within {limit:?}"
        );
        let victim_outcomes = doomed.await.expect("victim load");
        assert!(
            victim_outcomes.iter().any(|(_, o)| o.status == 0),
            "the killed instance's clients lost their connections"
        );
        for (question, outcome) in survivors_load.await.expect("survivor load") {
            assert_eq!(outcome.status, 200, "{question}: {:?}", outcome.body);
            assert_eq!(
                outcome.body["reply"].as_str(),
                Some(echo(&question).as_str())
            );
        }
    });
    assert!(
        upstream.max_in_flight() <= 5,
        "a crash let more than 5 requests through: {}",
        upstream.max_in_flight()
    );
    // The survivors finished everything, so the pool is empty again: the dead instance's
    // tickets went too.
    assert!(eventually(Duration::from_secs(5), || {
        redis_cli(&redis, &["HLEN", &leases]) == "0"
            && redis_cli(&redis, &["ZCARD", &pool_key(&name, "queue")]) == "0"
    }));
}

#[test]
fn a_client_that_leaves_the_queue_leaves_the_global_queue() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(1500),
        ..MockKnobs::default()
    });
    let name = pool_name("leave");
    let a = Instance::start(&upstream, &redis, &name, &limits(1, 2000));
    let b = Instance::start(&upstream, &redis, &name, &limits(1, 2000));
    let queue = pool_key(&name, "queue");
    upstream.runtime.block_on(async {
        let client = reqwest::Client::new();
        let holder = tokio::spawn(ask_owned(client.clone(), a.url("/answer"), "holder".into()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Queued on the other instance, then gone.
        let leaver = client
            .post(b.url("/answer"))
            .json(&json!({"user_input": "leaver"}))
            .send()
            .await
            .expect("queued stream starts");
        let mut leaver = leaver;
        let first = leaver.chunk().await.expect("a first chunk");
        assert!(first.is_some());
        assert!(
            eventually_async(Duration::from_secs(5), || {
                redis_cli(&redis, &["ZCARD", &queue]) == "1"
            })
            .await
        );
        drop(leaver);
        assert!(
            eventually_async(Duration::from_secs(5), || {
                redis_cli(&redis, &["ZCARD", &queue]) == "0"
            })
            .await,
            "the ticket stayed in the global queue"
        );
        let held = holder.await.expect("holder");
        assert_eq!(held.status, 200);
    });
    assert_eq!(
        upstream.mock.counters().requests.load(Ordering::Acquire),
        1,
        "the client that left never reached the upstream"
    );
}

async fn ask_owned(client: reqwest::Client, url: String, question: String) -> Outcome {
    ask(&client, &url, &question).await
}

/// [`eventually`] inside the runtime, for at most `limit`.
async fn eventually_async(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A private Redis on a port of its own, which the test may stop and start again.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a: SocketAddr| a.port())
            .expect("a free port");
        let mut redis = Self { port, child: None };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--port")
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/deps.sh test installs it)");
        self.child = Some(child);
        let url = self.url();
        assert!(
            eventually(Duration::from_secs(5), || redis_cli(&url, &["PING"])
                == "PONG"),
            "the private Redis answers"
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn redis_stopped_mid_load_runs_on_local_shares_then_back_to_exactly_five() {
    if redis_url().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(20),
        token_delay: Duration::from_millis(20),
        ..MockKnobs::default()
    });
    let name = pool_name("outage");
    let config = format!(
        "on_redis_down = \"local\"\nlocal_share = 1\n{}",
        limits(5, 2000)
    );
    let instances = Instance::start_many(3, &upstream, &redis.url(), &name, &config);
    let urls = answer_urls(&instances);
    let health_urls: Vec<String> = instances.iter().map(|i| i.url("/health")).collect();
    let statuses = Arc::new(AtomicUsize::new(0));
    upstream.runtime.block_on(async {
        let running = tokio::spawn(load(urls.clone(), 600, 60));
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.stop();
        let stopped = Instant::now();
        // Degraded: each instance says so, and keeps answering on its local share.
        assert!(
            all_say(&health_urls, "degraded").await,
            "every instance noticed Redis was gone"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Past the shared leases' end: only the local shares run now.
        upstream
            .mock
            .counters()
            .max_in_flight
            .store(upstream.in_flight(), Ordering::Release);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            upstream.max_in_flight() <= 3,
            "three instances on one local permit each: {}",
            upstream.max_in_flight()
        );
        // Down for 5 seconds in all.
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed())).await;
        redis.resume();
        assert!(
            all_say(&health_urls, "ok").await,
            "every instance is back on the shared pool"
        );
        for (question, outcome) in running.await.expect("load") {
            // An answer that was running on a shared lease when Redis went away ends with an
            // explicit error; every other one completes.
            if outcome.status != 200 {
                assert_eq!(outcome.body["error"]["code"], "permit_lost", "{question}");
                statuses.fetch_add(1, Ordering::AcqRel);
            } else {
                assert_eq!(
                    outcome.body["reply"].as_str(),
                    Some(echo(&question).as_str())
                );
            }
        }
        // Back to exactly five, over all three.
        upstream
            .mock
            .counters()
            .max_in_flight
            .store(upstream.in_flight(), Ordering::Release);
        for (question, outcome) in load(urls.clone(), 400, 60).await {
            assert_eq!(outcome.status, 200, "{question}: {:?}", outcome.body);
        }
    });
    assert_eq!(upstream.max_in_flight(), 5, "back to the shared five");
    // Nothing leaked through the outage: every lease went back.
    let leases = pool_key(&name, "leases");
    assert!(
        eventually(Duration::from_secs(5), || redis_cli(
            &redis.url(),
            &["HLEN", &leases]
        ) == "0"),
        "leases left: {}",
        redis_cli(&redis.url(), &["HGETALL", &leases])
    );
    assert!(
        statuses.load(Ordering::Acquire) <= 5,
        "at most the five shared requests were cut"
    );
}

#[test]
fn with_reject_a_redis_outage_refuses_answers_and_readiness_until_it_is_back() {
    if redis_url().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        ..MockKnobs::default()
    });
    let name = pool_name("reject");
    let config = format!("on_redis_down = \"reject\"\n{}", limits(5, 2000));
    let instance = Instance::start(&upstream, &redis.url(), &name, &config);
    upstream.runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = instance.url("/answer");
        assert_eq!(ask(&client, &url, "before").await.status, 200);
        redis.stop();
        let refused = ask(&client, &url, "during").await;
        assert_eq!(refused.status, 503, "{:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "cluster_unavailable");
        let ready = reqwest::get(instance.url("/health/ready"))
            .await
            .expect("ready answers");
        assert_eq!(ready.status(), 503);
        let ready: Value = ready.json().await.expect("JSON");
        assert!(
            ready["reasons"]
                .as_array()
                .expect("reasons")
                .contains(&json!("cluster_unavailable")),
            "{ready}"
        );
        let metrics = client
            .get(instance.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("chat_proxy_cluster_up 0"), "{metrics}");
        redis.resume();
        let mut answered = None;
        for _ in 0..60 {
            let outcome = ask(&client, &url, "after").await;
            if outcome.status == 200 {
                answered = Some(outcome);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let answered = answered.expect("answers again once Redis is back");
        assert_eq!(
            answered.body["reply"].as_str(),
            Some(echo("after").as_str())
        );
        assert_eq!(health(&instance.url("/health")).await["cluster"], "ok");
    });
}

#[test]
fn an_unreachable_redis_at_start_up_is_an_error_with_reject_and_a_degraded_start_with_local() {
    if redis_url().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let dir = tempfile::tempdir().expect("temp dir");
    let nowhere = format!("redis://127.0.0.1:{port}/0");
    let reject = private_override(
        dir.path(),
        &format!(
            "[ocr]\npreload = false\n[cluster]\nredis_url = \"{nowhere}\"\non_redis_down = \"reject\"\n"
        ),
    );
    let output = chat_proxy(&[&shipped_config(), &reject])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach Redis") && stderr.contains(&nowhere),
        "{stderr}"
    );

    let bad = private_override(
        dir.path(),
        "[ocr]\npreload = false\n[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n",
    );
    let output = chat_proxy(&[&shipped_config(), &bad])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster.redis_url"), "{stderr}");

    let local = private_override(
        dir.path(),
        &format!("[ocr]\npreload = false\n[cluster]\nredis_url = \"{nowhere}\"\n"),
    );
    let (_running, addr, seen) = start_listening(chat_proxy(&[&shipped_config(), &local]));
    assert!(
        seen.iter().any(|line| line.contains("cluster degraded")),
        "{seen:?}"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let report = health(&format!("http://{addr}/health")).await;
        assert_eq!(report["cluster"], "degraded");
        let client = reqwest::Client::new();
        let outcome = ask(&client, &format!("http://{addr}/answer"), "degraded").await;
        assert_eq!(outcome.status, 200, "{:?}", outcome.body);
    });
}

#[test]
fn per_client_limits_count_over_every_instance() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(TOKENS),
        first_chunk_delay: Duration::from_millis(800),
        ..MockKnobs::default()
    });
    let name = pool_name("clients");
    // No keys: the client is its address, 127.0.0.1, whichever instance it calls.
    let config = format!(
        "{}per_key_max_concurrent = 2\nper_key_requests_per_minute = 6\nper_key_burst = 3\n",
        limits(5, 2000)
    );
    let a = Instance::start(&upstream, &redis, &name, &config);
    let b = Instance::start(&upstream, &redis, &name, &config);
    upstream.runtime.block_on(async {
        let client = reqwest::Client::new();
        let first = tokio::spawn(ask_owned(client.clone(), a.url("/answer"), "one".into()));
        let second = tokio::spawn(ask_owned(client.clone(), b.url("/answer"), "two".into()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Two open, one on each instance: a third is refused on either.
        let third = ask(&client, &a.url("/answer"), "three").await;
        assert_eq!(third.status, 429, "{:?}", third.body);
        assert_eq!(third.body["error"]["code"], "client_concurrency_limit");
        for done in [first, second] {
            assert_eq!(done.await.expect("answer").status, 200);
        }
        // An answer is counted off its client with one Redis call after its last event.
        let open = format!("chat-proxy:{{{name}}}:client:127.0.0.1:open");
        assert!(
            eventually_async(Duration::from_secs(5), || {
                redis_cli(&redis, &["HLEN", &open]) == "0"
            })
            .await
        );
        // Two tokens of the bucket of three are spent, one more is left over both.
        assert_eq!(ask(&client, &b.url("/answer"), "four").await.status, 200);
        let fifth = client
            .post(a.url("/answer"))
            .json(&json!({"user_input": "five", "stream": false}))
            .send()
            .await
            .expect("answers");
        assert_eq!(fifth.status(), 429);
        assert!(fifth.headers().contains_key("retry-after"));
        let body: Value = fifth.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "client_rate_limit");
    });
    // The refused ones never counted: nothing is open.
    let open = format!("chat-proxy:{{{name}}}:client:127.0.0.1:open");
    assert!(eventually(Duration::from_secs(5), || {
        redis_cli(&redis, &["HLEN", &open]) == "0"
    }));
}

#[test]
fn an_answer_whose_lease_cannot_be_renewed_ends_with_an_error_before_it_expires() {
    if redis_url().is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let upstream = Upstream::start(MockKnobs {
        tokens: Some(40),
        token_delay: Duration::from_millis(150),
        ..MockKnobs::default()
    });
    let name = pool_name("lost");
    let lease_ms = 2000;
    let instance = Instance::start(&upstream, &redis.url(), &name, &limits(5, lease_ms));
    upstream.runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(instance.url("/answer"))
            .json(&json!({"user_input": "long"}))
            .send()
            .await
            .expect("the stream starts");
        let mut response = response;
        let mut text = String::new();
        while !text.contains("event: delta") {
            let chunk = response.chunk().await.expect("read").expect("more");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        redis.stop();
        let stopped = Instant::now();
        while let Some(chunk) = response.chunk().await.expect("read") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let ended_after = stopped.elapsed();
        assert!(text.contains("event: error"), "{text}");
        assert!(text.contains("\"code\":\"permit_lost\""), "{text}");
        assert!(!text.contains("event: done"));
        // Before the lease it held could have gone to another instance.
        assert!(
            ended_after < Duration::from_millis(lease_ms),
            "ended {ended_after:?} after Redis stopped"
        );
    });
    assert!(eventually(Duration::from_secs(5), || upstream.in_flight() == 0));
    assert_eq!(upstream.mock.counters().aborted.load(Ordering::Acquire), 1);
}
