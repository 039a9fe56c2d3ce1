//! Offline verification of exports, intact and tampered with.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Log, ORIGIN, checkpoint_line, receipt, receipt_line, verify};
use mandate_ledger::export::EXPORT_FORMAT;
use mandate_ledger::{
    Entry, ExportLine, LogKey, Problem, SignedCheckpoint, VerifiedCheckpoint, verify_export,
};

/// 20 receipts, checkpoints at 4, 8, 12, 16 and 20: line 1 is the header,
/// receipts 0–3 are lines 2–5, checkpoint 4 is line 6, and so on.
fn log() -> Log {
    Log::new(20, 4)
}

/// `lines` less the 1-based lines `drop`.
fn without(lines: &[String], drop: &[usize]) -> Vec<String> {
    (1..)
        .zip(lines)
        .filter(|(n, _)| !drop.contains(n))
        .map(|(_, l)| l.clone())
        .collect()
}

#[test]
fn the_test_log_has_the_layout_the_tests_assume() {
    let log = log();
    assert_eq!(log.lines.len(), 1 + 20 + 5);
    assert_eq!(log.receipt_line(0), 2);
    assert_eq!(log.checkpoint_line(4), 6);
    assert_eq!(log.receipt_line(5), 8);
    assert_eq!(log.checkpoint_line(8), 11);
    assert_eq!(log.checkpoint_line(20), 26);
}

#[test]
fn an_intact_log_verifies() {
    let log = log();
    let report = verify(&log, &log.lines, &[]);
    assert_eq!(report.problems, vec![]);
    assert!(report.is_ok());
    assert_eq!(report.receipts, 20);
    assert_eq!(report.checkpoints, 5);
    let last = log.checkpoint(20);
    assert_eq!(
        report.checkpoint,
        Some(VerifiedCheckpoint {
            size: 20,
            root: BASE64.encode(log.tree.root(20).unwrap().0),
            line: Some(26),
            note: last.note.clone(),
        })
    );

    // And with checkpoints the auditor kept from earlier, and the latest.
    let trusted = vec![log.checkpoint(8).note.clone(), last.note.clone()];
    let report = verify(&log, &log.lines, &trusted);
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.checkpoint.unwrap().line, Some(26));

    // A trusted note saved with other line ends still opens.
    let saved = format!("{}\n", last.note.replace('\n', "\r\n"));
    let report = verify(&log, &log.lines, &[saved]);
    assert_eq!(report.problems, vec![]);

    // Windows line ends and blank lines change nothing.
    let crlf = log.text().replace('\n', "\r\n\r\n");
    let report = verify_export(crlf.as_bytes(), &log.key.verifier(), &[]).unwrap();
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.receipts, 20);
}

#[test]
fn one_changed_byte_in_a_receipt_is_reported_at_its_line() {
    let log = log();
    let mut lines = log.lines.clone();
    let line = log.receipt_line(5);
    let original = lines[line - 1].clone();
    let changed = original.replacen("\"dec_00000005\"", "\"dec_0000000X\"", 1);
    let differing = original
        .bytes()
        .zip(changed.bytes())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!((differing, original.len()), (1, changed.len()));
    lines[line - 1] = changed;

    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Changed {
                line: 8,
                index: Some(5)
            },
            // Later checkpoints no longer match; only the first is named.
            Problem::RootMismatch { line: 11, size: 8 },
        ]
    );
    assert_eq!(
        report.problems[0].to_string(),
        "receipt at line 8 (index 5) was changed or forged: its signature does not verify"
    );
    assert_eq!(report.checkpoint.unwrap().size, 4);
}

#[test]
fn a_changed_index_is_reported_as_changed_not_as_removed_or_inserted() {
    let log = log();
    let mut lines = log.lines.clone();
    lines[7] = lines[7].replacen("\"index\":5,", "\"index\":7,", 1);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Changed {
                line: 8,
                index: Some(7)
            },
            Problem::RootMismatch { line: 11, size: 8 },
        ]
    );

    // Without an index at all.
    let mut lines = log.lines.clone();
    lines[7] = lines[7].replacen("\"index\":5,", "", 1);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems[0],
        Problem::Changed {
            line: 8,
            index: None
        }
    );
    assert_eq!(report.problems.len(), 2);
}

