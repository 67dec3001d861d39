//! chat-proxy: a streaming proxy between chatbot front ends and an OpenAI-compatible model API.
//!
//! - [`config`]: typed settings from `config.toml` files and `CHAT_PROXY__*` variables.
//! - [`startup`]: builds the [`startup::Application`] and runs it until shutdown; [`serve`] is
//!   its connection loop with the header-read and idle timeouts.
//! - [`routes`]: the HTTP endpoints (thin handlers), [`error`] their JSON errors, [`auth`]
//!   the client API keys in front of them.
//! - [`answer`]: answers, from checked request to streamed events and log record; its
//!   [`answer::AnswerService`] owns each exchange's whole lifecycle.
//! - [`permit_pool`]: the one door to an upstream permit, over [`permit_queue`] (the FIFO
//!   semaphore queue guarding the upstream's parallel limit); [`client_limits`]: the per-client
//!   limits in front of it.
//! - [`lifecycle`]: the task tracker, draining flag and stop signal shutdown goes through.
//! - [`upstream`]: the model API client; [`demo`]: the built-in offline model (also the test mock).
//! - [`ocr`]: safe image fetch, Tesseract engine pool, fund-holdings extraction.
//! - [`prompts`]: the prompt templates read from `prompts/` at start-up.
//! - [`store`]: the database and the background log writer that never delays a response.
//! - [`state`], [`telemetry`], [`metrics`]: shared handles, logging, and `/metrics`.

pub mod answer;
pub mod auth;
pub mod client_limits;
pub mod config;
pub mod demo;
pub mod error;
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
