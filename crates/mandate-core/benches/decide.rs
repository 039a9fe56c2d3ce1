//! Decision latency: Mandate's decision path against Cedar's own evaluation.
//!
//! Groups:
//!
//! - `example_pack`: four requests from `examples/policies/tests/mailer.json`
//!   (an allow, a deny by a forbid, an approval required, a deny on a
//!   recipient), each measured three ways:
//!   - `mandate/decide`: [`PolicyPack::decide`] on a prebuilt [`CallRequest`];
//!   - `mandate/validate+decide`: request bytes into [`DecisionRequest`], into
//!     [`CallRequest`], then decide: what the HTTP server pays per request;
//!   - `cedar/is_authorized`: the floor, Cedar's `Authorizer::is_authorized`
//!     alone on the pack's base policies, with the request and entities built
//!     once outside the timed loop.
//! - `policy_count`: the example pack grown with scoped per-tool, per-agent and
//!   per-server policies to 10, 100, 1 000 and 10 000 policies, one call
//!   measured through `mandate/decide` (sliced) and `cedar/is_authorized` (the
//!   whole base set).
//!
//! After criterion's report, every case is also run in a plain timed loop and a
//! table of p50/p99 latency and single-core throughput is printed (criterion
//! reports no percentiles). The table honours a plain-substring filter.
//!
//! Run: `cargo bench -p mandate-core --bench decide` (add `-- policy_count` to
//! run one group). About 90 s on two cores, plus the build.

// Bench code: setup failures should abort loudly, and the lints meant for the
// library (unwrap, expect, panic, indexing, docs) only add noise here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request,
};
use chrono::{DateTime, SecondsFormat, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode};
use mandate_core::testing::TestSuite;
use mandate_core::{CallRequest, Decision, DecisionRequest, PolicyPack, PolicySource};
use serde_json::{Value, json};

// The same allocator as the shipped `mandate` binary, so the figures are the
// ones users get (both Mandate and the raw Cedar floor run on it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sizes of the grown packs.
const POLICY_COUNTS: [usize; 4] = [10, 100, 1_000, 10_000];

/// The example cases: short label and the case name in `mailer.json`.
const EXAMPLE_CASES: [(&str, &str); 4] = [
    ("allow", "mail to an allowed recipient is sent"),
    (
        "deny_forbid",
        "a confidential task may not use an open-world tool",
    ),
    ("approval", "a declared destructive tool needs approval"),
    ("deny_recipient", "mail to anyone else is denied"),
];

/// The policy_count call: the example pack's `allow` case (the longest path:
/// base set, then approval gate).
const GROWN_CALL: &str = "allow";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .into()
}

