//! Replay: journaled decisions evaluated again against a candidate pack,
//! and what changed.
//!
//! Each journal entry holds the request exactly as the live pack evaluated
//! it, with the server's clock and fills, so the candidate sees what the
//! live pack saw: the recorded context is used as it is. The comparison is
//! with the live pack's outcome before any approval (a released approval
//! does not make a gate an allow), as shadow packs are compared. A tool
//! outside the task credential's grant stays a deny: that check is made in
//! code, before any pack, and no candidate changes it.
//!
//! Entries in, a report out: [`Replay::run`] hands the caller a feed to
//! read the journal into, evaluates the entries a batch at a time on the
//! machine's cores while the reading goes on, and gives the report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use chrono::{DateTime, Utc};
use mandate_core::{
    CallRequest, Decision, DecisionRequest, PolicyPack, PolicyReport, SessionSummary, Verdict,
};
use mandate_store::JournaledDecision;
use mandate_store::journal::Redacted;
use serde::Serialize;

use crate::decider::evaluate;
use crate::journal::OMITTED;

/// Entries evaluated together, by one thread.
const BATCH: usize = 1024;

/// A replay against a candidate pack.
pub struct Replay<'a> {
    candidate: &'a PolicyPack,
    examples: usize,
    threads: usize,
    resimulate: bool,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Decisions evaluated again.
    pub replayed: u64,
    /// Of those, decided the same way by the candidate.
    pub unchanged: u64,
    /// Of those, decided another way.
    pub changed: u64,
    /// Decisions whose entry had redacted arguments that the candidate's
    /// policies read: replayed with what was kept (a digest, or nothing), so
    /// the candidate's outcome may not be what the real value would get.
    pub on_redacted: u64,
    /// Of those, the ones decided another way.
    pub changed_on_redacted: u64,
    /// Entries that could not be evaluated again (the request no longer
    /// parses), with the first few reasons. Not counted as replayed.
    pub unreadable: u64,
    /// Why, for the first few unreadable entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_reasons: Vec<String>,
    /// Every transition seen, unchanged ones included, in the order
    /// allow, deny, approval_required of `from` then `to`.
    pub transitions: Vec<Transition>,
    /// Whether sessions were recomputed under the candidate (`--resimulate`);
    /// the transitions are then the candidate's outcomes in its own
    /// sessions.
    pub resimulated: bool,
    /// With `resimulated`: decisions the candidate decides otherwise in its
    /// own session than in the session as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_differs: Option<u64>,
    /// The first few of those.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session_examples: Vec<SessionExample>,
}

/// A decision whose outcome depends on whose session it is made in.
#[derive(Debug, Clone, Serialize)]
pub struct SessionExample {
    /// The decision's id.
    pub decision_id: String,
    /// Its receipt's index.
    pub index: u64,
    /// `server/tool`.
    pub tool: String,
    /// Its task, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The candidate's outcome in the session as recorded.
    pub in_recorded_session: Decision,
    /// Its outcome in the session recomputed under it.
    pub in_resimulated_session: Decision,
    /// The session's labels as recorded.
    pub recorded_labels: BTreeSet<String>,
    /// The labels of the recomputed session.
    pub resimulated_labels: BTreeSet<String>,
}

/// All decisions that went from one outcome to another.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// The live outcome (before approval).
    pub from: Decision,
    /// The candidate's outcome.
    pub to: Decision,
    /// How many.
    pub count: u64,
    /// For a change: how often each live policy determined the `from`
    /// outcome, most often first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live_policies: Vec<PolicyCount>,
    /// For a change: how often each candidate policy determined the `to`
    /// outcome, most often first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidate_policies: Vec<PolicyCount>,
    /// For a change: the first few decisions that made it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
}

/// A policy and how many decisions of a transition it determined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCount {
    /// The policy's id.
    pub policy: String,
    /// How many decisions.
    pub count: u64,
}

