//! `/answer`: the checked request ([`request`]) and the exchange that streams the model's answer
//! through the permit queue ([`exchange`]).

mod burst;
pub mod exchange;
pub mod request;
pub mod tools;

pub use exchange::{
    AnswerContext, AnswerEvent, DoneInfo, Exchange, ExchangeOutcome, ExchangeStatus, Meta, Timings,
};
pub use request::AnswerRequest;
