//! Builds the application from a [`Config`] and runs it until SIGTERM/SIGINT (or any future the
//! caller chooses, which is how tests stop it), then shuts down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::answer::tools::ToolBox;
use crate::answer::{AnswerContext, AnswerService, BacklogLimits, BufferBudget, ModelCatalog};
use crate::auth::ClientKeys;
use crate::client_limits::ClientLimits;
use crate::cluster::SharedPool;
use crate::config::{Config, ms};
use crate::demo::{MockKnobs, MockUpstream};
use crate::lifecycle::Lifecycle;
use crate::metrics::{AnswerMetrics, Metrics};
use crate::ocr::OcrService;
use crate::ocr::http_jobs::{JobLimits, OcrJobs};
use crate::permit_pool::PermitPool;
use crate::prompts::Prompts;
use crate::routes;
use crate::serve::{ConnectionLimits, serve};
use crate::state::{AppState, Shared};
use crate::store::{Database, LogWriter};
use crate::upstream::UpstreamClient;

/// After streams were told to end, how long clients get to close their connections.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    demo: Option<MockUpstream>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        // Templates first: a broken prompt stops start-up before anything else is started.
        let prompts = Prompts::load(&config.prompts.dir).context("loading the prompt templates")?;
        let lifecycle = Lifecycle::new();
        let (base_url, demo) = if config.upstream.is_demo() {
            let demo = MockUpstream::start(
                MockKnobs {
                    first_chunk_delay: ms(config.demo.first_chunk_delay_ms),
                    token_delay: ms(config.demo.token_delay_ms),
                    ..MockKnobs::default()
                },
                &lifecycle,
            )
            .await
            .context("starting the offline demo model")?;
            tracing::info!(
                base_url = %demo.base_url(),
                "upstream: built-in offline demo model (model `demo`); set upstream.base_url for a real one"
            );
            (demo.base_url(), Some(demo))
        } else {
            tracing::info!(
                base_url = %config.upstream.base_url,
                model = %config.upstream.model,
                "upstream: OpenAI-compatible API"
            );
            (config.upstream.base_url.clone(), None)
        };
        let api_key = read_api_key(&config, demo.is_some());
        // The demo model speaks h2c, so its streams share one connection.
        let http2 = config.upstream.http2_prior_knowledge || demo.is_some();
        let upstream = UpstreamClient::new(&config.upstream, &base_url, api_key, http2)?;
        // A service, not work: it ends when shutdown begins and holds nothing up.
        lifecycle.spawn_service(upstream.probe(
            ms(config.upstream.health_check_ms),
            lifecycle.draining().clone(),
        ));
        let permits = if config.cluster.enabled() {
            PermitPool::Shared(
                SharedPool::start(
                    &config.cluster,
                    config.limits.max_concurrent_upstream,
                    config.limits.max_queue,
                    ms(config.limits.queue_timeout_ms),
                    &lifecycle,
                )
                .await?,
            )
        } else {
            PermitPool::local(
                config.limits.max_concurrent_upstream,
                config.limits.max_queue,
                ms(config.limits.queue_timeout_ms),
            )
        };
        let database = Database::connect_lazy(&config.database).context("opening the database")?;
        tracing::info!(
            database = %Database::describe(&config.database.url),
            spill = %config.writer.spill_path.display(),
            "logging exchanges to the database in the background"
        );
        let log =
            LogWriter::start(database.clone(), &config.writer, &lifecycle).with_context(|| {
                format!(
                    "opening the spill file {}",
                    config.writer.spill_path.display()
                )
            })?;
        let ocr = Arc::new(OcrService::new(Arc::new(config.ocr.clone()), &lifecycle)?);
        if config.ocr.preload {
            ocr.pool()
                .preload()
                .await
                .context("starting the OCR workers")?;
        }
        tracing::info!(
            languages = %config.ocr.languages,
            engines = ocr.pool().size(),
            preloaded = config.ocr.preload,
            worker = %ocr.pool().program().display(),
            "OCR ready"
        );
        let tools = config.tools.enabled.then(|| {
            Arc::new(ToolBox::new(
                ocr.clone(),
                log.clone(),
                prompts,
                &config.ocr.default_url_type,
                &config.tools,
            ))
        });
        let answer = AnswerContext {
            upstream: Arc::new(upstream),
            permits,
            stop_streams: lifecycle.stop_streams().clone(),
            tools,
            metrics: AnswerMetrics::default(),
            buffers: BufferBudget::new(BacklogLimits {
                per_exchange: config.limits.max_buffered_answer_bytes,
                total: config.limits.max_buffered_answer_bytes_total,
                write_timeout: ms(config.server.client_write_timeout_ms),
            }),
        };
        let metrics = Arc::new(Metrics::new(&answer.metrics, ocr.metrics()));
        let client_keys = ClientKeys::load(&config.auth, config.bind_addr())?;
        tracing::info!(keys = client_keys.required(), "client API keys");
        let client_limits = match &answer.permits {
            PermitPool::Shared(pool) => ClientLimits::new(&config.limits).shared(pool.clone()),
            PermitPool::Local(_) => ClientLimits::new(&config.limits),
        };
        let answers = AnswerService::new(
            answer,
            ModelCatalog::new(&config.upstream),
            client_limits,
            lifecycle.clone(),
            log.clone(),
            config.log.user_text,
        );
        let state = AppState::new(Shared {
            config: config.clone(),
            answers: Arc::new(answers),
            lifecycle,
            log,
            database,
            ocr,
            jobs: Arc::new(OcrJobs::new(JobLimits {
                per_client: config.ocr.max_pending_items_per_key,
                total: config.ocr.max_pending_items,
            })),
            client_keys,
            metrics,
        });
        let listener = TcpListener::bind(config.bind_addr())
            .await
            .with_context(|| format!("binding server.bind = {}", config.server.bind))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            listener,
            addr,
            state,
            demo,
        })
    }

    /// The real bound address (`server.bind` may ask for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then: stop accepting, let streams run on for
    /// `server.shutdown_grace_ms`, end the rest with an `error` event, and wait for every task.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            addr,
            state,
            demo,
        } = self;
        tracing::info!("listening on {addr}");
        let lifecycle = state.lifecycle.clone();
        let signalled = CancellationToken::new();
        let grace = ms(state.config.server.shutdown_grace_ms);
        // The shutdown sequence up to the end of the grace period: stop accepting, refuse new
        // work, let streams run on, then end the rest. Fused: it is polled beside the server, then
        // beside the wait for the last tasks, and must not run twice.
        let mut stopping = pin!(
            async {
                shutdown.await;
                signalled.cancel();
                lifecycle.begin_draining();
                tracing::info!(
                    open = state.answers.open(),
                    grace_ms = grace.as_millis() as u64,
                    "shutting down: no new requests; streams in flight may finish"
                );
                tokio::time::sleep(grace).await;
                if state.answers.open() > 0 {
                    tracing::warn!(
                        open = state.answers.open(),
                        "grace period over; ending open streams"
                    );
                }
                lifecycle.stop_streams().cancel();
            }
            .fuse()
        );
        let limits = ConnectionLimits {
            header_read_timeout: ms(state.config.server.header_read_timeout_ms),
            idle_timeout: ms(state.config.server.idle_timeout_ms),
            // A backstop behind `client_too_slow`: the connection of a client that never reads
            // again is closed, and what was waiting for it freed.
            write_timeout: 2 * ms(state.config.server.client_write_timeout_ms),
        };
        let server = serve(
            listener,
            routes::router(state.clone()),
            limits,
            signalled.clone(),
        );
        tokio::select! {
            () = server => {}
            () = async {
                (&mut stopping).await;
                tokio::time::sleep(CLOSE_WAIT).await;
            } => tracing::warn!("connections still open after the grace period; closing them"),
        }
        // Every connection is closed. Work that is not a stream (OCR jobs) may still run: the
        // grace period goes on for it, and then it is told to stop too.
        let mut work_done = pin!(lifecycle.wait_for_tasks());
        tokio::select! {
            () = &mut work_done => {}
            () = &mut stopping => work_done.await,
        }
        // Every exchange has handed over its record and its permit.
        state.answers.permits().close();
        state.log.shutdown().await;
        if let Some(demo) = demo {
            demo.stop();
        }
        if tokio::time::timeout(CLOSE_WAIT, lifecycle.wait_for_services())
            .await
            .is_err()
        {
            tracing::warn!("a background service did not stop in time; leaving it");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn read_api_key(config: &Config, demo: bool) -> Option<SecretString> {
    let name = &config.upstream.api_key_env;
    let key = std::env::var(name).ok().filter(|k| !k.trim().is_empty());
    if key.is_none() && !demo {
        tracing::warn!(env = %name, "no upstream API key in the environment; sending requests without one");
    }
    key.map(SecretString::from)
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed now, before `listening on` is
/// logged: a signal sent the moment the server says it listens is a clean shutdown, not the
/// default action (the process killed without draining).
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())
        .inspect_err(|err| tracing::error!(error = %err, "cannot listen for SIGINT"))
        .ok();
    let mut terminate = signal(SignalKind::terminate())
        .inspect_err(|err| tracing::error!(error = %err, "cannot listen for SIGTERM"))
        .ok();
    async move {
        let interrupted = async {
            match &mut interrupt {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let terminated = async {
            match &mut terminate {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupted => tracing::info!("received SIGINT"),
            _ = terminated => tracing::info!("received SIGTERM"),
        }
    }
}
