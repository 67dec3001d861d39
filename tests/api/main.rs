//! End-to-end tests: the real app against the mock model, over real sockets on 127.0.0.1.

mod answer;
mod auth;
#[path = "../support/eventually.rs"]
mod eventually;
mod faults;
mod fixtures;
mod helpers;
mod limits;
mod load;
mod metrics;
mod mysql;
mod ocr;
mod openapi;
#[path = "../support/process.rs"]
mod process;
mod queue;
mod shutdown;
mod store;
mod tools;
