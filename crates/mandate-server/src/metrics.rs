//! Prometheus metrics. Telemetry only: no request content ever goes here.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    set: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
    front_end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    pack: String,
    live: &'static str,
    shadow: &'static str,
}

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    reloads: Family<ResultLabels, Counter>,
    policies: Family<SetLabels, Gauge>,
    rejected: Family<ErrorLabels, Counter>,
    receipt_failures: Counter,
    receipt_latency: Histogram,
    approvals: Family<ApprovalLabels, Counter>,
    long_polls: Gauge,
    shadow: Family<ShadowLabels, Counter>,
    journal_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Spans the OTLP exporter dropped. Process-wide: the exporter is set up
/// with the logging, before any server state exists.
static SPANS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The counter of dropped decision spans, for the OTLP exporter to count on
/// (`mandate_otel_spans_dropped_total`).
pub fn spans_dropped() -> Counter {
    SPANS_DROPPED.clone()
}

impl Metrics {
    /// A registry with every Mandate metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mandate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions made, by outcome", decisions.clone());
        // 10 us to ~80 ms: a decision should sit in the lowest buckets.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.00001, 2.0, 14,
        ));
        registry.register(
            "decision_duration_seconds",
            "Time to decide a request, from parsed body to response, including the durable receipt",
            latency.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy directory reloads, by result",
            reloads.clone(),
        );
        let policies = Family::<SetLabels, Gauge>::default();
        registry.register(
            "policies",
            "Policies in force, by set (base, approval)",
            policies.clone(),
        );
        let rejected = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Decision requests rejected as invalid, by error code and front end",
            rejected.clone(),
        );
        let receipt_failures = Counter::default();
        registry.register(
            "receipt_failures",
            "Decisions answered 503 because their receipt could not be recorded",
            receipt_failures.clone(),
        );
        // 50 us to ~400 ms: one fsync, shared by a group of receipts.
        let receipt_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 14),
        );
        registry.register(
            "receipt_append_duration_seconds",
            "Time from handing a receipt to the ledger until it is committed to disk",
            receipt_latency.clone(),
        );
        let approvals = Family::<ApprovalLabels, Counter>::default();
        registry.register(
            "approvals",
            "Approval events: opened, joined, approved, denied, expired, withdrawn, released",
            approvals.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "approval_long_polls",
            "Approval long polls (`?wait=`) waiting now on this instance",
            long_polls.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_decisions",
            "Live decisions also evaluated by a shadow pack, by pack and by the live and shadow outcomes (equal: agreement)",
            shadow.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register(
            "journal_bytes",
            "Bytes the decision journal holds, as retention counts them (journal_max_bytes bounds it), as this instance last saw",
            journal_bytes.clone(),
        );
        registry.register(
            "otel_spans_dropped",
            "Decision spans not exported over OTLP: the export queue was full, or the collector failed or did not answer in time",
            SPANS_DROPPED.clone(),
        );
        Self {
            registry,
            journal_bytes,
            shadow,
            approvals,
            long_polls,
            receipt_failures,
            receipt_latency,
            decisions,
            latency,
            reloads,
            policies,
            rejected,
        }
    }

    /// Counts one decision and its evaluation time.
    pub fn observe_decision(&self, decision: mandate_core::Decision, seconds: f64) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.as_str(),
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// Counts what shadow pack `pack` decided beside a live decision.
    pub fn count_shadow(
        &self,
        pack: &str,
        live: mandate_core::Decision,
        shadow: mandate_core::Decision,
    ) {
        self.shadow
            .get_or_create(&ShadowLabels {
                pack: pack.to_owned(),
                live: live.as_str(),
                shadow: shadow.as_str(),
            })
            .inc();
    }

    /// Counts a decision request answered with a client error (`code`)
    /// by `front_end`: `http`, `grpc` or `ext_authz`.
    pub fn count_rejected(&self, front_end: &'static str, code: &'static str) {
        self.rejected
            .get_or_create(&ErrorLabels {
                error: code,
                front_end,
            })
            .inc();
    }

    /// Observes how long a receipt took to become durable.
    pub fn observe_receipt_append(&self, seconds: f64) {
        self.receipt_latency.observe(seconds);
    }

    /// Counts an approval event (`opened`, `joined`, `approved`, `denied`, `expired`,
    /// `withdrawn`, `released`).
    pub fn count_approval(&self, event: &'static str) {
        self.approvals
            .get_or_create(&ApprovalLabels { event })
            .inc();
    }

    /// Counts a decision whose receipt could not be recorded.
    pub fn count_receipt_failure(&self) {
        self.receipt_failures.inc();
    }

    pub(crate) fn count_reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub(crate) fn set_policy_counts(&self, (base, approval): (usize, usize)) {
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.policies
            .get_or_create(&SetLabels { set: "base" })
            .set(as_gauge(base));
        self.policies
            .get_or_create(&SetLabels { set: "approval" })
            .set(as_gauge(approval));
    }

    /// Sets how many approval long polls are waiting.
    pub fn set_long_polls(&self, waiting: usize) {
        self.long_polls
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Sets the decision journal's size.
    pub fn set_journal_bytes(&self, bytes: u64) {
        self.journal_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
