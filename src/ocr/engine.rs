//! Tesseract engines in a pool. An engine takes about 0.2 s to create and 110 MB, so engines
//! are made once and reused; recognition runs on the blocking pool, never on the async
//! runtime. The `tesseract` crate's calls consume the engine, so one that fails is dropped and
//! a fresh one is made the next time it is needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use image::GrayImage;
use tesseract::{PageSegMode, Tesseract};
use tokio::sync::Semaphore;

use super::OcrError;

/// What one recognition gives back.
#[derive(Debug, Clone)]
pub struct Recognized {
    /// Word boxes, Tesseract's TSV.
    pub tsv: String,
    pub text: String,
}

pub struct EnginePool {
    languages: String,
    size: usize,
    /// Shared with the blocking tasks, which put their engine back themselves: a caller that
    /// stops waiting (the client left) neither loses the engine nor frees its slot early.
    idle: Arc<Mutex<Vec<Tesseract>>>,
    permits: Arc<Semaphore>,
    busy: Arc<AtomicUsize>,
    created: Arc<AtomicUsize>,
}

impl EnginePool {
    pub fn new(languages: &str, size: usize) -> Self {
        Self {
            languages: languages.to_owned(),
            size,
            idle: Arc::new(Mutex::new(Vec::with_capacity(size))),
            permits: Arc::new(Semaphore::new(size)),
            busy: Arc::new(AtomicUsize::new(0)),
            created: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Creates every engine now (start-up), so the first requests do not pay for it.
    pub async fn preload(&self) -> Result<(), OcrError> {
        let missing = self.size - self.idle.lock().expect("engine pool lock").len();
        let mut made = Vec::with_capacity(missing);
        for _ in 0..missing {
            let languages = self.languages.clone();
            let engine = tokio::task::spawn_blocking(move || new_engine(&languages))
                .await
                .map_err(|e| OcrError::Engine(format!("engine start-up task: {e}")))??;
            self.created.fetch_add(1, Ordering::AcqRel);
            made.push(engine);
        }
        self.idle.lock().expect("engine pool lock").extend(made);
        Ok(())
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Engines recognizing right now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Engines created since start (more than `size` means some were lost to errors).
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Acquire)
    }

    /// Recognizes a prepared page with one engine of the pool, waiting for a free one.
    pub async fn recognize(&self, page: GrayImage) -> Result<Recognized, OcrError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the engine semaphore is never closed");
        let engine = self.idle.lock().expect("engine pool lock").pop();
        let languages = self.languages.clone();
        let (idle, busy, created) = (self.idle.clone(), self.busy.clone(), self.created.clone());
        busy.fetch_add(1, Ordering::AcqRel);
        let work = tokio::task::spawn_blocking(move || {
            let outcome = match engine {
                Some(engine) => Ok(engine),
                None => new_engine(&languages).inspect(|_| {
                    created.fetch_add(1, Ordering::AcqRel);
                }),
            }
            .and_then(|engine| run(engine, &page));
            let recognized = outcome.map(|(engine, recognized)| {
                idle.lock().expect("engine pool lock").push(engine);
                recognized
            });
            busy.fetch_sub(1, Ordering::AcqRel);
            drop(permit);
            recognized
        });
        work.await
            .map_err(|e| OcrError::Engine(format!("recognition task: {e}")))?
    }
}

fn new_engine(languages: &str) -> Result<Tesseract, OcrError> {
    let engine = Tesseract::new(None, Some(languages))
        .map_err(|e| OcrError::Engine(format!("starting Tesseract ({languages}): {e}")))?;
    engine
        .set_variable("preserve_interword_spaces", "1")
        .map_err(|e| OcrError::Engine(format!("configuring Tesseract: {e}")))
}

fn run(engine: Tesseract, page: &GrayImage) -> Result<(Tesseract, Recognized), OcrError> {
    let (width, height) = page.dimensions();
    let fail = |what: &str, e: &dyn std::fmt::Display| OcrError::Engine(format!("{what}: {e}"));
    let mut engine = engine
        .set_frame(page.as_raw(), width as i32, height as i32, 1, width as i32)
        .map_err(|e| fail("setting the image", &e))?
        .set_source_resolution(300);
    // One uniform block: keeps "name 005827" on one line, where automatic layout split it.
    engine.set_page_seg_mode(PageSegMode::PsmSingleBlock);
    let mut engine = engine.recognize().map_err(|e| fail("recognizing", &e))?;
    let tsv = engine
        .get_tsv_text(0)
        .map_err(|e| fail("reading word boxes", &e))?;
    let text = engine.get_text().map_err(|e| fail("reading text", &e))?;
    Ok((engine, Recognized { tsv, text }))
}
