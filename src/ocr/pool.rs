//! A pool of OCR workers ([`super::worker`]): one Tesseract engine per process. A worker takes
//! about 0.2 s to start and 110 MB, so workers are started once and reused. A worker that fails,
//! dies or overruns its time limit is killed, and a fresh one is started the next time one is
//! needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use image::GrayImage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::OcrError;
use super::worker::{Worker, WorkerCommand};
use crate::config::ms;
use crate::lifecycle::Lifecycle;

pub use super::worker::Recognized;

pub struct EnginePool {
    command: Arc<WorkerCommand>,
    size: usize,
    /// `ocr.timeout_ms`, for the error of a recognition killed at its deadline.
    time_limit_ms: u64,
    /// Shared with the recognition tasks, which put their worker back themselves: a caller that
    /// stops waiting (the client left) neither loses the worker nor frees its slot early.
    idle: Arc<Mutex<Vec<Worker>>>,
    permits: Arc<Semaphore>,
    busy: Arc<AtomicUsize>,
    created: Arc<AtomicUsize>,
    /// Recognitions run as its work, so shutdown waits for them.
    lifecycle: Lifecycle,
}

impl EnginePool {
    pub fn new(
        command: WorkerCommand,
        size: usize,
        time_limit_ms: u64,
        lifecycle: Lifecycle,
    ) -> Self {
        Self {
            command: Arc::new(command),
            size,
            time_limit_ms,
            idle: Arc::new(Mutex::new(Vec::with_capacity(size))),
            permits: Arc::new(Semaphore::new(size)),
            busy: Arc::new(AtomicUsize::new(0)),
            created: Arc::new(AtomicUsize::new(0)),
            lifecycle,
        }
    }

    /// Starts every worker now (start-up), so the first requests do not pay for it.
    pub async fn preload(&self) -> Result<(), OcrError> {
        let missing = self.size - self.idle.lock().expect("worker pool lock").len();
        let starting =
            futures::future::try_join_all((0..missing).map(|_| Worker::start(&self.command)));
        let started = tokio::time::timeout(ms(self.time_limit_ms), starting)
            .await
            .map_err(|_| {
                OcrError::Engine(format!(
                    "the OCR workers did not start within {} ms (ocr.timeout_ms)",
                    self.time_limit_ms
                ))
            })??;
        self.created.fetch_add(started.len(), Ordering::AcqRel);
        self.idle.lock().expect("worker pool lock").extend(started);
        Ok(())
    }

    /// The worker binary.
    pub fn program(&self) -> &std::path::Path {
        &self.command.program
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Workers recognizing right now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Workers started since start-up (more than `size` means some were lost to errors).
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Acquire)
    }

    /// Recognizes a prepared page with one worker of the pool, waiting for a free one. A worker
    /// still at it at `deadline` is killed: nobody waits for its answer any more.
    pub async fn recognize(
        &self,
        page: GrayImage,
        deadline: Instant,
    ) -> Result<Recognized, OcrError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the worker semaphore is never closed");
        let lease = Lease::new(self, permit);
        let worker = self.idle_worker();
        let command = self.command.clone();
        let time_limit_ms = self.time_limit_ms;
        // In a task of its own, so that a worker is never left halfway through a request.
        let work = self.lifecycle.spawn(async move {
            let run = async {
                let mut worker = match worker {
                    Some(worker) => worker,
                    None => {
                        let worker = Worker::start(&command).await?;
                        lease.created.fetch_add(1, Ordering::AcqRel);
                        worker
                    }
                };
                let found = worker.recognize(&page).await?;
                Ok::<_, OcrError>((worker, found))
            };
            // A worker that fails, or is still starting or reading at the deadline, is dropped
            // with `run`, which kills it.
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok((worker, found))) => {
                    lease.idle.lock().expect("worker pool lock").push(worker);
                    Ok(found)
                }
                Ok(Err(err)) => Err(err),
                Err(_) => Err(OcrError::Timeout(time_limit_ms)),
            }
        });
        work.await
            .map_err(|e| OcrError::Engine(format!("recognition task: {e}")))?
    }

    /// An idle worker that is still running; dead ones are dropped (and replaced on demand).
    fn idle_worker(&self) -> Option<Worker> {
        let mut idle = self.idle.lock().expect("worker pool lock");
        while let Some(mut worker) = idle.pop() {
            if worker.is_alive() {
                return Some(worker);
            }
            tracing::warn!("an idle OCR worker had exited; starting a new one");
        }
        None
    }
}

/// A pool slot while a recognition runs: counted busy, and freed when dropped.
struct Lease {
    idle: Arc<Mutex<Vec<Worker>>>,
    busy: Arc<AtomicUsize>,
    created: Arc<AtomicUsize>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn new(pool: &EnginePool, permit: OwnedSemaphorePermit) -> Self {
        pool.busy.fetch_add(1, Ordering::AcqRel);
        Self {
            idle: pool.idle.clone(),
            busy: pool.busy.clone(),
            created: pool.created.clone(),
            _permit: permit,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
