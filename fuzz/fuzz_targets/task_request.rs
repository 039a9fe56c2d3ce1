//! `POST /v1/tasks` bodies: bytes into the server's `StartTask` (read as the
//! server's extractor reads them), then the
//! checks the handler runs before minting a credential
//! (`check_start`), against the example pack. Nothing may panic, and
//! accepted terms must be what the checks promise.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mandate_fuzz::{EXAMPLE_PACK, now};
use mandate_server::{StartTask, check_start};

/// The server's default `task_max_ttl_seconds`: one day.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

fuzz_target!(|data: &[u8]| {
    // As the server's extractor reads a body: no duplicate names, exact
    // numbers, objects where the type has structs.
    let Ok(value) = mandate_core::json::from_slice(data) else {
        return;
    };
    if mandate_core::json::check_exact_numbers(&value).is_err() {
        return;
    }
    let Ok(request) = mandate_core::json::from_value::<StartTask>(value) else {
        return;
    };
    let Ok(terms) = check_start(&request, &EXAMPLE_PACK, MAX_TTL, now()) else {
        return;
    };
    assert!(!terms.tools.is_empty(), "a task without tools: {terms:?}");
    for tool in &terms.tools {
        assert!(
            tool.split_once('/')
                .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty()),
            "a tool not named `server/tool`: {tool:?}"
        );
    }
    let lifetime = terms.expires_at - now();
    assert!(
        lifetime.num_seconds() >= 1 && lifetime.num_seconds() as u64 <= MAX_TTL.as_secs(),
        "a lifetime out of bounds: {lifetime}"
    );
});
