//! Offline verification of an exported log.
//!
//! [`verify_export`] reads an export ([`crate::export`]) and the log's public
//! key, and reports every defect it finds as a [`Problem`], with the 1-based
//! line of the export file and the log index where known. It checks that:
//!
//! - every line is a known [`ExportLine`]; the header, if any, comes first and
//!   names the key the auditor verifies with (the header itself is never
//!   trusted: only the key handed in is);
//! - every receipt's signature verifies over its RFC 8785 canonical bytes,
//!   recomputed from the JSON in the file ([`Problem::Changed`]);
//! - the receipts' indices are exactly `0..n` in file order: no index missing
//!   ([`Problem::Removed`]), none repeated ([`Problem::Inserted`]), none out of
//!   place ([`Problem::Reordered`]). Out-of-place entries are those outside the
//!   longest run of increasing indices that keeps the earliest lines, so a
//!   swap of two entries names the one that comes too late, once;
//! - every checkpoint line opens with the key for the key's log
//!   ([`Problem::BadCheckpoint`]), and its root equals the RFC 6962 root of
//!   the first `size` receipts in file order, leaves being the canonical bytes
//!   of the receipts as written, changed ones included
//!   ([`Problem::RootMismatch`]). Once the file's tree has left the signed
//!   one, every larger checkpoint must differ as well, so only the first
//!   mismatch is reported;
//! - checkpoint sizes never go backwards, and each checkpoint extends the one
//!   before it: a consistency proof from the file's tree must link their
//!   signed roots ([`Problem::Inconsistent`]);
//! - no signed checkpoint, in the file or among the `trusted` ones, covers
//!   more entries than the export holds ([`Problem::Truncated`]);
//! - each trusted checkpoint opens with the key ([`Problem::BadTrusted`]) and
//!   matches the export's root at its size ([`Problem::TrustedMismatch`]).
//!
//! An export with no receipt and no checkpoint verifies: it proves nothing,
//! and its [`Report::checkpoint`] is `None`. A trusted checkpoint of any
//! non-zero size makes it [`Problem::Truncated`].
//!
//! # What an auditor must keep
//!
//! Receipts after the last checkpoint are vouched for only by their own
//! signatures, and whoever can edit the export can drop its tail *together
//! with the checkpoints that cover it*: what is left is a genuine, shorter
//! log, and nothing in the file can tell. To detect that, keep the latest
//! signed checkpoint you have seen (from `GET /v1/checkpoint`, or the
//! [`VerifiedCheckpoint::note`] of the last report) and pass it as `trusted`
//! next time: an export that is shorter than it, or whose tree does not
//! extend it, fails.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mandate_core::json::{self, ParseError};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tlog_tiles::Hash;

use crate::checkpoint::SignedCheckpoint;
use crate::export::{EXPORT_FORMAT, ExportLine};
use crate::key::LogVerifier;
use crate::merkle::MerkleTree;
use crate::proof::hash_to_base64;
use crate::receipt::canonical_json;

/// The outcome of verifying an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Receipt lines in the export, good or bad.
    pub receipts: u64,
    /// Checkpoint lines in the export, good or bad.
    pub checkpoints: u64,
    /// The largest checkpoint, from the file or trusted, that is signed by the
    /// key and whose root the export reproduces; `None` if there is none.
    pub checkpoint: Option<VerifiedCheckpoint>,
    /// Everything found wrong, by line (problems with trusted checkpoints
    /// last).
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the export verified with no problem at all.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A checkpoint the export was verified against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash, standard base64.
    pub root: String,
    /// Line of the export it is on; `None` for a trusted checkpoint.
    pub line: Option<usize>,
    /// The signed note: keep it, and pass it as trusted next time.
    pub note: String,
}

