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
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
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
