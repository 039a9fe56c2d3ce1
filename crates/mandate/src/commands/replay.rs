//! `mandate policy replay`: journaled decisions against a candidate pack.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use mandate_server::replay::{Replay, ReplayReport};
use mandate_store::JournalQuery;
use serde_json::json;

use crate::cli::{PackArgs, ReplayArgs};
use crate::exit::Code;
use crate::journal_source::JournalSource;
use crate::output::{emit, outln};

pub fn run(args: ReplayArgs) -> anyhow::Result<Code> {
    let since = match args
        .since
        .as_deref()
        .map(|s| since(s, Utc::now()))
        .transpose()
    {
        Ok(since) => since,
        Err(message) => {
            eprintln!("error: --since: {message}");
            return Ok(Code::Input);
        }
    };
    let no_dir = PackArgs {
        policies: None,
        data_dir: None,
        config: None,
    };
    let (origin, candidate) = match crate::pack::load(&no_dir, Some(&args.candidate)) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let source = match JournalSource::open(&args.data.data_dir, args.store.as_deref())? {
        Ok(source) => source,
        Err(code) => return Ok(code),
    };
    let mut query = JournalQuery {
        since,
        task: args.task.clone(),
        ..JournalQuery::default()
    };
    for (id, slot) in [
        (&args.from, &mut query.from_index),
        (&args.to, &mut query.to_index),
    ] {
        let Some(id) = id else { continue };
        match source.index_of(id)? {
            Some(i) => *slot = Some(i),
            None => {
                eprintln!("error: the receipt log holds no decision `{id}`");
                return Ok(Code::Input);
            }
        }
    }

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let terminal = std::io::stderr().is_terminal();
    let shown = AtomicU64::new(0);
    // Progress on a terminal, about every 100,000 decisions.
    let progress = |done: u64| {
        if terminal && done / 100_000 > shown.swap(done / 100_000, Ordering::Relaxed) {
            eprint!("\rreplayed {done} decisions");
        }
    };
    let mut replay = Replay::new(&candidate, args.examples, threads);
    if args.resimulate {
        replay = replay.resimulating();
    }
    let report = replay
        .run(&progress, |feed| {
            source
                .journal(&query, |entry| {
                    feed(entry);
                    Ok(())
                })
                .map(drop)
        })
        .context("cannot read the decision journal")?;
    if terminal && shown.load(Ordering::Relaxed) > 0 {
        eprintln!();
    }
    print(&report, &origin.label(), candidate.version(), &args)?;
    Ok(if report.changed == 0 {
        Code::Ok
    } else {
        Code::Changed
    })
}

