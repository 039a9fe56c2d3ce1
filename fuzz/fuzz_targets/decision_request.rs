//! `POST /v1/decide` bodies: bytes into a `DecisionRequest`, validated into a
//! `CallRequest`, then decided by the example pack. Nothing may panic, and a
//! decision with evaluation errors must be a deny (fail closed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{CallRequest, Decision, DecisionRequest};
use mandate_fuzz::{EXAMPLE_PACK, now};

fuzz_target!(|data: &[u8]| {
    // As the server's extractor reads a body: no duplicate names, exact
    // numbers, objects where the type has structs.
    let Ok(value) = mandate_core::json::from_slice(data) else {
        return;
    };
    if mandate_core::json::check_exact_numbers(&value).is_err() {
        return;
    }
    let Ok(request) = mandate_core::json::from_value::<DecisionRequest>(value) else {
        return;
    };
    let Ok(call) = CallRequest::try_from(request) else {
        return;
    };
    let verdict = EXAMPLE_PACK.decide(&call, now());
    if !verdict.errors.is_empty() {
        assert_eq!(
            verdict.decision,
            Decision::Deny,
            "a decision with errors must be a deny: {verdict:?}"
        );
    }
    if verdict.decision != Decision::Deny {
        assert!(
            !verdict.policies.is_empty(),
            "an allow or approval must name its policies: {verdict:?}"
        );
    }
});