/// One changed decision, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The decision's id.
    pub decision_id: String,
    /// Its receipt's index.
    pub index: u64,
    /// When it was decided.
    pub time: String,
    /// `server/tool`.
    pub tool: String,
    /// Its task, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The live policies that determined the live outcome.
    pub live_policies: Vec<String>,
    /// What the candidate decided, and why.
    pub candidate: CandidateVerdict,
    /// Redacted argument paths the candidate's policies read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted_read: Vec<String>,
    /// The request as the journal kept it (and as it was replayed).
    pub request: serde_json::Value,
    /// Its redacted argument paths and what was done to each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<Redacted>,
    /// How each policy of the candidate named by either side fared, as
    /// `mandate check --explain` reports it.
    pub explanation: Vec<PolicyReport>,
}

/// The candidate's verdict on an example.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateVerdict {
    /// Its outcome.
    pub decision: Decision,
    /// The policies that determined it.
    pub policies: Vec<String>,
    /// The reasons they give.
    pub reasons: Vec<String>,
    /// Policies that could not be evaluated (any makes the outcome a deny).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl From<Verdict> for CandidateVerdict {
    fn from(verdict: Verdict) -> Self {
        Self {
            decision: verdict.decision,
            policies: verdict.policies,
            reasons: verdict.reasons,
            errors: verdict.errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A session the server keeps: a task's, or an agent's named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SessionKey {
    Task(String),
    Agent(String, String),
}

/// The sessions recomputed so far.
type Sessions = HashMap<SessionKey, Resimulated>;

/// The session a request was decided in, if the server kept it: a task's
/// under a task credential, or the agent's named session.
fn session_key(request: &DecisionRequest, under_credential: bool) -> Option<SessionKey> {
    if under_credential && !request.context.task.id.is_empty() {
        return Some(SessionKey::Task(request.context.task.id.clone()));
    }
    let id = request.context.session.id.as_ref()?;
    Some(SessionKey::Agent(
        request.principal.id.clone(),
        id.to_string(),
    ))
}

/// One session as the candidate would have had it.
#[derive(Debug, Clone)]
struct Resimulated {
    /// The candidate's session.
    session: SessionSummary,
    /// The recorded session after the last decision, as that decision
    /// alone changed it (what else arrives came with results).
    expected: SessionSummary,
    /// The next decision's position.
    position: u64,
    /// Position of the latest call that ran live.
    last_use: u64,
    /// Whether that call ran under the candidate too.
    last_use_ran: bool,
}

impl From<&SessionSummary> for Resimulated {
    /// Starts from the session as recorded at the first decision seen of
    /// it (the journal may not reach back to its start).
    fn from(recorded: &SessionSummary) -> Self {
        Self {
            session: recorded.clone(),
            expected: recorded.clone(),
            position: 0,
            last_use: 0,
            last_use_ran: true,
        }
    }
}

/// Counts for one transition while replaying.
#[derive(Debug, Clone, Default)]
struct Tally {
    count: u64,
    live: BTreeMap<String, u64>,
    candidate: BTreeMap<String, u64>,
    examples: Vec<Example>,
}

/// A report being built: merged across threads, then finished.
#[derive(Debug, Clone, Default)]
struct Partial {
    session_differs: u64,
    session_examples: Vec<SessionExample>,
    replayed: u64,
    on_redacted: u64,
    changed_on_redacted: u64,
    unreadable: u64,
    unreadable_reasons: Vec<String>,
    tallies: BTreeMap<(u8, u8), Tally>,
}

/// How many unreadable entries are named.
const REASONS_KEPT: usize = 5;

impl<'a> Replay<'a> {
    /// A replay against `candidate` on `threads` threads, keeping up to
    /// `examples` examples per changed transition.
    pub fn new(candidate: &'a PolicyPack, examples: usize, threads: usize) -> Self {
        Self {
            candidate,
            examples,
            threads: threads.max(1),
            resimulate: false,
        }
    }

    /// The same, recomputing the sessions the server keeps (a task's, an
    /// agent's named session) under the candidate instead of using the
    /// recorded ones: a call the candidate would not have let run added
    /// nothing to its session. Sessions run in order, so on one thread.
    #[must_use]
    pub fn resimulating(mut self) -> Self {
        self.resimulate = true;
        self.threads = 1;
        self
    }

    /// Replays every entry `read` feeds (it is handed the feed, and reads
    /// the journal into it); `progress` hears the count evaluated after
    /// each batch. With more than one thread the reading goes on while the
    /// workers evaluate the batches read before; the report is the same
    /// whatever the number of threads (examples are the oldest).
    pub fn run<E>(
        &self,
        progress: &(dyn Fn(u64) + Sync),
        read: impl FnOnce(&mut dyn FnMut(JournaledDecision)) -> Result<(), E>,
    ) -> Result<ReplayReport, E> {
        let done = AtomicU64::new(0);
        let finished = |part: &Partial| {
            let total = done.fetch_add(part.replayed + part.unreadable, Ordering::Relaxed)
                + part.replayed
                + part.unreadable;
            progress(total);
        };
        let mut parts: Vec<(u64, Partial)> = Vec::new();
        if self.threads == 1 {
            let mut batch = Vec::with_capacity(BATCH);
            let mut seq = 0;
            let mut sessions = self.resimulate.then(Sessions::default);
            read(&mut |entry| {
                batch.push(entry);
                if batch.len() == BATCH {
                    let part = self.batch(&batch, sessions.as_mut());
                    finished(&part);
                    parts.push((seq, part));
                    seq += 1;
                    batch.clear();
                }
            })?;
            parts.push((seq, self.batch(&batch, sessions.as_mut())));
        } else {
            let (send, receive) = mpsc::sync_channel::<(u64, Vec<JournaledDecision>)>(self.threads);
            let receive = Mutex::new(receive);
            let result = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..self.threads)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut done = Vec::new();
                            loop {
                                let next = receive
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .recv();
                                let Ok((seq, batch)) = next else { break };
                                let part = self.batch(&batch, None);
                                finished(&part);
                                done.push((seq, part));
                            }
                            done
                        })
                    })
                    .collect();
                let mut batch = Vec::with_capacity(BATCH);
                let mut seq = 0;
                let result = read(&mut |entry| {
                    batch.push(entry);
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The workers only stop when the sender is dropped.
                        let _ = send.send((seq, full));
                        seq += 1;
                    }
                });
                if result.is_ok() && !batch.is_empty() {
                    let _ = send.send((seq, batch));
                }
                drop(send);
                for worker in workers {
                    // A replay that lost a part would report wrong counts:
                    // a panic ends it.
                    match worker.join() {
                        Ok(done) => parts.extend(done),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                result
            });
            result?;
        }
        parts.sort_by_key(|(seq, _)| *seq);
        let mut report = Partial::default();
        for (_, part) in parts {
            report.merge(part, self.examples);
        }
        let mut report = report.finish();
        report.resimulated = self.resimulate;
        if !self.resimulate {
            report.session_differs = None;
        }
        for transition in &mut report.transitions {
            for example in &mut transition.examples {
                self.explain(example);
            }
        }
        Ok(report)
    }

    /// The call of `journaled` in its session as recomputed under the
    /// candidate (when the server kept the session), folding the decision
    /// into that session; counts a decision that the recomputed session
    /// decides otherwise than the recorded one.
    fn resimulated_call(
        &self,
        journaled: &JournaledDecision,
        scope: Option<&BTreeSet<String>>,
        sessions: &mut Sessions,
        partial: &mut Partial,
    ) -> Result<(CallRequest, DateTime<Utc>), String> {
        let entry = &journaled.entry;
        let request: DecisionRequest = serde_json::from_str(&entry.request)
            .map_err(|e| format!("the journaled request: {e}"))?;
        let Some(key) = session_key(&request, scope.is_some()) else {
            return call_from(request);
        };
        let recorded = request.context.session.summary.clone().unwrap_or_default();
        let state = sessions
            .entry(key)
            .or_insert_with(|| Resimulated::from(&recorded));
        // What came into the recorded session since its last decision that
        // that decision does not explain came with a reported result: of the
        // latest call that ran, which may not have run under the candidate.
        let arrived: Vec<String> = recorded
            .labels
            .difference(&state.expected.labels)
            .cloned()
            .collect();
        if !arrived.is_empty() && state.last_use_ran {
            state.session.record_labels(state.last_use, arrived);
        }
        let position = state.position;
        state.position += 1;

        let mut resimulated = request.clone();
        resimulated.context.session.summary = Some(state.session.clone());
        let (server, tool) = (request.action.server.clone(), request.action.tool.clone());
        let annotations = request.action.annotations.clone();
        let (as_recorded, now) = call_from(request)?;
        let (call, _) = call_from(resimulated)?;
        let in_recorded = evaluate(self.candidate, scope, &as_recorded, now).decision;
        let in_resimulated = evaluate(self.candidate, scope, &call, now).decision;
        if in_recorded != in_resimulated {
            partial.session_differs += 1;
            if partial.session_examples.len() < self.examples {
                partial.session_examples.push(SessionExample {
                    decision_id: journaled.decision_id.clone(),
                    index: journaled.index,
                    tool: journaled.tool.clone(),
                    task_id: journaled.task_id.clone(),
                    in_recorded_session: in_recorded,
                    in_resimulated_session: in_resimulated,
                    recorded_labels: recorded.labels.clone(),
                    resimulated_labels: state.session.labels.clone(),
                });
            }
        }

        // The call ran under the candidate if it allows it, or asks a
        // person about a call that ran live (the person let it run then).
        let ran_live = entry.outcome == Decision::Allow;
        let ran = in_resimulated == Decision::Allow
            || (in_resimulated == Decision::ApprovalRequired && ran_live);
        let folded = if ran { Decision::Allow } else { in_resimulated };
        state
            .session
            .record_decision(position, &server, &tool, folded, Some(&annotations));
        state.expected = recorded;
        state
            .expected
            .record_decision(position, &server, &tool, entry.outcome, Some(&annotations));
        if ran_live {
            state.last_use = position;
            state.last_use_ran = ran;
        }
        Ok((call, now))
    }

    /// Reports how each policy either side named fared on `example`.
    fn explain(&self, example: &mut Example) {
        let Ok((call, now)) = serde_json::from_value::<DecisionRequest>(example.request.clone())
            .map_err(|e| e.to_string())
            .and_then(call_from)
        else {
            return;
        };
        let named: BTreeSet<&String> = example
            .live_policies
            .iter()
            .chain(&example.candidate.policies)
            .collect();
        example.explanation = self
            .candidate
            .explain(&call, now)
            .policies
            .into_iter()
            .filter(|report| named.contains(&report.id))
            .collect();
    }

    fn batch(&self, entries: &[JournaledDecision], mut sessions: Option<&mut Sessions>) -> Partial {
        let mut partial = Partial::default();
        for entry in entries {
            self.one(entry, &mut partial, sessions.as_deref_mut());
        }
        partial
    }

    fn one(
        &self,
        journaled: &JournaledDecision,
        partial: &mut Partial,
        sessions: Option<&mut Sessions>,
    ) {
        let entry = &journaled.entry;
        let scope: Option<BTreeSet<String>> =
            entry.scope.as_ref().map(|s| s.iter().cloned().collect());
        let call = match sessions {
            None => call_of(&entry.request),
            Some(sessions) => self.resimulated_call(journaled, scope.as_ref(), sessions, partial),
        };
        let call = match call {
            Ok(call) => call,
            Err(reason) => {
                partial.unreadable += 1;
                if partial.unreadable_reasons.len() < REASONS_KEPT {
                    partial
                        .unreadable_reasons
                        .push(format!("decision {}: {reason}", journaled.decision_id));
                }
                return;
            }
        };
        let (call, now) = call;
        let verdict = evaluate(self.candidate, scope.as_ref(), &call, now);
        partial.replayed += 1;
        let read = self.candidate.arguments_read();
        let redacted_read: Vec<String> = entry
            .redacted
            .iter()
            .filter(|r| {
                if r.path == OMITTED {
                    return !read.is_empty();
                }
                r.path
                    .split('.')
                    .next()
                    .is_some_and(|top| read.contains(top))
            })
            .map(|r| r.path.clone())
            .collect();
        let on_redacted = !redacted_read.is_empty();
        if on_redacted {
            partial.on_redacted += 1;
        }
        let key = (rank(entry.decision), rank(verdict.decision));
        let tally = partial.tallies.entry(key).or_default();
        tally.count += 1;
        if entry.decision == verdict.decision {
            return;
        }
        count(&mut tally.live, &entry.policies);
        count(&mut tally.candidate, &verdict.policies);
        if on_redacted {
            partial.changed_on_redacted += 1;
        }
        // Explained once the examples kept are known (an explanation costs
        // many decisions).
        if tally.examples.len() < self.examples {
            tally.examples.push(Example {
                decision_id: journaled.decision_id.clone(),
                index: journaled.index,
                time: journaled.time.clone(),
                tool: journaled.tool.clone(),
                task_id: journaled.task_id.clone(),
                live_policies: entry.policies.clone(),
                candidate: verdict.into(),
                redacted_read,
                request: serde_json::from_str(&entry.request).unwrap_or_default(),
                redacted: entry.redacted.clone(),
                explanation: Vec::new(),
            });
        }
    }
}

