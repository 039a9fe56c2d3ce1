//! Accepting and serving connections, with bounds that slow or idle clients
//! cannot stretch.
//!
//! `axum::serve` accepts every connection and waits for headers, bodies
//! and the next request of a keep-alive connection as long as the client
//! likes: some 20,000 half-sent requests held that many sockets open until
//! the process ran out of file descriptors, and then nobody was served.
//! Here, with [`ConnectionLimits`]:
//!
//! - at most `max_connections` are served at once; the next ones wait in
//!   the kernel's listen backlog, not accepted, so they cost no descriptor;
//! - a request's headers must be complete within `header_timeout` of the
//!   connection waiting for them (hyper's header read timeout: from the
//!   accept, and on a keep-alive connection from the end of the previous
//!   response, so it also closes idle keep-alive connections);
//! - its body must arrive whole within `body_timeout` of its headers, or the
//!   extractor reading it answers `408 body_timeout`;
//! - a connection on which no byte moves either way for `idle_timeout` is
//!   closed, whatever it is in the middle of (a client that stopped reading
//!   its response, say).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// How long a connection may take, and how many are served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for a request's headers, from when the connection waits for
    /// them (its accept, or the previous response): also how long an idle
    /// keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Time for a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Time a connection may go without a byte moving either way. Longer
    /// than the longest long poll ([`crate::approvals::MAX_WAIT`]), which is
    /// silent while it waits.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then lets the connections in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connections watch `stop` for the shutdown, and each holds a `done`
    // receiver until it ends.
    let (stop, stopping) = watch::channel(());
    let (all_done, done) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before its
                    // accept: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let mut stopping = stopping.clone();
        let done = done.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, limits, &mut stopping).await;
            drop(slot);
            drop(done);
        });
    }
    drop(listener);
    drop(stop);
    drop(done);
    all_done.closed().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    stopping: &mut watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let body_timeout = limits.body_timeout;
    let service = TowerToHyperService::new(app.map_request(
        move |request: axum::http::Request<Incoming>| {
            request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)))
        },
    ));
    // HTTP/1.1 only, as axum::serve was built here: HTTP/2's multiplexed
    // streams would need limits of their own.
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Above Mandate's own limit (`head_limits`), which answers in JSON;
        // hyper's bare 431 is left for heads far beyond it.
        .max_headers(4 * crate::head_limits::MAX_HEADERS)
        .serve_connection(io, service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut idle = std::pin::pin!(activity.idle_for(limits.idle_timeout));
    let mut stopping_seen = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut idle => {
                tracing::debug!("connection idle too long; closed");
                return;
            }
            _ = stopping.changed(), if !stopping_seen => {
                stopping_seen = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A TCP stream that records when bytes last moved.
struct Watched {
    stream: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The body did not arrive whole in time.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} ms of the request's headers (`body_timeout_ms`)", .0.as_millis())]
pub(crate) struct BodyTimeout(Duration);

/// A request body that must arrive whole by a deadline, set when its
/// headers arrived. Only reading it runs the clock out: a handler that
/// never reads its body is not cut off.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let timeout = self.timeout;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error`, or an error it wraps, is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}
