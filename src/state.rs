//! The handles every handler shares, cheap to clone. Nothing here does work of its own.

use std::ops::Deref;
use std::sync::Arc;

use crate::answer::AnswerService;
use crate::auth::ClientKeys;
use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::ocr::OcrService;
use crate::ocr::http_jobs::OcrJobs;
use crate::store::{Database, LogWriter};

/// Cloned for every request (axum's `State`, each middleware), so it is one `Arc`: a clone is
/// one atomic increment however many handles it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every clone of [`AppState`] points to.
pub struct Shared {
    /// Settings as loaded at start-up.
    pub config: Arc<Config>,
    /// Admits answers and owns each exchange to its log record.
    pub answers: Arc<AnswerService>,
    /// The task tracker, the draining flag and the stop signal shutdown goes through.
    pub lifecycle: Lifecycle,
    /// Hands log records to the background writer; never waits for the database.
    pub log: LogWriter,
    /// Reads (and corrections) that must see the database itself.
    pub database: Database,
    /// The OCR pipeline and its engine pool.
    pub ocr: Arc<OcrService>,
    /// Batch OCR jobs in progress and recently finished.
    pub jobs: Arc<OcrJobs>,
    /// The client API keys every route but `/health` checks.
    pub client_keys: ClientKeys,
    /// The `/metrics` registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}
