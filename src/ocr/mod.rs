//! The OCR pipeline: [`fetch`] the image safely (behind the [`ssrf`] guard), [`prepare`] it,
//! recognise it in a pooled Tesseract [`worker`] process (the [`pool`]), and [`extract`] the
//! funds. [`OcrService`] runs the whole of it and hands every result to the log writer. Two ways
//! to run many images: [`http_jobs`] (`POST /ocr/jobs`) and [`dir_command`] (`chat-proxy ocr-dir`).

pub mod data_url;
pub mod dir_command;
pub mod extract;
pub mod fetch;
pub mod http_jobs;
pub mod owner;
pub mod pool;
pub mod prepare;
pub mod slots;
pub mod ssrf;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{OcrConfig, ms};
use crate::lifecycle::Lifecycle;
use crate::metrics::OcrMetrics;
use crate::store::{LogWriter, OcrResultRecord};

pub use extract::Fund;
pub use fetch::{ImageFetcher, UrlType};
pub use owner::{Access, Requester};
pub use pool::EnginePool;
pub use slots::{PageSlots, Priority};
pub use worker::WorkerCommand;

/// Results kept in memory for `GET /ocr/{id}` before (and after) their row is written.
const RECENT_RESULTS: usize = 1_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OcrError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("downloading the image failed: {0}")]
    Download(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the image has too many pixels: {0}")]
    TooManyPixels(String),
    #[error("not a readable image: {0}")]
    Undecodable(String),
    #[error("OCR engine: {0}")]
    Engine(String),
    #[error("the recognition took longer than {0} ms")]
    Timeout(u64),
}

impl OcrError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Forbidden(_) => "image_url_not_allowed",
            Self::NotFound(_) => "image_not_found",
            Self::Download(_) => "image_download_failed",
            Self::TooLarge(_) => "image_too_large",
            Self::TooManyPixels(_) => "image_too_many_pixels",
            Self::Undecodable(_) => "image_undecodable",
            Self::Engine(_) => "ocr_failed",
            Self::Timeout(_) => "ocr_timeout",
        }
    }
}

/// Where the image for one recognition comes from.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub url_type: UrlType,
    /// The URL or local path; for uploads, the file name.
    pub image_url: String,
    /// The bytes of an upload.
    pub upload: Option<Bytes>,
}

/// What a recognition found: the body of `POST /ocr`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OcrResult {
    pub id: String,
    pub data: OcrData,
    pub elapsed_ms: u64,
    #[serde(skip)]
    pub image_url: String,
    #[serde(skip)]
    pub url_type: UrlType,
    #[serde(skip)]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OcrData {
    /// The first fund's code (what older clients read).
    pub fund_code: Option<String>,
    /// The first fund's held shares.
    pub hold_share: Option<String>,
    pub funds: Vec<Fund>,
    pub text: String,
}

/// The OCR pipeline with its engine pool; shared by the endpoints, the batch jobs and the
/// `ocr-dir` command. It does not log: each caller stores the [`Recognition::record`] its own
/// way (the background writer, or a direct INSERT when a file waits on it).
pub struct OcrService {
    config: Arc<OcrConfig>,
    fetcher: ImageFetcher,
    pool: EnginePool,
    /// One per engine: what bounds the memory of images being decoded and recognised.
    slots: PageSlots,
    recent: Mutex<Recent>,
    metrics: OcrMetrics,
}

/// A recognition's outcome and the `ocr_results` row that records it, success or not.
pub struct Recognition {
    pub outcome: Result<OcrResult, OcrError>,
    pub record: OcrResultRecord,
}

#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    /// Each result with the key id that made it.
    by_id: HashMap<String, (Option<String>, OcrResult)>,
}

impl OcrService {
    /// Recognitions run as work of `lifecycle`.
    pub fn new(config: Arc<OcrConfig>, lifecycle: &Lifecycle) -> anyhow::Result<Self> {
        let worker = WorkerCommand::new(&config.worker_program, &config.languages);
        worker
            .check()
            .map_err(|e| anyhow::anyhow!("ocr.worker_program: the OCR worker binary {e}"))?;
        Ok(Self {
            fetcher: ImageFetcher::new(config.clone())?,
            pool: EnginePool::new(
                worker,
                config.engines(),
                config.timeout_ms,
                lifecycle.clone(),
            ),
            slots: PageSlots::new(config.engines()),
            config,
            recent: Mutex::new(Recent::default()),
            metrics: OcrMetrics::default(),
        })
    }

    pub fn pool(&self) -> &EnginePool {
        &self.pool
    }

    /// Run times by outcome, for `/metrics`.
    pub fn metrics(&self) -> &OcrMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &OcrConfig {
        &self.config
    }

    /// Fetches, recognises and extracts, within `ocr.timeout_ms`, and hands the record to the
    /// log writer either way.
    pub async fn recognize_logged(
        &self,
        log: &LogWriter,
        requester: Requester<'_>,
        image: ImageRequest,
    ) -> Result<OcrResult, OcrError> {
        let recognition = self.recognize(requester, image).await;
        log.submit(recognition.record);
        recognition.outcome
    }

