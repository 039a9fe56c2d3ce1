//! Connection-level tests: the router served on a loopback socket, spoken to
//! in raw HTTP/1.1, for what only shows on the wire (interim responses,
//! half-sent requests).

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use mandate_server::ConnectionLimits;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

/// Bound on every wait here: generous for a loaded CI machine, and a hang
/// fails the test instead of the suite.
const PATIENCE: Duration = Duration::from_secs(30);

/// Serves the example-pack router on an ephemeral loopback port, as
/// `mandate serve` does.
async fn serve(max_body_bytes: usize) -> (SocketAddr, tempfile::TempDir) {
    serve_with(max_body_bytes, ConnectionLimits::default()).await
}

async fn serve_with(
    max_body_bytes: usize,
    limits: ConnectionLimits,
) -> (SocketAddr, tempfile::TempDir) {
    let (state, dir) = common::state().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = mandate_server::router(state, max_body_bytes);
    tokio::spawn(mandate_server::connections::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    (address, dir)
}

/// Short timeouts, so that the tests wait seconds, not minutes.
fn short(max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(120),
        max_connections,
    }
}

/// Opens `n` connections that send the start of a request and stop.
async fn half_sent(address: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /v1/health HTTP/1.1\r\nhost: mandate\r\nx-slow: ")
            .await
            .unwrap();
        streams.push(stream);
    }
    streams
}

/// Whether the server closes `stream` (after an error answer, if any)
/// by `deadline`.
async fn closed_by_server(stream: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// `GET /v1/health` on a fresh connection: the status line.
async fn health(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: mandate\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream).await;
    head.lines().next().unwrap_or_default().to_owned()
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

#[tokio::test]
async fn health_answers_through_a_flood_of_half_sent_requests_which_are_closed() {
    // Bounded so that client and server sockets together stay well under
    // a CI machine's usual limit of 1024 descriptors.
    // Under the default cap: health is served at once.
    let (address, _dir) = serve(1 << 20).await;
    let flood = half_sent(address, 250).await;
    assert_eq!(health(address).await, "HTTP/1.1 200 OK");
    drop(flood);

    // Over a small cap: the flood waits in the backlog, each half-sent
    // request is dropped after the header timeout, and health gets its
    // turn; nothing stays open.
    let (address, _dir) = serve_with(1 << 20, short(30)).await;
    let mut flood = half_sent(address, 150).await;
    assert_eq!(
        tokio::time::timeout(PATIENCE, health(address))
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    let mut open = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for stream in &mut flood {
        if !closed_by_server(stream, deadline).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "half-sent connections still open");
}

#[tokio::test]
async fn headers_bodies_and_idle_keep_alive_are_timed() {
    let (address, _dir) = serve_with(1 << 20, short(16)).await;

    // Headers that never end: the connection is closed.
    let mut slow = half_sent(address, 1).await.remove(0);
    assert!(closed_by_server(&mut slow, tokio::time::Instant::now() + PATIENCE).await);

    // A body that stops short: 408 in the API's error format.
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"POST /v1/decide HTTP/1.1\r\nhost: mandate\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"principal\":",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "body_timeout", "{body}");

    // A keep-alive connection that sends nothing after its answer.
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: mandate\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(closed_by_server(&mut stream, tokio::time::Instant::now() + PATIENCE).await);
}

#[tokio::test]
async fn oversized_heads_and_bad_queries_answer_in_the_api_error_format() {
    let (address, _dir) = serve(1 << 20).await;
    let ask = |head: String| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        let body: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {head}{}", String::from_utf8_lossy(&body)));
        (head, body)
    };
    let long_uri = format!(
        "GET /v1/health?{} HTTP/1.1\r\nhost: mandate\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let (head, body) = ask(long_uri).await;
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    assert_eq!(body["error"], "uri_too_long", "{body}");

    let many: String = (0..80).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (head, body) = ask(format!(
        "GET /v1/health HTTP/1.1\r\nhost: mandate\r\n{many}\r\n"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    assert_eq!(body["error"], "headers_too_large", "{body}");

    let big = format!("x-big: {}\r\n", "b".repeat(40 * 1024));
    let (head, body) = ask(format!(
        "GET /v1/health HTTP/1.1\r\nhost: mandate\r\n{big}\r\n"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
    assert_eq!(body["error"], "headers_too_large", "{body}");

    // An extractor's plain-text rejection (a path that is not UTF-8).
    let (head, body) =
        ask("GET /v1/approvals/%FF%FE HTTP/1.1\r\nhost: mandate\r\n\r\n".to_owned()).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("UTF-8"),
        "{body}"
    );
}
