//! The background log writer. Handlers [`LogWriter::submit`] a record and move on: it never
//! waits for the database. One task drains a bounded queue in batches into multi-row INSERTs,
//! retries failed writes with backoff (in order), spills to a file whatever does not fit in the
//! queue, replays the spill file when the database answers again, and on shutdown drains the
//! queue (or spills what it cannot write in time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{WriterConfig, ms};
use crate::lifecycle::Lifecycle;

use super::db::{Database, StoreError};
use super::journal::{self, Journal};
use super::records::{ChatLogRecord, LogRecord};
use super::spill::{SpillFile, read_records};

/// Counters for `/health`.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    failed_attempts: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    database_ok: AtomicBool,
}

/// The writer's numbers as `/health` shows them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WriterStats {
    /// Records in memory waiting for the database.
    pub backlog: usize,
    pub written: u64,
    pub failed_attempts: u64,
    pub spilled: u64,
    pub replayed: u64,
    /// Records wait in the spill file.
    pub spill_pending: bool,
    /// The database answered the writer's last write or check. Before the first write, that
    /// is the check at start-up (connect and migrate); while idle, a `SELECT 1` every
    /// `writer.retry_max_ms`.
    pub database_ok: bool,
}

/// The handle handlers use; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<LogRecord>,
    capacity: usize,
    spill: Arc<SpillFile>,
    counters: Arc<Counters>,
    /// Every exchange's start and end, synced to disk in groups: what a crash cannot take.
    journal: Journal,
    closing: CancellationToken,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl LogWriter {
    /// Starts the writer task. What a crashed run left in the journal goes to the spill file
    /// first; the task connects, migrates and replays the spill file as soon as the database
    /// answers. The task is a service of `lifecycle`: [`LogWriter::shutdown`] stops it.
    pub fn start(
        db: Database,
        config: &WriterConfig,
        lifecycle: &Lifecycle,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let spill = Arc::new(SpillFile::new(config.spill_path.clone())?);
        let journal_dir = config.journal_dir();
        let recovered = journal::recover(&journal_dir)?;
        if !recovered.is_empty() {
            let interrupted = recovered.iter().filter(|r| r.status == INTERRUPTED).count();
            let records: Vec<LogRecord> = recovered.into_iter().map(LogRecord::from).collect();
            spill.append(&records)?;
            journal::clear(&journal_dir)?;
            tracing::warn!(
                exchanges = records.len(),
                interrupted,
                "log writer: the last run stopped without draining; its journaled exchanges will be stored"
            );
        }
        let journal = Journal::start(&journal_dir, ms(config.journal_sync_ms))?;
        let counters = Arc::new(Counters::default());
        let closing = CancellationToken::new();
        let task = WriterTask {
            db,
            rx,
            rx_closed: false,
            spill: spill.clone(),
            counters: counters.clone(),
            journal: journal.clone(),
            closing: closing.clone(),
            closing_since: None,
            migrated: false,
            batch_size: config.batch_size,
            flush: ms(config.flush_ms),
            retry_initial: ms(config.retry_initial_ms),
            retry_max: ms(config.retry_max_ms),
            drain_timeout: ms(config.drain_timeout_ms),
        };
        let handle = lifecycle.spawn_service(task.run());
        Ok(Self {
            tx,
            capacity: config.queue_capacity,
            spill,
            counters,
            journal,
            closing,
            task: Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// An exchange began: `record` is its row if it never ends (status `interrupted`). Only
    /// journaled: a crash before its end leaves this row.
    pub fn begin(&self, record: ChatLogRecord) {
        self.journal.started(record);
    }

    /// Hands a record to the writer without waiting. When the queue is full (the database is
    /// away or slow) or the writer is shutting down, the record goes to the spill file.
    pub fn submit(&self, record: impl Into<LogRecord>) {
        let record = record.into();
        if let LogRecord::ChatLogs(chat) = &record {
            self.journal.finished(chat.clone());
        }
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(record) | TrySendError::Closed(record)) => {
                self.spill_now(&[record]);
            }
        }
    }

    fn spill_now(&self, records: &[LogRecord]) {
        spill_records(&self.spill, &self.counters, &self.journal, records);
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            backlog: self.capacity - self.tx.capacity(),
            written: c.written.load(Ordering::Acquire),
            failed_attempts: c.failed_attempts.load(Ordering::Acquire),
            spilled: c.spilled.load(Ordering::Acquire),
            replayed: c.replayed.load(Ordering::Acquire),
            spill_pending: self.spill.has_pending(),
            database_ok: c.database_ok.load(Ordering::Acquire),
        }
    }

    /// Stops taking records into memory, writes what is queued (trying the database for up to
    /// `writer.drain_timeout_ms`), spills the rest, and waits for the task to end.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        let handle = self.task.lock().expect("writer handle lock").take();
        if let Some(handle) = handle {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "the log writer task failed");
            }
        }
        let journal = self.journal.clone();
        let _ = tokio::task::spawn_blocking(move || journal.stop()).await;
    }
}

