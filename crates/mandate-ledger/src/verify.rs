//! Offline verification of an exported log.
