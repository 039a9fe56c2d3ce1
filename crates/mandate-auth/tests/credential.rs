#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Biscuit task credentials: minting, delegation, verification, the attacks
//! that must fail, the verification cache, and verification by an
//! independent Biscuit implementation (biscuit-python).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use biscuit_auth::builder::{Term, fact, int, string};
use biscuit_auth::{AuthorizerBuilder, Biscuit, BlockBuilder, KeyPair, PrivateKey};
use chrono::{DateTime, Duration, TimeZone, Utc};
use mandate_auth::credential::{
    CredentialError, CredentialVerifier, DatalogLimits, Delegation, Hop, TaskAuthority,
    TaskCredential, TaskGrant, VerificationCache, Widening,
};
use mandate_core::TaskId;

const AUDIENCE: &str = "https://mandate.example/";
const ROOT: &str = "spiffe://example.org/agent/mail";
const SUB: &str = "spiffe://example.org/agent/summarizer";

/// The tests' "now": a fixed instant, so no test reads the clock.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn grant() -> TaskGrant {
    TaskGrant {
        task_id: TaskId::new("task-0001").unwrap(),
        agent: ROOT.to_owned(),
        on_behalf_of: Some("alice@example.org".to_owned()),
        tools: set(&["mail/read_inbox", "mail/send", "calendar/list"]),
        labels: set(&["internal", "pii"]),
        expires_at: t0() + Duration::hours(1),
        max_depth: 2,
        audience: AUDIENCE.to_owned(),
    }
}

fn sub_delegation() -> Delegation {
    Delegation {
        agent: SUB.to_owned(),
        tools: set(&["mail/read_inbox"]),
        labels: None,
        expires_at: t0() + Duration::minutes(30),
    }
}

fn setup() -> (TaskAuthority, CredentialVerifier, TaskCredential) {
    let authority = TaskAuthority::generate();
    let verifier = authority.verifier(AUDIENCE);
    let root = authority.mint(&grant()).unwrap();
    (authority, verifier, root)
}