/// The status of a row journaled at its exchange's start, written if the exchange never ends.
pub const INTERRUPTED: &str = "interrupted";

/// The log ids of `records`' exchanges.
fn log_ids(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| match record {
            LogRecord::ChatLogs(r) => Some(r.log_id.clone()),
            LogRecord::OcrResults(_) => None,
        })
        .collect()
}

fn spill_records(spill: &SpillFile, counters: &Counters, journal: &Journal, records: &[LogRecord]) {
    match spill.append(records) {
        Ok(()) => {
            counters
                .spilled
                .fetch_add(records.len() as u64, Ordering::AcqRel);
            journal.stored(log_ids(records));
        }
        Err(err) => {
            // Nowhere left to put them: say exactly what is lost.
            for record in records {
                tracing::error!(
                    error = %err, key = record.key(), file = %spill.path().display(),
                    "log record lost: the spill file cannot be written"
                );
            }
        }
    }
}

struct WriterTask {
    db: Database,
    rx: mpsc::Receiver<LogRecord>,
    rx_closed: bool,
    spill: Arc<SpillFile>,
    counters: Arc<Counters>,
    journal: Journal,
    closing: CancellationToken,
    closing_since: Option<Instant>,
    migrated: bool,
    batch_size: usize,
    flush: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    drain_timeout: Duration,
}

impl WriterTask {
    async fn run(mut self) {
        self.catch_up(true).await;
        while let Some(batch) = self.next_batch().await {
            self.write_with_retry(batch).await;
        }
        // Closed and drained; a last chance for anything spilled meanwhile.
        if self.spill.has_pending() && !self.past_drain_deadline() {
            let _ = self.replay().await;
        }
        self.db.close().await;
    }

    /// What the writer does at start-up and while idle: reaches for the database if it has
    /// not answered yet, then replays the spill file if one waits; with nothing to replay,
    /// checks that the database still answers.
    async fn catch_up(&mut self, first: bool) {
        if !self.migrated {
            self.check(first).await;
        } else if !self.spill.has_pending() {
            self.ping().await;
        }
        if self.migrated && self.spill.has_pending() {
            let _ = self.replay().await;
        }
    }

    /// Keeps `database_ok` true to the database while no record comes: without it, a database
    /// that went away after the last write would show as up until the next write failed.
    async fn ping(&self) {
        // Shutdown does not wait for a database that does not answer.
        let answered = tokio::select! {
            answered = self.db.ping() => answered,
            () = self.closing.cancelled() => return,
        };
        match answered {
            Ok(()) => self.mark_database_ok(),
            Err(err) => {
                if self.mark_database_down() {
                    tracing::warn!(error = %err, "log writer: the database stopped answering; rows wait in memory and the spill file");
                }
            }
        }
    }

    /// Connects and migrates before any record arrives, so `/health` tells whether the
    /// database answers from the start instead of only after the first write. Only the
    /// first failure is a warning; the retries while idle log at debug level.
    async fn check(&mut self, first: bool) {
        match self.migrate().await {
            Ok(()) => self.mark_database_ok(),
            Err(err) if first => {
                tracing::warn!(error = %err, "log writer: the database does not answer yet; rows wait in memory and the spill file");
            }
            Err(err) => {
                tracing::debug!(error = %err, "log writer: the database still does not answer")
            }
        }
    }

    async fn migrate(&mut self) -> Result<(), StoreError> {
        if !self.migrated {
            self.db.migrate().await?;
            self.migrated = true;
        }
        Ok(())
    }

    fn mark_database_ok(&self) {
        if !self.counters.database_ok.swap(true, Ordering::AcqRel) {
            tracing::info!("log writer: the database takes writes");
        }
    }

    /// Whether the database was up until now: the callers warn only on that change.
    fn mark_database_down(&self) -> bool {
        self.counters.database_ok.swap(false, Ordering::AcqRel)
    }

