//! End-to-end tests of issuers' keys from a URL (`jwks_url`) and their
//! refresh, on the real `mandate serve` and a JWKS server started here (a
//! plain `std` HTTP server on 127.0.0.1): keys fetched at start, a rotated
//! key picked up on its first token (rate-limited), periodic refresh, the
//! last good keys kept when the URL fails, an unreachable URL failing closed
//! until it answers, and rotation by file.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use util::tasks::{Gateway, ISSUER, Idp, RESOURCE, ROOT_AGENT, text};
use util::{Launch, Reply, Server, poll_until};

/// A JWKS server: answers every request with the current status and body,
/// and counts the requests. Stops when dropped.
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Serves `body` (200) on `addr` (port 0: any free port).
    fn start(addr: &str, body: &Value) -> Self {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((200, body.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, hits, stop) = (answer.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (status, body) = answer.lock().unwrap().clone();
                    hits.fetch_add(1, Ordering::SeqCst);
                    respond(stream, status, &body);
                }
            })
        };
        Self {
            addr,
            answer,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the request head and answers with `status` and `body`, closing the
/// connection.
fn respond(mut stream: TcpStream, status: u16, body: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" || line == "\n" {
            break;
        }
        line.clear();
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A gateway whose one issuer's keys come from `issuer_lines` (`jwks_url`
/// or `jwks_file`, and the refresh).
fn gateway(idp: Idp, issuer_lines: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "resource = \"{RESOURCE}\"\n\n[[issuers]]\nissuer = \"{ISSUER}\"\non_behalf_of_claim = \"obo\"\n{issuer_lines}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Launch::serve(&data).arg("--config").arg(&config).start();
    Gateway {
        server,
        data,
        dir,
        idp,
    }
}

/// `POST /v1/tasks` with `token`.
fn start_task(server: &Server, token: &str) -> Reply {
    server.call(
        reqwest::Method::POST,
        "/v1/tasks",
        Some(token),
        Some(&json!({ "intent": "x", "tools": ["mail/read_inbox"], "ttl_seconds": 60 })),
    )
}

fn assert_started(reply: &Reply) {
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(!text(&reply.json(), "credential").is_empty());
}

fn assert_refused(reply: &Reply, reason: &str) {
    util::tasks::assert_invalid_token(reply, reason);
}

/// How many times the server logged `message`.
fn logged(server: &Server, message: &str) -> usize {
    server
        .log_messages()
        .iter()
        .filter(|m| m.as_str() == message)
        .count()
}

#[test]
fn a_rotated_key_is_fetched_on_its_first_token_at_most_once_per_30_seconds() {
    let old = Idp::new("k1");
    let new = Idp::new("k2");
    let jwks = JwksServer::start("127.0.0.1:0", &old.jwks());
    let gw = gateway(
        Idp::new("unused"),
        &format!(
            "jwks_url = \"{}\"\njwks_refresh_seconds = 3600\n",
            jwks.url()
        ),
    );
    // Fetched before the server listened.
    assert_eq!(jwks.hits(), 1);
    assert_started(&start_task(&gw.server, &old.token(ROOT_AGENT)));

    // The provider rotates: the first token of the new key makes Mandate
    // fetch the set again, and it is accepted at once.
    jwks.serve(200, &new.jwks().to_string());
    assert_started(&start_task(&gw.server, &new.token(ROOT_AGENT)));
    assert_eq!(jwks.hits(), 2);

    // The old key is gone; unknown kids do not cause another fetch within
    // 30 seconds.
    assert_refused(
        &start_task(&gw.server, &old.token(ROOT_AGENT)),
        "no trusted key has kid `k1`",
    );
    assert_refused(
        &start_task(&gw.server, &Idp::new("k3").token(ROOT_AGENT)),
        "no trusted key has kid `k3`",
    );
    assert_eq!(jwks.hits(), 2);
    assert_started(&start_task(&gw.server, &new.token(ROOT_AGENT)));
}

#[test]
fn periodic_refresh_rotates_and_a_failed_refresh_keeps_the_last_good_keys() {
    let old = Idp::new("k1");
    let new = Idp::new("k2");
    let jwks = JwksServer::start("127.0.0.1:0", &old.jwks());
    let gw = gateway(
        Idp::new("unused"),
        &format!("jwks_url = \"{}\"\njwks_refresh_seconds = 1\n", jwks.url()),
    );
    let loaded = logged(&gw.server, "issuer keys loaded");
    assert_eq!(loaded, 1);

    // The URL fails, or serves something that is not a usable key set: the
    // keys in force stay.
    for (status, body) in [
        (500, "oops".to_owned()),
        (200, "not json".to_owned()),
        (200, json!({ "keys": [] }).to_string()),
        (
            200,
            json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0", "kid": "s" }] }).to_string(),
        ),
    ] {
        jwks.serve(status, &body);
        let hits = jwks.hits();
        poll_until(Duration::from_secs(10), "a refresh", || {
            (jwks.hits() > hits).then_some(()).ok_or(jwks.hits())
        });
        assert_started(&start_task(&gw.server, &old.token(ROOT_AGENT)));
    }
    let kept = logged(
        &gw.server,
        "cannot refresh the issuer's keys; keeping the last good ones",
    );
    assert!(kept >= 4, "{:?}", gw.server.log_messages());

    // Rotation, seen by the periodic refresh without any token asking.
    jwks.serve(200, &new.jwks().to_string());
    poll_until(Duration::from_secs(10), "the rotated keys", || {
        let n = logged(&gw.server, "issuer keys loaded");
        (n >= 2).then_some(()).ok_or(n)
    });
    assert_started(&start_task(&gw.server, &new.token(ROOT_AGENT)));
    let rotated = gw
        .server
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "issuer keys loaded")
        .map(|v| v["fields"]["keys"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(rotated, ["[\"k1\"]", "[\"k2\"]"]);
}

#[test]
fn an_unreachable_url_fails_closed_until_it_answers() {
    let idp = Idp::new("k1");
    let addr = free_port();
    let gw = gateway(
        Idp::new("unused"),
        &format!("jwks_url = \"http://{addr}/jwks.json\"\n"),
    );
    // The server started, and says why the issuer's tokens are refused.
    assert!(
        logged(
            &gw.server,
            "cannot read the issuer's keys; its tokens are refused until they can be read"
        ) >= 1,
        "{:?}",
        gw.server.log_messages()
    );
    assert_refused(
        &start_task(&gw.server, &idp.token(ROOT_AGENT)),
        "the keys of issuer `https://idp.test` are not available yet",
    );
    // Decisions without a task still work.
    let decision = gw.server.decide(&util::mailer(&json!({})));
    assert_eq!(decision.status, 200, "{}", decision.body);

    // The provider comes up: its keys are fetched within a few seconds.
    let _jwks = JwksServer::start(&addr.to_string(), &idp.jwks());
    let reply = poll_until(Duration::from_secs(15), "the keys", || {
        let reply = start_task(&gw.server, &idp.token(ROOT_AGENT));
        if reply.status == 201 {
            Ok(reply)
        } else {
            Err(reply.body)
        }
    });
    assert_started(&reply);
}

#[test]
fn a_rewritten_jwks_file_is_read_again() {
    let old = Idp::new("k1");
    let new = Idp::new("k2");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, old.jwks().to_string()).unwrap();
    let gw = gateway(
        Idp::new("unused"),
        &format!("jwks_file = {file:?}\njwks_refresh_seconds = 1\n"),
    );
    assert_started(&start_task(&gw.server, &old.token(ROOT_AGENT)));

    // A broken file keeps the keys in force.
    util::write_atomic(&file, "{\"keys\": [");
    let before = logged(
        &gw.server,
        "cannot refresh the issuer's keys; keeping the last good ones",
    );
    poll_until(Duration::from_secs(10), "a failed refresh", || {
        let n = logged(
            &gw.server,
            "cannot refresh the issuer's keys; keeping the last good ones",
        );
        (n > before).then_some(()).ok_or(n)
    });
    assert_started(&start_task(&gw.server, &old.token(ROOT_AGENT)));

    // The rotated file: the new key in, the old one out.
    util::write_atomic(&file, &new.jwks().to_string());
    poll_until(Duration::from_secs(10), "the rotated file", || {
        let n = logged(&gw.server, "issuer keys loaded");
        (n >= 1).then_some(()).ok_or(n)
    });
    assert_started(&start_task(&gw.server, &new.token(ROOT_AGENT)));
    assert_refused(
        &start_task(&gw.server, &old.token(ROOT_AGENT)),
        "no trusted key has kid `k1`",
    );
}

#[test]
fn jwks_url_mistakes_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, Idp::new("k1").jwks().to_string()).unwrap();
    for (lines, message) in [
        (
            "jwks_url = \"http://idp.example.com/jwks\"".to_owned(),
            "`http://idp.example.com/jwks` must be an https:// URL",
        ),
        (
            "jwks_url = \"https://user:pw@idp.example.com/jwks\"".to_owned(),
            "must not carry credentials",
        ),
        (
            "jwks_url = \"not a url\"".to_owned(),
            "`not a url` is not a URL",
        ),
        (
            format!("jwks_url = \"https://idp.example.com/jwks\"\njwks_file = {jwks:?}"),
            "set `jwks_file` or `jwks_url`, not both",
        ),
        (
            format!("jwks_file = {jwks:?}\njwks_refresh_seconds = 0"),
            "`jwks_refresh_seconds` must be from 1 to 86400",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            format!("[[issuers]]\nissuer = \"{ISSUER}\"\n{lines}\n"),
        )
        .unwrap();
        let (status, stderr) = Launch::serve(&dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{lines}\n{stderr}");
        assert!(
            stderr.contains(message),
            "{lines}\nwanted `{message}` in:\n{stderr}"
        );
    }
}