/// One thing wrong with an export.
///
/// Lines are 1-based lines of the export file; `trusted` positions are
/// 1-based positions in the list of trusted checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The line is not JSON, or not a known export line.
    Malformed {
        /// Line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The header names another verifier key than the one verified with.
    KeyMismatch {
        /// Line of the header.
        line: usize,
        /// Key the header names.
        found: String,
        /// Key the export was verified with.
        expected: String,
    },
    /// A receipt whose signature does not verify, or that has no integer
    /// `index`: it was changed, or forged.
    Changed {
        /// Line.
        line: usize,
        /// The index the receipt claims, if it has one.
        index: Option<u64>,
    },
    /// A validly signed entry whose index already appears elsewhere.
    Inserted {
        /// Line of the extra entry.
        line: usize,
        /// The repeated index.
        index: u64,
        /// Line of the entry with that index that is in its place.
        original_line: usize,
    },
    /// Entries missing: no receipt, good or bad, holds these indices.
    Removed {
        /// First missing index.
        index: u64,
        /// How many consecutive indices are missing from `index` on.
        count: u64,
        /// Line of the receipt that follows the gap.
        before_line: usize,
    },
    /// A validly signed entry out of log order.
    Reordered {
        /// Line.
        line: usize,
        /// The entry's index.
        index: u64,
        /// Index of the validly signed receipt just before it in the file;
        /// `None` if it comes first.
        after_index: Option<u64>,
    },
    /// A checkpoint line that does not open with the key: forged, signed by
    /// another key, for another log, or malformed.
    BadCheckpoint {
        /// Line.
        line: usize,
        /// Why it does not open.
        message: String,
    },
    /// A signed checkpoint whose root differs from the root of the export's
    /// first `size` receipts.
    RootMismatch {
        /// Line.
        line: usize,
        /// Checkpoint size.
        size: u64,
    },
    /// A signed checkpoint that goes backwards from, or does not extend, the
    /// signed checkpoint before it.
    Inconsistent {
        /// Line of the later checkpoint.
        line: usize,
        /// Size of the checkpoint before it.
        from: u64,
        /// Size of this checkpoint.
        to: u64,
    },
    /// A signed checkpoint covers more entries than the export holds: its
    /// tail was cut off.
    Truncated {
        /// Entries the export accounts for.
        entries: u64,
        /// Size of the largest such checkpoint.
        checkpoint_size: u64,
        /// Its line; `None` if it is a trusted checkpoint.
        checkpoint_line: Option<usize>,
    },
    /// A trusted checkpoint that does not open with the key.
    BadTrusted {
        /// Position in the trusted list, from 1.
        trusted: usize,
        /// Why it does not open.
        message: String,
    },
    /// A trusted checkpoint whose root differs from the export's root at its
    /// size: the export is not the log that checkpoint was taken from.
    TrustedMismatch {
        /// Position in the trusted list, from 1.
        trusted: usize,
        /// Checkpoint size.
        size: u64,
    },
}

