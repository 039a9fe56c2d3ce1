//! The export format: JSON Lines, one receipt or checkpoint per line.
//!
//! ```text
//! {"type":"log","format":"mandate-receipts/1","origin":"…","verifier_key":"…"}
//! {"type":"receipt","receipt":{…canonical receipt…},"signature":"base64"}
//! {"type":"checkpoint","size":2,"note":"…signed note…"}
//! ```
//!
//! Receipts appear in log order. A checkpoint line follows the receipt that
//! completes its tree. The header is informational: a verifier uses the key
//! the auditor trusts, never the one the file names.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Name and version of the export format, in the header line.
pub const EXPORT_FORMAT: &str = "mandate-receipts/1";

/// One line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "WireLine")]
pub enum ExportLine {
    /// Header: which log this is.
    Log {
        /// [`EXPORT_FORMAT`].
        format: String,
        /// The log's origin.
        origin: String,
        /// The log's verifier key, as the exporter saw it.
        verifier_key: String,
    },
    /// One receipt and its signature.
    Receipt {
        /// The receipt's canonical JSON, exactly as stored.
        receipt: Box<RawValue>,
        /// Base64 Ed25519 signature over the receipt's canonical bytes.
        signature: String,
    },
    /// A signed checkpoint.
    Checkpoint {
        /// Tree size the checkpoint covers.
        size: u64,
        /// The signed note.
        note: String,
    },
}

/// A line as read: serde's internally tagged enums buffer their content,
/// which a `RawValue` cannot be read from, so lines are read as one flat
/// object and sorted out by their `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLine {
    #[serde(rename = "type")]
    kind: String,
    format: Option<String>,
    origin: Option<String>,
    verifier_key: Option<String>,
    receipt: Option<Box<RawValue>>,
    signature: Option<String>,
    size: Option<u64>,
    note: Option<String>,
}

impl TryFrom<WireLine> for ExportLine {
    type Error = String;

    fn try_from(wire: WireLine) -> Result<Self, String> {
        let WireLine {
            kind,
            format,
            origin,
            verifier_key,
            receipt,
            signature,
            size,
            note,
        } = wire;
        match (
            kind.as_str(),
            format,
            origin,
            verifier_key,
            receipt,
            signature,
            size,
            note,
        ) {
            ("log", Some(format), Some(origin), Some(verifier_key), None, None, None, None) => {
                Ok(Self::Log {
                    format,
                    origin,
                    verifier_key,
                })
            }
            ("receipt", None, None, None, Some(receipt), Some(signature), None, None) => {
                Ok(Self::Receipt { receipt, signature })
            }
            ("checkpoint", None, None, None, None, None, Some(size), Some(note)) => {
                Ok(Self::Checkpoint { size, note })
            }
            ("log", ..) => {
                Err("a `log` line has exactly `format`, `origin` and `verifier_key`".to_owned())
            }
            ("receipt", ..) => {
                Err("a `receipt` line has exactly `receipt` and `signature`".to_owned())
            }
            ("checkpoint", ..) => {
                Err("a `checkpoint` line has exactly `size` and `note`".to_owned())
            }
            (other, ..) => Err(format!("unknown line type `{other}`")),
        }
    }
}
