//! Connection-level tests: the router served on a loopback socket, spoken to
//! in raw HTTP/1.1, for what only shows on the wire (interim responses,
//! half-sent requests).

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

/// Bound on every wait here: generous for a loaded CI machine, and a hang
/// fails the test instead of the suite.
const PATIENCE: Duration = Duration::from_secs(20);

/// Serves the example-pack router on an ephemeral loopback port.
async fn serve(max_body_bytes: usize) -> (SocketAddr, tempfile::TempDir) {
    let (state, dir) = common::state();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = mandate_server::router(state, max_body_bytes);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, dir)
}

/// Reads one response: its head (status line and headers) and its body, by
/// `Content-Length`.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "connection closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .unwrap();
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

#[tokio::test]
async fn a_body_declared_over_the_limit_gets_413_instead_of_100_continue() {
    let (address, _dir) = serve(1024).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/decide HTTP/1.1\r\nhost: mandate\r\ncontent-type: application/json\r\n\
              content-length: 1025\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    // The client waits for a go-ahead and sends nothing more.
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "body_too_large", "{body}");

    // Within the limit, the go-ahead still comes.
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/decide HTTP/1.1\r\nhost: mandate\r\ncontent-type: application/json\r\n\
              content-length: 2\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 100 "), "{head}");
}
