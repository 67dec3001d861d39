//! Batch OCR jobs for long lists of images: `POST /ocr/jobs` answers at once with a job id,
//! the items run on the engine pool in the background (each logged like `POST /ocr`), and
//! `GET /ocr/jobs/{id}` shows the progress and each item's result, and `DELETE /ocr/jobs/{id}`
//! cancels the items not yet started. A job belongs to the key that made it. The items waiting
//! are capped per client (`ocr.max_pending_items_per_key`) and in all (`ocr.max_pending_items`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;
use crate::store::LogWriter;

use super::{Access, ImageRequest, OcrResult, OcrService, Priority, Requester, ssrf};

/// Jobs kept for `GET /ocr/jobs/{id}`; the oldest finished ones go first.
const JOBS_KEPT: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Pending,
    Running,
    Ok,
    Error,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobItem {
    pub image_url: String,
    pub url_type: &'static str,
    pub status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<OcrResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    pub code: &'static str,
    pub message: String,
}

/// What `GET /ocr/jobs/{id}` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub job_id: String,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub items: Vec<JobItem>,
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobRefused {
    #[error(
        "this client already has {pending} job items waiting; at most {max} may wait (ocr.max_pending_items_per_key)"
    )]
    ClientBusy {
        pending: usize,
        max: usize,
        retry_after_s: u64,
    },
    #[error(
        "{pending} job items are waiting over all clients; at most {max} may wait (ocr.max_pending_items)"
    )]
    ServerBusy {
        pending: usize,
        max: usize,
        retry_after_s: u64,
    },
}

impl JobRefused {
    pub fn code(&self) -> &'static str {
        match self {
            Self::ClientBusy { .. } => "too_many_pending_items",
            Self::ServerBusy { .. } => "ocr_busy",
        }
    }

    /// About when enough waiting items will have run for this job to fit.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::ClientBusy { retry_after_s, .. } | Self::ServerBusy { retry_after_s, .. } => {
                *retry_after_s
            }
        }
    }
}

/// Roughly how long `excess` items take on `engines` engines (about half a second each).
fn drain_secs(excess: usize, engines: usize) -> u64 {
    let secs = excess.div_ceil(2 * engines.max(1));
    u64::try_from(secs).unwrap_or(u64::MAX).clamp(1, 3600)
}

/// The caps on job items not yet started: per client, and over all clients.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub per_client: usize,
    pub total: usize,
}

pub struct OcrJobs {
    limits: JobLimits,
    table: Mutex<JobTable>,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct JobTable {
    order: VecDeque<String>,
    by_id: HashMap<String, Entry>,
}

/// A job with its owner (the key id that made it) and the switch that cancels it.
struct Entry {
    job: Arc<Mutex<Job>>,
    owner: Option<String>,
    cancel: CancellationToken,
}

/// Job items not yet started, per client and in all.
#[derive(Default)]
struct Pending {
    by_client: HashMap<String, usize>,
    total: usize,
}

/// One job's items not yet started, counted in [`Pending`] until each starts; whatever is left
/// when the job ends (cancelled, shut down) is given back on drop.
struct PendingItems {
    pending: Arc<Mutex<Pending>>,
    client: String,
    left: usize,
}

impl PendingItems {
    fn started_one(&mut self) {
        self.give_back(1);
    }

    fn give_back(&mut self, count: usize) {
        let count = count.min(self.left);
        if count == 0 {
            return;
        }
        self.left -= count;
        let mut pending = self.pending.lock().expect("pending items lock");
        pending.total -= count;
        if let Some(n) = pending.by_client.get_mut(&self.client) {
            *n -= count;
            if *n == 0 {
                pending.by_client.remove(&self.client);
            }
        }
    }
}

impl Drop for PendingItems {
    fn drop(&mut self) {
        self.give_back(self.left);
    }
}

/// Who starts a job: the key id that will own it, and the client its items count against
/// (the key, or the address when the proxy runs without keys).
#[derive(Debug, Clone)]
pub struct JobOwner {
    pub key: Option<String>,
    pub client: String,
}

impl OcrJobs {
    pub fn new(limits: JobLimits) -> Self {
        Self {
            limits,
            table: Mutex::new(JobTable::default()),
            pending: Arc::new(Mutex::new(Pending::default())),
        }
    }

