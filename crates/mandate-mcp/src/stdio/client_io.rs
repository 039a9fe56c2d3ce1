//! The client's side of the wrapper: this process's stdin and stdout.
//!
//! `tokio::io::stdin()` and `stdout()` do their reads and writes on the
//! blocking thread pool, so every message in and every answer out crosses
//! threads twice. An MCP client starts the wrapper with pipes (or a socket
//! pair) for both, which the runtime can poll like any socket: those are
//! used directly, each on a duplicate of its descriptor set non-blocking.
//! A terminal or a file falls back to tokio's own stdin and stdout.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;

/// The client's input: this process's stdin.
pub struct ClientIn(Input);

enum Input {
    Pipe(pipe::Receiver),
    Socket(UnixStream),
    Blocking(tokio::io::Stdin),
}

/// The client's output: this process's stdout.
pub struct ClientOut(Output);

enum Output {
    Pipe(pipe::Sender),
    Socket(UnixStream),
    Blocking(tokio::io::Stdout),
}

/// This process's stdin and stdout as the client's input and output,
/// polled by the runtime when they are pipes or sockets. Call it from
/// within the runtime that will use them.
pub fn client_stdio() -> (ClientIn, ClientOut) {
    let input = duplicate(std::io::stdin().as_fd())
        .and_then(|fd| match kind(&fd) {
            Kind::Pipe => pipe::Receiver::from_owned_fd(fd).ok().map(Input::Pipe),
            Kind::Socket => socket(fd).map(Input::Socket),
            Kind::Other => None,
        })
        .unwrap_or_else(|| Input::Blocking(tokio::io::stdin()));
    let output = duplicate(std::io::stdout().as_fd())
        .and_then(|fd| match kind(&fd) {
            Kind::Pipe => pipe::Sender::from_owned_fd(fd).ok().map(Output::Pipe),
            Kind::Socket => socket(fd).map(Output::Socket),
            Kind::Other => None,
        })
        .unwrap_or_else(|| Output::Blocking(tokio::io::stdout()));
    (ClientIn(input), ClientOut(output))
}

enum Kind {
    Pipe,
    Socket,
    Other,
}

fn duplicate(fd: std::os::fd::BorrowedFd<'_>) -> Option<OwnedFd> {
    fd.try_clone_to_owned().ok()
}

fn kind(fd: &OwnedFd) -> Kind {
    let Ok(file) = fd.try_clone().map(File::from) else {
        return Kind::Other;
    };
    match file.metadata().map(|m| m.file_type()) {
        Ok(t) if t.is_fifo() => Kind::Pipe,
        Ok(t) if t.is_socket() => Kind::Socket,
        _ => Kind::Other,
    }
}

fn socket(fd: OwnedFd) -> Option<UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true).ok()?;
    UnixStream::from_std(stream).ok()
}

impl AsyncRead for ClientIn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().0 {
            Input::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Input::Socket(s) => Pin::new(s).poll_read(cx, buf),
            Input::Blocking(b) => Pin::new(b).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientOut {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().0 {
            Output::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Output::Socket(s) => Pin::new(s).poll_write(cx, buf),
            Output::Blocking(b) => Pin::new(b).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().0 {
            Output::Pipe(p) => Pin::new(p).poll_flush(cx),
            Output::Socket(s) => Pin::new(s).poll_flush(cx),
            Output::Blocking(b) => Pin::new(b).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().0 {
            Output::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            // Shutting the socket down would close the client's input
            // for every descriptor of it; leave that to the exit.
            Output::Socket(_) => Poll::Ready(Ok(())),
            Output::Blocking(b) => Pin::new(b).poll_shutdown(cx),
        }
    }
}
