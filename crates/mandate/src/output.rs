//! Writing command output: a closed pipe (`mandate … | head`) ends quietly.

use std::io::Write as _;

/// Appends a line to a `String` buffer (writing to a `String` cannot fail).
macro_rules! outln {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use outln;

/// Writes `text` to stdout; a reader that went away is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes human-readable `text` that carries values from agents (intents,
/// arguments, reasons): control characters other than line feeds, and the
/// bidirectional overrides, are shown escaped (`\u{1b}`), so that no value
/// can move the cursor, recolour the terminal or reorder what a person
/// reads before approving.
pub fn emit_text(text: &str) -> std::io::Result<()> {
    emit(&escape_controls(text))
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n') || bidi {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `mandate … token --name NAME`: makes a token (`prefix` and 32 random
/// bytes) and prints it once, with the `[[section]]` entry (its SHA-256) to
/// add to `config`; as JSON with `json`. With `out`, the token goes into that
/// new file (mode 0600, never overwritten) instead, and what is printed is
/// the entry alone (with comments), ready to append to the config file. An
/// empty name, or an `out` file that exists, is exit code 2.
pub fn print_new_token(
    section: &str,
    config: &str,
    prefix: &str,
    name: &str,
    json: bool,
    out_file: Option<&std::path::Path>,
) -> anyhow::Result<crate::exit::Code> {
    let name = name.trim();
    if name.is_empty() {
        eprintln!("error: --name must not be empty");
        return Ok(crate::exit::Code::Input);
    }
    if let Some(path) = out_file.filter(|p| p.exists()) {
        eprintln!(
            "error: `{}` exists; a token file is never overwritten",
            path.display()
        );
        return Ok(crate::exit::Code::Input);
    }
    let (token, digest) = mandate_auth::new_token(prefix);
    let token_sha256 = digest.to_hex();
    if let Some(path) = out_file {
        crate::ledger_files::write_private(path, &token)?;
    }
    let mut out = String::new();
    if json {
        let answer = match out_file {
            Some(path) => serde_json::json!({
                "name": name,
                "token_file": path.display().to_string(),
                "token_sha256": token_sha256,
            }),
            None => {
                serde_json::json!({ "name": name, "token": token, "token_sha256": token_sha256 })
            }
        };
        outln!(out, "{:#}", answer);
    } else {
        match out_file {
            Some(path) => outln!(
                out,
                "# {name}'s token is in {} (readable by its owner only), and nowhere else;\n# this entry goes into {config}:",
                path.display()
            ),
            None => {
                outln!(
                    out,
                    "# Give this token to {name}; it is shown once and not stored:"
                );
                outln!(out, "#   {token}");
                outln!(out, "# and add this entry to {config}:");
            }
        }
        outln!(out, "[[{section}]]");
        // JSON's string escaping is valid TOML.
        outln!(out, "name = {}", serde_json::Value::String(name.to_owned()));
        outln!(out, "token_sha256 = \"{token_sha256}\"");
    }
    emit(&out)?;
    Ok(crate::exit::Code::Ok)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(
            escape_controls("ok\x1b[1A\r\tline\nnext \u{202e}txt"),
            "ok\\u{1b}[1A\\u{d}\\u{9}line\nnext \\u{202e}txt"
        );
        assert_eq!(escape_controls("plain text\n"), "plain text\n");
    }
}