#[test]
fn a_bad_signature_is_reported_as_changed_or_forged() {
    let log = log();
    let mut lines = log.lines.clone();
    // Receipt 9 re-signed by another key with the log's name.
    let other = LogKey::generate(ORIGIN).unwrap();
    let canonical = log.receipts[9].canonical().unwrap();
    lines[12] = receipt_line(&Entry {
        index: 9,
        signature: other.sign_entry(&canonical),
        canonical,
    });
    // Receipt 13's signature is not even base64.
    let mut line = serde_json::from_str::<serde_json::Value>(&lines[17]).unwrap();
    assert_eq!(line["receipt"]["index"], 13);
    line["signature"] = "not base64!".into();
    lines[17] = line.to_string();

    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Changed {
                line: 13,
                index: Some(9)
            },
            Problem::Changed {
                line: 18,
                index: Some(13)
            },
        ]
    );
    assert!(report.problems[0].to_string().contains("changed or forged"));
}

#[test]
fn a_deleted_receipt_is_reported_as_removed() {
    let log = log();
    // Receipt 6 (line 9) deleted: receipt 7 moves up to line 9.
    let lines = without(&log.lines, &[log.receipt_line(6)]);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Removed {
                index: 6,
                count: 1,
                before_line: 9
            },
            Problem::RootMismatch { line: 10, size: 8 },
        ]
    );
    assert_eq!(
        report.problems[0].to_string(),
        "receipt index 6 was removed: it is missing before line 9"
    );

    // The first receipt, and a run of three: each gap is named once.
    let lines = without(
        &log.lines,
        &[
            log.receipt_line(0),
            log.receipt_line(9),
            log.receipt_line(10),
            log.receipt_line(11),
        ],
    );
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Removed {
                index: 0,
                count: 1,
                before_line: 2
            },
            Problem::RootMismatch { line: 5, size: 4 },
            Problem::Removed {
                index: 9,
                count: 3,
                before_line: 13
            },
        ]
    );
}

#[test]
fn swapped_receipts_are_reported_as_reordered_once() {
    let log = log();
    let mut lines = log.lines.clone();
    lines.swap(log.receipt_line(5) - 1, log.receipt_line(6) - 1);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Reordered {
                line: 9,
                index: 5,
                after_index: Some(6)
            },
            Problem::RootMismatch { line: 11, size: 8 },
        ]
    );
    assert_eq!(
        report.problems[0].to_string(),
        "receipt at line 9 (index 5) is out of order: it comes after index 6"
    );

    // One entry moved far down is the one named, not all it jumped over.
    let mut lines = log.lines.clone();
    let moved = lines.remove(log.receipt_line(2) - 1);
    lines.insert(log.receipt_line(15) - 1, moved);
    assert!(lines[19].contains("\"index\":2,"));
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            // Checkpoint 4 moved up a line with receipt 2 gone from before it.
            Problem::RootMismatch { line: 5, size: 4 },
            Problem::Reordered {
                line: 20,
                index: 2,
                after_index: Some(15)
            },
        ]
    );

    // And one moved to the top.
    let mut lines = log.lines.clone();
    let moved = lines.remove(log.receipt_line(3) - 1);
    lines.insert(1, moved);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems[0],
        Problem::Reordered {
            line: 2,
            index: 3,
            after_index: None
        }
    );
    assert_eq!(report.problems.len(), 2);
}

#[test]
fn a_receipt_with_a_duplicate_name_is_refused_though_its_signature_verifies() {
    let log = Log::with_key(LogKey::generate(ORIGIN).unwrap(), 8, 4, "deny");
    let mut lines = log.lines.clone();
    let line = log.receipt_line(5);
    // serde keeps the last of two names, so the signature still verifies
    // over the genuine deny; a reader that keeps the first sees an allow.
    let forged =
        lines[line - 1].replacen("\"decision\":", "\"decision\":\"allow\",\"decision\":", 1);
    assert_ne!(forged, lines[line - 1]);
    lines[line - 1] = forged;
    let report = verify(&log, &lines, &[]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(
        report.problems[0].to_string(),
        format!(
            "line {line} is not a valid export line: duplicate key `decision` in `receipt`: a name may appear once per object (RFC 8785), or readers disagree on its value"
        )
    );
    assert!(!report.is_ok());
}

#[test]
fn a_duplicated_receipt_is_reported_as_inserted() {
    let log = log();
    // A copy of receipt 3 after receipt 9 (line 13).
    let mut lines = log.lines.clone();
    lines.insert(13, lines[log.receipt_line(3) - 1].clone());
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Inserted {
                line: 14,
                index: 3,
                original_line: 5
            },
            Problem::RootMismatch { line: 17, size: 12 },
        ]
    );

    // A copy of receipt 7 before its original: the copy is the odd one out.
    let mut lines = log.lines.clone();
    lines.insert(2, lines[log.receipt_line(7) - 1].clone());
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::Inserted {
                line: 3,
                index: 7,
                original_line: 11
            },
            Problem::RootMismatch { line: 7, size: 4 },
        ]
    );
}