impl Partial {
    /// Adds `other`'s counts to this one; examples stay in the order the
    /// parts are merged, up to `examples` per transition.
    fn merge(&mut self, other: Partial, examples: usize) {
        self.replayed += other.replayed;
        self.session_differs += other.session_differs;
        for example in other.session_examples {
            if self.session_examples.len() < examples {
                self.session_examples.push(example);
            }
        }
        self.on_redacted += other.on_redacted;
        self.changed_on_redacted += other.changed_on_redacted;
        self.unreadable += other.unreadable;
        for reason in other.unreadable_reasons {
            if self.unreadable_reasons.len() < REASONS_KEPT {
                self.unreadable_reasons.push(reason);
            }
        }
        for (key, tally) in other.tallies {
            let mine = self.tallies.entry(key).or_default();
            mine.count += tally.count;
            for (policy, n) in tally.live {
                *mine.live.entry(policy).or_default() += n;
            }
            for (policy, n) in tally.candidate {
                *mine.candidate.entry(policy).or_default() += n;
            }
            for example in tally.examples {
                if mine.examples.len() < examples {
                    mine.examples.push(example);
                }
            }
        }
    }

    /// The report.
    fn finish(self) -> ReplayReport {
        let mut report = ReplayReport {
            session_differs: Some(self.session_differs),
            session_examples: self.session_examples,
            replayed: self.replayed,
            on_redacted: self.on_redacted,
            changed_on_redacted: self.changed_on_redacted,
            unreadable: self.unreadable,
            unreadable_reasons: self.unreadable_reasons,
            ..ReplayReport::default()
        };
        for ((from, to), tally) in self.tallies {
            let (from, to) = (outcome(from), outcome(to));
            if from == to {
                report.unchanged += tally.count;
            } else {
                report.changed += tally.count;
            }
            report.transitions.push(Transition {
                from,
                to,
                count: tally.count,
                live_policies: ranked(tally.live),
                candidate_policies: ranked(tally.candidate),
                examples: tally.examples,
            });
        }
        report
    }
}

