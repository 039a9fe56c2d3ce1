//! What an auditor verifies offline: an exported receipt log
//! (`mandate_ledger::verify_export`) and a signed checkpoint
//! (`SignedCheckpoint::open`), both over the same bytes, with a fixed log
//! key. Nothing may panic; reading from memory never fails; a checkpoint the
//! export is verified against covers no more receipts than it holds, and
//! opens again as itself.
//!
//! The key is fixed, and the seed corpus (`fuzz/corpus/receipts_verify/`) is
//! signed with it, so that mutations reach past the signature checks into
//! the Merkle tree and the consistency checks. It signs nothing else.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_ledger::{LogKey, LogVerifier, SignedCheckpoint, verify_export};

/// The fuzzing log's key (a signed-note signer key). Public on purpose: it
/// signs only the seed corpus.
const KEY: &str =
    "PRIVATE+KEY+mandate.fuzz/ledger+aa50d863+AVsrz/H0iqJKGjKqrsZg1h5GirLmLhNJcpsJshBtMhHp";

static VERIFIER: LazyLock<LogVerifier> = LazyLock::new(|| match LogKey::parse(KEY) {
    Ok(key) => key.verifier(),
    Err(e) => panic!("the fuzzing key does not parse: {e}"),
});

fuzz_target!(|data: &[u8]| {
    let report = match verify_export(data, &VERIFIER, &[]) {
        Ok(report) => report,
        Err(e) => panic!("reading from memory failed: {e}"),
    };
    if let Some(checkpoint) = &report.checkpoint {
        assert!(
            checkpoint.size <= report.receipts,
            "a checkpoint of {} receipts verified over {}",
            checkpoint.size,
            report.receipts
        );
        match SignedCheckpoint::open(&VERIFIER, &checkpoint.note) {
            Ok(opened) => assert_eq!(opened.size, checkpoint.size),
            Err(e) => panic!("a verified checkpoint does not open: {e}"),
        }
    }

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(checkpoint) = SignedCheckpoint::open(&VERIFIER, text)
    {
        match SignedCheckpoint::open(&VERIFIER, &checkpoint.note) {
            Ok(again) => assert_eq!(again, checkpoint),
            Err(e) => panic!("an opened checkpoint does not open again: {e}"),
        }
    }
});
