//! Tesseract runs in worker processes (the `chat-proxy-ocr` binary), one engine each, never in
//! the server. A crash in the C++ library ends one worker rather than the service, a
//! recognition past its time limit can be killed (a thread cannot be), and the server does not
//! map libtesseract and the libraries it pulls in.
//!
//! A worker reads requests on its stdin and answers on its stdout, one at a time. Integers are
//! little-endian `u32`; strings are a length and UTF-8 bytes.
//! - request: `width`, `height`, then `width × height` bytes of 8-bit gray pixels;
//! - reply: one kind byte, then its strings: [`READY`] (none) once the engine is up,
//!   [`RECOGNIZED`] (`tsv`, `text`), or [`FAILED`] (`message`).
//!
//! A worker exits when its stdin closes, so workers never outlive the server, even one killed
//! with `kill -9`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use image::GrayImage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::OcrError;

pub const READY: u8 = 0;
pub const RECOGNIZED: u8 = 1;
pub const FAILED: u8 = 2;

/// The worker binary's name; it is looked for beside the server's own executable.
pub const WORKER_BINARY: &str = "chat-proxy-ocr";

/// Largest page a worker accepts (a guard against a corrupt frame, not the request limit,
/// which `ocr.max_pixels` sets well below it).
pub const MAX_PAGE_PIXELS: u64 = 1 << 30;

/// Longest string in a reply.
const MAX_REPLY_STRING: usize = 64 << 20;

/// What one recognition gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognized {
    /// Word boxes, Tesseract's TSV.
    pub tsv: String,
    pub text: String,
}

/// One reply frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ready,
    Recognized(Recognized),
    Failed(String),
}

/// Reads one request (worker side); `None` when stdin closed between requests.
pub fn read_request(input: &mut impl Read) -> io::Result<Option<GrayImage>> {
    let mut head = [0u8; 8];
    loop {
        match input.read(&mut head[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    input.read_exact(&mut head[1..])?;
    let width = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let height = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > MAX_PAGE_PIXELS {
        return Err(invalid(format!("a {width}x{height} page")));
    }
    let mut raw = vec![0; usize::try_from(pixels).map_err(|_| invalid("page size".into()))?];
    input.read_exact(&mut raw)?;
    Ok(GrayImage::from_raw(width, height, raw))
}

/// Writes one reply (worker side) and flushes it.
pub fn write_reply(output: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let strings: &[&str] = match reply {
        Reply::Ready => {
            output.write_all(&[READY])?;
            &[]
        }
        Reply::Recognized(found) => {
            output.write_all(&[RECOGNIZED])?;
            &[&found.tsv, &found.text]
        }
        Reply::Failed(message) => {
            output.write_all(&[FAILED])?;
            &[message]
        }
    };
    for string in strings {
        let len = u32::try_from(string.len()).map_err(|_| invalid("reply string size".into()))?;
        output.write_all(&len.to_le_bytes())?;
        output.write_all(string.as_bytes())?;
    }
    output.flush()
}

/// Reads one reply (server side).
pub async fn read_reply(input: &mut (impl AsyncRead + Unpin)) -> io::Result<Reply> {
    match input.read_u8().await? {
        READY => Ok(Reply::Ready),
        RECOGNIZED => Ok(Reply::Recognized(Recognized {
            tsv: read_string(input).await?,
            text: read_string(input).await?,
        })),
        FAILED => Ok(Reply::Failed(read_string(input).await?)),
        kind => Err(invalid(format!("reply kind {kind}"))),
    }
}

async fn read_string(input: &mut (impl AsyncRead + Unpin)) -> io::Result<String> {
    let len = input.read_u32_le().await? as usize;
    if len > MAX_REPLY_STRING {
        return Err(invalid(format!("a reply string of {len} bytes")));
    }
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes).await?;
    String::from_utf8(bytes).map_err(|_| invalid("a reply string that is not UTF-8".into()))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("OCR worker protocol: {what}"),
    )
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub languages: String,
}

impl WorkerCommand {
    /// `program` as configured, or, when empty, [`WORKER_BINARY`] beside the running executable.
    pub fn new(program: &Path, languages: &str) -> Self {
        let program = if program.as_os_str().is_empty() {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(WORKER_BINARY)))
                .unwrap_or_else(|| PathBuf::from(WORKER_BINARY))
        } else {
            program.to_owned()
        };
        Self {
            program,
            languages: languages.to_owned(),
        }
    }
}

impl WorkerCommand {
    /// Fails, naming the path, when the program is not an executable file.
    pub fn check(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(&self.program) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(format!(
                "{} is not an executable file",
                self.program.display()
            )),
            Err(e) => Err(format!("{}: {e}", self.program.display())),
        }
    }
}

