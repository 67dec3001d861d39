//! The OCR worker: one Tesseract engine in its own process, driven by the server over stdin and
//! stdout (the protocol is in `chat_proxy::ocr::worker`). The server starts it with
//! `OMP_THREAD_LIMIT=1` and the Tesseract languages as its one argument; it exits when its
//! stdin closes.

use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use chat_proxy::ocr::worker::{Recognized, Reply, read_request, write_reply};
use image::GrayImage;
use tesseract::{PageSegMode, Tesseract};

fn main() -> ExitCode {
    let Some(languages) = std::env::args().nth(1) else {
        eprintln!(
            "usage: chat-proxy-ocr LANGUAGES\n\
             (chat-proxy starts it and talks to it over stdin and stdout)"
        );
        return ExitCode::from(2);
    };
    let mut output = BufWriter::new(io::stdout().lock());
    let mut engine = match new_engine(&languages) {
        Ok(engine) => Some(engine),
        Err(message) => {
            let _ = write_reply(&mut output, &Reply::Failed(message));
            return ExitCode::FAILURE;
        }
    };
    if write_reply(&mut output, &Reply::Ready).is_err() {
        return ExitCode::FAILURE;
    }
    let mut input = BufReader::new(io::stdin().lock());
    loop {
        let page = match read_request(&mut input) {
            Ok(Some(page)) => page,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                let _ = write_reply(&mut output, &Reply::Failed(e.to_string()));
                return ExitCode::FAILURE;
            }
        };
        // The crate's calls consume the engine, so a failed one is gone: make a fresh one.
        let outcome = match engine.take() {
            Some(engine) => Ok(engine),
            None => new_engine(&languages),
        }
        .and_then(|current| run(current, &page));
        let reply = match outcome {
            Ok((current, found)) => {
                engine = Some(current);
                Reply::Recognized(found)
            }
            Err(message) => Reply::Failed(message),
        };
        if write_reply(&mut output, &reply).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

fn new_engine(languages: &str) -> Result<Tesseract, String> {
    let engine = Tesseract::new(None, Some(languages))
        .map_err(|e| format!("starting Tesseract ({languages}): {e}"))?;
    engine
        .set_variable("preserve_interword_spaces", "1")
        .map_err(|e| format!("configuring Tesseract: {e}"))
}

fn run(engine: Tesseract, page: &GrayImage) -> Result<(Tesseract, Recognized), String> {
    let (width, height) = page.dimensions();
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let too_large = |_| format!("a {width}x{height} page is too large for Tesseract");
    let (w, h) = (
        i32::try_from(width).map_err(too_large)?,
        i32::try_from(height).map_err(too_large)?,
    );
    let mut engine = engine
        .set_frame(page.as_raw(), w, h, 1, w)
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
