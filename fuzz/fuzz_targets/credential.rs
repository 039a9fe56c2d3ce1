//! Task credentials as presented in `Authorization: Bearer …`: the MCP
//! gateway's unverified read (`mandate_mcp::TaskCredential::read`) and the
//! server's verifier (`mandate_auth::CredentialVerifier::verify`). Nothing
//! may panic, and the verifier must never accept: its key is generated
//! when the target starts, so no input can carry a valid signature.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mandate_auth::{CredentialVerifier, TaskAuthority};
use mandate_fuzz::now;

static VERIFIER: LazyLock<CredentialVerifier> =
    LazyLock::new(|| TaskAuthority::generate().verifier("mandate-fuzz"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(read) = mandate_mcp::TaskCredential::read(&text) {
        assert_eq!(read.token(), text.trim());
    }
    if let Ok(verified) = VERIFIER.verify(&text, now()) {
        panic!("a credential not signed by the authority was accepted: {verified:?}");
    }
});
