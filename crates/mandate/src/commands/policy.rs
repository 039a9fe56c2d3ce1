//! `mandate policy validate|test|schema`.

use std::path::Path;

use anyhow::Context as _;
use chrono::Utc;
use mandate_core::testing::{CaseResult, TestSuite};
use mandate_core::{Decision, PolicyPack, Severity};
use serde_json::{Value, json};

use crate::cli::{TestArgs, ValidateArgs};
use crate::config::PackDir;
use crate::exit::Code;
use crate::journal_source::JournalSource;
use crate::output::{emit, outln};
use crate::pack::Origin;

pub fn validate(args: ValidateArgs) -> anyhow::Result<Code> {
    let (origin, sources) = match crate::pack::sources(&args.pack, args.dir.as_deref()) {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    origin.announce(args.json);
    let (problems, summary) = match sources.load() {
        Ok(pack) => {
            let (base, approval) = pack.counts();
            (
                pack.warnings().to_vec(),
                Some((base, approval, pack.version().to_owned())),
            )
        }
        Err(e) => (e.problems, None),
    };
    let valid = summary.is_some();
    let mut out = String::new();
    if args.json {
        let value = json!({
            "pack": origin.label(),
            "valid": valid,
            "problems": problems,
            "policies": summary.as_ref().map(|(b, a, _)| json!({"base": b, "approval": a})),
            "version": summary.as_ref().map(|(_, _, v)| v),
        });
        outln!(out, "{}", serde_json::to_string_pretty(&value)?);
    } else {
        for p in &problems {
            outln!(out, "{p}");
        }
        match &summary {
            Some((base, approval, version)) => outln!(
                out,
                "ok: {base} base and {approval} approval policies valid in `{}` (version {})",
                origin.label(),
                version.get(..12).unwrap_or(version)
            ),
            None => outln!(
                out,
                "invalid: {} error(s) in `{}`",
                problems
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .count(),
                origin.label()
            ),
        }
    }
    emit(&out)?;
    Ok(if valid { Code::Ok } else { Code::Failure })
}

pub fn test(args: TestArgs) -> anyhow::Result<Code> {
    let (origin, pack) = match crate::pack::load(&args.pack, args.dir.as_deref()) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    origin.announce(args.json);
    if !args.record.is_empty() {
        return record(&args, &origin, &pack);
    }
    let files = match origin.test_files(args.tests.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Input);
        }
    };
    if files.is_empty() {
        eprintln!(
            "error: no test files (`*.json`) found; put them in `{}`",
            origin.tests_dir().display()
        );
        return Ok(Code::Input);
    }
    let now = Utc::now();
    let mut report = Vec::new();
    for file in files {
        let suite = file
            .text
            .and_then(|text| TestSuite::parse(&text).map_err(|e| e.to_string()));
        match suite {
            Ok(suite) => report.push((file.name, suite.run(&pack, now))),
            Err(e) => {
                eprintln!("error: {}: {e}", file.name);
                return Ok(Code::Input);
            }
        }
    }
    let results = || report.iter().flat_map(|(_, r)| r);
    let passed = results().filter(|r| r.passed).count();
    let failed = results().count() - passed;
    let mut out = String::new();
    if args.json {
        let files: Vec<_> = report
            .iter()
            .map(|(file, cases)| json!({"file": file, "cases": cases}))
            .collect();
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"pack": origin.label(), "passed": passed, "failed": failed, "files": files})
            )?
        );
    } else {
        for (file, cases) in &report {
            outln!(out, "{file}:");
            for case in cases {
                print_case(&mut out, case, args.verbose);
            }
        }
        outln!(out, "{}", "-".repeat(40));
        outln!(out, "{passed} passed, {failed} failed");
    }
    emit(&out)?;
    Ok(if failed == 0 { Code::Ok } else { Code::Failure })
}

fn print_case(out: &mut String, case: &CaseResult, verbose: bool) {
    if case.passed {
        if verbose {
            outln!(out, "  PASS: {}", case.name);
        }
    } else {
        outln!(out, "  FAIL: {}", case.name);
        outln!(out, "        {}", case.message);
    }
}

pub fn schema() -> anyhow::Result<Code> {
    emit(mandate_core::schema::BASE_SCHEMA)?;
    Ok(Code::Ok)
}

/// The file `--record` writes: a test suite whose cases are journaled
/// decisions.
const RECORDED: &str = "recorded.json";