/// `--since`: a span back from `now` (`90s`, `30m`, `24h`, `7d`, `2w`) or
/// an RFC 3339 time, as the journal's fixed-width time text.
fn since(text: &str, now: DateTime<Utc>) -> Result<String, String> {
    let at = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Utc),
        Err(_) => {
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: i64 = number.parse().map_err(|_| {
                format!("`{text}` is neither a span like `7d` nor an RFC 3339 time")
            })?;
            let seconds = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                "w" => 604_800,
                _ => {
                    return Err(format!(
                        "`{text}`: the unit must be s, m, h, d or w (as in `7d`)"
                    ));
                }
            };
            number
                .checked_mul(seconds)
                .and_then(chrono::TimeDelta::try_seconds)
                .and_then(|span| now.checked_sub_signed(span))
                .ok_or_else(|| format!("`{text}` reaches too far back"))?
        }
    };
    Ok(at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn print(
    report: &ReplayReport,
    label: &str,
    version: &str,
    args: &ReplayArgs,
) -> anyhow::Result<()> {
    let mut out = String::new();
    if args.json {
        let mut value = serde_json::to_value(report)?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "candidate".into(),
                json!({"pack": label, "version": version}),
            );
        }
        outln!(out, "{}", serde_json::to_string_pretty(&value)?);
        emit(&out)?;
        return Ok(());
    }
    let short = version.get(..12).unwrap_or(version);
    outln!(
        out,
        "replayed {} decision{} against `{label}` (version {short}): {} would change",
        report.replayed,
        if report.replayed == 1 { "" } else { "s" },
        report.changed
    );
    for t in report.transitions.iter().filter(|t| t.from != t.to) {
        outln!(out);
        outln!(out, "{} -> {}: {}", t.from, t.to, t.count);
        let counted = |policies: &[mandate_server::replay::PolicyCount]| {
            policies
                .iter()
                .map(|p| format!("{} ({})", p.policy, p.count))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !t.live_policies.is_empty() {
            outln!(out, "  live policies: {}", counted(&t.live_policies));
        }
        if !t.candidate_policies.is_empty() {
            outln!(
                out,
                "  candidate policies: {}",
                counted(&t.candidate_policies)
            );
        }
        for e in &t.examples {
            let task = of_task(e.task_id.as_deref());
            outln!(
                out,
                "  e.g. {} ({}, {}{task}, receipt {})",
                e.decision_id,
                e.time,
                e.tool,
                e.index
            );
            for reason in &e.candidate.reasons {
                outln!(out, "    candidate reason: {reason}");
            }
            for error in &e.candidate.errors {
                outln!(out, "    candidate error: {error}");
            }
            if !e.redacted_read.is_empty() {
                outln!(
                    out,
                    "    replayed with redacted arguments the candidate reads: {}",
                    e.redacted_read.join(", ")
                );
            }
            crate::commands::check::print_reports(&mut out, &e.explanation, "    ");
            for gone in e
                .live_policies
                .iter()
                .filter(|id| !e.explanation.iter().any(|r| &r.id == *id))
            {
                outln!(out, "    live policy `{gone}` is not in the candidate");
            }
        }
    }
    let unchanged: Vec<String> = report
        .transitions
        .iter()
        .filter(|t| t.from == t.to)
        .map(|t| format!("{} {}", t.count, t.from))
        .collect();
    if !unchanged.is_empty() {
        outln!(out);
        outln!(out, "unchanged: {}", unchanged.join(", "));
    }
    if let Some(differs) = report.session_differs {
        outln!(out);
        outln!(
            out,
            "sessions recomputed under the candidate: {differs} decision(s) decided otherwise than in the sessions as recorded"
        );
        for e in &report.session_examples {
            let task = of_task(e.task_id.as_deref());
            outln!(
                out,
                "  e.g. {} ({}{task}, receipt {}): {} in the recorded session (labels: {}), {} in the recomputed one (labels: {})",
                e.decision_id,
                e.tool,
                e.index,
                e.in_recorded_session,
                list(&e.recorded_labels),
                e.in_resimulated_session,
                list(&e.resimulated_labels)
            );
        }
    }
    if report.on_redacted > 0 {
        outln!(
            out,
            "note: {} decision(s) ({} of them changed) were replayed with redacted arguments that the candidate reads: their real values may decide otherwise",
            report.on_redacted,
            report.changed_on_redacted
        );
    }
    if report.unreadable > 0 {
        outln!(
            out,
            "warning: {} journal entr{} could not be evaluated again:",
            report.unreadable,
            if report.unreadable == 1 { "y" } else { "ies" }
        );
        for reason in &report.unreadable_reasons {
            outln!(out, "  {reason}");
        }
    }
    emit(&out)?;
    Ok(())
}

/// ` task ID`, or nothing without a task.
fn of_task(task: Option<&str>) -> String {
    task.map(|t| format!(" task {t}")).unwrap_or_default()
}

/// Labels as `a, b`, or `none`.
fn list(labels: &std::collections::BTreeSet<String>) -> String {
    if labels.is_empty() {
        "none".to_owned()
    } else {
        labels.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn since_takes_spans_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(since("7d", now).unwrap(), "2026-11-30T12:00:00.000000Z");
        assert_eq!(since("90s", now).unwrap(), "2026-12-07T11:58:30.000000Z");
        assert_eq!(since("2w", now).unwrap(), "2026-11-23T12:00:00.000000Z");
        assert_eq!(
            since("2026-12-01T00:00:00+01:00", now).unwrap(),
            "2026-11-30T23:00:00.000000Z"
        );
        for bad in ["", "7", "d", "7y", "-7d", "7 d", "99999999999999999w"] {
            assert!(since(bad, now).is_err(), "{bad}");
        }
    }
}