impl Problem {
    /// The export line the problem is at, if it is at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Malformed { line, .. }
            | Self::KeyMismatch { line, .. }
            | Self::Changed { line, .. }
            | Self::Inserted { line, .. }
            | Self::Reordered { line, .. }
            | Self::BadCheckpoint { line, .. }
            | Self::RootMismatch { line, .. }
            | Self::Inconsistent { line, .. } => Some(*line),
            Self::Removed { before_line, .. } => Some(*before_line),
            Self::Truncated {
                checkpoint_line, ..
            } => *checkpoint_line,
            Self::BadTrusted { .. } | Self::TrustedMismatch { .. } => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed { line, message } => {
                write!(f, "line {line} is not a valid export line: {message}")
            }
            Self::KeyMismatch {
                line,
                found,
                expected,
            } => write!(
                f,
                "the header at line {line} names the key `{found}`, but the export was verified with `{expected}`"
            ),
            Self::Changed {
                line,
                index: Some(index),
            } => write!(
                f,
                "receipt at line {line} (index {index}) was changed or forged: its signature does not verify"
            ),
            Self::Changed { line, index: None } => write!(
                f,
                "receipt at line {line} was changed or forged: it has no integer `index`"
            ),
            Self::Inserted {
                line,
                index,
                original_line,
            } => write!(
                f,
                "receipt at line {line} (index {index}) was inserted: index {index} is already at line {original_line}"
            ),
            Self::Removed {
                index,
                count: 1,
                before_line,
            } => write!(
                f,
                "receipt index {index} was removed: it is missing before line {before_line}"
            ),
            Self::Removed {
                index,
                count,
                before_line,
            } => write!(
                f,
                "receipts {index} to {} ({count} entries) were removed: they are missing before line {before_line}",
                index.saturating_add(count.saturating_sub(1))
            ),
            Self::Reordered {
                line,
                index,
                after_index: Some(after),
            } => write!(
                f,
                "receipt at line {line} (index {index}) is out of order: it comes after index {after}"
            ),
            Self::Reordered {
                line,
                index,
                after_index: None,
            } => write!(
                f,
                "receipt at line {line} (index {index}) is out of order: it comes first"
            ),
            Self::BadCheckpoint { line, message } => {
                write!(f, "checkpoint at line {line} is rejected: {message}")
            }
            Self::RootMismatch { line, size } => write!(
                f,
                "checkpoint at line {line} is signed, but its root is not the root of the export's first {size} receipts"
            ),
            Self::Inconsistent { line, from, to } if to < from => write!(
                f,
                "checkpoint at line {line} goes backwards: size {to} after size {from}"
            ),
            Self::Inconsistent { line, from, to } => write!(
                f,
                "checkpoint at line {line} (size {to}) does not extend the checkpoint before it (size {from}): the log signed two histories"
            ),
            Self::Truncated {
                entries,
                checkpoint_size,
                checkpoint_line,
            } => {
                write!(
                    f,
                    "the export was truncated: it holds {entries} entries, but "
                )?;
                match checkpoint_line {
                    Some(line) => write!(f, "the signed checkpoint at line {line}")?,
                    None => f.write_str("a trusted checkpoint")?,
                }
                write!(f, " covers {checkpoint_size}")
            }
            Self::BadTrusted { trusted, message } => write!(
                f,
                "trusted checkpoint {trusted} is not signed by this log's key: {message}"
            ),
            Self::TrustedMismatch { trusted, size } => write!(
                f,
                "trusted checkpoint {trusted} (size {size}) does not match the export: its root is not the root of the export's first {size} receipts"
            ),
        }
    }
}

/// One receipt line, as read.
struct ReceiptLine {
    line: usize,
    /// The `index` the receipt's JSON holds, if an unsigned integer.
    index: Option<u64>,
    /// Whether the signature verifies (and the index is there).
    signed: bool,
}

/// One checkpoint line, as read.
struct CheckpointLine {
    line: usize,
    size: u64,
    note: String,
}