/// The call a journaled request makes, and the time it was decided at.
fn call_of(request: &str) -> Result<(CallRequest, DateTime<Utc>), String> {
    let request: DecisionRequest =
        serde_json::from_str(request).map_err(|e| format!("the journaled request: {e}"))?;
    call_from(request)
}

/// The call a parsed journaled request makes, and its time.
fn call_from(request: DecisionRequest) -> Result<(CallRequest, DateTime<Utc>), String> {
    let now = request
        .context
        .time
        .ok_or_else(|| "the journaled request has no `context.time`".to_owned())?;
    let call = CallRequest::try_from(request).map_err(|e| e.to_string())?;
    Ok((call, now))
}

/// Counts each of `policies` once more (allocating only for a new one).
fn count(counts: &mut BTreeMap<String, u64>, policies: &[String]) {
    for policy in policies {
        match counts.get_mut(policy) {
            Some(n) => *n += 1,
            None => {
                counts.insert(policy.clone(), 1);
            }
        }
    }
}

/// Policy counts, most often first (then by id).
fn ranked(counts: BTreeMap<String, u64>) -> Vec<PolicyCount> {
    let mut ranked: Vec<PolicyCount> = counts
        .into_iter()
        .map(|(policy, count)| PolicyCount { policy, count })
        .collect();
    ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.policy.cmp(&b.policy)));
    ranked
}