#[test]
fn a_receipt_forged_with_another_key_is_changed_not_inserted() {
    let log = log();
    let other = LogKey::generate(ORIGIN).unwrap();
    let forged = receipt(20, "allow");
    let canonical = forged.canonical().unwrap();
    let mut lines = log.lines.clone();
    lines.push(receipt_line(&Entry {
        index: 20,
        signature: other.sign_entry(&canonical),
        canonical,
    }));
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![Problem::Changed {
            line: 27,
            index: Some(20)
        }]
    );
}

#[test]
fn a_cut_tail_with_its_checkpoint_kept_is_truncated() {
    let log = log();
    let lines = without(
        &log.lines,
        &[
            log.receipt_line(17),
            log.receipt_line(18),
            log.receipt_line(19),
        ],
    );
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![Problem::Truncated {
            entries: 17,
            checkpoint_size: 20,
            checkpoint_line: Some(23)
        }]
    );
    assert_eq!(
        report.problems[0].to_string(),
        "the export was truncated: it holds 17 entries, but the signed checkpoint at line 23 covers 20"
    );
    assert_eq!(report.checkpoint.unwrap().size, 16);
}

#[test]
fn a_cut_tail_with_its_checkpoints_is_caught_by_a_trusted_checkpoint() {
    let log = log();
    let lines = log.lines[..log.receipt_line(17) - 1].to_vec();
    // What is left is a genuine, shorter log: the file alone cannot tell.
    let report = verify(&log, &lines, &[]);
    assert_eq!(report.problems, vec![]);
    assert_eq!(report.checkpoint.as_ref().unwrap().size, 16);

    let trusted = vec![log.checkpoint(20).note.clone()];
    let report = verify(&log, &lines, &trusted);
    assert_eq!(
        report.problems,
        vec![Problem::Truncated {
            entries: 17,
            checkpoint_size: 20,
            checkpoint_line: None
        }]
    );
    assert!(!report.is_ok());
}

#[test]
fn a_forged_checkpoint_is_reported() {
    let log = log();
    // Signed by another key of the same name, over the right tree.
    let other = LogKey::generate(ORIGIN).unwrap();
    let forged = SignedCheckpoint::sign(&other, 8, log.tree.root(8).unwrap()).unwrap();
    let mut lines = log.lines.clone();
    lines[10] = checkpoint_line(&forged);
    let report = verify(&log, &lines, &[]);
    assert_eq!(report.problems.len(), 1);
    let Problem::BadCheckpoint { line: 11, message } = &report.problems[0] else {
        panic!("{:?}", report.problems);
    };
    assert!(
        message.contains("not signed by this log's key"),
        "{message}"
    );

    // The genuine note with its size line edited (on the line and in the note).
    let mut lines = log.lines.clone();
    let note = log.checkpoint(8).note.replacen("\n8\n", "\n9\n", 1);
    assert_ne!(note, log.checkpoint(8).note);
    lines[10] = serde_json::to_string(&ExportLine::Checkpoint { size: 9, note }).unwrap();
    let report = verify(&log, &lines, &[]);
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::BadCheckpoint { line: 11, .. }]
        ),
        "{:?}",
        report.problems
    );

    // The genuine note on a line that claims another size.
    let mut lines = log.lines.clone();
    lines[10] = serde_json::to_string(&ExportLine::Checkpoint {
        size: 9,
        note: log.checkpoint(8).note.clone(),
    })
    .unwrap();
    let report = verify(&log, &lines, &[]);
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::BadCheckpoint { line: 11, .. }]
        ),
        "{:?}",
        report.problems
    );
}

#[test]
fn checkpoints_that_go_backwards_or_fork_are_inconsistent() {
    let log = log();
    // Checkpoint 8 moved after checkpoint 12.
    let mut lines = log.lines.clone();
    let moved = lines.remove(log.checkpoint_line(8) - 1);
    lines.insert(log.checkpoint_line(12) - 1, moved);
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![Problem::Inconsistent {
            line: 16,
            from: 12,
            to: 8
        }]
    );

    // The log key signed a size-8 tree of other receipts: that checkpoint
    // does not match, and the next one does not extend it.
    let fork = Log::with_key(log.key.clone(), 8, 8, "deny");
    let mut lines = log.lines.clone();
    lines[log.checkpoint_line(8) - 1] = checkpoint_line(fork.checkpoint(8));
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![
            Problem::RootMismatch { line: 11, size: 8 },
            Problem::Inconsistent {
                line: 16,
                from: 8,
                to: 12
            },
        ]
    );
}

