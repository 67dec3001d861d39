use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use chat_proxy::config::Config;
use chat_proxy::ocr::dir_command::recognize_dir;
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

/// jemalloc rather than glibc's malloc: 7–8% fewer instructions per streamed answer (an answer
/// makes about 330 allocations), for 1–2 MB more memory at 1,000 open streams (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config).context("loading configuration")?;
    let telemetry = chat_proxy::telemetry::init(&config.log, &config.telemetry)?;
    raise_open_files_limit();
    let served = serve(cli.command, config).await;
    // The last spans go out before the process ends (a blocking flush, off the runtime).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    served
}

/// Every open stream is a socket, and a queued request holds one too: the usual soft limit on
/// open files (1,024) would refuse connections long before memory runs out. It is raised to the
/// hard limit, which only the operator sets (`LimitNOFILE=` in the systemd unit).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit raised to the hard limit"),
        Err(err) => tracing::warn!(error = %err, "could not raise the open files limit"),
    }
}

async fn serve(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve) {
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
