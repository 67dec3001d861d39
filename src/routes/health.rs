//! `GET /health` (alias `/actuator/health`): liveness plus the numbers an operator checks first.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let queue = &state.answer.queue;
    let draining = state.is_draining();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if draining { "shutting_down" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "model": state.answer.model_label,
        "upstream": {
            "permits_total": queue.capacity(),
            "permits_in_use": queue.in_use(),
            "permits_available": queue.available(),
            "queue_length": queue.waiting(),
        },
        "exchanges_open": state.exchanges_open(),
        "log_writer": state.log.stats(),
        "ocr": {
            "engines": state.ocr.pool().size(),
            "engines_busy": state.ocr.pool().busy(),
            "engines_created": state.ocr.pool().created(),
            "omp_thread_limit": std::env::var("OMP_THREAD_LIMIT").ok(),
        },
    });
    (status, Json(body))
}