#[test]
fn trusted_checkpoints_of_another_key_or_history_are_reported() {
    let log = log();
    let other = Log::new(8, 8);
    let report = verify(&log, &log.lines, &[other.checkpoint(8).note.clone()]);
    assert_eq!(report.problems.len(), 1);
    assert!(
        matches!(&report.problems[0], Problem::BadTrusted { trusted: 1, .. }),
        "{:?}",
        report.problems
    );

    let renamed = Log::with_key(
        LogKey::generate("mandate.test/other").unwrap(),
        8,
        8,
        "allow",
    );
    let report = verify(&log, &log.lines, &[renamed.checkpoint(8).note.clone()]);
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::BadTrusted { trusted: 1, .. }]
        ),
        "{:?}",
        report.problems
    );

    // Same key, another history.
    let fork = Log::with_key(log.key.clone(), 8, 8, "deny");
    let trusted = vec![
        log.checkpoint(4).note.clone(),
        fork.checkpoint(8).note.clone(),
    ];
    let report = verify(&log, &log.lines, &trusted);
    assert_eq!(
        report.problems,
        vec![Problem::TrustedMismatch {
            trusted: 2,
            size: 8
        }]
    );
}

#[test]
fn malformed_lines_and_a_foreign_header_are_reported() {
    let log = log();
    let mut lines = log.lines.clone();
    lines.insert(3, "not json".to_owned());
    lines.insert(5, r#"{"type":"note","text":"hello"}"#.to_owned());
    lines.insert(7, r#"{"type":"checkpoint","size":1}"#.to_owned());
    let report = verify(&log, &lines, &[]);
    let lines_reported: Vec<(usize, &str)> = report
        .problems
        .iter()
        .map(|p| match p {
            Problem::Malformed { line, .. } => (*line, "malformed"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        lines_reported,
        vec![(4, "malformed"), (6, "malformed"), (8, "malformed")]
    );

    // A header naming another key: signatures still checked with ours.
    let other = LogKey::generate(ORIGIN).unwrap();
    let mut lines = log.lines.clone();
    lines[0] = serde_json::to_string(&ExportLine::Log {
        format: EXPORT_FORMAT.to_owned(),
        origin: ORIGIN.to_owned(),
        verifier_key: other.verifier().as_text().to_owned(),
    })
    .unwrap();
    let report = verify(&log, &lines, &[]);
    assert_eq!(
        report.problems,
        vec![Problem::KeyMismatch {
            line: 1,
            found: other.verifier().as_text().to_owned(),
            expected: log.key.verifier().as_text().to_owned(),
        }]
    );

    // A second header.
    let mut lines = log.lines.clone();
    lines.push(lines[0].clone());
    let report = verify(&log, &lines, &[]);
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::Malformed { line: 27, .. }]
        ),
        "{:?}",
        report.problems
    );
}

#[test]
fn an_empty_export_verifies_trivially_unless_a_checkpoint_says_otherwise() {
    let log = log();
    let verifier = log.key.verifier();
    for text in ["", "\n", &format!("{}\n", log.lines[0])] {
        let report = verify_export(text.as_bytes(), &verifier, &[]).unwrap();
        assert_eq!(report.problems, vec![]);
        assert_eq!((report.receipts, report.checkpoints), (0, 0));
        assert_eq!(report.checkpoint, None);
    }

    let trusted = vec![log.checkpoint(4).note.clone()];
    let report = verify_export("".as_bytes(), &verifier, &trusted).unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::Truncated {
            entries: 0,
            checkpoint_size: 4,
            checkpoint_line: None
        }]
    );
}

#[test]
fn a_report_serialises_with_a_kind_per_problem() {
    let log = log();
    let lines = without(&log.lines, &[log.receipt_line(6)]);
    let report = verify(&log, &lines, &[]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["receipts"], 19);
    assert_eq!(json["checkpoints"], 5);
    assert_eq!(json["checkpoint"]["size"], 4);
    assert_eq!(
        json["problems"][0],
        serde_json::json!({"kind": "removed", "index": 6, "count": 1, "before_line": 9})
    );
    assert_eq!(
        json["problems"][1],
        serde_json::json!({"kind": "root_mismatch", "line": 10, "size": 8})
    );
}

#[test]
fn export_lines_read_back_as_written() {
    let log = log();
    for line in &log.lines {
        let parsed: ExportLine = serde_json::from_str(line).unwrap();
        assert_eq!(&serde_json::to_string(&parsed).unwrap(), line);
    }
    for bad in [
        r#"{"type":"receipt","receipt":{"index":0},"signature":"AA==","extra":1}"#,
        r#"{"type":"receipt","receipt":{"index":0}}"#,
        r#"{"type":"checkpoint","size":1,"note":"x","signature":"AA=="}"#,
        r#"{"type":"log","format":"x","origin":"y"}"#,
        r#"{"type":"other"}"#,
        r#"{"receipt":{}}"#,
    ] {
        assert!(serde_json::from_str::<ExportLine>(bad).is_err(), "{bad}");
    }
}
