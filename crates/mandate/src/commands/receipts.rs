//! `mandate receipts export|verify|prove`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal as _, Read as _};
use std::path::Path;

use anyhow::Context as _;
use mandate_ledger::{LogVerifier, ReceiptBundle, SignedCheckpoint};
use mandate_store::{LedgerError, LedgerReader, ReceiptProof};
use serde_json::json;

use crate::cli::{ExportArgs, ProveArgs, VerifyArgs};
use crate::exit::Code;
use crate::ledger_files;
use crate::output::{emit, outln};

/// `--store`: `None` for the data directory's SQLite files (unset or
/// `sqlite`), else the PostgreSQL URL; prints the problem and returns the
/// code for anything else.
pub fn store_choice(store: Option<&str>) -> Result<Option<String>, Code> {
    match store.map(str::trim) {
        None | Some("sqlite") => Ok(None),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Some(url.to_owned()))
        }
        Some(other) => {
            eprintln!(
                "error: --store must be `sqlite` or a postgres:// URL (got `{}`)",
                mandate_store::postgres::redact(other)
            );
            Err(Code::Input)
        }
    }
}

pub fn export(args: ExportArgs) -> anyhow::Result<Code> {
    let postgres = match store_choice(args.store.as_deref()) {
        Ok(postgres) => postgres,
        Err(code) => return Ok(code),
    };
    let reader = match &postgres {
        Some(_) => None,
        None => match open_reader(&args.data.data_dir)? {
            Some(reader) => Some(reader),
            None => return Ok(Code::Input),
        },
    };
    let to_stdout = args.output.is_none();
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create `{}`", path.display())
            })?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let show_progress = std::io::stderr().is_terminal();
    let progress = |n| {
        if show_progress {
            eprint!("\rexported {n} receipts");
        }
    };
    let summary = match (reader, postgres) {
        (Some(reader), _) => reader.export(&mut out, progress),
        (None, Some(url)) => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async {
                match mandate_store::postgres::PgStore::connect(&url).await {
                    Ok(store) => store.export(&mut out, progress).await,
                    Err(e) => Err(LedgerError::Unavailable(e.to_string())),
                }
            })
        }
        (None, None) => return Ok(Code::Input),
    };
    if show_progress {
        eprintln!();
    }
    let summary = match summary {
        Ok(summary) => summary,
        Err(LedgerError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(Code::Ok);
        }
        Err(e) => return Err(e.into()),
    };
    drop(out);
    let text = if args.json {
        serde_json::to_string_pretty(&summary)?
    } else {
        format!(
            "exported {} receipts and {} checkpoints",
            summary.receipts, summary.checkpoints
        )
    };
    // The log itself may be on stdout: the summary then goes to stderr.
    if to_stdout {
        eprintln!("{text}");
    } else {
        let mut out = String::new();
        outln!(out, "{text}");
        emit(&out)?;
    }
    Ok(Code::Ok)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<Code> {
    let verifier = match verifier_key(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    let input = match open_input(&args.input) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    if args.proof {
        return verify_bundle(input, &verifier, args.json);
    }
    let mut trusted = Vec::new();
    for path in &args.checkpoints {
        match std::fs::read_to_string(path) {
            Ok(note) => trusted.push(note),
            Err(e) => {
                eprintln!("error: cannot read checkpoint `{}`: {e}", path.display());
                return Ok(Code::Input);
            }
        }
    }
    let report = mandate_ledger::verify_export(input, &verifier, &trusted)
        .with_context(|| format!("cannot read `{}`", args.input.display()))?;
    let mut out = String::new();
    if args.json {
        outln!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            outln!(out, "{problem}");
        }
        let counts = format!(
            "{} {} and {} {}",
            report.receipts,
            plural(report.receipts, "receipt", "receipts"),
            report.checkpoints,
            plural(report.checkpoints, "checkpoint", "checkpoints"),
        );
        if report.is_ok() {
            let head = match &report.checkpoint {
                Some(c) if c.size >= report.receipts => {
                    format!("the newest checkpoint covers all {}", c.size)
                }
                Some(c) => format!(
                    "the newest checkpoint covers {}; the {} after it are vouched for by their signatures only",
                    c.size,
                    report.receipts - c.size
                ),
                None => {
                    "no checkpoint covers them; only their signatures vouch for them".to_owned()
                }
            };
            outln!(out, "ok: {counts} verify ({head})");
        } else {
            outln!(
                out,
                "FAILED: {} {} in {counts}",
                report.problems.len(),
                plural(report.problems.len() as u64, "problem", "problems"),
            );
        }
    }
    emit(&out)?;
    Ok(if report.is_ok() {
        Code::Ok
    } else {
        Code::Failure
    })
}