/// `policy test --record`: journaled decisions become test cases.
fn record(args: &TestArgs, origin: &Origin, pack: &PolicyPack) -> anyhow::Result<Code> {
    let file = match (&args.tests, origin) {
        (Some(path), _) if path.extension().is_some_and(|e| e == "json") => path.clone(),
        (Some(dir), _) => dir.join(RECORDED),
        (None, Origin::Dir(dir)) => dir.join("tests").join(RECORDED),
        (None, Origin::Example(_)) => {
            eprintln!(
                "error: the pack is the built-in example pack, which is not a directory to write tests into; name the pack's directory"
            );
            return Ok(Code::Input);
        }
    };
    let data_dir = match &args.pack.data_dir {
        Some(dir) => dir.clone(),
        None => match PackDir::data_dir(&args.pack) {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(Code::Input);
            }
        },
    };
    let source = match JournalSource::open(&data_dir, args.store.as_deref())? {
        Ok(source) => source,
        Err(code) => return Ok(code),
    };

    let mut suite = match std::fs::read_to_string(&file) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(value) if value.get("cases").is_some_and(Value::is_array) => value,
            Ok(_) | Err(_) => {
                eprintln!(
                    "error: `{}` is not a test file (an object with a `cases` list); name another with --tests",
                    file.display()
                );
                return Ok(Code::Input);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({
            "description": "Decisions recorded from the decision journal with `mandate policy test --record`.",
            "cases": [],
        }),
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            return Ok(Code::Input);
        }
    };
    let cases = suite.get_mut("cases").and_then(Value::as_array_mut);
    let names: Vec<String> = cases
        .iter()
        .flat_map(|cases| cases.iter())
        .filter_map(|case| case.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();

    let mut added: Vec<(RecordedCase, Vec<String>)> = Vec::new();
    for id in &args.record {
        let journaled = match source.journaled(id)? {
            None => {
                eprintln!("error: the receipt log holds no decision `{id}`");
                return Ok(Code::Input);
            }
            Some(None) => {
                eprintln!(
                    "error: the journal keeps no entry of decision `{id}` (pruned, `journal = false`, or an approval's resolution)"
                );
                return Ok(Code::Input);
            }
            Some(Some(journaled)) => journaled,
        };
        let entry = &journaled.entry;
        if entry
            .policies
            .iter()
            .any(|p| p == mandate_server::decider::CREDENTIAL_SCOPE)
        {
            eprintln!(
                "error: decision `{id}` was denied by the task credential's grant, before any policy: a policy test cannot reproduce it"
            );
            return Ok(Code::Input);
        }
        let name = format!("recorded {id}: {} at {}", journaled.tool, journaled.time);
        if names.contains(&name) || added.iter().any(|(case, _)| case.name == name) {
            eprintln!(
                "note: decision `{id}` is recorded in `{}` already",
                file.display()
            );
            continue;
        }
        let request: Value = serde_json::from_str(&entry.request)
            .with_context(|| format!("the journal entry of `{id}` is not JSON"))?;
        let policies = args.expect.is_none().then(|| {
            let mut policies = entry.policies.clone();
            policies.sort();
            policies
        });
        let redacted = entry.redacted.iter().map(|r| r.path.clone()).collect();
        added.push((
            RecordedCase {
                name,
                request,
                expect: args.expect.map_or(entry.decision, Decision::from),
                policies,
            },
            redacted,
        ));
    }
    let new_cases: Vec<Value> = added
        .iter()
        .map(|(case, _)| serde_json::to_value(case))
        .collect::<Result<_, _>>()?;
    if !new_cases.is_empty() {
        match suite.get_mut("cases").and_then(Value::as_array_mut) {
            Some(cases) => cases.extend(new_cases.iter().cloned()),
            None => anyhow::bail!("the test file lost its cases"),
        }
        write_suite(&file, &suite)?;
    }

    // The new cases, run against the pack as it is.
    let results = TestSuite::parse(&json!({ "cases": new_cases }).to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .run(pack, Utc::now());
    let mut out = String::new();
    if args.json {
        let cases: Vec<Value> = added
            .iter()
            .zip(&results)
            .map(|((case, redacted), result)| {
                json!({
                    "name": case.name,
                    "expect": case.expect,
                    "redacted": redacted,
                    "passes_now": result.passed,
                    "now": result.actual,
                })
            })
            .collect();
        outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "pack": origin.label(),
                "file": file.display().to_string(),
                "added": cases,
            }))?
        );
    } else {
        outln!(out, "added {} case(s) to {}", added.len(), file.display());
        for ((case, redacted), result) in added.iter().zip(&results) {
            let now = if result.passed {
                "passes now".to_owned()
            } else {
                format!("fails now: {}", result.message)
            };
            outln!(out, "  {} expects {}: {now}", case.name, case.expect);
            if !redacted.is_empty() {
                outln!(
                    out,
                    "    its arguments are as the journal kept them (redacted: {})",
                    redacted.join(", ")
                );
            }
        }
    }
    emit(&out)?;
    Ok(Code::Ok)
}

/// A test case made of a journaled decision, as the test file holds it.
#[derive(serde::Serialize)]
struct RecordedCase {
    name: String,
    request: Value,
    expect: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<Vec<String>>,
}

/// Writes `suite` to `file` whole or not at all (a temporary file beside
/// it, then a rename), creating its directory.
fn write_suite(file: &Path, suite: &Value) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in `{}`", dir.display()))?;
    let mut text = serde_json::to_string_pretty(suite)?;
    text.push('\n');
    std::io::Write::write_all(&mut temp, text.as_bytes())?;
    temp.persist(file)
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(())
}
