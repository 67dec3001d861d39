//! The crash journal: every exchange's start and its end, appended to a local file and synced
//! in groups (every `writer.journal_sync_ms`) by a thread of its own, off the response path and
//! off the runtime. A `kill -9` loses what is in memory (the writer's queue, its batch), but not
//! what the journal synced: at the next start, [`recover`] turns every journaled exchange into
//! its record (the finished one in full; one that never finished as `interrupted`), and the
//! writer stores them, skipping those already stored.
//!
//! The journal is a series of segment files, a new one past `SEGMENT_BYTES`. A segment is
//! deleted once every exchange with a line in it has been stored (in the database, or the
//! spill file), so the journal holds only what is in flight.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::records::ChatLogRecord;

/// A segment grows to about this before the next one starts.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// An exchange began: its record as it stands if it never ends.
    Started(ChatLogRecord),
    /// An exchange ended: its record.
    Finished(ChatLogRecord),
}

enum Op {
    Write(Box<Entry>),
    /// These log ids are stored for good: their lines are no longer needed.
    Stored(Vec<String>),
    Stop,
}

/// The handle: cheap to clone; every call returns at once.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Op>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Journal {
    /// Starts the journal in `dir` (created if missing), syncing every `sync`. Call [`recover`]
    /// first: the segments found there are taken over as they are.
    pub fn start(dir: &Path, sync: Duration) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let next_segment = segments(dir)?.last().map_or(0, |(n, _)| n + 1);
        let mut writer = Segments {
            dir: dir.to_owned(),
            current: next_segment,
            file: None,
            written: 0,
            live: BTreeMap::new(),
            open: HashMap::new(),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("log-journal".into())
            .spawn(move || writer.run(&rx, sync))?;
        Ok(Self {
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// An exchange began; `record` is what its row says if it never ends.
    pub fn started(&self, record: ChatLogRecord) {
        let _ = self.tx.send(Op::Write(Box::new(Entry::Started(record))));
    }

    /// An exchange ended with `record`.
    pub fn finished(&self, record: ChatLogRecord) {
        let _ = self.tx.send(Op::Write(Box::new(Entry::Finished(record))));
    }

    /// These exchanges' records are stored (in the database or the spill file).
    pub fn stored(&self, log_ids: Vec<String>) {
        if !log_ids.is_empty() {
            let _ = self.tx.send(Op::Stored(log_ids));
        }
    }

    /// Syncs what was written and stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Op::Stop);
        let thread = self.thread.lock().expect("journal thread lock").take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the journal thread panicked");
        }
    }
}

/// The journal's files and what each still holds.
struct Segments {
    dir: PathBuf,
    current: u64,
    file: Option<BufWriter<File>>,
    written: u64,
    /// Per segment, the lines of exchanges not yet stored.
    live: BTreeMap<u64, usize>,
    /// Per exchange not yet stored, the segments holding its lines.
    open: HashMap<String, Vec<u64>>,
}

impl Segments {
    /// Each group of lines that arrived together is written at once (one `write`: a killed
    /// process loses none of it, the kernel has it) and synced to disk within `sync` (what a
    /// machine crash could lose).
    fn run(&mut self, rx: &mpsc::Receiver<Op>, sync: Duration) {
        // When the oldest line not yet synced was written.
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let first = match unsynced_since {
                None => rx.recv().ok(),
                Some(since) => match rx.recv_timeout(sync.saturating_sub(since.elapsed())) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.sync();
                        unsynced_since = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            // No op: every handle is gone.
            let mut stop = first.is_none();
            for op in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match op {
                    Op::Write(entry) => {
                        if let Err(err) = self.write(&entry) {
                            tracing::error!(error = %err, dir = %self.dir.display(), "cannot write the log journal");
                        }
                        unsynced_since.get_or_insert_with(Instant::now);
                    }
                    Op::Stored(ids) => self.forget(ids),
                    Op::Stop => stop = true,
                }
                if stop {
                    break;
                }
            }
            self.flush();
            if stop {
                self.sync();
                self.remove_if_all_stored();
                return;
            }
            if unsynced_since.is_some_and(|since| since.elapsed() >= sync) {
                self.sync();
                unsynced_since = None;
            }
        }
    }

    /// At a clean stop with everything stored, the next start has nothing to recover.
    fn remove_if_all_stored(&mut self) {
        if !self.open.is_empty() {
            return;
        }
        self.file = None;
        let segments: Vec<u64> = self.live.keys().copied().collect();
        for segment in segments.into_iter().chain([self.current]) {
            self.live.remove(&segment);
            let _ = std::fs::remove_file(segment_path(&self.dir, segment));
        }
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(err) = file.flush()
        {
            tracing::error!(error = %err, dir = %self.dir.display(), "cannot write the log journal");
        }
    }

    fn write(&mut self, entry: &Entry) -> io::Result<()> {
        let record = match entry {
            Entry::Started(r) | Entry::Finished(r) => r,
        };
        if self.written >= SEGMENT_BYTES {
            self.rotate();
        }
        if self.file.is_none() {
            let path = segment_path(&self.dir, self.current);
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        let file = self.file.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        self.written += line.len() as u64;
        *self.live.entry(self.current).or_default() += 1;
        self.open
            .entry(record.log_id.clone())
            .or_default()
            .push(self.current);
        Ok(())
    }

    /// Syncs the current segment and starts the next; the old one goes once it holds nothing live.
    fn rotate(&mut self) {
        self.sync();
        self.file = None;
        self.written = 0;
        let old = self.current;
        self.current += 1;
        self.delete_if_done(old);
    }

    fn sync(&mut self) {
        if let Some(file) = &mut self.file {
            let synced = file.flush().and_then(|()| file.get_ref().sync_data());
            if let Err(err) = synced {
                tracing::error!(error = %err, dir = %self.dir.display(), "cannot sync the log journal");
            }
        }
    }

    fn forget(&mut self, ids: Vec<String>) {
        for id in ids {
            for segment in self.open.remove(&id).unwrap_or_default() {
                if let Some(live) = self.live.get_mut(&segment) {
                    *live = live.saturating_sub(1);
                }
                self.delete_if_done(segment);
            }
        }
    }

    fn delete_if_done(&mut self, segment: u64) {
        if segment == self.current || self.live.get(&segment).is_some_and(|&n| n > 0) {
            return;
        }
        self.live.remove(&segment);
        if let Err(err) = std::fs::remove_file(segment_path(&self.dir, segment))
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, segment, "cannot remove a log journal segment");
        }
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n:010}.jsonl"))
}

