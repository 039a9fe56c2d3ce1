//! Closed-loop gRPC load on a running `mandate serve --grpc-listen`: the
//! gRPC counterpart of wrk with `benches/http/decide.lua`.
//!
//! N connections (each a tonic [`Channel`] of its own, so a TCP connection
//! and an HTTP/2 session of its own), each sending one
//! `mandate.v1.DecisionService/Decide` call at a time for D seconds. The
//! calls are the requests of `benches/http/decide.lua`, rotating an allow
//! (`read_inbox`), a deny (`send_email` to a recipient the task does not
//! allow) and an approval required (`delete_email`), with their arguments,
//! annotations and context as `google.protobuf.Struct`s; `--mix allow-deny`
//! alternates the first two only. No credential: the server must let
//! anyone decide (`decide_access = "anyone"`, the default on loopback).
//! Every answer is checked: an error status, or an answer other than the
//! request's expected decision (or one with evaluation errors), counts as
//! an error, and the first of each kind is printed on stderr.
//!
//! Prints one line per configuration, in the format of the HTTP benches'
//! `SUMMARY` (`benches/http/summary.lua`), with `errors` (`non_ok` error
//! statuses, `unexpected` answers) in place of wrk's status and socket
//! counts:
//!
//! ```text
//! SUMMARY requests=… rps=… p50_us=… p90_us=… p99_us=… max_us=… errors=… non_ok=… unexpected=…
//! ```
//!
//! Latency is from sending a call to its answer, per call; throughput is
//! calls answered over the run's wall time. Exits 1 if any call failed.
//!
//! `benches/grpc_load.sh` starts the server and runs this beside wrk on the
//! same server's HTTP API. By hand:
//!
//! ```sh
//! cargo bench -p mandate-grpc --bench grpc_load -- --addr 127.0.0.1:50051 \
//!     --seconds 10 --connections 1 8 32
//! ```
//!
//! Without `--addr` (as under `cargo bench --workspace`) it prints how to
//! run it and exits 0.

// Bench code: a setup failure should abort loudly, and the lints meant for
// the library (unwrap, expect, panic, indexing, docs) only add noise here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_grpc::pb;
use mandate_grpc::pb::decision_service_client::DecisionServiceClient;
use prost_types::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
usage: grpc_load --addr HOST:PORT [--seconds D] [--connections N...] [--threads T] [--mix http|allow-deny]

Closed-loop load on mandate.v1.DecisionService/Decide of a running
`mandate serve --grpc-listen HOST:PORT` (benches/grpc_load.sh starts one).
Defaults: 10 s per run, at 1, 8 and 32 connections, T = 1 runtime thread
for one connection and 2 otherwise (as the HTTP benches run wrk), the mix
of benches/http/decide.lua.";

struct Options {
    addr: String,
    seconds: f64,
    connections: Vec<usize>,
    threads: Option<usize>,
    mix: Mix,
}

#[derive(Clone, Copy)]
enum Mix {
    /// `benches/http/decide.lua`: allow, deny, approval required.
    Http,
    /// Allow and deny, alternating.
    AllowDeny,
}

fn options() -> Result<Option<Options>, String> {
    let mut addr = None;
    let mut seconds: f64 = 10.0;
    let mut connections = Vec::new();
    let mut threads = None;
    let mut mix = Mix::Http;
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            // Passed by `cargo bench` to every bench binary.
            "--bench" => {}
            "--addr" => addr = Some(value()?),
            "--seconds" => {
                seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
            }
            "--threads" => {
                threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?);
            }
            "--mix" => {
                mix = match value()?.as_str() {
                    "http" => Mix::Http,
                    "allow-deny" => Mix::AllowDeny,
                    other => return Err(format!("--mix: `{other}` is not http or allow-deny")),
                };
            }
            "--connections" => {
                connections.push(
                    value()?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?,
                );
                while let Some(n) = args.peek().and_then(|a| a.parse().ok()) {
                    connections.push(n);
                    args.next();
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            // A filter, as `cargo bench -- NAME` passes: nothing to filter.
            other if !other.starts_with('-') => {}
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let Some(addr) = addr else {
        println!("grpc_load: no --addr: nothing to load; run benches/grpc_load.sh, or see --help");
        return Ok(None);
    };
    if connections.is_empty() {
        connections = vec![1, 8, 32];
    }
    if connections.contains(&0) || !seconds.is_finite() || seconds <= 0.0 {
        return Err("connections and seconds must be positive".to_owned());
    }
    Ok(Some(Options {
        addr,
        seconds,
        connections,
        threads,
        mix,
    }))
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc_load: {e}");
            return ExitCode::from(2);
        }
    };
    let calls = Arc::new(calls(options.mix));
    let mut failed = false;
    for &connections in &options.connections {
        let threads = options
            .threads
            .unwrap_or(if connections < 2 { 1 } else { 2 });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let run = runtime.block_on(run(
            &options.addr,
            connections,
            Duration::from_secs_f64(options.seconds),
            Arc::clone(&calls),
        ));
        match run {
            Ok(summary) => {
                failed |= summary.errors() > 0;
                summary.print();
            }
            Err(e) => {
                eprintln!("grpc_load: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One call of the rotation, and the decision it must get.
struct Call {
    name: &'static str,
    message: pb::DecideRequest,
    expected: pb::Decision,
}

/// The requests of `benches/http/decide.lua`, as gRPC messages.
fn calls(mix: Mix) -> Vec<Call> {
    let task = json!({"task": {
        "intent": "answer customer questions",
        "tools": ["read_inbox", "send_email", "delete_email"],
        "params": {"allowed_recipients": ["carol@example.com"]},
    }});
    let call = |name, tool: &str, annotations: Value, arguments: Value, expected| Call {
        name,
        message: pb::DecideRequest {
            principal: Some(pb::Principal {
                id: "spiffe://example.org/agent/mailer".to_owned(),
                on_behalf_of: None,
                attributes: None,
            }),
            action: Some(pb::ToolCall {
                server: "mail".to_owned(),
                tool: tool.to_owned(),
                annotations: Some(pb_struct(&annotations)),
            }),
            arguments: Some(pb_struct(&arguments)),
            context: Some(pb_struct(&task)),
            approval_id: None,
        },
        expected,
    };
    let mut calls = vec![
        call(
            "allow",
            "read_inbox",
            json!({"readOnlyHint": true, "openWorldHint": false}),
            json!({"folder": "inbox"}),
            pb::Decision::Allow,
        ),
        call(
            "deny",
            "send_email",
            json!({"destructiveHint": false}),
            json!({"to": "mallory@evil.example", "body": "hi"}),
            pb::Decision::Deny,
        ),
    ];
    if let Mix::Http = mix {
        calls.push(call(
            "approval",
            "delete_email",
            json!({"destructiveHint": true}),
            json!({"id": "m-1"}),
            pb::Decision::ApprovalRequired,
        ));
    }
    calls
}

/// A JSON object as a protobuf `Struct`.
fn pb_struct(value: &Value) -> Struct {
    let Value::Object(object) = value else {
        panic!("not an object: {value}")
    };
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), pb_value(v)))
            .collect(),
    }
}