/// One running worker with its engine loaded. Dropping it kills the process.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts a worker and waits until its engine is up.
    pub async fn start(command: &WorkerCommand) -> Result<Self, OcrError> {
        let mut child = Command::new(&command.program)
            .arg(&command.languages)
            // Debian's libtesseract uses OpenMP, which reads this when the library loads; without
            // it a recognition runs about 4 times slower on all cores.
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                OcrError::Engine(format!(
                    "starting the OCR worker {}: {e}",
                    command.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes were asked for");
        };
        let mut worker = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        match worker.reply().await? {
            Reply::Ready => Ok(worker),
            Reply::Failed(message) => Err(OcrError::Engine(message)),
            Reply::Recognized(_) => Err(OcrError::Engine(
                "the OCR worker answered before it was asked".into(),
            )),
        }
    }

    /// Recognizes one page. After an error the worker must be dropped: the engine failed, or
    /// the process is gone or out of step.
    pub async fn recognize(&mut self, page: &GrayImage) -> Result<Recognized, OcrError> {
        let (width, height) = page.dimensions();
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&width.to_le_bytes());
        head[4..].copy_from_slice(&height.to_le_bytes());
        let sent = async {
            self.stdin.write_all(&head).await?;
            self.stdin.write_all(page.as_raw()).await?;
            self.stdin.flush().await
        }
        .await;
        if let Err(e) = sent {
            return Err(self.lost(&e).await);
        }
        match self.reply().await? {
            Reply::Recognized(found) => Ok(found),
            Reply::Failed(message) => Err(OcrError::Engine(message)),
            Reply::Ready => Err(OcrError::Engine(
                "the OCR worker sent a second ready frame".into(),
            )),
        }
    }

    async fn reply(&mut self) -> Result<Reply, OcrError> {
        match read_reply(&mut self.stdout).await {
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.lost(&e).await),
        }
    }

    /// The error for a worker that stopped answering, with its exit status when it has one.
    async fn lost(&mut self, err: &io::Error) -> OcrError {
        let exited = tokio::time::timeout(std::time::Duration::from_millis(200), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        OcrError::Engine(match exited {
            Some(status) => format!("the OCR worker {}", describe(status)),
            None => format!("the OCR worker stopped answering: {err}"),
        })
    }

    /// False once the process has exited (killed while idle, say).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("was killed by signal {signal}"),
        (Some(code), _) => format!("exited with status {code}"),
        (None, None) => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(reply: Reply) -> Reply {
        let mut bytes = Vec::new();
        write_reply(&mut bytes, &reply).expect("written");
        read_reply(&mut bytes.as_slice()).await.expect("read")
    }

    #[tokio::test]
    async fn replies_survive_the_round_trip() {
        for reply in [
            Reply::Ready,
            Reply::Recognized(Recognized {
                tsv: "level\tpage_num\n".into(),
                text: "基金代码 005827".into(),
            }),
            Reply::Failed("recognizing: no text".into()),
        ] {
            assert_eq!(round_trip(reply.clone()).await, reply);
        }
    }

    #[test]
    fn a_request_is_the_size_and_the_pixels() {
        let page = GrayImage::from_raw(3, 2, vec![1, 2, 3, 4, 5, 6]).expect("page");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(page.as_raw());
        let mut input = bytes.as_slice();
        assert_eq!(read_request(&mut input).expect("read"), Some(page));
        assert_eq!(read_request(&mut input).expect("end"), None, "a clean end");
    }

    #[test]
    fn a_cut_or_absurd_request_is_an_error() {
        let mut cut = Vec::new();
        cut.extend_from_slice(&3u32.to_le_bytes());
        cut.extend_from_slice(&2u32.to_le_bytes());
        cut.extend_from_slice(&[1, 2]);
        assert!(read_request(&mut cut.as_slice()).is_err());
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_request(&mut huge.as_slice()).is_err());
        assert!(read_request(&mut &[7u8, 0][..]).is_err(), "half a header");
    }

    #[tokio::test]
    async fn an_unknown_reply_or_a_cut_one_is_an_error() {
        assert!(read_reply(&mut &[9u8][..]).await.is_err());
        assert!(
            read_reply(&mut &[RECOGNIZED, 5, 0, 0, 0, b'a'][..])
                .await
                .is_err()
        );
        assert!(
            read_reply(&mut &[FAILED, 1, 0, 0, 0, 0xff][..])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_missing_worker_program_is_an_engine_error_naming_it() {
        let command = WorkerCommand::new(Path::new("/nonexistent/chat-proxy-ocr"), "eng");
        let Err(err) = Worker::start(&command).await else {
            panic!("started a worker that does not exist");
        };
        assert!(
            err.to_string().contains("/nonexistent/chat-proxy-ocr"),
            "{err}"
        );
    }
}
