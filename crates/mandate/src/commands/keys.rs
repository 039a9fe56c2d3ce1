//! `mandate keys show|generate`.

use mandate_ledger::LogKey;
use serde_json::json;

use crate::cli::{KeysGenerateArgs, KeysShowArgs};
use crate::exit::Code;
use crate::ledger_files;
use crate::output::{emit, outln};

pub fn show(args: KeysShowArgs) -> anyhow::Result<Code> {
    let path = args
        .signing_key_file
        .unwrap_or_else(|| ledger_files::default_key_path(&args.data.data_dir));
    if !path.exists() {
        eprintln!(
            "error: no signing key at `{}`; `mandate serve` generates one on first start (or pass --signing-key-file)",
            path.display()
        );
        return Ok(Code::Input);
    }
    let key = match ledger_files::read_key(&path) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Code::Input);
        }
    };
    print_key(&key, args.json)?;
    Ok(Code::Ok)
}

pub fn generate(args: KeysGenerateArgs) -> anyhow::Result<Code> {
    let key = match &args.origin {
        Some(origin) => LogKey::generate(origin),
        None => LogKey::generate_for_new_log("mandate.local"),
    };
    let key = match key {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Input);
        }
    };
    if args.out.exists() {
        eprintln!(
            "error: `{}` exists; a signing key is never overwritten",
            args.out.display()
        );
        return Ok(Code::Input);
    }
    ledger_files::write_private(&args.out, key.to_private_text())?;
    print_key(&key, args.json)?;
    Ok(Code::Ok)
}

fn print_key(key: &LogKey, json: bool) -> anyhow::Result<()> {
    let verifier = key.verifier();
    let mut out = String::new();
    if json {
        let value = json!({"origin": key.name(), "verifier_key": verifier.as_text()});
        outln!(out, "{}", serde_json::to_string_pretty(&value)?);
    } else {
        outln!(out, "{}", verifier.as_text());
    }
    emit(&out)?;
    Ok(())
}
