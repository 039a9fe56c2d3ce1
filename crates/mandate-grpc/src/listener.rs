//! Serving gRPC services on a listener, within limits that slow, idle or
//! greedy clients cannot stretch:
//!
//! - at most `max_connections` connections at once; the next wait in the
//!   kernel's backlog, not accepted;
//! - a connection must send its first bytes (the HTTP/2 preface) within
//!   `handshake_timeout` of its accept, or it is closed before tonic sees it;
//! - each call must be answered within `request_timeout`;
//! - a connection lives at most `max_connection_age`, then is asked to go
//!   away (HTTP/2 GOAWAY; calls in flight finish), so that an idle
//!   connection does not hold its slot for ever; a peer that stops
//!   answering HTTP/2 pings is dropped;
//! - messages above `max_message_bytes` are refused (tonic answers
//!   `OUT_OF_RANGE`) by each service, and at most 128 calls run at once on a connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The limits of a gRPC listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a new connection's first bytes.
    pub handshake_timeout: Duration,
    /// Time for a call's answer.
    pub request_timeout: Duration,
    /// How long a connection is kept before it is asked to go away.
    pub max_connection_age: Duration,
    /// Largest message accepted, in bytes (each service applies it).
    pub max_message_bytes: usize,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(600),
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// Serves `routes` on `listener` within `limits` until `shutdown`
/// completes, then lets the calls in progress finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: GrpcLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (connections, incoming) = mpsc::channel(1);
    tokio::spawn(accept(listener, connections, limits));
    tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .concurrency_limit_per_connection(128)
        .max_concurrent_streams(128)
        .http2_max_header_list_size(64 * 1024)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(limits.request_timeout)
        .add_routes(routes)
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await
}

/// Accepts connections while a slot is free, and hands each that speaks
/// within the handshake time to the server.
async fn accept(
    listener: TcpListener,
    connections: mpsc::Sender<std::io::Result<Connection>>,
    limits: GrpcLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            () = connections.closed() => return,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { return };
        let stream = tokio::select! {
            () = connections.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // tonic's `tcp_nodelay` applies to listeners it accepts on itself,
        // not to connections handed to it: without this, small answers wait
        // behind Nagle's algorithm and a delayed ACK (tens of ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
        }
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut first = [0_u8; 1];
            match tokio::time::timeout(limits.handshake_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {
                    let _ = connections
                        .send(Ok(Connection {
                            stream,
                            _slot: slot,
                        }))
                        .await;
                }
                _ => tracing::debug!("gRPC connection closed before its handshake"),
            }
        });
    }
}

/// An accepted connection, holding its slot until it is dropped.
struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
