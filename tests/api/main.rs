//! End-to-end tests: the real app against the mock model, over real sockets on 127.0.0.1.
// The tests are the product's clients and peers (servers, relays, many users at once): they
// spawn their own tasks; only the product goes through its Lifecycle.
#![expect(
    clippy::disallowed_methods,
    reason = "test clients and peers spawn their own tasks"
)]

mod answer;
mod auth;
mod chaos;
#[path = "../support/eventually.rs"]
mod eventually;
mod faults;
mod fixtures;
mod helpers;
mod image_server;
mod limits;
mod load;
mod metrics;
mod mysql;
mod ocr;
mod ocr_owners;
mod openai;
mod openapi;
mod probes;
#[path = "../support/process.rs"]
mod process;
mod queue;
mod shutdown;
mod slow_clients;
mod store;
mod tools;
mod ui;
