//! What the fuzz targets share: the example policy pack, built into the
//! binary so that a target runs from any directory, and a fixed clock.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use mandate_core::{PolicyPack, PolicySource};

/// The example pack (`examples/policies`), as `mandate serve` writes it on
/// first start.
pub static EXAMPLE_PACK: LazyLock<PolicyPack> = LazyLock::new(|| {
    let source = |name: &str, text: &str| PolicySource::new(name, text);
    let policies = [
        source(
            "approvals.cedar",
            include_str!("../../examples/policies/approvals.cedar"),
        ),
        source(
            "data.cedar",
            include_str!("../../examples/policies/data.cedar"),
        ),
        source(
            "recipients.cedar",
            include_str!("../../examples/policies/recipients.cedar"),
        ),
        source(
            "tools.cedar",
            include_str!("../../examples/policies/tools.cedar"),
        ),
    ];
    let schema = source(
        "schema.cedarschema",
        include_str!("../../examples/policies/schema.cedarschema"),
    );
    match PolicyPack::load(&policies, Some(&schema)) {
        Ok(pack) => pack,
        Err(e) => panic!("the example pack does not load: {e}"),
    }
});

/// The time every target decides at: fixed, so that a crash reproduces.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_428_000, 0).unwrap_or_default()
}