    /// Registers the job and runs it in a task of `lifecycle`; items run as many at once as there
    /// are engines. Refused when the client's, or everyone's, items waiting would pass their cap.
    /// Cancelling it ([`Self::cancel`]) or the end of shutdown's grace period marks the items
    /// not yet started as cancelled.
    pub fn start(
        &self,
        ocr: Arc<OcrService>,
        log: LogWriter,
        request_id: String,
        owner: JobOwner,
        images: Vec<ImageRequest>,
        lifecycle: &Lifecycle,
    ) -> Result<String, JobRefused> {
        let concurrency = ocr.pool().size().max(1);
        let mut items_left = self.reserve(&owner.client, images.len(), concurrency)?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let job = Arc::new(Mutex::new(Job {
            job_id: job_id.clone(),
            status: JobStatus::Running,
            created_at: Utc::now(),
            total: images.len(),
            done: 0,
            failed: 0,
            items: images
                .iter()
                .map(|image| JobItem {
                    image_url: ssrf::without_credentials(&image.image_url),
                    url_type: image.url_type.as_str(),
                    status: ItemStatus::Pending,
                    result: None,
                    error: None,
                })
                .collect(),
        }));
        let cancel = CancellationToken::new();
        self.insert(
            job_id.clone(),
            Entry {
                job: job.clone(),
                owner: owner.key.clone(),
                cancel: cancel.clone(),
            },
        );
        let stop = lifecycle.stop_streams().clone();
        let started = job.clone();
        lifecycle.spawn(async move {
            let cancelled = cancel.clone();
            let work = futures::stream::iter(images.into_iter().enumerate())
                // Checked as each item is about to start: a cancelled job starts no more.
                .take_while(move |_| futures::future::ready(!cancelled.is_cancelled()))
                .map(|(i, image)| {
                    items_left.started_one();
                    started.lock().expect("job lock").items[i].status = ItemStatus::Running;
                    let (ocr, log, request_id) = (ocr.clone(), log.clone(), request_id.clone());
                    let key = owner.key.clone();
                    async move {
                        let requester = Requester {
                            request_id: &request_id,
                            client_key_id: key.as_deref(),
                            priority: Priority::Batch,
                        };
                        (i, ocr.recognize_logged(&log, requester, image).await)
                    }
                })
                .buffer_unordered(concurrency)
                .for_each(|(i, outcome)| {
                    record(&mut job.lock().expect("job lock"), i, outcome);
                    futures::future::ready(())
                });
            let finished = tokio::select! {
                () = work => if cancel.is_cancelled() { JobStatus::Cancelled } else { JobStatus::Done },
                () = stop.cancelled() => JobStatus::Cancelled,
            };
            let mut job = job.lock().expect("job lock");
            for item in &mut job.items {
                if matches!(item.status, ItemStatus::Pending | ItemStatus::Running) {
                    item.status = ItemStatus::Cancelled;
                }
            }
            job.status = finished;
        });
        Ok(job_id)
    }

    /// Counts `count` more items waiting for `client`, unless a cap would be passed.
    fn reserve(
        &self,
        client: &str,
        count: usize,
        engines: usize,
    ) -> Result<PendingItems, JobRefused> {
        let mut pending = self.pending.lock().expect("pending items lock");
        let mine = pending.by_client.get(client).copied().unwrap_or(0);
        let max = self.limits.per_client;
        if mine + count > max {
            return Err(JobRefused::ClientBusy {
                pending: mine,
                max,
                retry_after_s: drain_secs(mine + count - max, engines),
            });
        }
        let max = self.limits.total;
        if pending.total + count > max {
            return Err(JobRefused::ServerBusy {
                pending: pending.total,
                max,
                retry_after_s: drain_secs(pending.total + count - max, engines),
            });
        }
        pending.total += count;
        *pending.by_client.entry(client.to_owned()).or_default() += count;
        Ok(PendingItems {
            pending: self.pending.clone(),
            client: client.to_owned(),
            left: count,
        })
    }

    /// The job, if `access` may see it (another key's job is as good as missing).
    pub fn get(&self, job_id: &str, access: &Access) -> Option<Job> {
        let table = self.table.lock().expect("jobs lock");
        let entry = table.by_id.get(job_id)?;
        access
            .allows(entry.owner.as_deref())
            .then(|| entry.job.lock().expect("job lock").clone())
    }

    /// Cancels the job's items not started yet (those running finish and are logged); the job
    /// as it stands then. Only its owner may: for anyone else it does not exist.
    pub fn cancel(&self, job_id: &str, owner: Option<&str>) -> Option<Job> {
        let table = self.table.lock().expect("jobs lock");
        let entry = table.by_id.get(job_id)?;
        if entry.owner.as_deref() != owner {
            return None;
        }
        entry.cancel.cancel();
        let mut job = entry.job.lock().expect("job lock");
        if job.status == JobStatus::Running {
            job.status = JobStatus::Cancelled;
            for item in &mut job.items {
                if item.status == ItemStatus::Pending {
                    item.status = ItemStatus::Cancelled;
                }
            }
        }
        Some(job.clone())
    }

    fn insert(&self, job_id: String, entry: Entry) {
        let mut table = self.table.lock().expect("jobs lock");
        table.order.push_back(job_id.clone());
        table.by_id.insert(job_id, entry);
        while table.order.len() > JOBS_KEPT {
            let running = |t: &JobTable, id: &str| {
                t.by_id
                    .get(id)
                    .is_some_and(|e| e.job.lock().expect("job lock").status == JobStatus::Running)
            };
            let Some(pos) = (0..table.order.len()).find(|&i| !running(&table, &table.order[i]))
            else {
                break;
            };
            if let Some(old) = table.order.remove(pos) {
                table.by_id.remove(&old);
            }
        }
    }
}

/// Puts item `i`'s outcome in the job.
fn record(job: &mut Job, i: usize, outcome: Result<OcrResult, super::OcrError>) {
    let item = &mut job.items[i];
    match outcome {
        Ok(result) => {
            item.status = ItemStatus::Ok;
            item.result = Some(result);
        }
        Err(err) => {
            item.status = ItemStatus::Error;
            item.error = Some(ItemError {
                code: err.code(),
                message: err.to_string(),
            });
        }
    }
    let failed = item.status == ItemStatus::Error;
    job.done += 1;
    job.failed += usize::from(failed);
}
