//! `mandate policy validate|test|schema`.

use chrono::Utc;
use mandate_core::Severity;
use mandate_core::testing::{CaseResult, TestSuite};
use serde_json::json;

use crate::cli::{TestArgs, ValidateArgs};
use crate::exit::Code;
use crate::output::{emit, outln};

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