    /// Up to `batch_size` records, waiting at most `flush` after the first. `None` once the
    /// queue is closed (shutdown) and empty. While idle it reaches for the database every
    /// `retry_max` (`catch_up`).
    async fn next_batch(&mut self) -> Option<Vec<LogRecord>> {
        let first = loop {
            tokio::select! {
                biased;
                () = self.closing.cancelled(), if !self.rx_closed => {
                    self.closing_since.get_or_insert_with(Instant::now);
                    self.rx.close();
                    self.rx_closed = true;
                }
                record = self.rx.recv() => break record?,
                () = sleep(self.retry_max) => self.catch_up(false).await,
            }
        };
        let mut batch = Vec::with_capacity(self.batch_size.min(1024));
        batch.push(first);
        let deadline = Instant::now() + self.flush;
        while batch.len() < self.batch_size {
            let room = self.batch_size - batch.len();
            match timeout_at(deadline, self.rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Some(batch)
    }

    /// Writes the batch, retrying with doubling backoff until it is stored, or until shutdown's
    /// drain time is over (then it goes to the spill file).
    async fn write_with_retry(&mut self, batch: Vec<LogRecord>) {
        let mut delay = self.retry_initial;
        loop {
            match self.store(&batch).await {
                Ok(()) => {
                    self.counters
                        .written
                        .fetch_add(batch.len() as u64, Ordering::AcqRel);
                    self.journal.stored(log_ids(&batch));
                    self.mark_database_ok();
                    if self.spill.has_pending() {
                        let _ = self.replay().await;
                    }
                    return;
                }
                Err(err) => {
                    self.counters.failed_attempts.fetch_add(1, Ordering::AcqRel);
                    if self.mark_database_down() || delay == self.retry_initial {
                        tracing::warn!(error = %err, rows = batch.len(), "log writer: write failed; retrying");
                    }
                }
            }
            if self.past_drain_deadline() {
                tracing::warn!(
                    rows = batch.len(),
                    "log writer: shutting down with the database away; spilling"
                );
                spill_records(&self.spill, &self.counters, &self.journal, &batch);
                return;
            }
            tokio::select! {
                () = sleep(delay) => {}
                () = self.closing.cancelled(), if self.closing_since.is_none() => {}
            }
            delay = (delay * 2).min(self.retry_max);
        }
    }

    async fn store(&mut self, batch: &[LogRecord]) -> Result<(), StoreError> {
        let span = tracing::debug_span!("log_batch_write", rows = batch.len());
        self.store_batch(batch).instrument(span).await
    }

    async fn store_batch(&mut self, batch: &[LogRecord]) -> Result<(), StoreError> {
        self.migrate().await?;
        let mut chats = Vec::new();
        let mut ocrs = Vec::new();
        for record in batch {
            match record {
                LogRecord::ChatLogs(r) => chats.push(r),
                LogRecord::OcrResults(r) => ocrs.push(r),
            }
        }
        if !chats.is_empty() {
            self.db.insert_chat_logs(&chats).await?;
        }
        if !ocrs.is_empty() {
            self.db.insert_ocr_results(&ocrs).await?;
        }
        Ok(())
    }

    /// Stores every record of the spill file (one claimed file per call); on a failure the
    /// file stays for the next try.
    async fn replay(&mut self) -> Result<(), StoreError> {
        while let Some(claimed) = self.claim() {
            let records = match read_records(&claimed) {
                Ok(records) => records,
                Err(err) => {
                    tracing::error!(error = %err, file = %claimed.display(), "cannot read the spill file");
                    return Ok(());
                }
            };
            for chunk in records.chunks(self.batch_size) {
                if let Err(err) = self.store(chunk).await {
                    self.counters.failed_attempts.fetch_add(1, Ordering::AcqRel);
                    self.mark_database_down();
                    tracing::debug!(error = %err, "log writer: spill replay waits for the database");
                    return Err(err);
                }
            }
            if let Err(err) = self.spill.finish(&claimed) {
                tracing::error!(error = %err, file = %claimed.display(), "cannot remove the replayed spill file");
                return Ok(());
            }
            let count = records.len() as u64;
            self.counters.replayed.fetch_add(count, Ordering::AcqRel);
            self.counters.written.fetch_add(count, Ordering::AcqRel);
            self.counters.database_ok.store(true, Ordering::Release);
            tracing::info!(rows = count, "log writer: replayed the spill file");
        }
        Ok(())
    }

    fn claim(&self) -> Option<std::path::PathBuf> {
        match self.spill.claim() {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::error!(error = %err, "cannot claim the spill file for replay");
                None
            }
        }
    }

    fn past_drain_deadline(&mut self) -> bool {
        if !self.closing.is_cancelled() {
            return false;
        }
        let since = *self.closing_since.get_or_insert_with(Instant::now);
        since.elapsed() >= self.drain_timeout
    }
}
