use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use chat_proxy::config::Config;
use chat_proxy::startup::Application;

/// Streaming proxy between chatbot front ends and an OpenAI-compatible model API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file; repeat to layer files, later ones overriding earlier ones key by key.
    #[arg(long = "config", value_name = "FILE", default_value = "config.toml")]
    config: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.config).context("loading configuration")?;
    chat_proxy::telemetry::init(&config.log);
    Application::build(config).await?.run_until_stopped().await
}