fn decode(token: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .unwrap()
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

fn private_key(authority: &TaskAuthority) -> PrivateKey {
    PrivateKey::from_bytes_hex(
        &authority.private_key_hex(),
        biscuit_auth::Algorithm::Ed25519,
    )
    .unwrap()
}

/// A hop block as Mandate would write it, at `depth`, without any of
/// Mandate's checks on the delegation: what only the authority key can sign.
fn raw_hop_block(agent: &str, depth: i64, tools: &[&str]) -> BlockBuilder {
    let expires = u64::try_from((t0() + Duration::minutes(10)).timestamp()).unwrap();
    let mut block = BlockBuilder::new()
        .fact(fact("hop", &[string(agent), int(depth)]))
        .unwrap()
        .fact(fact("hop_expires", &[int(depth), Term::Date(expires)]))
        .unwrap();
    for tool in tools {
        block = block
            .fact(fact("hop_tool", &[int(depth), string(tool)]))
            .unwrap();
    }
    block
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn mint_then_verify_gives_the_grant() {
    let (_, verifier, root) = setup();
    let g = grant();
    assert_eq!(root.expires_at, g.expires_at);
    assert_eq!(root.revocation_ids.len(), 1);

    let v = verifier.verify(&root.token, t0()).unwrap();
    assert_eq!(v.task_id, g.task_id);
    assert_eq!(v.root_agent, ROOT);
    assert_eq!(v.on_behalf_of.as_deref(), Some("alice@example.org"));
    assert_eq!(
        v.chain,
        vec![Hop {
            agent: ROOT.to_owned(),
            depth: 0
        }]
    );
    assert_eq!(v.holder().unwrap().agent, ROOT);
    assert_eq!(v.tools, g.tools);
    assert_eq!(v.labels, g.labels);
    assert_eq!(v.expires_at, g.expires_at);
    assert_eq!(v.max_depth, 2);
    assert_eq!(v.audience, AUDIENCE);
    assert_eq!(v.revocation_ids, root.revocation_ids);
    assert!(v.allows_tool("mail/send"));
    assert!(!v.allows_tool("mail/delete"));
    assert!(v.allows_label("pii"));
    assert!(!v.is_expired(t0()));
    assert!(v.is_expired(g.expires_at));
}

#[test]
fn mint_truncates_expiry_to_whole_seconds_and_omits_absent_human() {
    let authority = TaskAuthority::generate();
    let mut g = grant();
    g.on_behalf_of = None;
    g.expires_at = t0() + Duration::milliseconds(90_700);
    let root = authority.mint(&g).unwrap();
    assert_eq!(root.expires_at, t0() + Duration::seconds(90));
    let v = authority
        .verifier(AUDIENCE)
        .verify(&root.token, t0())
        .unwrap();
    assert_eq!(v.on_behalf_of, None);
    assert_eq!(v.expires_at, t0() + Duration::seconds(90));
}

#[test]
fn mint_refuses_an_empty_grant() {
    let authority = TaskAuthority::generate();
    for broken in [
        // An empty task id is not a `TaskId`; a blank one is not minted.
        TaskGrant {
            task_id: TaskId::new(" ").unwrap(),
            ..grant()
        },
        TaskGrant {
            agent: " ".to_owned(),
            ..grant()
        },
        TaskGrant {
            audience: String::new(),
            ..grant()
        },
        TaskGrant {
            tools: set(&["mail/send", ""]),
            ..grant()
        },
    ] {
        assert!(matches!(
            authority.mint(&broken),
            Err(CredentialError::InvalidRequest(_))
        ));
    }
}

#[test]
fn delegation_narrows_and_records_the_sub_agent() {
    let (authority, verifier, root) = setup();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    assert_eq!(sub.expires_at, t0() + Duration::minutes(30));
    assert_eq!(sub.revocation_ids.len(), 2);
    assert_eq!(sub.revocation_ids[0], root.revocation_ids[0]);

    let v = verifier.verify(&sub.token, t0()).unwrap();
    assert_eq!(
        v.chain,
        vec![
            Hop {
                agent: ROOT.to_owned(),
                depth: 0
            },
            Hop {
                agent: SUB.to_owned(),
                depth: 1
            },
        ]
    );
    assert_eq!(v.root_agent, ROOT);
    assert_eq!(v.holder().unwrap().agent, SUB);
    assert_eq!(v.task_id.as_str(), "task-0001");
    assert_eq!(v.on_behalf_of.as_deref(), Some("alice@example.org"));
    assert_eq!(v.tools, set(&["mail/read_inbox"]));
    assert!(v.allows_tool("mail/read_inbox"));
    assert!(!v.allows_tool("mail/send"));
    assert!(!v.allows_tool("calendar/list"));
    assert_eq!(
        v.labels,
        set(&["internal", "pii"]),
        "labels: None keeps them"
    );
    assert_eq!(v.expires_at, t0() + Duration::minutes(30));
    assert_eq!(v.revocation_ids, sub.revocation_ids);

    // The sub-agent's credential expires before the root's.
    let later = t0() + Duration::minutes(45);
    assert!(matches!(
        verifier.verify(&sub.token, later),
        Err(CredentialError::Expired { expired_at }) if expired_at == sub.expires_at
    ));
    assert!(verifier.verify(&root.token, later).is_ok());
}

#[test]
fn a_second_hop_narrows_labels_and_sees_the_whole_chain() {
    let (authority, verifier, root) = setup();
    let first = authority
        .delegate(
            &root.token,
            &Delegation {
                agent: SUB.to_owned(),
                tools: set(&["mail/read_inbox", "mail/send"]),
                labels: None,
                expires_at: t0() + Duration::minutes(40),
            },
            t0(),
        )
        .unwrap();
    let second = authority
        .delegate(
            &first.token,
            &Delegation {
                agent: "spiffe://example.org/agent/sender".to_owned(),
                tools: set(&["mail/send"]),
                labels: Some(set(&["internal"])),
                expires_at: t0() + Duration::minutes(20),
            },
            t0(),
        )
        .unwrap();
    let v = verifier.verify(&second.token, t0()).unwrap();
    let depths: Vec<u32> = v.chain.iter().map(|h| h.depth).collect();
    assert_eq!(depths, vec![0, 1, 2]);
    assert_eq!(v.chain[2].agent, "spiffe://example.org/agent/sender");
    assert_eq!(v.tools, set(&["mail/send"]));
    assert_eq!(v.labels, set(&["internal"]));
    assert_eq!(v.expires_at, t0() + Duration::minutes(20));
    assert_eq!(v.revocation_ids.len(), 3);
    assert_eq!(&v.revocation_ids[..2], &first.revocation_ids[..]);
}

#[test]
fn the_authority_key_round_trips_through_hex() {
    let authority = TaskAuthority::generate();
    let again = TaskAuthority::from_private_key_hex(&authority.private_key_hex()).unwrap();
    assert_eq!(again.public_key_hex(), authority.public_key_hex());
    let token = authority.mint(&grant()).unwrap().token;
    let verifier =
        CredentialVerifier::from_public_key_hex(&again.public_key_hex(), AUDIENCE).unwrap();
    assert!(verifier.verify(&token, t0()).is_ok());
    let prefixed = format!("ed25519/{}", authority.public_key_hex());
    assert!(CredentialVerifier::from_public_key_hex(&prefixed, AUDIENCE).is_ok());
    assert!(!format!("{authority:?}").contains(&authority.private_key_hex()));
    assert!(matches!(
        TaskAuthority::from_private_key_hex("not hex"),
        Err(CredentialError::InvalidKey(_))
    ));
    assert!(matches!(
        TaskAuthority::from_private_key(&[1, 2, 3]),
        Err(CredentialError::InvalidKey(_))
    ));
}

// ---------------------------------------------------------------------------
// Attacks that must fail
// ---------------------------------------------------------------------------

#[test]
fn a_forged_token_is_rejected() {
    let (authority, verifier, root) = setup();
    // Change the task id inside the signed authority block, keeping the
    // protobuf well-formed: only the signature can catch it.
    let mut bytes = decode(&root.token);
    let at = bytes
        .windows(9)
        .position(|w| w == b"task-0001")
        .expect("task id in the token");
    bytes[at + 8] = b'2';
    let forged = encode(&bytes);
    assert!(matches!(
        verifier.verify(&forged, t0()),
        Err(CredentialError::BadSignature)
    ));
    assert!(matches!(
        authority.delegate(&forged, &sub_delegation(), t0()),
        Err(CredentialError::BadSignature)
    ));

    // Same for a delegated token: rename the sub-agent.
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let mut bytes = decode(&sub.token);
    let at = bytes
        .windows(SUB.len())
        .position(|w| w == SUB.as_bytes())
        .unwrap();
    bytes[at + SUB.len() - 1] = b'X';
    assert!(matches!(
        verifier.verify(&encode(&bytes), t0()),
        Err(CredentialError::BadSignature)
    ));

    for garbage in [
        "",
        "not a token!",
        "AAAA",
        &root.token[..root.token.len() / 2],
    ] {
        assert!(
            matches!(
                verifier.verify(garbage, t0()),
                Err(CredentialError::Malformed(_))
            ),
            "{garbage:?}"
        );
    }
    let huge = "A".repeat(mandate_auth::credential::MAX_TOKEN_LEN + 4);
    assert!(matches!(
        verifier.verify(&huge, t0()),
        Err(CredentialError::Malformed(_))
    ));
}

#[test]
fn an_authority_signed_token_without_a_task_id_is_malformed() {
    // `mint` never writes an empty task id; a token that the key signed
    // with one anyway names no task, so it is not a credential.
    let (authority, verifier, _) = setup();
    let expires = u64::try_from((t0() + Duration::minutes(10)).timestamp()).unwrap();
    let token = Biscuit::builder()
        .fact(fact("task", &[string("")]))
        .unwrap()
        .fact(fact("hop", &[string(ROOT), int(0)]))
        .unwrap()
        .fact(fact("task_audience", &[string(AUDIENCE)]))
        .unwrap()
        .fact(fact("max_depth", &[int(0)]))
        .unwrap()
        .fact(fact("hop_expires", &[int(0), Term::Date(expires)]))
        .unwrap()
        .fact(fact("hop_tool", &[int(0), string("mail/send")]))
        .unwrap()
        .build(&KeyPair::from(&private_key(&authority)))
        .unwrap()
        .to_base64()
        .unwrap();
    match verifier.verify(&token, t0()) {
        Err(CredentialError::Malformed(message)) => {
            assert!(message.contains("task id `` is empty"), "{message}");
        }
        other => panic!("expected a malformed credential, got {other:?}"),
    }
}

#[test]
fn a_token_signed_by_another_authority_is_rejected() {
    let (authority, verifier, _) = setup();
    let impostor = TaskAuthority::generate();
    let forged = impostor.mint(&grant()).unwrap();
    assert!(matches!(
        verifier.verify(&forged.token, t0()),
        Err(CredentialError::BadSignature)
    ));
    assert!(matches!(
        authority.delegate(&forged.token, &sub_delegation(), t0()),
        Err(CredentialError::BadSignature)
    ));
}

#[test]
fn an_expired_token_is_rejected() {
    let (authority, verifier, root) = setup();
    let end = grant().expires_at;
    assert!(
        verifier
            .verify(&root.token, end - Duration::seconds(1))
            .is_ok()
    );
    assert!(matches!(
        verifier.verify(&root.token, end),
        Err(CredentialError::Expired { expired_at }) if expired_at == end
    ));
    assert!(matches!(
        verifier.verify(&root.token, end + Duration::days(1)),
        Err(CredentialError::Expired { .. })
    ));
    assert!(matches!(
        authority.delegate(&root.token, &sub_delegation(), end),
        Err(CredentialError::Expired { .. })
    ));
}

#[test]
fn a_delegation_cannot_add_a_tool() {
    let (authority, _, root) = setup();
    let mut d = sub_delegation();
    d.tools = set(&["mail/read_inbox", "mail/delete"]);
    assert_eq!(
        authority.delegate(&root.token, &d, t0()).unwrap_err(),
        CredentialError::Widening(Widening::Tools(vec!["mail/delete".to_owned()]))
    );

    // Nor take back, one hop down, a tool its parent gave up.
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let mut again = sub_delegation();
    again.agent = "spiffe://example.org/agent/other".to_owned();
    again.tools = set(&["mail/send"]);
    assert_eq!(
        authority.delegate(&sub.token, &again, t0()).unwrap_err(),
        CredentialError::Widening(Widening::Tools(vec!["mail/send".to_owned()]))
    );
}

#[test]
fn a_delegation_cannot_extend_the_lifetime() {
    let (authority, _, root) = setup();
    let mut d = sub_delegation();
    d.expires_at = grant().expires_at + Duration::seconds(1);
    assert_eq!(
        authority.delegate(&root.token, &d, t0()).unwrap_err(),
        CredentialError::Widening(Widening::Expiry {
            requested: d.expires_at,
            current: grant().expires_at,
        })
    );
    // An expiry equal to the parent's is allowed; one already past is not.
    d.expires_at = grant().expires_at;
    assert!(authority.delegate(&root.token, &d, t0()).is_ok());
    d.expires_at = t0();
    assert!(matches!(
        authority.delegate(&root.token, &d, t0()),
        Err(CredentialError::InvalidRequest(_))
    ));
}

#[test]
fn a_delegation_cannot_add_a_label() {
    let (authority, _, root) = setup();
    let mut d = sub_delegation();
    d.labels = Some(set(&["pii", "secret"]));
    assert_eq!(
        authority.delegate(&root.token, &d, t0()).unwrap_err(),
        CredentialError::Widening(Widening::Labels(vec!["secret".to_owned()]))
    );
}

#[test]
fn a_delegation_cannot_go_deeper_than_max_depth() {
    let authority = TaskAuthority::generate();
    let mut g = grant();
    g.max_depth = 1;
    let root = authority.mint(&g).unwrap();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let mut deeper = sub_delegation();
    deeper.agent = "spiffe://example.org/agent/deeper".to_owned();
    assert_eq!(
        authority.delegate(&sub.token, &deeper, t0()).unwrap_err(),
        CredentialError::TooDeep {
            depth: 2,
            max_depth: 1
        }
    );

    g.max_depth = 0;
    let flat = authority.mint(&g).unwrap();
    assert_eq!(
        authority
            .delegate(&flat.token, &sub_delegation(), t0())
            .unwrap_err(),
        CredentialError::TooDeep {
            depth: 1,
            max_depth: 0
        }
    );
}

#[test]
fn a_token_with_too_many_mandate_signed_hops_is_rejected_at_verify() {
    // Only the authority key can sign hop blocks, so craft one by hand,
    // skipping `delegate`'s depth check: the verifier must still refuse it.
    let authority = TaskAuthority::generate();
    let verifier = authority.verifier(AUDIENCE);
    let mut g = grant();
    g.max_depth = 1;
    let root = authority.mint(&g).unwrap();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let biscuit = Biscuit::from_base64(&sub.token, authority.public_key()).unwrap();
    let block = biscuit
        .third_party_request()
        .unwrap()
        .create_block(
            &private_key(&authority),
            raw_hop_block("spiffe://example.org/agent/deeper", 2, &["mail/read_inbox"]),
        )
        .unwrap();
    let too_deep = biscuit
        .append_third_party(authority.public_key(), block)
        .unwrap()
        .to_base64()
        .unwrap();
    assert_eq!(
        verifier.verify(&too_deep, t0()).unwrap_err(),
        CredentialError::TooDeep {
            depth: 2,
            max_depth: 1
        }
    );
}

#[test]
fn a_holder_appended_block_is_rejected() {
    let (authority, verifier, root) = setup();
    let biscuit = Biscuit::from_base64(&root.token, authority.public_key()).unwrap();

    // A first-party block claiming a new tool, and one claiming a fake hop.
    // Anyone holding the token can append these offline.
    let widened_tool = biscuit
        .append(
            BlockBuilder::new()
                .fact(fact("hop_tool", &[int(0), string("mail/delete")]))
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    let fake_hop = biscuit
        .append(raw_hop_block("spiffe://evil/agent", 1, &["mail/send"]))
        .unwrap()
        .to_base64()
        .unwrap();
    // Even a block that only narrows is refused: Mandate cannot account for
    // it in the effective tool set, so it fails closed.
    let narrowing_only = biscuit
        .append(
            BlockBuilder::new()
                .check("check if time($t), $t < 2031-01-01T00:00:00Z")
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    for token in [&widened_tool, &fake_hop, &narrowing_only] {
        assert!(matches!(
            verifier.verify(token, t0()),
            Err(CredentialError::UntrustedBlock { index: 1, .. })
        ));
        assert!(matches!(
            authority.delegate(token, &sub_delegation(), t0()),
            Err(CredentialError::UntrustedBlock { index: 1, .. })
        ));
    }

    // A third-party block signed by someone else's key, claiming a hop.
    let attacker = KeyPair::new();
    let block = biscuit
        .third_party_request()
        .unwrap()
        .create_block(
            &attacker.private(),
            raw_hop_block("spiffe://evil/agent", 1, &["mail/send"]),
        )
        .unwrap();
    let foreign = biscuit
        .append_third_party(attacker.public(), block)
        .unwrap()
        .to_base64()
        .unwrap();
    assert!(matches!(
        verifier.verify(&foreign, t0()),
        Err(CredentialError::UntrustedBlock { index: 1, .. })
    ));

    // Appended after a genuine hop, too.
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let sub_biscuit = Biscuit::from_base64(&sub.token, authority.public_key()).unwrap();
    let widened = sub_biscuit
        .append(
            BlockBuilder::new()
                .fact(fact("hop_tool", &[int(1), string("mail/send")]))
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    assert!(matches!(
        verifier.verify(&widened, t0()),
        Err(CredentialError::UntrustedBlock { index: 2, .. })
    ));
}

#[test]
fn a_credential_for_another_audience_is_rejected() {
    let (authority, _, root) = setup();
    let other = authority.verifier("https://other.example/");
    assert_eq!(
        other.verify(&root.token, t0()).unwrap_err(),
        CredentialError::WrongAudience {
            expected: "https://other.example/".to_owned(),
            found: AUDIENCE.to_owned(),
        }
    );
    // Delegation keeps the audience.
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    assert!(matches!(
        other.verify(&sub.token, t0()),
        Err(CredentialError::WrongAudience { .. })
    ));
}

#[test]
fn a_datalog_limit_is_a_deny() {
    // Biscuit's `max_facts` and `max_iterations` only bound facts derived by
    // rules (Mandate's blocks have none; the token size bounds the rest), so
    // the limit to hit here is time: with no time at all, the verdict is
    // deny, never allow.
    let (authority, _, root) = setup();
    let no_time = authority.verifier(AUDIENCE).with_limits(DatalogLimits {
        max_time: std::time::Duration::ZERO,
        ..DatalogLimits::default()
    });
    assert!(matches!(
        no_time.verify(&root.token, t0()),
        Err(CredentialError::LimitExceeded(_))
    ));
}

// ---------------------------------------------------------------------------
// The token's own checks, as an offline verifier (no Mandate code) runs them
// ---------------------------------------------------------------------------

fn offline(
    authority: &TaskAuthority,
    token: &str,
    tool: Option<&str>,
    labels: &[&str],
    audience: &str,
    now: DateTime<Utc>,
) -> bool {
    let biscuit = Biscuit::from_base64(token, authority.public_key()).unwrap();
    let secs = u64::try_from(now.timestamp()).unwrap();
    let mut builder = AuthorizerBuilder::new()
        .fact(fact("time", &[Term::Date(secs)]))
        .unwrap()
        .fact(fact("audience", &[string(audience)]))
        .unwrap()
        .policy("allow if task($task)")
        .unwrap();
    if let Some(tool) = tool {
        builder = builder.fact(fact("tool", &[string(tool)])).unwrap();
    }
    for label in labels {
        builder = builder.fact(fact("label", &[string(label)])).unwrap();
    }
    let mut authorizer = builder
        .set_limits(DatalogLimits::default().into())
        .build(&biscuit)
        .unwrap();
    authorizer.authorize().is_ok()
}

#[test]
fn the_tokens_own_checks_enforce_tool_label_audience_and_expiry_offline() {
    let (authority, _, root) = setup();
    let sub = authority
        .delegate(
            &root.token,
            &Delegation {
                labels: Some(set(&["internal"])),
                ..sub_delegation()
            },
            t0(),
        )
        .unwrap();
    let now = t0();
    let r = &root.token;
    let s = &sub.token;
    assert!(offline(
        &authority,
        r,
        Some("mail/send"),
        &[],
        AUDIENCE,
        now
    ));
    assert!(offline(
        &authority,
        r,
        Some("mail/send"),
        &["pii"],
        AUDIENCE,
        now
    ));
    assert!(!offline(
        &authority,
        r,
        Some("mail/delete"),
        &[],
        AUDIENCE,
        now
    ));
    assert!(
        !offline(&authority, r, None, &[], AUDIENCE, now),
        "no tool fact: denied"
    );
    assert!(!offline(
        &authority,
        r,
        Some("mail/send"),
        &["secret"],
        AUDIENCE,
        now
    ));
    assert!(!offline(
        &authority,
        r,
        Some("mail/send"),
        &[],
        "https://other/",
        now
    ));
    assert!(!offline(
        &authority,
        r,
        Some("mail/send"),
        &[],
        AUDIENCE,
        grant().expires_at
    ));

    assert!(offline(
        &authority,
        s,
        Some("mail/read_inbox"),
        &["internal"],
        AUDIENCE,
        now
    ));
    assert!(!offline(
        &authority,
        s,
        Some("mail/send"),
        &[],
        AUDIENCE,
        now
    ));
    assert!(!offline(
        &authority,
        s,
        Some("mail/read_inbox"),
        &["pii"],
        AUDIENCE,
        now
    ));
    assert!(!offline(
        &authority,
        s,
        Some("mail/read_inbox"),
        &[],
        AUDIENCE,
        t0() + Duration::minutes(30)
    ));
}

// ---------------------------------------------------------------------------
// Revocation and the verification cache
// ---------------------------------------------------------------------------

fn revoked_by(ids: &HashSet<String>) -> impl Fn(&[String]) -> bool + '_ {
    move |token_ids: &[String]| token_ids.iter().any(|id| ids.contains(id))
}

#[test]
fn revoking_the_root_revokes_every_delegated_credential() {
    let (authority, verifier, root) = setup();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let cache = VerificationCache::new(16);
    let mut revoked = HashSet::new();

    assert!(
        cache
            .get_or_verify(&verifier, &sub.token, t0(), revoked_by(&revoked))
            .is_ok()
    );

    // Revoking the sub-agent's own block revokes it, not its parent.
    revoked.insert(sub.revocation_ids[1].clone());
    assert_eq!(
        cache
            .get_or_verify(&verifier, &sub.token, t0(), revoked_by(&revoked))
            .unwrap_err(),
        CredentialError::Revoked
    );
    assert!(
        cache
            .get_or_verify(&verifier, &root.token, t0(), revoked_by(&revoked))
            .is_ok()
    );

    // Ending the task revokes the root block: both are rejected.
    revoked.clear();
    revoked.insert(root.revocation_ids[0].clone());
    for token in [&root.token, &sub.token] {
        assert_eq!(
            cache
                .get_or_verify(&verifier, token, t0(), revoked_by(&revoked))
                .unwrap_err(),
            CredentialError::Revoked
        );
    }
    // A token never seen before is checked too (a cache miss).
    let fresh = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    assert_eq!(
        cache
            .get_or_verify(&verifier, &fresh.token, t0(), revoked_by(&revoked))
            .unwrap_err(),
        CredentialError::Revoked
    );
}

#[test]
fn the_cache_verifies_once_and_checks_revocation_every_time() {
    let (_, verifier, root) = setup();
    let cache = VerificationCache::new(16);
    let none = HashSet::new();

    let first = cache
        .get_or_verify(&verifier, &root.token, t0(), revoked_by(&none))
        .unwrap();
    let second = cache
        .get_or_verify(
            &verifier,
            &root.token,
            t0() + Duration::minutes(5),
            revoked_by(&none),
        )
        .unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the cached result is returned"
    );
    assert_eq!(cache.verifications(), 1);
    assert_eq!(cache.len(), 1);
    assert_eq!(*first, verifier.verify(&root.token, t0()).unwrap());

    // Revocation is checked on the cached path, without re-verifying.
    let revoked: HashSet<String> = root.revocation_ids.iter().cloned().collect();
    assert_eq!(
        cache
            .get_or_verify(&verifier, &root.token, t0(), revoked_by(&revoked))
            .unwrap_err(),
        CredentialError::Revoked
    );
    assert_eq!(cache.verifications(), 1);

    // Another audience does not get the cached result.
    let other = CredentialVerifier::new(verifier.public_key(), "https://other.example/");
    assert!(matches!(
        cache.get_or_verify(&other, &root.token, t0(), revoked_by(&none)),
        Err(CredentialError::WrongAudience { .. })
    ));
    assert_eq!(cache.verifications(), 2);

    // Failures are not cached.
    for _ in 0..2 {
        assert!(
            cache
                .get_or_verify(&verifier, "garbage", t0(), revoked_by(&none))
                .is_err()
        );
    }
    assert_eq!(cache.verifications(), 4);
}

#[test]
fn the_cache_drops_entries_at_expiry() {
    let (authority, verifier, root) = setup();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let cache = VerificationCache::new(16);
    let none = HashSet::new();
    cache
        .get_or_verify(&verifier, &root.token, t0(), revoked_by(&none))
        .unwrap();
    cache
        .get_or_verify(&verifier, &sub.token, t0(), revoked_by(&none))
        .unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.verifications(), 2);

    // At the sub-agent's expiry its entry goes, and the token is refused.
    let end = sub.expires_at;
    assert!(matches!(
        cache.get_or_verify(&verifier, &sub.token, end, revoked_by(&none)),
        Err(CredentialError::Expired { .. })
    ));
    assert_eq!(cache.verifications(), 3, "an expired entry is not served");
    assert_eq!(cache.len(), 1);
    assert!(
        cache
            .get_or_verify(&verifier, &root.token, end, revoked_by(&none))
            .is_ok()
    );
    assert_eq!(cache.verifications(), 3);

    assert_eq!(cache.purge(root.expires_at, revoked_by(&none)), 1);
    assert!(cache.is_empty());
}

#[test]
fn a_revoked_credential_leaves_the_cache_before_its_expiry() {
    let (authority, verifier, _) = setup();
    let cache = VerificationCache::default();
    let none = HashSet::new();
    let root = authority.mint(&grant()).unwrap();
    cache
        .get_or_verify(&verifier, &root.token, t0(), revoked_by(&none))
        .unwrap();
    assert_eq!(cache.purge(t0(), revoked_by(&none)), 0);
    assert_eq!(cache.len(), 1);
    let revoked: HashSet<String> = root.revocation_ids.iter().cloned().collect();
    assert_eq!(cache.purge(t0(), revoked_by(&revoked)), 1);
    assert!(cache.is_empty());
}

#[test]
fn the_cache_is_bounded() {
    let (authority, verifier, _) = setup();
    let cache = VerificationCache::new(2);
    let none = HashSet::new();
    let mut tokens = Vec::new();
    for minutes in [10, 20, 30] {
        let mut g = grant();
        g.expires_at = t0() + Duration::minutes(minutes);
        tokens.push(authority.mint(&g).unwrap().token);
    }
    for token in &tokens {
        cache
            .get_or_verify(&verifier, token, t0(), revoked_by(&none))
            .unwrap();
    }
    assert_eq!(cache.len(), 2);
    // The entry expiring soonest was evicted: the two others are still hits.
    cache
        .get_or_verify(&verifier, &tokens[1], t0(), revoked_by(&none))
        .unwrap();
    cache
        .get_or_verify(&verifier, &tokens[2], t0(), revoked_by(&none))
        .unwrap();
    assert_eq!(cache.verifications(), 3);
}

#[test]
fn the_cache_is_shared_across_threads() {
    let (_, verifier, root) = setup();
    let cache = Arc::new(VerificationCache::default());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let cache = Arc::clone(&cache);
            let verifier = verifier.clone();
            let token = root.token.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    cache
                        .get_or_verify(&verifier, &token, t0(), |_| false)
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(cache.len(), 1);
    assert!(cache.verifications() <= 4);
}

// ---------------------------------------------------------------------------
// Independent verification: biscuit-python
// ---------------------------------------------------------------------------

/// How to get the Python packages the independent check needs.
const SETUP: &str = "run `scripts/test` once from the repository root: it makes the virtual \
environment <target>/test-venv with biscuit-python==0.4.0, where these tests find it (or set \
MANDATE_TEST_PYTHON to a Python that has it)";

fn python_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/verify_credential.py")
}

/// The Python interpreter: `MANDATE_TEST_PYTHON`, else the virtual
/// environment `scripts/test` makes in the build directory. Never the
/// system's Python: its packages are not the pinned ones.
fn python() -> String {
    if let Ok(python) = std::env::var("MANDATE_TEST_PYTHON") {
        return python;
    }
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python to verify credentials with biscuit-python: `{}` does not exist; {SETUP}",
        venv.display()
    );
    venv.display().to_string()
}

