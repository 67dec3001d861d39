//! Batch OCR jobs for long lists of images: `POST /ocr/jobs` answers at once with a job id,
//! the items run on the engine pool in the background (each logged like `POST /ocr`), and
//! `GET /ocr/jobs/{id}` shows the progress and each item's result.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::lifecycle::Lifecycle;
use crate::store::LogWriter;

use super::{ImageRequest, OcrResult, OcrService};

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

#[derive(Default)]
pub struct OcrJobs {
    table: Mutex<JobTable>,
}

#[derive(Default)]
struct JobTable {
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<Mutex<Job>>>,
}

impl OcrJobs {
    /// Registers the job and runs it in a task of `lifecycle`; items run as many at once as there
    /// are engines. The end of shutdown's grace period marks the items not yet started as cancelled.
    pub fn start(
        &self,
        ocr: Arc<OcrService>,
        log: LogWriter,
        request_id: String,
        images: Vec<ImageRequest>,
        lifecycle: &Lifecycle,
    ) -> String {
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
                    image_url: image.image_url.clone(),
                    url_type: image.url_type.as_str(),
                    status: ItemStatus::Pending,
                    result: None,
                    error: None,
                })
                .collect(),
        }));
        self.insert(job_id.clone(), job.clone());
        let concurrency = ocr.pool().size().max(1);
        let stop = lifecycle.stop_streams().clone();
        lifecycle.spawn(async move {
            let work = futures::stream::iter(images.into_iter().enumerate())
                .map(|(i, image)| {
                    let (ocr, log, request_id) = (ocr.clone(), log.clone(), request_id.clone());
                    async move { (i, ocr.recognize_logged(&log, &request_id, image).await) }
                })
                .buffer_unordered(concurrency)
                .for_each(|(i, outcome)| {
                    let mut job = job.lock().expect("job lock");
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
                    futures::future::ready(())
                });
            let finished = tokio::select! {
                () = work => JobStatus::Done,
                () = stop.cancelled() => JobStatus::Cancelled,
            };
            let mut job = job.lock().expect("job lock");
            for item in &mut job.items {
                if item.status == ItemStatus::Pending {
                    item.status = ItemStatus::Cancelled;
                }
            }
            job.status = finished;
        });
        job_id
    }

    pub fn get(&self, job_id: &str) -> Option<Job> {
        let table = self.table.lock().expect("jobs lock");
        table
            .by_id
            .get(job_id)
            .map(|job| job.lock().expect("job lock").clone())
    }

    fn insert(&self, job_id: String, job: Arc<Mutex<Job>>) {
        let mut table = self.table.lock().expect("jobs lock");
        table.order.push_back(job_id.clone());
        table.by_id.insert(job_id, job);
        while table.order.len() > JOBS_KEPT {
            let running = |t: &JobTable, id: &str| {
                t.by_id
                    .get(id)
                    .is_some_and(|j| j.lock().expect("job lock").status == JobStatus::Running)
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