fn rank(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => 0,
        Decision::Deny => 1,
        Decision::ApprovalRequired => 2,
    }
}

fn outcome(rank: u8) -> Decision {
    match rank {
        0 => Decision::Allow,
        2 => Decision::ApprovalRequired,
        _ => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use mandate_core::PolicySource;
    use mandate_store::JournalEntry;
    use serde_json::json;

    use super::*;

    /// Fetching is forbidden; writing is forbidden once `confidential`
    /// data is in the session.
    fn candidate() -> PolicyPack {
        let text = r#"
            @id("all") permit (principal, action, resource);
            @id("no-fetch")
            forbid (principal, action, resource) when { resource.name == "fetch" };
            @id("no-leaks")
            forbid (principal, action, resource)
            when { resource.name == "write" && context.session.labels.contains("confidential") };
        "#;
        PolicyPack::load(&[PolicySource::new("candidate.cedar", text)], None).unwrap()
    }

    /// Decision `n` of task `t` calling `tool`, decided live `live`, in a
    /// session holding `labels`.
    fn journaled(n: u64, tool: &str, live: Decision, labels: &[&str]) -> JournaledDecision {
        let request = json!({
            "principal": {"id": "agent"},
            "action": {"server": "s", "tool": tool, "annotations": {"openWorldHint": false}},
            "context": {
                "task": {"id": "t", "tools": ["fetch", "read", "write"]},
                "session": {"summary": {"calls": n, "labels": labels}},
                "time": "2026-12-07T10:00:00Z",
            },
        });
        JournaledDecision {
            index: n,
            decision_id: format!("d{n}"),
            time: "2026-12-07T10:00:00.000000Z".to_owned(),
            task_id: Some("t".to_owned()),
            tool: format!("s/{tool}"),
            entry: JournalEntry {
                request: request.to_string(),
                redacted: Vec::new(),
                scope: Some(["s/fetch", "s/read", "s/write"].map(str::to_owned).to_vec()),
                decision: live,
                outcome: live,
                policies: Vec::new(),
                policy_version: "v".to_owned(),
            },
        }
    }

    fn replay(replay: Replay<'_>, entries: Vec<JournaledDecision>) -> ReplayReport {
        replay
            .run(&|_| {}, |feed| {
                entries.into_iter().for_each(feed);
                Ok::<(), ()>(())
            })
            .unwrap()
    }

    #[test]
    fn a_result_of_a_call_the_candidate_forbids_never_reaches_its_session() {
        let pack = candidate();
        // Live: the fetch ran and its result brought `confidential`; the
        // write after it was denied for it.
        let entries = || {
            vec![
                journaled(0, "fetch", Decision::Allow, &[]),
                journaled(1, "write", Decision::Deny, &["confidential"]),
            ]
        };
        let as_recorded = replay(Replay::new(&pack, 3, 1), entries());
        assert_eq!(as_recorded.changed, 1, "only the fetch: {as_recorded:?}");
        assert_eq!(as_recorded.session_differs, None);

        let recomputed = replay(Replay::new(&pack, 3, 2).resimulating(), entries());
        assert!(recomputed.resimulated);
        // The fetch did not run under the candidate: no `confidential`, and
        // the write would have been allowed.
        assert_eq!(recomputed.changed, 2, "{recomputed:?}");
        assert_eq!(recomputed.session_differs, Some(1));
        let example = &recomputed.session_examples[0];
        assert_eq!(example.decision_id, "d1");
        assert_eq!(example.in_recorded_session, Decision::Deny);
        assert_eq!(example.in_resimulated_session, Decision::Allow);
        assert!(example.resimulated_labels.is_empty());
    }

    #[test]
    fn a_result_of_a_call_that_still_runs_still_counts() {
        let pack = candidate();
        // The fetch is replaced by a read the candidate allows: its result
        // still brings `confidential`, and the write stays denied.
        let entries = vec![
            journaled(0, "read", Decision::Allow, &[]),
            journaled(1, "write", Decision::Deny, &["confidential"]),
        ];
        let recomputed = replay(Replay::new(&pack, 3, 1).resimulating(), entries);
        assert_eq!(recomputed.changed, 0, "{recomputed:?}");
        assert_eq!(recomputed.session_differs, Some(0));
    }
}