fn verify_bundle(
    mut input: Box<dyn BufRead>,
    verifier: &LogVerifier,
    json: bool,
) -> anyhow::Result<Code> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let bundle: ReceiptBundle = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: not a receipt bundle: {e}");
            return Ok(Code::Input);
        }
    };
    let result = bundle.verify(verifier);
    let mut out = String::new();
    match (&result, json) {
        (Ok(checkpoint), true) => outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": true,
                "index": bundle.inclusion_proof.index,
                "checkpoint_size": checkpoint.size,
            }))?
        ),
        (Err(e), true) => outln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({"ok": false, "problem": e.to_string()}))?
        ),
        (Ok(checkpoint), false) => outln!(
            out,
            "ok: receipt {} is signed by the log key and included in the signed checkpoint of size {}",
            bundle.inclusion_proof.index,
            checkpoint.size
        ),
        (Err(e), false) => outln!(out, "FAILED: {e}"),
    }
    emit(&out)?;
    Ok(if result.is_ok() {
        Code::Ok
    } else {
        Code::Failure
    })
}

pub fn prove(args: ProveArgs) -> anyhow::Result<Code> {
    let Some(reader) = open_reader(&args.data.data_dir)? else {
        return Ok(Code::Input);
    };
    let Some(receipt) = reader.receipt(&args.decision_id)? else {
        eprintln!(
            "error: no receipt for decision `{}` in `{}`",
            args.decision_id,
            args.data.data_dir.display()
        );
        return Ok(Code::Input);
    };
    let verifier_text = reader
        .verifier_key()?
        .context("the ledger records no verifier key")?;
    let verifier = LogVerifier::parse(&verifier_text)?;
    let checkpoint = reader
        .latest_checkpoint()?
        .context("the ledger has no checkpoint yet")?
        .checkpoint;
    if checkpoint.size <= receipt.index {
        eprintln!(
            "error: receipt {} is not yet covered by a signed checkpoint (newest covers {}); the server signs one within `checkpoint_interval_ms`, or GET /v1/receipts/{} signs one at once",
            receipt.index, checkpoint.size, args.decision_id
        );
        return Ok(Code::Failure);
    }
    // Check what we hand out: the checkpoint must be the log key's and match the tree.
    let opened = SignedCheckpoint::open(&verifier, &checkpoint.note)?;
    let tree = reader.tree()?;
    let proof = tree.prove_inclusion(receipt.index, opened.size, &reader)?;
    let bundle = ReceiptProof {
        receipt,
        proof,
        checkpoint: opened,
    }
    .into_bundle(&verifier)?;
    bundle
        .verify(&verifier)
        .context("the stored receipt does not verify against the log; run `mandate receipts export | mandate receipts verify`")?;
    let mut out = String::new();
    outln!(out, "{}", serde_json::to_string_pretty(&bundle)?);
    emit(&out)?;
    Ok(Code::Ok)
}

fn open_reader(data_dir: &Path) -> anyhow::Result<Option<LedgerReader>> {
    let path = ledger_files::ledger_path(data_dir);
    match LedgerReader::open(&path) {
        Ok(reader) => Ok(Some(reader)),
        Err(e @ (LedgerError::Missing(_) | LedgerError::Unsupported(_))) => {
            eprintln!("error: {e}");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn verifier_key(args: &VerifyArgs) -> anyhow::Result<LogVerifier> {
    let text = match (&args.key, &args.key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file `{}`", path.display()))?,
        (None, None) => anyhow::bail!("give the log's verifier key with --key or --key-file"),
    };
    Ok(LogVerifier::parse(&text)?)
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    Ok(Box::new(BufReader::new(file)))
}
