//! chat-proxy: a streaming proxy between chatbot front ends and an OpenAI-compatible model API.
//!
//! - [`config`]: typed settings from `config.toml` files and `CHAT_PROXY__*` variables.
//! - [`startup`]: builds the [`startup::Application`] and runs it until shutdown; [`serve`] is
//!   its connection loop with the header-read and idle timeouts.
//! - [`routes`]: the HTTP endpoints (thin handlers that only adapt; two front doors to answers,
//!   `/answer` and the OpenAI-compatible [`routes::openai`]), [`error`] their JSON errors and the
//!   one mapping of domain errors to HTTP, [`auth`] the client API keys in front of them.
//! - [`answer`]: answers, from checked request to streamed events and log record; its
//!   [`answer::AnswerService`] owns each exchange's whole lifecycle, whichever door it came by.
//! - [`permit_pool`]: the one door to an upstream permit, over [`permit_queue`] (the FIFO
//!   semaphore queue guarding the upstream's parallel limit) or over [`cluster`] (the pool and
//!   queue several instances share through Redis); [`client_limits`]: the per-client limits in
//!   front of it.
//! - [`lifecycle`]: the task tracker, draining flag and stop signal shutdown goes through.
//! - [`upstream`]: the model API client; [`http_client`]: what it shares with image downloads;
//!   [`demo`]: the built-in offline model (also the test mock).
//! - [`ocr`]: image fetch behind an SSRF guard, the Tesseract worker pool, fund-holdings
//!   extraction, HTTP jobs and the `ocr-dir` command.
//! - [`prompts`]: the prompt templates read from `prompts/` at start-up.
//! - [`store`]: the database and the background log writer that never delays a response.
//! - [`state`], [`telemetry`], [`metrics`]: shared handles, logging, and `/metrics` (which
//!   renders readings it is given, and knows no other module's types but the log writer's stats).

pub mod answer;
pub mod auth;
pub mod client_limits;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod http_client;
pub mod lifecycle;
pub mod metrics;
pub mod ocr;
pub mod permit_pool;
pub mod permit_queue;
pub mod prompts;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
