//! The append-only spill file (JSON lines) for records the database could not take yet.
//!
//! A replay first renames the file to `<name>.replaying`, so records spilled meanwhile start a
//! fresh file; the renamed one is deleted only after every record in it is stored. A crash
//! mid-replay leaves it in place for the next replay, and idempotent inserts make that safe.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::records::LogRecord;

#[derive(Debug)]
pub struct SpillFile {
    path: PathBuf,
    replaying: PathBuf,
    /// Serialises appends and the rename that starts a replay.
    lock: Mutex<()>,
    /// Some record may be waiting in either file.
    pending: AtomicBool,
}

impl SpillFile {
    pub fn new(path: PathBuf) -> io::Result<Self> {
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)?;
        }
        let mut replaying = path.clone().into_os_string();
        replaying.push(".replaying");
        let replaying = PathBuf::from(replaying);
        let pending = non_empty(&path) || non_empty(&replaying);
        Ok(Self {
            path,
            replaying,
            lock: Mutex::new(()),
            pending: AtomicBool::new(pending),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the records durably (written and synced before this returns).
    pub fn append(&self, records: &[LogRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for record in records {
            text.push_str(&serde_json::to_string(record).map_err(io::Error::other)?);
            text.push('\n');
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        self.pending.store(true, Ordering::Release);
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The file to replay now, if any: an interrupted replay first, else the current spill file
    /// (renamed, so new spills go to a fresh one).
    pub fn claim(&self) -> io::Result<Option<PathBuf>> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if non_empty(&self.replaying) {
            return Ok(Some(self.replaying.clone()));
        }
        if non_empty(&self.path) {
            std::fs::rename(&self.path, &self.replaying)?;
            return Ok(Some(self.replaying.clone()));
        }
        self.pending.store(false, Ordering::Release);
        Ok(None)
    }

    /// Every record of a claimed file has been stored.
    pub fn finish(&self, claimed: &Path) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::remove_file(claimed)?;
        let pending = non_empty(&self.path) || non_empty(&self.replaying);
        self.pending.store(pending, Ordering::Release);
        Ok(())
    }
}

/// Reads a claimed file's records. A line that does not parse (a write torn by a crash) is
/// logged and skipped rather than blocking every record behind it.
pub fn read_records(path: &Path) -> io::Result<Vec<LogRecord>> {
    let reader = BufReader::new(File::open(path)?);
    let mut records = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(record) => records.push(LogRecord::upgrade(record)),
            Err(err) => tracing::error!(
                file = %path.display(), line = number + 1, error = %err,
                "skipping an unreadable spill record"
            ),
        }
    }
    Ok(records)
}

fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}