fn pb_value(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().expect("a finite number")),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(pb_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(pb_struct(value)),
    };
    PbValue { kind: Some(kind) }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    non_ok: u64,
    unexpected: u64,
    first_non_ok: Option<String>,
    first_unexpected: Option<String>,
}

/// What one run saw, all connections together.
struct Summary {
    tally: Tally,
    elapsed: Duration,
}

impl Summary {
    fn errors(&self) -> u64 {
        self.tally.non_ok + self.tally.unexpected
    }

    fn print(mut self) {
        let t = &mut self.tally;
        t.latencies_us.sort_unstable();
        let requests = t.latencies_us.len();
        // Nearest rank, as wrk's percentiles (in whole µs).
        let percentile = |p: f64| -> u32 {
            if requests == 0 {
                return 0;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((p / 100.0) * requests as f64).ceil() as usize;
            t.latencies_us[rank.clamp(1, requests) - 1]
        };
        #[allow(clippy::cast_precision_loss)]
        let rps = requests as f64 / self.elapsed.as_secs_f64();
        let errors = t.non_ok + t.unexpected;
        println!(
            "SUMMARY requests={requests} rps={rps:.0} p50_us={} p90_us={} p99_us={} max_us={} errors={errors} non_ok={} unexpected={}",
            percentile(50.0),
            percentile(90.0),
            percentile(99.0),
            t.latencies_us.last().copied().unwrap_or(0),
            t.non_ok,
            t.unexpected,
        );
        for first in [&t.first_non_ok, &t.first_unexpected].into_iter().flatten() {
            eprintln!("first error: {first}");
        }
    }
}

/// Connects `connections` channels, then runs them all for `duration`.
async fn run(
    addr: &str,
    connections: usize,
    duration: Duration,
    calls: Arc<Vec<Call>>,
) -> Result<Summary, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        // `connect`, not `connect_lazy`: each channel is its own TCP
        // connection and HTTP/2 session, opened before the clock starts.
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e:?}"))?,
        );
    }
    let start = Arc::new(Barrier::new(connections + 1));
    let mut tasks = Vec::with_capacity(connections);
    for (i, channel) in channels.into_iter().enumerate() {
        let start = Arc::clone(&start);
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            connection(channel, &calls, i, Instant::now() + duration).await
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut tally = Tally::default();
    for task in tasks {
        let t = task
            .await
            .map_err(|e| format!("a connection failed: {e}"))?;
        tally.latencies_us.extend(t.latencies_us);
        tally.non_ok += t.non_ok;
        tally.unexpected += t.unexpected;
        tally.first_non_ok = tally.first_non_ok.or(t.first_non_ok);
        tally.first_unexpected = tally.first_unexpected.or(t.first_unexpected);
    }
    Ok(Summary {
        tally,
        elapsed: began.elapsed(),
    })
}

/// One connection's closed loop: a call, its answer, the next call, until
/// `deadline`. Connection `i` starts the rotation at `i`, so that the mix
/// stays even across connections.
async fn connection(channel: Channel, calls: &[Call], i: usize, deadline: Instant) -> Tally {
    let mut client = DecisionServiceClient::new(channel);
    let mut tally = Tally::default();
    let mut next = i;
    while Instant::now() < deadline {
        let call = &calls[next % calls.len()];
        next += 1;
        let sent = Instant::now();
        let answer = client.decide(call.message.clone()).await;
        let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        tally.latencies_us.push(took);
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                if response.decision() != call.expected || !response.errors.is_empty() {
                    tally.unexpected += 1;
                    tally.first_unexpected.get_or_insert_with(|| {
                        format!(
                            "{} ({}): expected {:?}, got {response:?}",
                            call.name,
                            call.message.action.as_ref().map_or("", |a| a.tool.as_str()),
                            call.expected
                        )
                    });
                }
            }
            Err(status) => {
                tally.non_ok += 1;
                tally
                    .first_non_ok
                    .get_or_insert_with(|| format!("{}: {status:?}", call.name));
            }
        }
    }
    tally
}
