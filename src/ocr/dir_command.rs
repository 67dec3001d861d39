//! `chat-proxy ocr-dir DIR`: recognise every image in a folder with the engine pool, print one
//! JSON line per file, store each result in the database, and delete a file only after its row
//! is stored. Files that failed stay, and their error rows are stored too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::store::Database;

use super::{ImageRequest, OcrService, UrlType};

/// How a folder run went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub recognised: usize,
    pub failed: usize,
    pub deleted: usize,
}

/// Runs the folder and writes one JSON line per file to `out`.
pub async fn recognize_dir(
    config: &Config,
    dir: &Path,
    out: &mut impl Write,
) -> anyhow::Result<BatchSummary> {
    let files = image_files(dir)?;
    let database = Database::connect_lazy(&config.database).context("opening the database")?;
    database.migrate().await.with_context(|| {
        format!(
            "the database ({}) must be reachable: files are deleted only once their rows are stored",
            Database::describe(&config.database.url)
        )
    })?;
    let lifecycle = Lifecycle::new();
    let ocr = Arc::new(OcrService::new(Arc::new(config.ocr.clone()), &lifecycle)?);
    let run_id = format!("ocr-dir-{}", uuid::Uuid::new_v4());
    let concurrency = ocr.pool().size().max(1);
    let mut results = futures::stream::iter(files)
        .map(|path| {
            let (ocr, database, run_id) = (ocr.clone(), database.clone(), run_id.clone());
            let cap = config.ocr.max_image_bytes;
            async move { one_file(&ocr, &database, &run_id, path, cap).await }
        })
        .buffered(concurrency);
    let mut summary = BatchSummary::default();
    while let Some(line) = results.next().await {
        if line["status"] == "ok" {
            summary.recognised += 1;
        } else {
            summary.failed += 1;
        }
        summary.deleted += usize::from(line["deleted"] == true);
        writeln!(out, "{line}").context("writing the result line")?;
    }
    database.close().await;
    Ok(summary)
}

async fn one_file(
    ocr: &OcrService,
    database: &Database,
    run_id: &str,
    path: PathBuf,
    cap: usize,
) -> serde_json::Value {
    let file = path.display().to_string();
    let bytes = match std::fs::metadata(&path) {
        Ok(m) if m.len() > cap as u64 => {
            return json!({"file": file, "status": "error", "error": {"code": "image_too_large", "message": format!("larger than {cap} bytes")}, "deleted": false});
        }
        _ => match tokio::fs::read(&path).await {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => {
                return json!({"file": file, "status": "error", "error": {"code": "unreadable", "message": err.to_string()}, "deleted": false});
            }
        },
    };
    let recognition = ocr
        .recognize(
            super::Requester {
                request_id: run_id,
                client_key_id: None,
                priority: super::Priority::Batch,
            },
            ImageRequest {
                url_type: UrlType::Local,
                image_url: file.clone(),
                upload: Some(bytes),
            },
        )
        .await;
    let id = recognition.record.ocr_id.clone();
    let stored = database
        .insert_ocr_results(std::slice::from_ref(&recognition.record))
        .await;
    match (recognition.outcome, stored) {
        (Ok(result), Ok(())) => {
            let deleted = std::fs::remove_file(&path).is_ok();
            json!({"file": file, "id": id, "status": "ok", "data": result.data, "elapsed_ms": result.elapsed_ms, "stored": true, "deleted": deleted})
        }
        (Ok(result), Err(err)) => {
            json!({"file": file, "id": id, "status": "not_stored", "data": result.data, "error": {"code": "database_unavailable", "message": err.to_string()}, "stored": false, "deleted": false})
        }
        (Err(err), stored) => {
            json!({"file": file, "id": id, "status": "error", "error": {"code": err.code(), "message": err.to_string()}, "stored": stored.is_ok(), "deleted": false})
        }
    }
}

/// Regular, visible files of the folder, in name order.
fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("reading the folder {}", dir.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