/// The segment files in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

/// What a crashed run left in `dir`: each journaled exchange's record, finished ones in full and
/// the others as journaled at their start (`interrupted`), in the order they began. A torn last
/// line is skipped. The caller stores them durably, then calls [`clear`].
pub fn recover(dir: &Path) -> io::Result<Vec<ChatLogRecord>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut order = Vec::new();
    let mut by_id: HashMap<String, ChatLogRecord> = HashMap::new();
    for (_, path) in segments(dir)? {
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            let entry = match serde_json::from_str::<Entry>(&line) {
                Ok(entry) => entry,
                Err(err) => {
                    tracing::warn!(error = %err, file = %path.display(), "skipping an unreadable journal line");
                    continue;
                }
            };
            match entry {
                Entry::Started(record) => {
                    if !by_id.contains_key(&record.log_id) {
                        order.push(record.log_id.clone());
                        by_id.insert(record.log_id.clone(), record);
                    }
                }
                Entry::Finished(record) => {
                    if !by_id.contains_key(&record.log_id) {
                        order.push(record.log_id.clone());
                    }
                    by_id.insert(record.log_id.clone(), record);
                }
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        .collect())
}

/// Deletes the segments [`recover`] read, once their records are stored.
pub fn clear(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for (_, path) in segments(dir)? {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log_id: &str, status: &str) -> ChatLogRecord {
        ChatLogRecord {
            log_id: log_id.into(),
            request_id: format!("req-{log_id}"),
            api: "answer".into(),
            session_id: None,
            user_id: None,
            client_key_id: None,
            model: "m".into(),
            request_messages: serde_json::json!([{"role": "user", "content": "q"}]),
            answer: String::new(),
            tool_calls: None,
            status: status.into(),
            error_code: None,
            error_message: None,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            queue_ms: 0,
            ttft_ms: None,
            total_ms: 0,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_crash_leaves_finished_exchanges_whole_and_the_others_interrupted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::start(dir.path(), Duration::from_millis(10)).expect("start");
        journal.started(record("a", "interrupted"));
        journal.started(record("b", "interrupted"));
        journal.started(record("c", "interrupted"));
        journal.finished(record("a", "ok"));
        journal.finished(record("c", "ok"));
        // `c` reached the database: it needs no line any more.
        journal.stored(vec!["c".into()]);
        journal.stop();
        let recovered = recover(dir.path()).expect("recover");
        let got: Vec<_> = recovered
            .iter()
            .map(|r| (r.log_id.as_str(), r.status.as_str()))
            .collect();
        // `c` is still in the one segment (the current one is never deleted): its row exists,
        // and storing it again is skipped by its key.
        assert_eq!(got, [("a", "ok"), ("b", "interrupted"), ("c", "ok")]);
        clear(dir.path()).expect("clear");
        assert!(recover(dir.path()).expect("recover").is_empty());
    }

    #[test]
    fn a_segment_is_deleted_once_everything_in_it_is_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::start(dir.path(), Duration::from_millis(10)).expect("start");
        let big = "x".repeat(64 * 1024);
        let mut ids = Vec::new();
        // About 8 MB: two segments or more.
        for i in 0..130 {
            let id = format!("id-{i}");
            let mut r = record(&id, "ok");
            r.answer = big.clone();
            journal.started(record(&id, "interrupted"));
            journal.finished(r);
            ids.push(id);
        }
        journal.stored(ids[..120].to_vec());
        journal.stop();
        let left = segments(dir.path()).expect("segments");
        assert!(!left.is_empty());
        let recovered = recover(dir.path()).expect("recover");
        assert!(
            recovered.iter().all(|r| r.status == "ok"),
            "no exchange lost its end"
        );
        let kept: Vec<_> = recovered.iter().map(|r| r.log_id.clone()).collect();
        for id in &ids[120..] {
            assert!(kept.contains(id), "{id} is not stored yet and must be kept");
        }
        assert!(
            kept.len() < 130,
            "stored segments were deleted: {}",
            kept.len()
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::start(dir.path(), Duration::from_millis(10)).expect("start");
        journal.started(record("a", "interrupted"));
        journal.stop();
        let (_, path) = segments(dir.path()).expect("segments").pop().expect("one");
        let mut file = OpenOptions::new().append(true).open(path).expect("open");
        file.write_all(b"{\"finished\":{\"log_id\":\"a\",\"req")
            .expect("write");
        let recovered = recover(dir.path()).expect("recover");
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].status, "interrupted");
    }
}