/// The example pack's `.cedar` files (sorted by name) and its schema extension.
fn example_sources() -> (Vec<PolicySource>, PolicySource) {
    let dir = example_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    paths.sort();
    let sources = paths
        .iter()
        .map(|p| {
            PolicySource::new(
                p.file_name().unwrap().to_string_lossy(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    let schema = PolicySource::new(
        "schema.cedarschema",
        std::fs::read_to_string(dir.join("schema.cedarschema")).unwrap(),
    );
    (sources, schema)
}

/// One example request: its expected outcome and its wire bytes.
struct ExampleRequest {
    label: &'static str,
    expect: Decision,
    bytes: Vec<u8>,
}

/// The chosen cases of `mailer.json`, merged over the suite's defaults. The
/// suite pins `context.time`; it is dropped here, as a server request carries
/// none, and every path decides at the same fixed `now()`.
fn example_requests() -> Vec<ExampleRequest> {
    let text = std::fs::read_to_string(example_dir().join("tests/mailer.json")).unwrap();
    let suite = TestSuite::parse(&text).unwrap();
    EXAMPLE_CASES
        .iter()
        .map(|(label, name)| {
            let case = suite
                .cases
                .iter()
                .find(|c| c.name == *name)
                .unwrap_or_else(|| panic!("mailer.json has no case {name:?}"));
            let mut request = suite.defaults.clone();
            json_patch::merge(&mut request, &case.request);
            if let Some(context) = request.get_mut("context").and_then(Value::as_object_mut) {
                context.remove("time");
            }
            ExampleRequest {
                label,
                expect: case.expect,
                bytes: serde_json::to_vec(&request).unwrap(),
            }
        })
        .collect()
}

fn call_of(bytes: &[u8]) -> CallRequest {
    CallRequest::try_from(serde_json::from_slice::<DecisionRequest>(bytes).unwrap()).unwrap()
}

/// The base set as Cedar sees it: every policy of `sources` without an
/// `@approval` annotation (the approval gate is a second, separate set in
/// Mandate; the floor measures the base set only), named by its `@id`.
fn raw_base_set(sources: &[PolicySource]) -> PolicySet {
    let mut set = PolicySet::new();
    for source in sources {
        let parsed: PolicySet = source.text.parse().unwrap();
        for policy in parsed.policies() {
            if policy.annotation("approval").is_some() {
                continue;
            }
            let id = policy
                .annotation("id")
                .expect("every bench policy has an @id");
            set.add(policy.new_id(PolicyId::new(id))).unwrap();
        }
    }
    set
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name).unwrap(),
        EntityId::new(id),
    )
}

/// The Cedar request and entities Mandate builds for `request` (see
/// `cedar_call` in `src/evaluate.rs`), built here through Cedar's JSON APIs,
/// without a schema, as Mandate does.
fn cedar_inputs(request: &DecisionRequest, now: DateTime<Utc>) -> (Request, Entities) {
    let DecisionRequest {
        principal,
        action,
        arguments,
        context,
        ..
    } = request;
    let trust_domain = principal
        .id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let mut agent_attrs = json!({
        "trust_domain": trust_domain,
        "attributes": principal.attributes,
    });
    if let Some(person) = &principal.on_behalf_of {
        agent_attrs["on_behalf_of"] = json!(person);
    }
    let hints = &action.annotations;
    let read_only = hints.read_only_hint.unwrap_or(false);
    let destructive = hints.destructive_hint.unwrap_or(!read_only);
    let class_of = |read_only: bool, destructive: bool| match (read_only, destructive) {
        (true, _) => "read",
        (false, true) => "destructive",
        (false, false) => "write",
    };
    let action_class = class_of(read_only, destructive);
    let tool_id = format!("{}/{}", action.server, action.tool);
    let entities = json!([
        {
            "uid": {"type": "Mandate::Agent", "id": principal.id},
            "attrs": agent_attrs,
            "parents": [],
        },
        {
            "uid": {"type": "Mandate::Tool", "id": tool_id},
            "attrs": {
                "name": action.tool,
                "server": action.server,
                "read_only": read_only,
                "destructive": destructive,
                "idempotent": hints.idempotent_hint.unwrap_or(false),
                "open_world": hints.open_world_hint.unwrap_or(true),
                "action_class": action_class,
            },
            "parents": [{"type": "Mandate::Server", "id": action.server}],
        },
        {
            "uid": {"type": "Mandate::Server", "id": action.server},
            "attrs": {},
            "parents": [],
        },
    ]);

    let mut tools_called = BTreeSet::new();
    let mut labels: BTreeSet<&String> = context.session.labels.iter().collect();
    let mut acknowledged = BTreeSet::new();
    let mut classes = BTreeSet::new();
    let mut denials = 0;
    let mut uses_of_this_tool = 0;
    for entry in &context.session.history {
        match entry.decision {
            Decision::Allow => {
                acknowledged.clone_from(&labels);
                tools_called.insert(&entry.tool);
                if entry.tool == action.tool
                    && (entry.server.is_empty() || entry.server == action.server)
                {
                    uses_of_this_tool += 1;
                }
                if let Some(a) = &entry.annotations {
                    let read_only = a.read_only_hint.unwrap_or(false);
                    classes.insert(class_of(
                        read_only,
                        a.destructive_hint.unwrap_or(!read_only),
                    ));
                }
            }
            Decision::Deny => denials += 1,
            Decision::ApprovalRequired => {}
        }
        labels.extend(&entry.labels);
    }
    let new_labels: BTreeSet<_> = labels.difference(&acknowledged).collect();
    let task = &context.task;
    let chain: Vec<Value> = if task.chain.is_empty() {
        vec![json!({"agent": principal.id, "depth": 0})]
    } else {
        task.chain
            .iter()
            .map(|hop| json!({"agent": hop.agent, "depth": hop.depth}))
            .collect()
    };
    let cedar_context = json!({
        "task": {
            "id": task.id,
            "intent": task.intent,
            "tools": task.tools,
            "labels": task.labels,
            "params": task.params,
            "chain_agents": chain.iter().map(|hop| &hop["agent"]).collect::<Vec<_>>(),
            "depth": chain.len() - 1,
            "root_agent": chain[0]["agent"],
            "chain": chain,
        },
        "session": {
            "tools_called": tools_called,
            "labels": labels,
            "new_labels": new_labels,
            "action_classes": classes,
            "calls": context.session.history.len(),
            "denials": denials,
            "uses_of_this_tool": uses_of_this_tool,
            "first_use_of_tool": uses_of_this_tool == 0,
            "first_use_of_action_class": !classes.contains(action_class),
        },
        "arguments": arguments,
        "time": {"now": {"__extn": {
            "fn": "datetime",
            "arg": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        }}},
        "extra": context.extra,
    });

    let request = Request::new(
        uid("Mandate::Agent", &principal.id),
        uid("Mandate::Action", "call_tool"),
        uid("Mandate::Tool", &tool_id),
        Context::from_json_value(cedar_context, None).unwrap(),
        None,
    )
    .unwrap();
    (request, Entities::from_json_value(entities, None).unwrap())
}

/// Scoped policies that touch the grown call's agent, tool and server without
/// firing, so Mandate's slice for it holds more than the generic policies.
const GROWN_FIXED: &str = r#"
@id("send-email-no-bulk")
@reason("bulk mail needs a task of its own")
forbid (principal, action == Mandate::Action::"call_tool", resource == Mandate::Tool::"mail/send_email")
when { context.arguments has cc && context.arguments.cc.contains("all@example.com") };

@id("mailer-stays-on-mail")
@reason("the mail assistant only uses mail and web tools")
forbid (principal == Mandate::Agent::"spiffe://example.org/agent/mailer", action == Mandate::Action::"call_tool", resource)
unless { resource.server == "mail" || resource.server == "web" };

@id("mail-denial-limit")
@reason("too many denials in this task")
forbid (principal, action == Mandate::Action::"call_tool", resource in Mandate::Server::"mail")
when { context.session.denials >= 5 };
"#;

/// Number of policies in `GROWN_FIXED`.
const GROWN_FIXED_COUNT: usize = 3;

/// `count` scoped policies for other agents, tools and servers (ten per server).
fn grown_policies(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let server = format!("srv{}", i / 10);
        let tool = format!("{server}/tool{i}");
        let agent = format!("spiffe://example.org/agent/agent{i}");
        let policy = match i % 5 {
            0 => format!(
                r#"@id("grown-{i}-tool-etc") @reason("{tool} may not touch /etc")
forbid (principal, action == Mandate::Action::"call_tool", resource == Mandate::Tool::"{tool}")
when {{ context.arguments has path && context.arguments.path like "/etc/*" }};"#
            ),
            1 => format!(
                r#"@id("grown-{i}-agent-reads") @reason("agent{i} may read on {server}")
permit (principal == Mandate::Agent::"{agent}", action == Mandate::Action::"call_tool", resource in Mandate::Server::"{server}")
when {{ resource.read_only }};"#
            ),
            2 => format!(
                r#"@id("grown-{i}-agent-open-world") @approval("agent{i} needs sign-off for open-world tools")
permit (principal == Mandate::Agent::"{agent}", action == Mandate::Action::"call_tool", resource)
when {{ resource.open_world }};"#
            ),
            3 => format!(
                r#"@id("grown-{i}-server-denials") @reason("too many denials on {server}")
forbid (principal, action == Mandate::Action::"call_tool", resource in Mandate::Server::"{server}")
when {{ context.session.denials >= 3 }};"#
            ),
            _ => format!(
                r#"@id("grown-{i}-agent-expiry") @reason("agent{i}'s grant expired")
forbid (principal == Mandate::Agent::"{agent}", action == Mandate::Action::"call_tool", resource)
when {{ context.time.now > datetime("2027-01-01") }};"#
            ),
        };
        text.push_str(&policy);
        text.push_str("\n\n");
    }
    text
}

/// One measured case, run by criterion and by the percentile loop.
struct Case {
    group: &'static str,
    function: &'static str,
    parameter: String,
    /// Fewer samples and a shorter measurement (raw Cedar on big sets).
    slow: bool,
    run: Box<dyn Fn()>,
}

impl Case {
    fn criterion_id(&self) -> String {
        format!("{}/{}/{}", self.group, self.function, self.parameter)
    }

    fn label(&self) -> String {
        format!("{}/{} {}", self.group, self.parameter, self.function)
    }
}

fn example_cases() -> Vec<Case> {
    let (sources, schema) = example_sources();
    let pack = Rc::new(PolicyPack::load(&sources, Some(&schema)).unwrap());
    let base = Rc::new(raw_base_set(&sources));
    let authorizer = Rc::new(Authorizer::new());
    let now = now();
    let mut cases = Vec::new();
    for request in example_requests() {
        let call = call_of(&request.bytes);
        let verdict = pack.decide(&call, now);
        assert_eq!(verdict.decision, request.expect, "{}", request.label);
        let (cedar_request, entities) =
            cedar_inputs(&serde_json::from_slice(&request.bytes).unwrap(), now);
        let floor = authorizer.is_authorized(&cedar_request, &base, &entities);
        assert_eq!(
            floor.decision() == CedarDecision::Deny,
            request.expect == Decision::Deny,
            "{}: the floor disagrees with Mandate's base set",
            request.label
        );
        assert_eq!(floor.diagnostics().errors().count(), 0);

        let p = Rc::clone(&pack);
        cases.push(Case {
            group: "example_pack",
            function: "mandate/decide",
            parameter: request.label.to_owned(),
            slow: false,
            run: Box::new(move || {
                black_box(p.decide(black_box(&call), now));
            }),
        });
        let p = Rc::clone(&pack);
        let bytes = request.bytes;
        cases.push(Case {
            group: "example_pack",
            function: "mandate/validate+decide",
            parameter: request.label.to_owned(),
            slow: false,
            run: Box::new(move || {
                let request: DecisionRequest = serde_json::from_slice(black_box(&bytes)).unwrap();
                let call = CallRequest::try_from(request).unwrap();
                black_box(p.decide(&call, now));
            }),
        });
        let (a, set) = (Rc::clone(&authorizer), Rc::clone(&base));
        cases.push(Case {
            group: "example_pack",
            function: "cedar/is_authorized",
            parameter: request.label.to_owned(),
            slow: false,
            run: Box::new(move || {
                black_box(a.is_authorized(black_box(&cedar_request), &set, &entities));
            }),
        });
    }
    cases
}

fn policy_count_cases() -> Vec<Case> {
    let (example, schema) = example_sources();
    let example_count: usize = example
        .iter()
        .map(|s| s.text.parse::<PolicySet>().unwrap().policies().count())
        .sum();
    let request = example_requests()
        .into_iter()
        .find(|r| r.label == GROWN_CALL)
        .unwrap();
    let now = now();
    let call = Rc::new(call_of(&request.bytes));
    let (cedar_request, entities) =
        cedar_inputs(&serde_json::from_slice(&request.bytes).unwrap(), now);
    let (cedar_request, entities) = (Rc::new(cedar_request), Rc::new(entities));
    let authorizer = Rc::new(Authorizer::new());

    let mut cases = Vec::new();
    for total in POLICY_COUNTS {
        let generated = total - example_count - GROWN_FIXED_COUNT;
        let mut sources = example.clone();
        sources.push(PolicySource::new("fixed.cedar", GROWN_FIXED));
        sources.push(PolicySource::new("grown.cedar", grown_policies(generated)));
        let started = Instant::now();
        let pack = Rc::new(PolicyPack::load(&sources, Some(&schema)).unwrap());
        let (base_count, approval_count) = pack.counts();
        assert_eq!(base_count + approval_count, total);
        let base = Rc::new(raw_base_set(&sources));
        eprintln!(
            "policy_count/{total}: {base_count} base + {approval_count} approval policies, loaded in {:.2?}",
            started.elapsed()
        );
        // Same outcome either way: the grown policies never apply to this call.
        assert_eq!(pack.decide(&call, now).decision, request.expect);
        let floor = authorizer.is_authorized(&cedar_request, &base, &entities);
        assert_eq!(floor.decision(), CedarDecision::Allow);
        assert_eq!(floor.diagnostics().errors().count(), 0);

        let c = Rc::clone(&call);
        cases.push(Case {
            group: "policy_count",
            function: "mandate/decide",
            parameter: total.to_string(),
            slow: false,
            run: Box::new(move || {
                black_box(pack.decide(black_box(&c), now));
            }),
        });
        let (a, r, e) = (
            Rc::clone(&authorizer),
            Rc::clone(&cedar_request),
            Rc::clone(&entities),
        );
        cases.push(Case {
            group: "policy_count",
            function: "cedar/is_authorized",
            parameter: total.to_string(),
            slow: total >= 1_000,
            run: Box::new(move || {
                black_box(a.is_authorized(black_box(&r), &base, &e));
            }),
        });
    }
    cases
}

fn run_criterion(c: &mut Criterion, group_name: &'static str, cases: &[Case]) {
    let mut group = c.benchmark_group(group_name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in cases.iter().filter(|c| c.group == group_name) {
        if case.slow {
            // Milliseconds per iteration: ten flat samples in three seconds.
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .measurement_time(Duration::from_secs(3));
        } else {
            group
                .sample_size(100)
                .sampling_mode(SamplingMode::Auto)
                .measurement_time(Duration::from_secs(2));
        }
        group.bench_function(BenchmarkId::new(case.function, &case.parameter), |b| {
            b.iter(|| (case.run)());
        });
    }
    group.finish();
}

/// Whether criterion runs in benchmark mode (not `--test`, `--list` or
/// profiling), and the name filter it was given, if any.
fn bench_mode_and_filter() -> (bool, Option<String>) {
    // Criterion options that take a value, so their value is not the filter.
    const WITH_VALUE: [&str; 15] = [
        "--color",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let bench = has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"));
    let mut filter = None;
    let mut skip_next = false;
    for arg in &args {
        if skip_next {
            skip_next = false;
        } else if arg.starts_with('-') {
            skip_next = WITH_VALUE.contains(&arg.as_str()) || arg == "-c";
        } else if filter.is_none() {
            filter = Some(arg.clone());
        }
    }
    (bench, filter)
}

/// p50, p99 (microseconds) and mean throughput (per second) of a timed loop.
fn percentiles(case: &Case) -> (f64, f64, f64, usize) {
    // Warm up, and size the loop to about half a second (100..=20 000 iterations).
    let started = Instant::now();
    let mut warm = 0u32;
    while warm < 20 || started.elapsed() < Duration::from_millis(100) {
        (case.run)();
        warm += 1;
    }
    let per_iteration = started.elapsed().as_secs_f64() / f64::from(warm);
    let iterations = ((0.5 / per_iteration) as usize).clamp(100, 20_000);
    let mut samples = Vec::with_capacity(iterations);
    let total = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        (case.run)();
        samples.push(t.elapsed());
    }
    let total = total.elapsed();
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    (
        micros(at(50)),
        micros(at(99)),
        iterations as f64 / total.as_secs_f64(),
        iterations,
    )
}

fn summary(cases: &[Case], filter: Option<&str>) {
    let mut out = String::from(
        "\nlatency per decision (own timed loop, one thread; p50/p99 of single iterations, throughput = iterations / total time)\n",
    );
    for case in cases {
        if filter.is_some_and(|f| !case.criterion_id().contains(f)) {
            continue;
        }
        let (p50, p99, per_second, n) = percentiles(case);
        writeln!(
            out,
            "{:<48} p50={p50:>8.1}us p99={p99:>8.1}us {per_second:>9.0}/s  (n={n})",
            case.label()
        )
        .unwrap();
    }
    print!("{out}");
}

fn main() {
    let started = Instant::now();
    let (bench_mode, filter) = bench_mode_and_filter();
    let mut cases = example_cases();
    cases.extend(policy_count_cases());
    let setup = started.elapsed();

    // Fewer bootstrap resamples than the default 100 000: the analysis, not
    // the measurement, would otherwise dominate the run on a small machine.
    let mut criterion = Criterion::default()
        .nresamples(20_000)
        .configure_from_args();
    run_criterion(&mut criterion, "example_pack", &cases);
    run_criterion(&mut criterion, "policy_count", &cases);
    criterion.final_summary();
    let measured = started.elapsed();

    if bench_mode {
        summary(&cases, filter.as_deref());
        eprintln!(
            "decide bench: setup {:.1?}, criterion {:.1?}, percentile loops {:.1?}",
            setup,
            measured - setup,
            started.elapsed() - measured
        );
    }
}
