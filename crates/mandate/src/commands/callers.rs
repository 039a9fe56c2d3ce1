//! `mandate callers token`: a token for an enforcement point that asks for
//! decisions without a task credential.

use mandate_server::CALLER_TOKEN_PREFIX;

use crate::cli::CallersTokenArgs;
use crate::exit::Code;

/// Prints a new caller token once, with its `[[callers]]` entry.
pub fn token(args: CallersTokenArgs) -> anyhow::Result<Code> {
    crate::output::print_new_token(
        "callers",
        "mandate serve's config file",
        CALLER_TOKEN_PREFIX,
        &args.name,
        args.json,
        args.out.as_deref(),
    )
}
