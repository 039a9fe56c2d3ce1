//! How Mandate writes a time in text meant for people and programs alike:
//! reasons, error messages and the CLI.
//!
//! One format everywhere: RFC 3339 in UTC with a `Z`, and only as many
//! fraction digits as the time has (none, 3, 6 or 9), exactly as the API's
//! JSON writes its times, so that a time in a reason can be compared with
//! the `expires_at` of the same answer. `DateTime`'s `Display`
//! (`2026-12-06 14:45:06.090344525 UTC`) is not RFC 3339 and is never used.

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` as RFC 3339, such as `2026-12-06T14:45:06.090344525Z`.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn writes_rfc3339_with_the_digits_the_time_has() {
        let at: DateTime<Utc> = "2026-12-06T14:45:06.090344525Z".parse().unwrap();
        assert_eq!(rfc3339(&at), "2026-12-06T14:45:06.090344525Z");
        let whole: DateTime<Utc> = "2026-12-06T14:45:06Z".parse().unwrap();
        assert_eq!(rfc3339(&whole), "2026-12-06T14:45:06Z");
        // The API's JSON writes the same text.
        assert_eq!(
            serde_json::to_value(at).unwrap(),
            serde_json::json!(rfc3339(&at))
        );
    }
}
