//! Policy tests: requests paired with the outcome a pack must give them.
//!
//! A test file is JSON:
//!
//! ```json
//! {
//!   "defaults": { "principal": {"id": "spiffe://example.org/agent/mailer"} },
//!   "cases": [
//!     {
//!       "name": "reading the inbox is fine",
//!       "request": { "action": {"server": "mail", "tool": "read_inbox"} },
//!       "expect": "allow",
//!       "policies": ["declared-tools"]
//!     }
//!   ]
//! }
//! ```
//!
//! Each case's `request` is merged over `defaults` (JSON merge patch, RFC
//! 7396) and must then be a complete decision request. `policies`, when
//! given, must equal the determining policies exactly. A deny from a policy
//! that fails at run time names that policy; a deny because a value does not
//! match the pack's schema names none: write `"policies": []` to pin it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decision::{Decision, Verdict};
use crate::pack::PolicyPack;
use crate::request::{CallRequest, DecisionRequest};

/// A parsed test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSuite {
    /// What the suite covers.
    #[serde(default)]
    pub description: String,
    /// Request fields shared by every case.
    #[serde(default)]
    pub defaults: Value,
    /// The cases, run in order.
    pub cases: Vec<TestCase>,
}

/// One request and its expected outcome.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Name shown in reports.
    pub name: String,
    /// Merged over the suite's defaults.
    #[serde(default)]
    pub request: Value,
    /// The outcome the pack must give.
    pub expect: Decision,
    /// If given, exactly the policies that must determine the outcome.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether the pack gave the expected outcome (and policies, if named).
    pub passed: bool,
    /// The expected outcome.
    pub expected: Decision,
    /// The actual outcome, when the request was valid.
    pub actual: Option<Decision>,
    /// The determining policies of the actual outcome.
    pub policies: Vec<String>,
    /// Why the case failed; empty when it passed.
    pub message: String,
}

/// A test file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid test file: {0}")]
pub struct SuiteError(String);

impl TestSuite {
    /// Parses a test file's text.
    pub fn parse(text: &str) -> Result<Self, SuiteError> {
        serde_json::from_str(text).map_err(|e| SuiteError(e.to_string()))
    }

    /// Runs every case against `pack`; `now` is the time for cases that set none.
    pub fn run(&self, pack: &PolicyPack, now: DateTime<Utc>) -> Vec<CaseResult> {
        self.cases
            .iter()
            .map(|case| self.run_case(case, pack, now))
            .collect()
    }

    fn run_case(&self, case: &TestCase, pack: &PolicyPack, now: DateTime<Utc>) -> CaseResult {
        let mut request = self.defaults.clone();
        // A case without `request` runs the defaults as they are.
        if !case.request.is_null() {
            json_patch::merge(&mut request, &case.request);
        }
        let failed = |message: String| CaseResult {
            name: case.name.clone(),
            passed: false,
            expected: case.expect,
            actual: None,
            policies: Vec::new(),
            message,
        };
        let call = match serde_json::from_value::<DecisionRequest>(request) {
            Ok(r) => match CallRequest::try_from(r) {
                Ok(call) => call,
                Err(e) => return failed(format!("invalid request: {e}")),
            },
            Err(e) => return failed(format!("invalid request: {e}")),
        };
        let Verdict {
            decision,
            policies,
            reasons,
            errors,
        } = pack.decide(&call, now);
        let mut problems = Vec::new();
        if decision != case.expect {
            problems.push(format!(
                "expected {}, got {decision} ({})",
                case.expect,
                reasons.join("; ")
            ));
        }
        if let Some(expected) = &case.policies {
            let mut want = expected.clone();
            want.sort();
            if want != policies {
                problems.push(format!("expected policies {want:?}, got {policies:?}"));
            }
        }
        if !problems.is_empty() {
            problems.extend(errors.iter().map(ToString::to_string));
        }
        CaseResult {
            name: case.name.clone(),
            passed: problems.is_empty(),
            expected: case.expect,
            actual: Some(decision),
            policies,
            message: problems.join("; "),
        }
    }
}
