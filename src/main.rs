use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use chat_proxy::config::Config;
use chat_proxy::ocr::batch::recognize_dir;
use chat_proxy::startup::Application;

/// Streaming proxy between chatbot front ends and an OpenAI-compatible model API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file; repeat to layer files, later ones overriding earlier ones key by key.
    #[arg(
        long = "config",
        value_name = "FILE",
        default_value = "config.toml",
        global = true
    )]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Recognise every image in DIR, print a JSON line per file, store each result, and delete
    /// a file once its row is stored (failed files stay). Exits 1 if any file failed.
    OcrDir {
        /// The folder of images.
        dir: PathBuf,
    },
}

/// Debian's libtesseract uses OpenMP, which reads `OMP_THREAD_LIMIT` when the library loads,
/// before `main`. Without a limit of 1 a recognition runs about 4 times slower, so the binary
/// starts itself again with the variable set when it is missing.
fn ensure_omp_thread_limit() {
    const VAR: &str = "OMP_THREAD_LIMIT";
    const GUARD: &str = "CHAT_PROXY_REEXECUTED";
    if std::env::var(VAR).as_deref() == Ok("1") || std::env::var_os(GUARD).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("warning: cannot find this program to restart it with {VAR}=1; OCR will be slow");
        return;
    };
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(VAR, "1")
        .env(GUARD, "1")
        .exec();
    eprintln!("warning: restarting with {VAR}=1 failed ({err}); OCR will be slow");
}

fn main() -> anyhow::Result<()> {
    ensure_omp_thread_limit();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config).context("loading configuration")?;
    chat_proxy::telemetry::init(&config.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Application::build(config).await?.run_until_stopped().await,
        Command::OcrDir { dir } => {
            let mut stdout = std::io::stdout().lock();
            let summary = recognize_dir(&config, &dir, &mut stdout).await?;
            tracing::info!(
                recognised = summary.recognised,
                failed = summary.failed,
                deleted = summary.deleted,
                "ocr-dir finished"
            );
            if summary.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
