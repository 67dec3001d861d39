//! `GET /health` (alias `/actuator/health`): liveness plus the numbers an operator checks first;
//! `GET /health/live` and `GET /health/ready`, the probes an orchestrator asks.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::config::OnRedisDown;
use crate::state::AppState;
use crate::store::WriterStats;
use crate::upstream::Reach;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// `ok`, or `shutting_down` (with status 503) once shutdown has begun.
    pub status: &'static str,
    pub version: &'static str,
    /// The upstream model's name (`demo` for the built-in model).
    pub model: String,
    pub upstream: UpstreamHealth,
    /// `/answer` exchanges running now.
    pub exchanges_open: usize,
    /// `off` (permits are this process's own), `ok` (shared through Redis), or `degraded`
    /// (Redis cannot be reached: `cluster.on_redis_down` applies).
    pub cluster: &'static str,
    pub log_writer: WriterStats,
    pub ocr: OcrHealth,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpstreamHealth {
    /// Over every instance when the pool is shared.
    pub permits_total: usize,
    /// Held by this instance.
    pub permits_in_use: usize,
    pub permits_available: usize,
    /// Requests waiting for a permit on this instance.
    pub queue_length: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OcrHealth {
    pub engines: usize,
    pub engines_busy: usize,
    /// Worker processes started so far (they start on first use unless `ocr.preload`; more
    /// than `engines` means some were lost to errors or time limits).
    pub engines_created: usize,
    /// The OCR worker binary; each engine is one of its processes.
    pub worker_program: String,
}

/// What `/health` answers.
#[derive(utoipa::IntoResponses)]
pub enum HealthResponses {
    /// Serving
    #[response(status = 200)]
    Serving(HealthReport),
    /// Shutting down
    #[response(status = 503)]
    ShuttingDown(HealthReport),
}

/// Liveness and the main numbers: permits, queue, log writer, OCR engines.
#[utoipa::path(get, path = "/health", tag = "operations", responses(HealthResponses))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let permits = state.answers.permits();
    let draining = state.lifecycle.is_draining();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let report = HealthReport {
        status: if draining { "shutting_down" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        model: state.answers.models().default_route().name.to_string(),
        upstream: UpstreamHealth {
            permits_total: permits.capacity(),
            permits_in_use: permits.in_use(),
            permits_available: permits.available(),
            queue_length: permits.waiting(),
        },
        exchanges_open: state.answers.open(),
        cluster: permits.cluster().map_or("off", |c| c.label()),
        log_writer: state.log.stats(),
        ocr: OcrHealth {
            engines: state.ocr.pool().size(),
            engines_busy: state.ocr.pool().busy(),
            engines_created: state.ocr.pool().created(),
            worker_program: state.ocr.pool().program().display().to_string(),
        },
    };
    (status, Json(report))
}

/// The Spring-style alias of `/health`, for older monitors.
#[utoipa::path(
    get,
    path = "/actuator/health",
    tag = "operations",
    responses(HealthResponses)
)]
pub async fn actuator_health(state: State<AppState>) -> (StatusCode, Json<HealthReport>) {
    health(state).await
}

/// What `/health/live` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `true`: an answer at all means the process serves.
    pub live: bool,
}

/// 200 while the process can serve at all; an orchestrator restarts it otherwise.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process serves", body = Liveness)),
)]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { live: true })
}

/// What `/health/ready` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not: `draining`, `upstream_unreachable`, `upstream_not_checked_yet`,
    /// `cluster_unavailable` (Redis away with `cluster.on_redis_down = "reject"`).
    pub reasons: Vec<&'static str>,
    /// What the last upstream call or probe found.
    pub upstream: Reach,
    /// `ok`, or `down`: the log then waits in memory and the spill file, which is no reason to
    /// stop sending traffic.
    pub database: &'static str,
}

/// What `/health/ready` may answer.
#[derive(utoipa::IntoResponses)]
pub enum ReadinessResponses {
    /// Ready for traffic
    #[response(status = 200)]
    Ready(Readiness),
    /// Not ready: draining, or the upstream unreachable (the reasons say which)
    #[response(status = 503)]
    NotReady(Readiness),
}

/// 200 only when the instance should get traffic: not draining, the upstream answered the
/// last call or probe (`upstream.health_check_ms`), and the shared permit pool is reachable
/// unless the instance may run on a local share. A database outage does not make it unready.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(ReadinessResponses)
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut reasons = Vec::new();
    if state.lifecycle.is_draining() {
        reasons.push("draining");
    }
    let upstream = state.answers.upstream_reach();
    match upstream {
        Reach::Reachable => {}
        Reach::Unreachable => reasons.push("upstream_unreachable"),
        Reach::Unknown => reasons.push("upstream_not_checked_yet"),
    }
    let cluster = state.answers.permits().cluster();
    if cluster.is_some_and(|c| !c.is_up() && c.on_down() == OnRedisDown::Reject) {
        reasons.push("cluster_unavailable");
    }
    let database = if state.log.stats().database_ok {
        "ok"
    } else {
        "down"
    };
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        ready: reasons.is_empty(),
        reasons,
        upstream,
        database,
    };
    (status, Json(readiness))
}
