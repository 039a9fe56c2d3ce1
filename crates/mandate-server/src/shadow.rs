//! Shadow packs: candidate policy packs evaluated on every live decision
//! beside the pack in force, never changing its outcome.
//!
//! Each decision's receipt records what every shadow pack decided
//! ([`ShadowOutcome`]), and `/metrics` counts agreements and each kind of
//! disagreement per pack, so that an operator sees what a change to the
//! policies would do to real traffic before it goes live. Shadow packs are
//! read from directories of their own and reload like the live pack.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mandate_core::{PolicyPack, Verdict};
use mandate_ledger::ShadowOutcome;

/// A shadow pack's name: 1 to 32 of `a-z`, `0-9`, `_` and `-`, starting
/// with a letter or digit. It labels metrics and receipts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShadowName(String);

/// Why a shadow pack's name was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a shadow pack name: use 1 to 32 lowercase letters, digits, `_` and `-`, starting with a letter or digit"
)]
pub struct BadShadowName(String);

impl ShadowName {
    /// `name`, if it follows the grammar.
    pub fn new(name: &str) -> Result<Self, BadShadowName> {
        let ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(BadShadowName(name.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ShadowName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One shadow pack: its name, its directory and the pack last loaded from
/// it (a reload that fails keeps the previous one, as for the live pack).
#[derive(Debug)]
pub struct ShadowPack {
    name: ShadowName,
    dir: PathBuf,
    pack: ArcSwap<PolicyPack>,
}

impl ShadowPack {
    /// The shadow pack `name`, loaded from `dir`.
    pub fn new(name: ShadowName, dir: PathBuf, pack: PolicyPack) -> Self {
        Self {
            name,
            dir,
            pack: ArcSwap::from_pointee(pack),
        }
    }

    /// Its name.
    pub fn name(&self) -> &ShadowName {
        &self.name
    }

    /// The directory it is read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pack in force for this shadow.
    pub fn pack(&self) -> Arc<PolicyPack> {
        self.pack.load_full()
    }

    /// Puts a newly loaded pack in force for later decisions.
    pub fn swap(&self, pack: PolicyPack) {
        self.pack.store(Arc::new(pack));
    }
}

/// Every shadow pack the server runs; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shadows(Arc<Vec<Arc<ShadowPack>>>);

impl Shadows {
    /// The server's shadow packs (names are unique: the caller checks).
    pub fn new(packs: Vec<ShadowPack>) -> Self {
        Self(Arc::new(packs.into_iter().map(Arc::new).collect()))
    }

    /// Each shadow pack.
    pub fn packs(&self) -> &[Arc<ShadowPack>] {
        &self.0
    }

    /// What each shadow pack decides, by `decide` (the live decision's own
    /// evaluation, given another pack), in the order they were configured,
    /// and whether it agrees with `live`, the live pack's verdict before
    /// any approval.
    pub fn outcomes(
        &self,
        live: &Verdict,
        decide: impl Fn(&PolicyPack) -> Verdict,
    ) -> Vec<ShadowOutcome> {
        self.0
            .iter()
            .map(|shadow| {
                let pack = shadow.pack();
                let verdict = decide(&pack);
                ShadowOutcome {
                    pack: shadow.name.to_string(),
                    policy_version: pack.version().to_owned(),
                    agrees: verdict.decision == live.decision,
                    decision: verdict.decision,
                    policies: verdict.policies,
                    reasons: verdict.reasons,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for good in ["stricter", "v2", "next_release", "a-b", "0"] {
            assert!(ShadowName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Stricter",
            "-x",
            "_x",
            "a b",
            "a/b",
            "ä",
            &"x".repeat(33),
        ] {
            assert!(ShadowName::new(bad).is_err(), "{bad:?}");
        }
    }
}