fn require_biscuit_python() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import biscuit_auth"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{python}` cannot import biscuit_auth, needed to verify Mandate's credentials \
             with an independent Biscuit implementation; {SETUP}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("`{python}` is not runnable ({e}); {SETUP}"),
    }
}

fn python_verify(
    token: &str,
    public_key_hex: &str,
    tool: &str,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let mut child = Command::new(python())
        .arg(python_script())
        .args(["--public-key", public_key_hex])
        .args(["--tool", tool])
        .args(["--audience", AUDIENCE])
        .args(["--now", &now.timestamp().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test Python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verify_credential.py failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify_credential.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn reason(verdict: &serde_json::Value) -> &str {
    verdict["error"].as_str().unwrap_or_default()
}

#[test]
fn biscuit_python_verifies_mandate_credentials() {
    require_biscuit_python();
    let (authority, _, root) = setup();
    let sub = authority
        .delegate(&root.token, &sub_delegation(), t0())
        .unwrap();
    let key = authority.public_key_hex();
    let now = t0();

    let ok = python_verify(&root.token, &key, "mail/send", now);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["task"], "task-0001");
    assert_eq!(ok["hops"], serde_json::json!([[ROOT, 0]]));

    let denied = python_verify(&root.token, &key, "mail/delete", now);
    assert_eq!(denied["ok"], false, "a tool not granted: {denied}");
    assert!(
        reason(&denied).contains("block n°0: check if tool("),
        "{denied}"
    );

    let sub_ok = python_verify(&sub.token, &key, "mail/read_inbox", now);
    assert_eq!(sub_ok["ok"], true, "{sub_ok}");
    assert_eq!(sub_ok["hops"], serde_json::json!([[ROOT, 0], [SUB, 1]]));

    let sub_denied = python_verify(&sub.token, &key, "mail/send", now);
    assert_eq!(
        sub_denied["ok"], false,
        "a tool the sub-agent lost: {sub_denied}"
    );
    assert!(
        reason(&sub_denied).contains("block n°1: check if tool("),
        "{sub_denied}"
    );

    let other_key = TaskAuthority::generate().public_key_hex();
    let wrong_key = python_verify(&root.token, &other_key, "mail/send", now);
    assert_eq!(wrong_key["ok"], false, "another public key: {wrong_key}");
    assert!(
        reason(&wrong_key).starts_with("token rejected:"),
        "{wrong_key}"
    );

    let expired = python_verify(&sub.token, &key, "mail/read_inbox", sub.expires_at);
    assert_eq!(expired["ok"], false, "expired: {expired}");
    assert!(reason(&expired).contains("check if time("), "{expired}");

    let biscuit = Biscuit::from_base64(&root.token, authority.public_key()).unwrap();
    let appended = biscuit
        .append(
            BlockBuilder::new()
                .fact(fact("hop_tool", &[int(0), string("mail/delete")]))
                .unwrap(),
        )
        .unwrap()
        .to_base64()
        .unwrap();
    let holder_block = python_verify(&appended, &key, "mail/delete", now);
    assert_eq!(
        holder_block["ok"], false,
        "a holder-appended block: {holder_block}"
    );
    assert!(
        reason(&holder_block).contains("not signed by Mandate"),
        "{holder_block}"
    );
}

/// Messages carry times as RFC 3339, as the API writes them, never as
/// `DateTime`'s `Display` (`2026-12-06 14:45:06 UTC`).
#[test]
fn messages_write_times_as_rfc3339() {
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 14, 45, 6).unwrap();
    let later = at + Duration::minutes(5);
    assert_eq!(
        CredentialError::Expired { expired_at: at }.to_string(),
        "task credential expired at 2026-12-06T14:45:06Z"
    );
    assert_eq!(
        Widening::Expiry {
            requested: later,
            current: at
        }
        .to_string(),
        "expiry 2026-12-06T14:50:06Z is later than the delegating credential's expiry 2026-12-06T14:45:06Z"
    );
}
