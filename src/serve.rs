//! The HTTP/1 server loop: accepts connections and serves the router on each, with the
//! connection-level limits `axum::serve` does not offer. A client must send a whole request head
//! within `server.header_read_timeout_ms` (from connecting, or from its first byte after an
//! answered request); a connection with no request in progress is closed after
//! `server.idle_timeout_ms`. A request in progress (a long stream, a slow model) is never cut
//! by either. A connection whose writes stay blocked for twice `server.client_write_timeout_ms`
//! (its client stopped reading) is closed. Each request carries the peer address as
//! `ConnectInfo`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// A request head (request line and headers) larger than this is refused with 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// A connection whose writes stay blocked this long (its client reads nothing) is closed.
    pub write_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, lets each
/// connection finish the request it is serving, and returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Small SSE events must leave at once: without TCP_NODELAY, Nagle holds a delta behind
        // the unacknowledged `meta` for the client's delayed ACK (about 40 ms).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        connections.spawn(serve_connection(
            tcp,
            peer,
            router.clone(),
            limits,
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors such as running out of file descriptors would repeat at once: wait a little.
async fn accept_failed(err: io::Error) {
    let per_connection = matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    );
    if !per_connection {
        tracing::error!(error = %err, "accepting a connection failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = WatchedIo {
        inner: tcp,
        activity: activity.clone(),
    };
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = InFlight::start(activity.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            expiry = activity.expired(limits) => match expiry {
                Expiry::HeaderTimeout => {
                    tracing::debug!(%peer, "request head not received in time; closing");
                    return;
                }
                Expiry::Idle => {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
                Expiry::WriteTimeout => {
                    tracing::info!(%peer, "client read nothing in time; connection closed");
                    return;
                }
            },
            () = stop.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

enum Expiry {
    HeaderTimeout,
    Idle,
    WriteTimeout,
}

/// What a connection is doing, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    /// 1 + the time the request head being read began; 0 when no head is being read.
    head_started: AtomicU64,
    /// When the last request in progress finished (0: at open).
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
    /// 1 + the time a write first found the socket full; 0 while writes go through.
    write_blocked: AtomicU64,
    /// Wakes the watcher when a deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            // The first head is due from the moment the client connects.
            head_started: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            write_blocked: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Bytes arrived: with no request in progress they begin the next request head.
    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A write found the socket full (`blocked`), or went through.
    fn wrote(&self, blocked: bool) {
        let since = self.write_blocked.load(Ordering::Acquire);
        if blocked && since == 0 {
            self.write_blocked
                .store(self.now_ms() + 1, Ordering::Release);
            self.changed.notify_one();
        } else if !blocked && since != 0 {
            self.write_blocked.store(0, Ordering::Release);
        }
    }

    /// Resolves when the connection has broken one of the limits.
    async fn expired(&self, limits: ConnectionLimits) -> Expiry {
        let header_ms = limits.header_read_timeout.as_millis() as u64;
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        let write_ms = limits.write_timeout.as_millis() as u64;
        loop {
            let now = self.now_ms();
            let blocked = self.write_blocked.load(Ordering::Acquire);
            let write_deadline = (blocked != 0).then(|| blocked - 1 + write_ms);
            if write_deadline.is_some_and(|deadline| now >= deadline) {
                return Expiry::WriteTimeout;
            }
            let head_started = self.head_started.load(Ordering::Acquire);
            let wake = if head_started != 0 {
                let deadline = head_started - 1 + header_ms;
                if now >= deadline {
                    return Expiry::HeaderTimeout;
                }
                Some(deadline)
            } else if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                let deadline = self.idle_since.load(Ordering::Acquire) + idle_ms;
                if now >= deadline {
                    return Expiry::Idle;
                }
                Some(deadline)
            };
            let wake = match (wake, write_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake {
                Some(wake) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.at(wake)) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// One request in progress on a connection, from its parsed head until its response body is
/// finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.head_started.store(0, Ordering::Release);
        // No wake-up: a request in progress moves no deadline earlier.
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in progress while it is being sent.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, noting when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_breaks_the_header_timeout() {
        let activity = Activity::new();
        let start = Instant::now();
        assert!(matches!(
            activity.expired(LIMITS).await,
            Expiry::HeaderTimeout
        ));
        assert_eq!(start.elapsed(), LIMITS.header_read_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_never_expires_and_idleness_counts_from_its_end() {
        let activity = Arc::new(Activity::new());
        let request = InFlight::start(activity.clone());
        let expired = tokio::time::timeout(Duration::from_secs(600), activity.expired(LIMITS));
        assert!(expired.await.is_err(), "a request in progress expired");
        let ended = Instant::now();
        drop(request);
        assert!(matches!(activity.expired(LIMITS).await, Expiry::Idle));
        assert_eq!(ended.elapsed(), LIMITS.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_after_an_answered_request_start_the_next_head() {
        let activity = Arc::new(Activity::new());
        drop(InFlight::start(activity.clone()));
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.received();
        let head = Instant::now();
        assert!(matches!(
            activity.expired(LIMITS).await,
            Expiry::HeaderTimeout
        ));
        assert_eq!(head.elapsed(), LIMITS.header_read_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_writes_stay_blocked_is_closed() {
        let activity = Arc::new(Activity::new());
        let _request = InFlight::start(activity.clone());
        activity.wrote(true);
        tokio::time::sleep(Duration::from_secs(40)).await;
        // A write that went through starts the count again.
        activity.wrote(false);
        activity.wrote(true);
        let blocked = Instant::now();
        assert!(matches!(
            activity.expired(LIMITS).await,
            Expiry::WriteTimeout
        ));
        assert_eq!(blocked.elapsed(), LIMITS.write_timeout);
    }
}
