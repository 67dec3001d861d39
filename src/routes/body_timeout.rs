//! A request's body must arrive within `server.body_read_timeout_ms` of its head. A client that
//! sends a head and then trickles the body (a byte every few seconds) would otherwise hold its
//! connection and its handler for ever; the head has its own timeout in [`crate::serve`]. Only
//! the request body is timed: the response, however long its stream, is not.
//!
//! The layer wraps each request's body in a [`TimedBody`]; past the deadline it fails with
//! [`BodyTimedOut`], and whichever route was reading it answers 408 (see [`timed_out`]).

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// Why a body read failed: it was still arriving at the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimedOut(Duration);

/// Whether `err`, or an error it wraps, is a [`BodyTimedOut`].
pub fn timed_out<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(timed_out) = err.downcast_ref() {
            return Some(timed_out);
        }
        current = err.source();
    }
    None
}

#[derive(Debug, Clone, Copy)]
pub struct BodyTimeoutLayer(Duration);

impl BodyTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self(timeout)
    }
}

impl<S> Layer<S> for BodyTimeoutLayer {
    type Service = BodyTimeout<S>;

    fn layer(&self, inner: S) -> BodyTimeout<S> {
        BodyTimeout {
            inner,
            timeout: self.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BodyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S: Service<Request>> Service<Request> for BodyTimeout<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        let timeout = self.timeout;
        let request = request.map(|body| {
            Body::new(TimedBody {
                inner: body,
                deadline: Instant::now() + timeout,
                timeout,
                sleep: None,
            })
        });
        self.inner.call(request)
    }
}

/// A request body that fails once its deadline passes while it is still arriving.
pub struct TimedBody {
    inner: Body,
    deadline: Instant,
    timeout: Duration,
    /// Made only when the body has to be waited on (over HTTP/1.1, usually once: hyper hands
    /// the body over after the head).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_at_the_deadline_and_a_prompt_one_passes() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let slow = Body::from_stream(tokio_stream_from(rx));
        let timed = Body::new(TimedBody {
            inner: slow,
            deadline: Instant::now() + Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            sleep: None,
        });
        tx.send(Ok(Bytes::from_static(b"{"))).await.expect("open");
        let err = axum::body::to_bytes(timed, 1024)
            .await
            .expect_err("the rest never comes");
        let err = err.into_inner();
        assert!(timed_out(err.as_ref()).is_some(), "{err}");

        let prompt = Body::new(TimedBody {
            inner: Body::from("{}"),
            deadline: Instant::now() + Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            sleep: None,
        });
        let bytes = axum::body::to_bytes(prompt, 1024).await.expect("whole");
        assert_eq!(&bytes[..], b"{}");
        drop(tx);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}