    /// Fetches, recognises and extracts, within `ocr.timeout_ms`.
    pub async fn recognize(&self, requester: Requester<'_>, image: ImageRequest) -> Recognition {
        let started = Instant::now();
        let created_at = Utc::now();
        // Time-ordered, like request ids: `ocr_results.ocr_id` is a unique index.
        let id = uuid::Uuid::now_v7().to_string();
        let limit = self.config.timeout_ms;
        let deadline = tokio::time::Instant::now() + ms(limit);
        let mut fetch_ms = None;
        let mut ocr_ms = None;
        let run = self.run(
            &image,
            requester.priority,
            deadline,
            &mut fetch_ms,
            &mut ocr_ms,
        );
        let outcome = tokio::time::timeout_at(deadline, run)
            .await
            .unwrap_or(Err(OcrError::Timeout(limit)));
        let elapsed_ms = millis(started);
        let (status, error_code, funds, text) = match &outcome {
            Ok((funds, text)) => ("ok".to_owned(), None, funds.clone(), text.clone()),
            Err(err) => (
                "error".to_owned(),
                Some(err.code().to_owned()),
                Vec::new(),
                String::new(),
            ),
        };
        self.metrics
            .observe(error_code.as_deref().unwrap_or("ok"), elapsed_ms);
        let first = funds.first();
        let record = OcrResultRecord {
            ocr_id: id.clone(),
            request_id: requester.request_id.to_owned(),
            client_key_id: requester.client_key_id.map(str::to_owned),
            image_url: ssrf::without_credentials(&image.image_url),
            url_type: image.url_type.as_str().to_owned(),
            status,
            error_code,
            ocr_fund_code: first.map(|f| f.fund_code.clone()),
            ocr_hold_share: first.and_then(|f| f.hold_share.clone()),
            funds: (!funds.is_empty()).then(|| serde_json::json!(funds)),
            ocr_text: text.clone(),
            fetch_ms,
            ocr_ms,
            elapsed_ms,
            created_at,
        };
        let (funds, text) = match outcome {
            Ok(found) => found,
            Err(err) => {
                return Recognition {
                    outcome: Err(err),
                    record,
                };
            }
        };
        let result = OcrResult {
            id,
            data: OcrData {
                fund_code: funds.first().map(|f| f.fund_code.clone()),
                hold_share: funds.first().and_then(|f| f.hold_share.clone()),
                funds,
                text,
            },
            elapsed_ms,
            image_url: ssrf::without_credentials(&image.image_url),
            url_type: image.url_type,
            created_at,
        };
        self.remember(&result, requester.client_key_id);
        Recognition {
            outcome: Ok(result),
            record,
        }
    }

    async fn run(
        &self,
        image: &ImageRequest,
        priority: Priority,
        deadline: tokio::time::Instant,
        fetch_ms: &mut Option<u64>,
        ocr_ms: &mut Option<u64>,
    ) -> Result<(Vec<Fund>, String), OcrError> {
        let fetch_started = Instant::now();
        let bytes = match &image.upload {
            Some(bytes) => bytes.clone(),
            None => self.fetcher.fetch(image.url_type, &image.image_url).await?,
        };
        *fetch_ms = Some(millis(fetch_started));
        if bytes.len() > self.config.max_image_bytes {
            return Err(OcrError::TooLarge(format!(
                "the image is larger than {} bytes",
                self.config.max_image_bytes
            )));
        }
        let ocr_started = Instant::now();
        // Held from decoding to the end of recognition: at most one page per engine exists.
        let slot = self.slots.acquire(priority).await;
        let max_pixels = self.config.max_pixels;
        let page = tokio::task::spawn_blocking(move || prepare::prepare(&bytes, max_pixels))
            .await
            .map_err(|e| OcrError::Engine(format!("image preparation task: {e}")))??;
        let recognized = self.pool.recognize(page, deadline).await?;
        drop(slot);
        let funds = extract::extract(&recognized.tsv);
        *ocr_ms = Some(millis(ocr_started));
        Ok((funds, recognized.text.trim().to_owned()))
    }

    fn remember(&self, result: &OcrResult, owner: Option<&str>) {
        let mut recent = self.recent.lock().expect("recent results lock");
        recent.order.push_back(result.id.clone());
        let owned = (owner.map(str::to_owned), result.clone());
        recent.by_id.insert(result.id.clone(), owned);
        while recent.order.len() > RECENT_RESULTS {
            if let Some(old) = recent.order.pop_front() {
                recent.by_id.remove(&old);
            }
        }
    }

    /// A result of this process still in memory, if `access` may see it.
    pub fn recent(&self, id: &str, access: &Access) -> Option<OcrResult> {
        let recent = self.recent.lock().expect("recent results lock");
        let (owner, result) = recent.by_id.get(id)?;
        access.allows(owner.as_deref()).then(|| result.clone())
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
