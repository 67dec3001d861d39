//! Answers: the checked request ([`request`]), the service that admits it and owns its whole
//! lifecycle ([`service`]), the exchange that streams the model's answer through the permit pool
//! ([`exchange`]) into the client's queue (`outbox`, the queue and its size in [`backlog`]), what it reports ([`events`]) and how it
//! can fail ([`error`]); how images in the messages reach the model and its tool ([`images`]).

pub mod backlog;
mod burst;
pub mod error;
pub mod events;
pub mod exchange;
pub mod images;
pub mod models;
mod outbox;
pub mod request;
pub mod service;
pub mod tools;
mod woken;

pub use backlog::{AnswerEvents, BacklogLimits, BufferBudget};
pub use error::{AdmissionError, ExchangeError, RequestError};
pub use events::{AnswerEvent, DoneInfo, ExchangeOutcome, ExchangeStatus, Meta, Timings};
pub use exchange::{AnswerContext, Exchange};
pub use models::{ModelCatalog, ModelRoute};
pub use request::{AnswerRequest, Api, ClientTools};
pub use service::{AnswerService, Caller};
