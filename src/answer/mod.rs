//! `/answer`: the checked request ([`request`]), the exchange that streams the model's answer
//! through the permit queue ([`exchange`]) and what it reports ([`events`]).

mod burst;
pub mod events;
pub mod exchange;
pub mod request;
pub mod tools;

pub use events::{AnswerEvent, DoneInfo, ExchangeOutcome, ExchangeStatus, Meta, Timings};
pub use exchange::{AnswerContext, Exchange};
pub use request::AnswerRequest;
