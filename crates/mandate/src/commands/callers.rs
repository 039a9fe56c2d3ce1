//! `mandate callers token`: a token for an enforcement point that asks for
//! decisions without a task credential.

use mandate_server::CALLER_TOKEN_PREFIX;

use crate::cli::CallersTokenArgs;
use crate::exit::Code;

/// Prints a new caller token once, with its `[[callers]]` entry.
pub fn token(args: CallersTokenArgs) -> anyhow::Result<Code> {
    let name = args.name.trim();
    if name.is_empty() {
        eprintln!("error: --name must not be empty");
        return Ok(Code::Input);
    }
    let (token, digest) = mandate_auth::new_token(CALLER_TOKEN_PREFIX);
    crate::output::print_new_token(
        "callers",
        "mandate serve's config file",
        name,
        &token,
        &digest.to_hex(),
        args.json,
    )?;
    Ok(Code::Ok)
}
