//! Exit codes, documented in `docs/cli.md` and `mandate --help`.

use std::process::ExitCode;

/// What `mandate` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success; for `check`, the call is allowed; for `health`, the server is healthy.
    Ok = 0,
    /// The command ran and found failures (invalid policies, failed tests), the server
    /// refused a `task` request, `health` found the server unhealthy or unreachable, or an
    /// unexpected error.
    Failure = 1,
    /// Usage or input error: bad flags, unreadable or malformed input, a pack that does not
    /// load, a server that `task` cannot reach.
    Input = 2,
    /// `check`: the call is denied.
    Deny = 3,
    /// `check`: the call needs a person's approval.
    ApprovalRequired = 4,
    /// `policy replay`: the candidate pack changes decisions.
    Changed = 5,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}