/// Verifies an export read from `reader` against the log key `verifier` and
/// the signed checkpoints `trusted` the auditor obtained independently
/// (signed notes as published; surrounding whitespace and CRLF line ends
/// are forgiven).
///
/// Fails only when `reader` does; everything wrong with the export is in the
/// [`Report`]. See the [module documentation](self) for what is checked.
pub fn verify_export<R: BufRead>(
    mut reader: R,
    verifier: &LogVerifier,
    trusted: &[String],
) -> std::io::Result<Report> {
    let mut problems = Vec::new();
    let mut receipts = Vec::new();
    let mut checkpoints = Vec::new();
    let mut tree = MerkleTree::new();

    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut first = true;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text.trim(),
            Err(e) => {
                problems.push(Problem::Malformed {
                    line,
                    message: format!("not UTF-8: {e}"),
                });
                first = false;
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        // RFC 8785 input has each name once per object, and readers disagree
        // on which of two values counts: a receipt with an extra
        // `"decision":"allow"` before its signed `"deny"` would verify (serde
        // keeps the last) and read as an allow elsewhere. The line is
        // refused; it is still read below, so that indices and roots are
        // judged as for any other line.
        if let Err(ParseError::DuplicateKey(e)) = json::from_slice(text.as_bytes()) {
            problems.push(Problem::Malformed {
                line,
                message: format!(
                    "{e}: a name may appear once per object (RFC 8785), or readers disagree on its value"
                ),
            });
        }
        let parsed = serde_json::from_str::<ExportLine>(text);
        let was_first = std::mem::replace(&mut first, false);
        match parsed {
            Err(e) => problems.push(Problem::Malformed {
                line,
                message: e.to_string(),
            }),
            Ok(ExportLine::Log {
                format,
                origin,
                verifier_key,
            }) => {
                if let Some(problem) =
                    check_header(line, was_first, &format, &origin, &verifier_key, verifier)
                {
                    problems.push(problem);
                }
            }
            Ok(ExportLine::Receipt { receipt, signature }) => {
                let (read, leaf) = read_receipt(line, &receipt, &signature, verifier);
                if !read.signed {
                    problems.push(Problem::Changed {
                        line,
                        index: read.index,
                    });
                }
                tree.push(leaf);
                receipts.push(read);
            }
            Ok(ExportLine::Checkpoint { size, note }) => {
                checkpoints.push(CheckpointLine { line, size, note });
            }
        }
    }

    let span = check_order(&receipts, &mut problems);
    let mut checked = CheckedCheckpoints::default();
    check_checkpoints(
        &checkpoints,
        &tree,
        span,
        verifier,
        &mut checked,
        &mut problems,
    );
    check_trusted(trusted, &tree, span, verifier, &mut checked, &mut problems);
    if let Some((checkpoint_size, checkpoint_line)) = checked.beyond {
        problems.push(Problem::Truncated {
            entries: span,
            checkpoint_size,
            checkpoint_line,
        });
    }

    // Stable: problems at one line keep the order they were found in.
    problems.sort_by_key(|p| p.line().unwrap_or(usize::MAX));
    Ok(Report {
        receipts: count(receipts.len()),
        checkpoints: count(checkpoints.len()),
        checkpoint: checked.largest,
        problems,
    })
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn check_header(
    line: usize,
    first: bool,
    format: &str,
    origin: &str,
    verifier_key: &str,
    verifier: &LogVerifier,
) -> Option<Problem> {
    let malformed = |message: String| Some(Problem::Malformed { line, message });
    if !first {
        return malformed("a `log` header may only be the first line".to_owned());
    }
    if format != EXPORT_FORMAT {
        return malformed(format!(
            "unknown export format `{format}`, expected `{EXPORT_FORMAT}`"
        ));
    }
    if verifier_key != verifier.as_text() {
        return Some(Problem::KeyMismatch {
            line,
            found: verifier_key.to_owned(),
            expected: verifier.as_text().to_owned(),
        });
    }
    if origin != verifier.name() {
        return malformed(format!(
            "the header names the log `{origin}`, but its key is for `{}`",
            verifier.name()
        ));
    }
    None
}

/// Reads a receipt and checks its signature; returns it and its leaf hash
/// (of its canonical bytes, or of its text as written if it has none).
fn read_receipt(
    line: usize,
    receipt: &RawValue,
    signature: &str,
    verifier: &LogVerifier,
) -> (ReceiptLine, Hash) {
    let value = serde_json::from_str::<Value>(receipt.get()).ok();
    let index = value
        .as_ref()
        .and_then(|v| v.get("index"))
        .and_then(Value::as_u64);
    let canonical = value.as_ref().and_then(|v| canonical_json(v).ok());
    let leaf = tlog_tiles::record_hash(canonical.as_deref().unwrap_or(receipt.get().as_bytes()));
    let signed = index.is_some()
        && canonical.as_deref().is_some_and(|canonical| {
            BASE64
                .decode(signature)
                .is_ok_and(|signature| verifier.verify_entry(canonical, &signature))
        });
    (
        ReceiptLine {
            line,
            index,
            signed,
        },
        leaf,
    )
}

/// Checks that signed receipts hold exactly the indices `0..n` in order.
/// Returns how many entries the export accounts for: its receipt lines, or
/// one past its largest signed index if entries are missing in between.
fn check_order(receipts: &[ReceiptLine], problems: &mut Vec<Problem>) -> u64 {
    // Signed entries in file order: (position in `receipts`, index).
    let signed: Vec<(usize, u64)> = receipts
        .iter()
        .enumerate()
        .filter(|(_, r)| r.signed)
        .filter_map(|(i, r)| r.index.map(|index| (i, index)))
        .collect();
    let in_place = longest_increasing(&signed);

    // Where each index sits in its place (the line to point at).
    let mut placed: HashMap<u64, usize> = HashMap::new();
    for (&(position, index), &kept) in signed.iter().zip(&in_place) {
        if kept {
            placed.insert(index, line_of(receipts, position));
        }
    }
    let mut previous: Option<u64> = None;
    for (&(position, index), &kept) in signed.iter().zip(&in_place) {
        let line = line_of(receipts, position);
        if !kept {
            if let Some(&original_line) = placed.get(&index) {
                problems.push(Problem::Inserted {
                    line,
                    index,
                    original_line,
                });
            } else {
                problems.push(Problem::Reordered {
                    line,
                    index,
                    after_index: previous,
                });
                placed.insert(index, line);
            }
        }
        previous = Some(index);
    }

    let mut present: Vec<u64> = placed.keys().copied().collect();
    present.sort_unstable();
    let Some(&largest) = present.last() else {
        return count(receipts.len());
    };
    let is_gap = |index: u64| index <= largest && present.binary_search(&index).is_err();

    // A changed receipt stands in for the index it claims if that one is
    // missing, else for the one after the receipt before it: a receipt
    // changed in place is reported once, as changed, not also as removed.
    let mut filled: HashSet<u64> = HashSet::new();
    let mut previous: Option<u64> = None;
    for receipt in receipts {
        if receipt.signed {
            previous = receipt.index;
            continue;
        }
        let next = previous.map_or(Some(0), |p| p.checked_add(1));
        let slot = [receipt.index, next]
            .into_iter()
            .flatten()
            .find(|&i| is_gap(i) && !filled.contains(&i));
        if let Some(slot) = slot {
            filled.insert(slot);
            placed.insert(slot, receipt.line);
        }
        previous = slot.or(receipt.index).or(previous);
    }

    // Whatever is still missing was removed: report each run of missing
    // indices between present or filled ones.
    let mut filled: Vec<u64> = filled.into_iter().collect();
    filled.sort_unstable();
    let mut slots = filled.into_iter().peekable();
    let mut expected = 0u64;
    for &index in &present {
        while let Some(slot) = slots.next_if(|&slot| slot < index) {
            if slot > expected {
                push_removed(problems, &placed, expected, slot - expected, receipts);
            }
            expected = slot.saturating_add(1);
        }
        if index > expected {
            push_removed(problems, &placed, expected, index - expected, receipts);
        }
        expected = index.saturating_add(1);
    }

    count(receipts.len()).max(largest.saturating_add(1))
}

fn push_removed(
    problems: &mut Vec<Problem>,
    placed: &HashMap<u64, usize>,
    index: u64,
    count: u64,
    receipts: &[ReceiptLine],
) {
    let after = index.saturating_add(count);
    let before_line = placed
        .get(&after)
        .copied()
        .or_else(|| receipts.last().map(|r| r.line))
        .unwrap_or_default();
    problems.push(Problem::Removed {
        index,
        count,
        before_line,
    });
}

fn line_of(receipts: &[ReceiptLine], position: usize) -> usize {
    receipts.get(position).map_or(0, |r| r.line)
}

/// Marks the entries of a longest strictly increasing run of indices; of all
/// such runs, the one that keeps the earliest entries. O(n log n).
fn longest_increasing(entries: &[(usize, u64)]) -> Vec<bool> {
    // from_here[i]: length of the longest increasing run starting at entry i,
    // found as the longest decreasing run ending there, walking backwards.
    let mut from_here = vec![0usize; entries.len()];
    let mut tails: Vec<u64> = Vec::new();
    for (slot, &(_, index)) in from_here.iter_mut().zip(entries).rev() {
        let key = u64::MAX - index;
        let at = tails.partition_point(|&t| t < key);
        match tails.get_mut(at) {
            Some(tail) => *tail = key,
            None => tails.push(key),
        }
        *slot = at + 1;
    }
    let mut need = tails.len();
    let mut last: Option<u64> = None;
    entries
        .iter()
        .zip(&from_here)
        .map(|(&(_, index), &len)| {
            let take = need > 0 && len == need && last.is_none_or(|l| index > l);
            if take {
                need -= 1;
                last = Some(index);
            }
            take
        })
        .collect()
}

/// What the checkpoint checks found, beyond problems.
#[derive(Default)]
struct CheckedCheckpoints {
    /// The largest checkpoint matching the export.
    largest: Option<VerifiedCheckpoint>,
    /// Size and line (`None`: trusted) of the largest signed checkpoint
    /// beyond the export.
    beyond: Option<(u64, Option<usize>)>,
}

impl CheckedCheckpoints {
    fn matched(&mut self, checkpoint: &SignedCheckpoint, line: Option<usize>) {
        if self
            .largest
            .as_ref()
            .is_none_or(|l| checkpoint.size > l.size)
        {
            self.largest = Some(VerifiedCheckpoint {
                size: checkpoint.size,
                root: hash_to_base64(&checkpoint.root),
                line,
                note: checkpoint.note.clone(),
            });
        }
    }

    fn beyond(&mut self, size: u64, line: Option<usize>) {
        if self.beyond.is_none_or(|(s, _)| size > s) {
            self.beyond = Some((size, line));
        }
    }
}

fn check_checkpoints(
    checkpoints: &[CheckpointLine],
    tree: &MerkleTree,
    span: u64,
    verifier: &LogVerifier,
    checked: &mut CheckedCheckpoints,
    problems: &mut Vec<Problem>,
) {
    // The last signed checkpoint, and the last one inside the export.
    let mut last_size: Option<u64> = None;
    let mut previous: Option<SignedCheckpoint> = None;
    // Smallest size whose signed root the export's tree does not have.
    let mut diverged: Option<u64> = None;
    for checkpoint_line in checkpoints {
        let (line, size, note) = (
            checkpoint_line.line,
            checkpoint_line.size,
            &checkpoint_line.note,
        );
        let checkpoint = match SignedCheckpoint::open(verifier, note) {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                problems.push(Problem::BadCheckpoint {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        if checkpoint.size != size {
            problems.push(Problem::BadCheckpoint {
                line,
                message: format!(
                    "the line says size {size}, its signed note {}",
                    checkpoint.size
                ),
            });
            continue;
        }
        if let Some(from) = last_size.filter(|&from| size < from) {
            problems.push(Problem::Inconsistent {
                line,
                from,
                to: size,
            });
            continue;
        }
        last_size = Some(size);
        if size > span {
            checked.beyond(size, Some(line));
            continue;
        }
        let Ok(root) = tree.root(size) else {
            // Inside the entries the export accounts for, but past its
            // receipt lines: entries are missing, and reported as removed.
            continue;
        };
        if root != checkpoint.root {
            if diverged.is_none_or(|d| size < d) {
                problems.push(Problem::RootMismatch { line, size });
                diverged = Some(size);
            }
            previous = Some(checkpoint);
            continue;
        }
        if let Some(before) = &previous {
            let consistent = tree
                .prove_consistency(before.size, size)
                .is_ok_and(|proof| proof.verify(before.root, checkpoint.root).is_ok());
            if !consistent {
                problems.push(Problem::Inconsistent {
                    line,
                    from: before.size,
                    to: size,
                });
            }
        }
        checked.matched(&checkpoint, Some(line));
        previous = Some(checkpoint);
    }
}

fn check_trusted(
    trusted: &[String],
    tree: &MerkleTree,
    span: u64,
    verifier: &LogVerifier,
    checked: &mut CheckedCheckpoints,
    problems: &mut Vec<Problem>,
) {
    for (position, note) in (1..).zip(trusted) {
        // Notes saved to files may have gained line-end changes on the way;
        // a signed note's signatures do not cover them.
        let note = format!("{}\n", note.replace("\r\n", "\n").trim());
        let checkpoint = match SignedCheckpoint::open(verifier, &note) {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                problems.push(Problem::BadTrusted {
                    trusted: position,
                    message: e.to_string(),
                });
                continue;
            }
        };
        if checkpoint.size > span {
            checked.beyond(checkpoint.size, None);
            continue;
        }
        let Ok(root) = tree.root(checkpoint.size) else {
            continue;
        };
        if root == checkpoint.root {
            checked.matched(&checkpoint, None);
        } else {
            problems.push(Problem::TrustedMismatch {
                trusted: position,
                size: checkpoint.size,
            });
        }
    }
}
