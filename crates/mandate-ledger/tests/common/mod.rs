//! Builds a genuine log in memory, the way the gateway does, and its export.

#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mandate_ledger::export::EXPORT_FORMAT;
use mandate_ledger::receipt::RECEIPT_VERSION;
use mandate_ledger::{
    CallRef, DelegationHop, Entry, ExportLine, LogKey, MerkleTree, Principal, Receipt, Report,
    SignedCheckpoint, TaskRef, digest_json, redact, verify_export,
};
use serde_json::json;
use serde_json::value::RawValue;

/// The key name every test log uses.
pub const ORIGIN: &str = "mandate.test/ledger";

/// A log and its export, line by line.
pub struct Log {
    /// The log's key.
    pub key: LogKey,
    /// The receipts, in log order.
    pub receipts: Vec<Receipt>,
    /// The tree over the receipts.
    pub tree: MerkleTree,
    /// The checkpoints signed, in order.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// The export's lines, without their newlines: a header, the receipts,
    /// and a checkpoint after every `every` receipts and after the last.
    pub lines: Vec<String>,
}

impl Log {
    /// A log of `n` receipts signed by a new key, checkpointed every `every`.
    pub fn new(n: u64, every: u64) -> Self {
        Self::with_key(LogKey::generate(ORIGIN).unwrap(), n, every, "allow")
    }

    /// A log of `n` receipts signed by `key`, with decisions `decision`.
    pub fn with_key(key: LogKey, n: u64, every: u64, decision: &str) -> Self {
        let mut log = Self {
            lines: vec![
                serde_json::to_string(&ExportLine::Log {
                    format: EXPORT_FORMAT.to_owned(),
                    origin: key.name().to_owned(),
                    verifier_key: key.verifier().as_text().to_owned(),
                })
                .unwrap(),
            ],
            key,
            receipts: Vec::new(),
            tree: MerkleTree::new(),
            checkpoints: Vec::new(),
        };
        for index in 0..n {
            let receipt = receipt(index, decision);
            let canonical = receipt.canonical().unwrap();
            let entry = Entry {
                index,
                signature: log.key.sign_entry(&canonical),
                canonical,
            };
            assert_eq!(log.tree.push(entry.leaf_hash()), index);
            log.lines.push(receipt_line(&entry));
            log.receipts.push(receipt);
            let size = index + 1;
            if size % every == 0 || size == n {
                let checkpoint =
                    SignedCheckpoint::sign(&log.key, size, log.tree.root(size).unwrap()).unwrap();
                log.lines.push(checkpoint_line(&checkpoint));
                log.checkpoints.push(checkpoint);
            }
        }
        log
    }

    /// 1-based line of receipt `index` in the intact export.
    pub fn receipt_line(&self, index: u64) -> usize {
        self.line_of(&format!("\"index\":{index},"))
    }

    /// 1-based line of the checkpoint of size `size` in the intact export.
    pub fn checkpoint_line(&self, size: u64) -> usize {
        self.line_of(&format!("{{\"type\":\"checkpoint\",\"size\":{size},"))
    }

    fn line_of(&self, needle: &str) -> usize {
        let found: Vec<usize> = (1..)
            .zip(&self.lines)
            .filter(|(_, l)| l.contains(needle))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found.len(), 1, "{needle} on lines {found:?}");
        found[0]
    }

    /// The signed checkpoint of size `size`.
    pub fn checkpoint(&self, size: u64) -> &SignedCheckpoint {
        self.checkpoints.iter().find(|c| c.size == size).unwrap()
    }

    /// The intact export.
    pub fn text(&self) -> String {
        text(&self.lines)
    }
}

/// JSONL text of `lines`.
pub fn text(lines: &[String]) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Verifies `lines` as an export of `log`.
pub fn verify(log: &Log, lines: &[String], trusted: &[String]) -> Report {
    verify_export(text(lines).as_bytes(), &log.key.verifier(), trusted).unwrap()
}

/// The export line of a signed entry.
pub fn receipt_line(entry: &Entry) -> String {
    serde_json::to_string(&ExportLine::Receipt {
        receipt: RawValue::from_string(String::from_utf8(entry.canonical.clone()).unwrap())
            .unwrap(),
        signature: BASE64.encode(&entry.signature),
    })
    .unwrap()
}

/// The export line of a checkpoint.
pub fn checkpoint_line(checkpoint: &SignedCheckpoint) -> String {
    serde_json::to_string(&ExportLine::Checkpoint {
        size: checkpoint.size,
        note: checkpoint.note.clone(),
    })
    .unwrap()
}

/// A plausible decision receipt at `index`.
pub fn receipt(index: u64, decision: &str) -> Receipt {
    let full_arguments = json!({
        "to": format!("customer{index}@example.com"),
        "subject": "Your invoice",
        "body": format!("Invoice #{index} is attached."),
    });
    let mut arguments = full_arguments.clone();
    redact(&mut arguments, &[vec!["body".to_owned()]]).unwrap();
    let delegated = index % 3 == 1;
    Receipt {
        v: RECEIPT_VERSION,
        index,
        kind: "decision".to_owned(),
        decision_id: format!("dec_{index:08}"),
        time: format!(
            "2025-06-01T12:{:02}:{:02}.{:06}Z",
            index / 60 % 60,
            index % 60,
            index * 137 % 1_000_000
        ),
        principal: Principal {
            id: "spiffe://acme.test/agent/billing".to_owned(),
            on_behalf_of: Some("alice@acme.test".to_owned()),
        },
        delegation: if delegated {
            vec![
                DelegationHop {
                    agent: "spiffe://acme.test/agent/planner".to_owned(),
                    depth: 0,
                },
                DelegationHop {
                    agent: "spiffe://acme.test/agent/billing".to_owned(),
                    depth: 1,
                },
            ]
        } else {
            Vec::new()
        },
        task: delegated.then(|| TaskRef {
            id: format!("task_{index}"),
            intent_sha256: digest_json(&"send this month's invoices").unwrap(),
        }),
        session: None,
        arguments_omitted_bytes: None,
        call: CallRef {
            server: "mail".to_owned(),
            tool: "send_email".to_owned(),
            action: "Action::\"call\"".to_owned(),
        },
        arguments_sha256: digest_json(&full_arguments).unwrap(),
        arguments: Some(arguments),
        context_sha256: digest_json(&json!({"index": index, "tool": "send_email"})).unwrap(),
        policy_version: "sha256:5f1d7c0e2b9a4c3d8e6f7a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5"
            .to_owned(),
        policies: vec!["mail-to-customers".to_owned()],
        decision: serde_json::from_value(json!(decision)).unwrap(),
        reasons: vec!["customers may be emailed their invoices".to_owned()],
        errors: Vec::new(),
        approver: None,
        approval: None,
        shadow: Vec::new(),
    }
}
