//! Mandate persistence.
