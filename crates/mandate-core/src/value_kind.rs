//! Destination values: e-mail addresses, bank accounts, URLs, user handles
//! and phone numbers, and how to recognise, compare and find them.
//!
//! Mandate tracks where a tool call's destination came from: an address the
//! user typed is fine, one that only appeared in a fetched web page may be an
//! injection. Values are compared in a canonical form per [`ValueKind`], so
//! that `Alice@Example.com` grounds `alice@example.com`, while a look-alike
//! (a Cyrillic `а` for the Latin `a`) stays a different value and grounds
//! nothing. This module is pure: no I/O, no state but compiled patterns.
//!
//! # Canonical forms
//!
//! Every kind first applies Unicode NFKC (so fullwidth `ａｌｉｃｅ` is
//! `alice`, and `＠` is `@`) and trims whitespace. Text is refused (no value)
//! when it is empty, longer than 512 bytes after that (or longer than 2,048
//! bytes before it, so that normalising stays cheap), or holds a control
//! character or an invisible formatting character (zero-width characters, the
//! soft hyphen, bidirectional controls, variation selectors: Unicode's
//! `Default_Ignorable_Code_Point` set), which would make two values that look
//! alike compare different.
//!
//! NFKC does not fold look-alikes from other scripts, and nothing here does:
//! `аlice` with a Cyrillic `а` is a different value from `alice`, on purpose.
//!
//! - **email**: an optional `mailto:` prefix (any case) is removed. Exactly
//!   one `@`. The local part is 1 to 64 characters without whitespace or any
//!   of `<>(),;:"[]`. The domain has at least two labels separated by dots;
//!   each label is non-empty and made of letters, digits (any script) and
//!   `-`; one trailing dot is removed. Canonical form: the whole address in
//!   Unicode lowercase, `Alice@EXAMPLE.com.` → `alice@example.com`.
//! - **account** (an IBAN or a bank account number): spaces and `-` are
//!   removed and letters uppercased. Then either an IBAN shape (2 ASCII
//!   letters, 2 digits, 11 to 30 ASCII letters or digits; the check digits
//!   are not verified here) or 6 to 34 ASCII digits. Canonical form: the
//!   compact uppercase text, `de89 3704 0044 0532 0130 00` →
//!   `DE89370400440532013000`.
//! - **url** (a URL or a bare host): an optional `http://` or `https://`
//!   (any case); no other scheme is accepted. Then a host: a domain name
//!   (labels of letters, digits and `-`, at least one dot, one trailing dot
//!   removed, a top-level label of at least two letters or an `xn--` label)
//!   or an IPv4 address; an optional `:port` (1 to 65535; `:80` and `:443`
//!   are dropped, others kept); an optional path. User info (`user@host`),
//!   IPv6 literals, whitespace and any of `<>"\` and backquote are refused.
//!   Canonical form: the host (and port) in lowercase, then the path as
//!   written (case kept, no percent-decoding, no `..` resolution) without
//!   trailing `/`; the query (`?…`) and fragment (`#…`) are dropped.
//!   `HTTPS://Example.com/Pay/?x=1` → `example.com/Pay`. A leading `www.` is
//!   kept: `www.example.com` and `example.com` are different hosts.
//! - **handle**: an optional leading `@`, then 1 to 64 of the ASCII
//!   characters `A-Z a-z 0-9 . _ -`, at least one of them a letter or digit.
//!   Only ASCII, so a handle spelt with a look-alike letter is no handle at
//!   all. Canonical form: lowercase, without the `@`; `@Alice_B` → `alice_b`.
//! - **phone**: an optional leading `+`, then digits and the separators
//!   space, `-`, `.`, `(` and `)`; 7 to 15 digits in all (the E.164 limit).
//!   Canonical form: the `+` if present, then the digits only;
//!   `+49 (30) 123-4567` → `+49301234567`.
//!
//! # Whole fields
//!
//! [`whole_values`] reads a field that should hold nothing but values: one
//! value, a list separated by `,` or `;`, or mailboxes `Display Name
//! <addr@host>` (alone or in a list; a quoted display name may hold commas).
//! Each part is tried against every kind, and yields one entry per kind that
//! accepts it: `alice` is a handle, `example.com` a URL and a handle,
//! `12345678` an account, a handle and a phone number. When any part is
//! accepted by no kind, the field was not a list of values (a sentence around
//! an address, say) and nothing is returned.
//!
//! # Values inside free text
//!
//! [`values_in_text`] scans a mail body, a web page or a prompt (its first
//! MiB; at most 1,000 values are returned), after NFKC, for:
//!
//! - **e-mail addresses** anywhere, also inside `<…>` and after `mailto:`:
//!   a letter, digit or `_`, then letters, digits and `._%+'-`, then `@`,
//!   then dot-separated labels of letters, digits and `-`;
//! - **URLs** starting `http://` or `https://` (any case), up to whitespace
//!   or one of `<>"` and backquote;
//! - **bare hosts**, with an optional `:port` and an optional path, query or
//!   fragment (`evil.example.com/x`), that do not continue a word, path or
//!   address: not right after a letter, digit, or one of `_.@/\-`, nor
//!   followed by `@` or `_`. The domain of an e-mail address is part of the
//!   address and is never also taken as a host, and text such as `e.g.` or
//!   `1.2.3` is dropped because it is no valid host;
//! - **IBANs**: two capital letters, two digits, then capitals and digits,
//!   compact or in groups of four separated by single spaces
//!   (`DE89 3704 0044 0532 0130 00`), not inside a longer word. When the
//!   grouped text runs on into a following word (`… 7034 BIC`), the longest
//!   run of groups whose IBAN check digits are right is taken;
//! - **phone numbers** that start with `+` (not right after a letter or
//!   digit), then digits with up to two separators (space `.` `(` `)` `-`)
//!   between digits. Digit runs without `+` are not taken as phone numbers
//!   or account numbers: in prose they are mostly dates, amounts and
//!   references;
//! - **handles** written `@name`, at the start of the text or after
//!   whitespace, and not followed by another `@` (then it is part of an
//!   address).
//!
//! Trailing prose punctuation (`.` `,` `!` `?` `:` `;` `*`, quotes, closing
//! brackets, and a `)` without its `(`) is not part of a URL, host or handle.
//! Every string found goes through its kind's [`ValueKind::normalise`] and is
//! dropped when that refuses it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::{CaptureLocations, Regex};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::names;

/// Longest value, in bytes after NFKC and trimming.
const MAX_VALUE: usize = 512;
/// Longest text handed to NFKC for one value: NFKC can shrink text (a
/// fullwidth letter is 3 bytes, its ASCII form 1), so this is looser than
/// [`MAX_VALUE`], but still bounds the work on hostile input.
const MAX_RAW_VALUE: usize = 4 * MAX_VALUE;
/// Longest text scanned, in bytes.
const MAX_SCAN: usize = 1 << 20;
/// Most values returned for one text.
const MAX_VALUES: usize = 1000;

/// The kind of value a destination argument names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// An e-mail address.
    Email,
    /// A bank account: an IBAN or a plain account number.
    Account,
    /// A web address or a bare host name.
    Url,
    /// A user handle on some service (`@alice`).
    Handle,
    /// A telephone number.
    Phone,
}

impl ValueKind {
    /// Every kind, in declaration order.
    pub const ALL: [ValueKind; 5] = [
        ValueKind::Email,
        ValueKind::Account,
        ValueKind::Url,
        ValueKind::Handle,
        ValueKind::Phone,
    ];

    /// The name in config files and policies: "email", "account", "url",
    /// "handle", "phone".
    pub fn as_str(self) -> &'static str {
        match self {
            ValueKind::Email => "email",
            ValueKind::Account => "account",
            ValueKind::Url => "url",
            ValueKind::Handle => "handle",
            ValueKind::Phone => "phone",
        }
    }

    /// The canonical form of `text` as one value of this kind, or `None` when
    /// the text (trimmed) is not shaped like one.
    ///
    /// Every kind applies Unicode NFKC and trims whitespace first, and refuses
    /// empty text, text over 512 bytes (over 2,048 before NFKC), and text with
    /// control or invisible formatting characters. Then, per kind:
    ///
    /// - `Email`: optional `mailto:` (any case) removed; exactly one `@`;
    ///   local part 1–64 characters without whitespace or `<>(),;:"[]`;
    ///   domain of two or more non-empty labels of letters, digits and `-`,
    ///   one trailing dot removed. Canonical: the address in Unicode
    ///   lowercase.
    /// - `Account`: spaces and `-` removed, uppercased; an IBAN shape (2
    ///   ASCII letters, 2 digits, 11–30 ASCII letters or digits, check digits
    ///   not verified) or 6–34 ASCII digits. Canonical: the compact form.
    /// - `Url`: optional `http://` or `https://` (any case), no other scheme;
    ///   a host (labels of letters, digits and `-`, at least one dot, one
    ///   trailing dot removed, top-level label of 2+ letters or `xn--…`; or
    ///   an IPv4 address); optional `:port` (`:80`, `:443` dropped); optional
    ///   path. No user info, IPv6, whitespace or `<>"\` and backquote.
    ///   Canonical: `host[:port]` lowercased plus the path as written without
    ///   trailing `/`; query and fragment dropped; `www.` kept.
    /// - `Handle`: optional `@`, then 1–64 of ASCII `A-Z a-z 0-9 . _ -` with
    ///   at least one letter or digit. Canonical: lowercase, no `@`.
    /// - `Phone`: optional `+`, then digits and ` - . ( )`; 7–15 digits.
    ///   Canonical: the `+` if present, then the digits.
    ///
    /// ```
    /// use mandate_core::value_kind::ValueKind;
    ///
    /// assert_eq!(
    ///     ValueKind::Email.normalise(" Alice@EXAMPLE.com "),
    ///     ValueKind::Email.normalise("alice@example.com"),
    /// );
    /// assert_eq!(
    ///     ValueKind::Url.normalise("HTTPS://Example.com/Pay/").as_deref(),
    ///     Some("example.com/Pay"),
    /// );
    /// assert_eq!(ValueKind::Url.normalise("ftp://example.com"), None);
    /// ```
    pub fn normalise(self, text: &str) -> Option<String> {
        let value = prepare(text)?;
        self.canonical(&value)
    }

    /// The canonical forms of a whole field as values of this kind: one
    /// value, a list separated by `,` or `;`, or mailboxes `Name <addr>`,
    /// as [`whole_values`] reads them. `None` unless every part is a value
    /// of this kind: a destination argument holding anything else
    /// (`"alice@example.com, bob"`) cannot be vouched for part by part.
    pub fn values_of(self, text: &str) -> Option<Vec<String>> {
        let mut values = Vec::new();
        each_whole_part(text, |value| {
            values.push(self.canonical(value)?);
            Some(())
        })?;
        (!values.is_empty()).then_some(values)
    }

    /// The canonical form of an already prepared value (see [`prepare`]).
    fn canonical(self, value: &str) -> Option<String> {
        match self {
            ValueKind::Email => email(value),
            ValueKind::Account => account(value),
            ValueKind::Url => url(value),
            ValueKind::Handle => handle(value),
            ValueKind::Phone => phone(value),
        }
    }
}

impl FromStr for ValueKind {
    type Err = String;

    /// Parses the exact lowercase name, as serde does.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ValueKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                // Cut short: the name may come from a request.
                let shown: String = name.chars().take(64).collect();
                format!(
                    "unknown value kind {shown:?}: expected one of email, account, url, handle, phone"
                )
            })
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The values that a whole field holds: `text` is exactly one value of some
/// kinds (every kind whose `normalise` accepts it), or a list of such values
/// separated by `,` or `;`, or a mailbox `Display Name <addr@host>`.
/// Each entry is (kind, canonical form); no duplicates. Text that is
/// anything more (a sentence around an address) yields nothing here.
///
/// Lists may mix plain values and mailboxes; a separator inside a quoted
/// display name or inside `<…>` does not split. Empty parts (`a@x.org,`) are
/// skipped. Text over 1 MiB yields nothing, and at most 1,000 entries are
/// returned. See the [module documentation](self) for each kind's rules.
///
/// ```
/// use mandate_core::value_kind::{ValueKind, whole_values};
///
/// assert_eq!(
///     whole_values("Alice <Alice@Example.com>"),
///     vec![(ValueKind::Email, "alice@example.com".to_owned())],
/// );
/// assert!(whole_values("please write to alice@example.com").is_empty());
/// ```
pub fn whole_values(text: &str) -> Vec<(ValueKind, String)> {
    let mut found = Found::default();
    let whole = each_whole_part(text, |value| {
        let mut accepted = false;
        for kind in ValueKind::ALL {
            if let Some(canonical) = kind.canonical(value) {
                accepted = true;
                found.push(kind, canonical);
            }
        }
        accepted.then_some(())
    });
    if whole.is_none() {
        return Vec::new();
    }
    found.values
}

/// Calls `take` with each part of a whole field, prepared (see
/// [`prepare`]): one value, a list separated by `,` or `;`, mailboxes
/// `Name <addr>` as their address; empty parts are skipped. `None` as soon
/// as a part cannot be prepared or `take` refuses one, or when the text is
/// longer than is scanned.
fn each_whole_part(text: &str, mut take: impl FnMut(&str) -> Option<()>) -> Option<()> {
    let text = text.trim();
    if text.len() > MAX_SCAN {
        return None;
    }
    // Normalise first so that fullwidth separators and brackets split too.
    let text = nfkc(text);
    for part in split_list(&text) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        take(&prepare(mailbox_address(part).unwrap_or(part))?)?;
    }
    Some(())
}

/// The values that the extractors find inside free text (a mail body, a web
/// page, the user's prompt): (kind, canonical form), no duplicates, in order of appearance.
///
/// Only the first MiB of `text` is scanned, and at most 1,000 values are
/// returned. The [module documentation](self) lists what each extractor
/// matches; notably, digit runs without a leading `+` are never taken.
///
/// ```
/// use mandate_core::value_kind::{ValueKind, values_in_text};
///
/// assert_eq!(
///     values_in_text("Send it to bob@example.com, see https://example.org/terms."),
///     vec![
///         (ValueKind::Email, "bob@example.com".to_owned()),
///         (ValueKind::Url, "example.org/terms".to_owned()),
///     ],
/// );
/// ```
pub fn values_in_text(text: &str) -> Vec<(ValueKind, String)> {
    let mut found = Found::default();
    let Some(extractor) = EXTRACTOR.as_ref() else {
        return found.values;
    };
    let text = nfkc(head(text, MAX_SCAN));
    let text: &str = &text;
    let mut locations = extractor.capture_locations();
    let mut at = 0;
    // Each search sees a window of the text, not the rest of it: iterating
    // matches over text an attacker writes can otherwise cost quadratic
    // time (a page of `a.bc%a.bc%…`). Hits are capped as well as values,
    // since repeated values do not count towards the latter.
    let mut hits = 0;
    let mut window = SCAN_WINDOW;
    while found.values.len() < MAX_VALUES && hits < MAX_HITS && at < text.len() {
        let window_end = char_floor(text, at.saturating_add(window));
        let haystack = text.get(..window_end).unwrap_or_default();
        let Some(hit) = extractor.captures_read_at(&mut locations, haystack, at) else {
            if window_end >= text.len() {
                break;
            }
            // Overlap the next window by the longest value, so that one
            // across the edge is found whole.
            at = char_ceil(text, window_end.saturating_sub(MAX_RAW_VALUE).max(at + 1));
            window = SCAN_WINDOW;
            continue;
        };
        // A hit that reaches the window's edge may have been cut short, or
        // be another match than the whole text would give: search again
        // from the same place with a wider window, up to a bound.
        if hit.end() == window_end && window_end < text.len() && window < MAX_SCAN_WINDOW {
            window = window.saturating_mul(2);
            continue;
        }
        window = SCAN_WINDOW;
        hits += 1;
        // No alternative matches empty text, so this always moves on; the
        // check keeps a future pattern change from looping forever.
        if hit.end() <= at {
            break;
        }
        at = hit.end();
        if hit.len() > MAX_RAW_VALUE {
            continue;
        }
        if let Some((kind, value)) = extracted(text, &locations) {
            found.push(kind, value);
        }
    }
    found.values
}

/// How much text one search of the extractor sees at first.
const SCAN_WINDOW: usize = 4 * MAX_RAW_VALUE;

/// How far a search widens for a match at the window's edge.
const MAX_SCAN_WINDOW: usize = 4 * SCAN_WINDOW;

/// The most matches the extractor looks at in one text.
const MAX_HITS: usize = 10 * MAX_VALUES;

/// The largest char boundary of `text` at or before `at`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest char boundary of `text` at or after `at`.
fn char_ceil(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Values found so far, in order, without duplicates.
#[derive(Default)]
struct Found {
    values: Vec<(ValueKind, String)>,
    // A set, not a scan of `values`: a hostile text may repeat up to 1,000
    // distinct values many times over.
    seen: HashSet<(ValueKind, String)>,
}

impl Found {
    fn push(&mut self, kind: ValueKind, value: String) {
        let entry = (kind, value);
        if self.values.len() < MAX_VALUES && !self.seen.contains(&entry) {
            self.seen.insert(entry.clone());
            self.values.push(entry);
        }
    }
}

/// NFKC of `text`, without allocating when it already is (all ASCII text is).
fn nfkc(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfkc().collect())
    }
}

/// `text` normalised, trimmed and checked as one value: `None` when it is
/// empty, too long, or holds control or invisible characters.
fn prepare(text: &str) -> Option<Cow<'_, str>> {
    let raw = text.trim();
    if raw.len() > MAX_RAW_VALUE {
        return None;
    }
    // NFKC can turn a character into one with spaces around, so trim again.
    let value = match nfkc(raw) {
        Cow::Borrowed(value) => Cow::Borrowed(value.trim()),
        Cow::Owned(value) => {
            let trimmed = value.trim();
            if trimmed.len() == value.len() {
                Cow::Owned(value)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    };
    if value.is_empty()
        || value.len() > MAX_VALUE
        || value.chars().any(|c| c.is_control() || names::invisible(c))
    {
        return None;
    }
    Some(value)
}

/// `text` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.get(..prefix.len())?;
    if start.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// Dot-separated labels of letters, digits (any script) and `-`: at least
/// two, none empty.
fn labels_ok(domain: &str) -> bool {
    let mut labels = 0usize;
    for label in domain.split('.') {
        if label.is_empty() || !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return false;
        }
        labels += 1;
    }
    labels >= 2
}

fn email(value: &str) -> Option<String> {
    let address = strip_prefix_ignore_case(value, "mailto:").unwrap_or(value);
    let (local, domain) = address.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.chars().count() <= 64
        && !local
            .chars()
            .any(|c| c.is_whitespace() || "<>(),;:\"[]".contains(c));
    // A second `@` fails the label check.
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if !local_ok || !labels_ok(domain) {
        return None;
    }
    // The address without its trailing dot is a prefix of `address`.
    let end = local.len() + 1 + domain.len();
    Some(address.get(..end)?.to_lowercase())
}

fn account(value: &str) -> Option<String> {
    let mut compact = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ' ' | '-' => {}
            c if c.is_ascii_alphanumeric() => compact.push(c.to_ascii_uppercase()),
            _ => return None,
        }
    }
    let bytes = compact.as_bytes();
    let iban = (15..=34).contains(&bytes.len())
        && bytes
            .get(..2)
            .is_some_and(|b| b.iter().all(u8::is_ascii_uppercase))
        && bytes
            .get(2..4)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    let number = (6..=34).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit);
    (iban || number).then_some(compact)
}

fn url(value: &str) -> Option<String> {
    let rest = strip_prefix_ignore_case(value, "https://")
        .or_else(|| strip_prefix_ignore_case(value, "http://"))
        .unwrap_or(value);
    // `\` is refused because browsers read it as `/`, so that what precedes
    // it would not be the host they go to.
    if rest
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\\' | '`'))
    {
        return None;
    }
    // Another scheme (`ftp://x`, `javascript:x`) ends up as a host without a
    // dot or a port that is not a number, and is refused below.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at_checked(authority_end)?;
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host_ok(host) {
        return None;
    }
    let port = match port {
        None => None,
        Some(port) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let port: u16 = port.parse().ok()?;
            if port == 0 {
                return None;
            }
            // The default ports name the same place as no port.
            (port != 80 && port != 443).then_some(port)
        }
    };
    let path = if tail.starts_with('/') {
        let end = tail.find(['?', '#']).unwrap_or(tail.len());
        tail.get(..end)?.trim_end_matches('/')
    } else {
        ""
    };
    let mut canonical = host.to_lowercase();
    if let Some(port) = port {
        // Writing to a `String` cannot fail.
        let _ = write!(canonical, ":{port}");
    }
    canonical.push_str(path);
    Some(canonical)
}

/// A domain name with a top-level label of two or more letters (or an
/// `xn--` label), or an IPv4 address.
fn host_ok(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let Some((_, top)) = host.rsplit_once('.') else {
        return false;
    };
    let top_ok = (top.chars().count() >= 2 && top.chars().all(char::is_alphabetic))
        || (top.len() > 4 && top.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")));
    top_ok && labels_ok(host)
}

fn handle(value: &str) -> Option<String> {
    let name = value.strip_prefix('@').unwrap_or(value);
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.bytes().any(|b| b.is_ascii_alphanumeric());
    ok.then(|| name.to_ascii_lowercase())
}

fn phone(value: &str) -> Option<String> {
    let (plus, rest) = match value.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let mut canonical = String::with_capacity(16);
    if plus {
        canonical.push('+');
    }
    let mut digits = 0usize;
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                if digits > 15 {
                    return None;
                }
                canonical.push(char::from(b));
            }
            b' ' | b'-' | b'.' | b'(' | b')' => {}
            _ => return None,
        }
    }
    (digits >= 7).then_some(canonical)
}

/// The parts of a list separated by `,` or `;`, not splitting inside a
/// quoted display name or inside `<…>`.
fn split_list(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut angled) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' if !angled => quoted = !quoted,
            '<' if !quoted => angled = true,
            '>' if !quoted => angled = false,
            ',' | ';' if !quoted && !angled => {
                parts.push(text.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text.get(start..).unwrap_or_default());
    parts
}

/// The address in a mailbox `Display Name <address>` (the name may be
/// empty), or `None` when `part` is not one.
fn mailbox_address(part: &str) -> Option<&str> {
    let (name, address) = part.strip_suffix('>')?.rsplit_once('<')?;
    (!name.contains(['<', '>']) && !address.contains('>')).then_some(address)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn head(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

// Capture groups of `EXTRACTOR`, one per extractor.
const EMAIL: usize = 1;
const URL: usize = 2;
const IBAN: usize = 3;
const HOST: usize = 4;
const PHONE: usize = 5;
const HANDLE: usize = 6;

/// Every extractor in one pattern, so that one pass finds them all and an
/// earlier match consumes its text: the domain of an e-mail address is never
/// seen again as a host. At the same position the first alternative wins, so
/// e-mail comes before hosts (`bob.smith@x.org` is no host `bob.smith`) and
/// IBANs before hosts. Boundaries the `regex` crate cannot look behind for
/// are checked in [`extracted`].
static EXTRACTOR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        // 1: e-mail address.
        r"([\p{L}\p{N}_][\p{L}\p{N}._%+'-]*@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)+)",
        // 2: URL with a scheme.
        r#"|((?i:https?)://[^\s<>"`]+)"#,
        // 3: IBAN, compact or in groups of four.
        r"|([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)",
        // 4: bare host, optional port, optional path, query or fragment.
        r#"|([\p{L}\p{N}][\p{L}\p{N}-]*(?:\.[\p{L}\p{N}-]+)+(?::[0-9]{1,5})?(?:[/?#][^\s<>"`]*)?)"#,
        // 5: phone number with `+`.
        r"|(\+[ (]?[0-9](?:[ .()-]{0,2}[0-9])*)",
        // 6: `@handle`.
        r"|(@[A-Za-z0-9._-]+)",
    ))
    .ok()
});

/// The value one match of [`EXTRACTOR`] found, checked and normalised.
fn extracted(text: &str, locations: &CaptureLocations) -> Option<(ValueKind, String)> {
    let group = |i: usize| {
        locations
            .get(i)
            .and_then(|(start, end)| Some((start, end, text.get(start..end)?)))
    };
    let before = |start: usize| text.get(..start).and_then(|t| t.chars().next_back());
    let after = |end: usize| text.get(end..).and_then(|t| t.chars().next());
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);

    if let Some((_, _, found)) = group(EMAIL) {
        return Some((ValueKind::Email, ValueKind::Email.normalise(found)?));
    }
    if let Some((_, _, found)) = group(URL) {
        let found = trim_prose_end(found);
        return Some((ValueKind::Url, ValueKind::Url.normalise(found)?));
    }
    if let Some((start, end, found)) = group(IBAN) {
        if word(before(start)) || word(after(end)) {
            return None;
        }
        return Some((ValueKind::Account, iban_in_text(found)?));
    }
    if let Some((start, end, found)) = group(HOST) {
        // Not the tail of a word, path or address, and not cut short.
        let continues = |c: Option<char>, also: &[char]| {
            c.is_some_and(|c| c.is_alphanumeric() || also.contains(&c))
        };
        if continues(before(start), &['_', '.', '@', '/', '\\', '-'])
            || continues(after(end), &['_', '@'])
        {
            return None;
        }
        let found = trim_prose_end(found);
        return Some((ValueKind::Url, ValueKind::Url.normalise(found)?));
    }
    if let Some((start, end, found)) = group(PHONE) {
        if word(before(start)) || word(after(end)) {
            return None;
        }
        return Some((ValueKind::Phone, ValueKind::Phone.normalise(found)?));
    }
    if let Some((start, end, found)) = group(HANDLE) {
        if before(start).is_some_and(|c| !c.is_whitespace()) || after(end) == Some('@') {
            return None;
        }
        let found = trim_prose_end(found);
        return Some((ValueKind::Handle, ValueKind::Handle.normalise(found)?));
    }
    None
}

/// `found` without the punctuation that ends the sentence around it: a `)`
/// only when it has no `(` in `found` (a Wikipedia path keeps its own).
fn trim_prose_end(mut found: &str) -> &str {
    // Counted once: recounting per stripped character is quadratic.
    let opens = found.matches('(').count();
    let mut closes = found.matches(')').count();
    while let Some(c) = found.chars().next_back() {
        let strip = match c {
            '.' | ',' | '!' | '?' | ':' | ';' | '*' | '\'' | '"' | ']' | '}' | '>' => true,
            '\u{2019}' | '\u{201D}' | '\u{00BB}' | '\u{203A}' => true,
            ')' => closes > opens,
            _ => false,
        };
        if !strip {
            break;
        }
        if c == ')' {
            closes -= 1;
        }
        found = found.get(..found.len() - c.len_utf8()).unwrap_or_default();
    }
    found
}

/// The IBAN in a run of text shaped like one. Grouped text may run on into a
/// following word (`BE68 5390 0754 7034 BIC`), so trailing groups are dropped
/// until the check digits are right; when they never are, the whole run is
/// taken by shape, as [`ValueKind::normalise`] would.
fn iban_in_text(found: &str) -> Option<String> {
    let mut end = found.len();
    loop {
        let run = found.get(..end)?;
        if let Some(iban) = ValueKind::Account.normalise(run)
            && iban_check_digits_ok(&iban)
        {
            return Some(iban);
        }
        match run.rfind(' ') {
            Some(space) => end = space,
            None => break,
        }
    }
    ValueKind::Account.normalise(found)
}

/// ISO 13616 check: the IBAN with its first four characters moved to the
/// end, letters as 10 to 35, is 1 modulo 97.
fn iban_check_digits_ok(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    let (Some(start), Some(rest)) = (bytes.get(..4), bytes.get(4..)) else {
        return false;
    };
    let mut remainder = 0u32;
    for &b in rest.iter().chain(start) {
        remainder = match b {
            b'0'..=b'9' => (remainder * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(kind: ValueKind, text: &str) -> Option<String> {
        kind.normalise(text)
    }

    fn owned(values: &[(ValueKind, &str)]) -> Vec<(ValueKind, String)> {
        values
            .iter()
            .map(|(kind, value)| (*kind, (*value).to_owned()))
            .collect()
    }

    #[test]
    fn hostile_text_is_scanned_in_bounded_time() {
        // Quadratic in the text before the scan was windowed and the
        // parentheses counted once; each must now take well under a second
        // even unoptimised. What is found still makes sense.
        let many_candidates = "a.bc%".repeat(200_000);
        let _ = values_in_text(&many_candidates);
        let parens = format!("http://x.org/{}", ")".repeat(1 << 20));
        assert!(
            values_in_text(&parens).is_empty(),
            "the run is longer than any value"
        );
        let spread = format!(
            "{}write to bob@example.com{}and to carol@example.com",
            "x ".repeat(5_000),
            " y".repeat(5_000)
        );
        let found: Vec<String> = values_in_text(&spread)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(found, ["bob@example.com", "carol@example.com"]);
    }

    #[test]
    fn a_value_across_a_window_edge_is_found_whole() {
        for pad in [SCAN_WINDOW - 10, SCAN_WINDOW - 3, SCAN_WINDOW + 1] {
            let text = format!("{} mallory@evil.example.org end", "x".repeat(pad));
            let found: Vec<String> = values_in_text(&text).into_iter().map(|(_, v)| v).collect();
            assert_eq!(found, ["mallory@evil.example.org"], "pad {pad}");
        }
    }

    #[test]
    fn the_extractor_pattern_compiles() {
        assert!(EXTRACTOR.is_some());
    }

    #[test]
    fn kinds_have_names_that_parse_back() {
        assert_eq!(ValueKind::ALL.len(), 5);
        for kind in ValueKind::ALL {
            assert_eq!(kind.as_str().parse::<ValueKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ValueKind>(&json).unwrap(), kind);
        }
        let error = "iban".parse::<ValueKind>().unwrap_err();
        for name in ["email", "account", "url", "handle", "phone"] {
            assert!(error.contains(name), "{error}");
        }
        assert!("Email".parse::<ValueKind>().is_err());
        assert_eq!(format!("{:>6}", ValueKind::Url), "   url");
    }

    #[test]
    fn every_kind_refuses_empty_long_and_control_text() {
        let long = format!("{}@example.com", "a".repeat(600));
        for kind in ValueKind::ALL {
            assert_eq!(norm(kind, ""), None);
            assert_eq!(norm(kind, "   "), None);
            assert_eq!(norm(kind, &long), None);
            assert_eq!(norm(kind, &"1".repeat(3000)), None);
        }
        assert_eq!(norm(ValueKind::Email, "al\u{7}ice@example.com"), None);
        assert_eq!(norm(ValueKind::Email, "al\u{200B}ice@example.com"), None);
        assert_eq!(norm(ValueKind::Handle, "al\u{200B}ice"), None);
        assert_eq!(norm(ValueKind::Url, "example.com/\u{202E}gpj"), None);
        assert_eq!(norm(ValueKind::Phone, "+49 30\u{AD} 1234567"), None);
        assert_eq!(norm(ValueKind::Handle, "alice\n"), Some("alice".to_owned()));
    }

    #[test]
    fn email_accepts_and_folds_case() {
        let canonical = Some("alice@example.com".to_owned());
        assert_eq!(norm(ValueKind::Email, "alice@example.com"), canonical);
        assert_eq!(norm(ValueKind::Email, "Alice@EXAMPLE.com"), canonical);
        assert_eq!(norm(ValueKind::Email, "  alice@example.com. "), canonical);
        assert_eq!(
            norm(ValueKind::Email, "mailto:alice@example.com"),
            canonical
        );
        assert_eq!(
            norm(ValueKind::Email, "MAILTO:Alice@example.com"),
            canonical
        );
        assert_eq!(
            norm(ValueKind::Email, "o'brien+tag@mail.example.co.uk"),
            Some("o'brien+tag@mail.example.co.uk".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Email, "Jörg@MÜNCHEN.de"),
            Some("jörg@münchen.de".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Email, &format!("{}@x.org", "a".repeat(64))),
            Some(format!("{}@x.org", "a".repeat(64)))
        );
    }

    #[test]
    fn email_refuses_what_is_no_address() {
        for text in [
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@@example.com",
            "alice@bob@example.com",
            "alice@example..com",
            "alice@.example.com",
            "alice@example.com..",
            "al ice@example.com",
            "<alice@example.com>",
            "Alice <alice@example.com>",
            "alice(x)@example.com",
            "a:b@example.com",
            "alice@exa_mple.com",
            "alice@example.com/x",
            "mailto:",
            "mailto:example.com",
        ] {
            assert_eq!(norm(ValueKind::Email, text), None, "{text}");
        }
        let long_local = format!("{}@x.org", "a".repeat(65));
        assert_eq!(norm(ValueKind::Email, &long_local), None);
    }

    #[test]
    fn a_cyrillic_look_alike_is_another_value() {
        let latin = norm(ValueKind::Email, "alice@example.com").unwrap();
        let cyrillic = norm(ValueKind::Email, "\u{430}lice@example.com").unwrap();
        assert_ne!(latin, cyrillic);
        let cyrillic_domain = norm(ValueKind::Email, "alice@ex\u{430}mple.com").unwrap();
        assert_ne!(latin, cyrillic_domain);
        assert_eq!(norm(ValueKind::Handle, "\u{430}lice"), None);
        assert_ne!(
            norm(ValueKind::Url, "ex\u{430}mple.com"),
            norm(ValueKind::Url, "example.com")
        );
    }

    #[test]
    fn fullwidth_text_folds_to_ascii() {
        assert_eq!(
            norm(ValueKind::Handle, "ａｌｉｃｅ"),
            Some("alice".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Handle, "＠ＡＬＩＣＥ"),
            Some("alice".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Email, "ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
            Some("alice@example.com".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Phone, "＋４９ ３０ １２３４５６７"),
            Some("+49301234567".to_owned())
        );
        // A no-break space is a space after NFKC.
        assert_eq!(
            norm(
                ValueKind::Account,
                "DE89\u{A0}3704\u{A0}0044\u{A0}0532\u{A0}0130\u{A0}00"
            ),
            Some("DE89370400440532013000".to_owned())
        );
    }

    #[test]
    fn account_accepts_ibans_and_numbers() {
        let iban = Some("DE89370400440532013000".to_owned());
        assert_eq!(norm(ValueKind::Account, "DE89370400440532013000"), iban);
        assert_eq!(
            norm(ValueKind::Account, "DE89 3704 0044 0532 0130 00"),
            iban
        );
        assert_eq!(
            norm(ValueKind::Account, "de89-3704-0044-0532-0130-00"),
            iban
        );
        assert_eq!(
            norm(ValueKind::Account, "BE68 5390 0754 7034"),
            Some("BE68539007547034".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Account, "123456"),
            Some("123456".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Account, "1234-5678 90"),
            Some("1234567890".to_owned())
        );
        assert_eq!(
            norm(ValueKind::Account, &"9".repeat(34)),
            Some("9".repeat(34))
        );
    }

    #[test]
    fn account_refuses_other_shapes() {
        for text in [
            "12345",
            &"9".repeat(35),
            "DE89 3704 0044",
            "DE89 3704 0044 0532 0130 00!",
            "D189370400440532013000",
            "DEX9370400440532013000",
            "+4912345678",
            "1234.5678",
            "alice1",
            "ДЕ89370400440532013000",
        ] {
            assert_eq!(norm(ValueKind::Account, text), None, "{text}");
        }
        let long_iban = format!("DE89{}", "1".repeat(31));
        assert_eq!(norm(ValueKind::Account, &long_iban), None);
    }

    #[test]
    fn url_canonical_forms() {
        for (text, canonical) in [
            ("HTTPS://Example.com/Pay/", "example.com/Pay"),
            ("example.com", "example.com"),
            ("http://example.com", "example.com"),
            ("Example.COM.", "example.com"),
            ("http://example.com:80/x", "example.com/x"),
            ("https://example.com:443", "example.com"),
            ("https://example.com:8443/a?b=c#d", "example.com:8443/a"),
            ("http://example.com?q=1", "example.com"),
            ("example.com#top", "example.com"),
            ("https://example.com//", "example.com"),
            ("https://example.com/A/b%20c/", "example.com/A/b%20c"),
            ("www.example.com", "www.example.com"),
            ("evil.example.com/x", "evil.example.com/x"),
            ("10.0.0.1:8080/admin", "10.0.0.1:8080/admin"),
            ("https://Bücher.DE/", "bücher.de"),
            ("xn--bcher-kva.xn--p1ai", "xn--bcher-kva.xn--p1ai"),
            ("example.com:08080", "example.com:8080"),
        ] {
            assert_eq!(
                norm(ValueKind::Url, text).as_deref(),
                Some(canonical),
                "{text}"
            );
        }
        assert_ne!(
            norm(ValueKind::Url, "www.example.com"),
            norm(ValueKind::Url, "example.com")
        );
    }

    #[test]
    fn url_refuses_other_schemes_and_shapes() {
        for text in [
            "ftp://example.com",
            "FILE:///etc/passwd",
            "javascript:alert(1)",
            "mailto:alice@example.com",
            "alice@example.com",
            "https://user@example.com/",
            "https://user:pass@example.com/",
            "https://http://example.com",
            "//example.com",
            "https://",
            "localhost",
            "example",
            "example.c",
            "example.123",
            "1.2.3.999",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "exa_mple.com",
            "example..com",
            "https://ex ample.com",
            "https://example.com/a b",
            "https://example.com\\@evil.com",
            "[::1]",
        ] {
            assert_eq!(norm(ValueKind::Url, text), None, "{text}");
        }
    }

    #[test]
    fn handle_rules() {
        assert_eq!(
            norm(ValueKind::Handle, "@Alice_B"),
            Some("alice_b".to_owned())
        );
        assert_eq!(norm(ValueKind::Handle, "alice"), Some("alice".to_owned()));
        assert_eq!(norm(ValueKind::Handle, "a.b-c"), Some("a.b-c".to_owned()));
        assert_eq!(
            norm(ValueKind::Handle, &"x".repeat(64)),
            Some("x".repeat(64))
        );
        for text in [
            "@",
            "@@alice",
            "a@b",
            "alice@example.com",
            "al ice",
            "alice!",
            "...",
            "jörg",
            &"x".repeat(65),
        ] {
            assert_eq!(norm(ValueKind::Handle, text), None, "{text}");
        }
    }

    #[test]
    fn phone_rules() {
        for (text, canonical) in [
            ("+49 30 1234567", "+49301234567"),
            ("+1 (555) 123-4567", "+15551234567"),
            ("+44.20.7946.0958", "+442079460958"),
            ("(030) 123-4567", "0301234567"),
            ("1234567", "1234567"),
            ("+123456789012345", "+123456789012345"),
        ] {
            assert_eq!(
                norm(ValueKind::Phone, text).as_deref(),
                Some(canonical),
                "{text}"
            );
        }
        for text in [
            "123456",
            "+1234567890123456",
            "++49301234567",
            "49+301234567",
            "+49 30 ABC4567",
            "+49/30/1234567",
        ] {
            assert_eq!(norm(ValueKind::Phone, text), None, "{text}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for kind in ValueKind::ALL {
            for text in [
                "Alice@EXAMPLE.com",
                "ａｌｉｃｅ",
                "HTTPS://Example.com:8443/Pay/",
                "de89 3704 0044 0532 0130 00",
                "+49 (30) 1234567",
                "Straße@Bücher.de",
            ] {
                if let Some(once) = kind.normalise(text) {
                    assert_eq!(kind.normalise(&once).as_ref(), Some(&once), "{kind} {text}");
                }
            }
        }
    }

    #[test]
    fn whole_single_values() {
        assert_eq!(
            whole_values("  Alice@EXAMPLE.com "),
            owned(&[(ValueKind::Email, "alice@example.com")])
        );
        assert_eq!(
            whole_values("alice"),
            owned(&[(ValueKind::Handle, "alice")])
        );
        assert_eq!(
            whole_values("+49 30 1234567"),
            owned(&[(ValueKind::Phone, "+49301234567")])
        );
        let digits = whole_values("12345678");
        assert!(digits.contains(&(ValueKind::Account, "12345678".to_owned())));
        assert!(digits.contains(&(ValueKind::Phone, "12345678".to_owned())));
        assert_eq!(
            whole_values("https://example.com/"),
            owned(&[(ValueKind::Url, "example.com")])
        );
        assert_eq!(
            whole_values("example.com"),
            owned(&[
                (ValueKind::Url, "example.com"),
                (ValueKind::Handle, "example.com")
            ])
        );
        assert_eq!(
            whole_values("DE89 3704 0044 0532 0130 00"),
            owned(&[(ValueKind::Account, "DE89370400440532013000")])
        );
    }

    #[test]
    fn whole_lists() {
        assert_eq!(
            whole_values("a@x.org, B@Y.org; c@z.org,"),
            owned(&[
                (ValueKind::Email, "a@x.org"),
                (ValueKind::Email, "b@y.org"),
                (ValueKind::Email, "c@z.org"),
            ])
        );
        assert_eq!(
            whole_values("a@x.org, A@X.ORG"),
            owned(&[(ValueKind::Email, "a@x.org")])
        );
        // Fullwidth separators split after NFKC.
        assert_eq!(
            whole_values("a@x.org，b@y.org"),
            owned(&[(ValueKind::Email, "a@x.org"), (ValueKind::Email, "b@y.org")])
        );
        assert!(whole_values("a@x.org, not an address").is_empty());
        assert!(whole_values(",;").is_empty());
        assert!(whole_values("").is_empty());
    }

    #[test]
    fn whole_mailboxes() {
        assert_eq!(
            whole_values("Alice Smith <Alice@Example.com>"),
            owned(&[(ValueKind::Email, "alice@example.com")])
        );
        assert_eq!(
            whole_values("<alice@example.com>"),
            owned(&[(ValueKind::Email, "alice@example.com")])
        );
        assert_eq!(
            whole_values(r#""Smith, John" <john@x.org>; bob@y.org, Carol <carol@z.org>"#),
            owned(&[
                (ValueKind::Email, "john@x.org"),
                (ValueKind::Email, "bob@y.org"),
                (ValueKind::Email, "carol@z.org"),
            ])
        );
        assert!(whole_values("Alice <not an address>").is_empty());
        assert!(whole_values("Alice <a@x.org> and more").is_empty());
    }

    #[test]
    fn whole_sentences_yield_nothing() {
        assert!(whole_values("please send it to alice@example.com").is_empty());
        assert!(whole_values("alice@example.com is my address").is_empty());
        assert!(whole_values("pay DE89370400440532013000 now").is_empty());
    }

    #[test]
    fn text_mail_body_with_an_address() {
        let body = "Hi,\n\nplease send the invoice to Bob <Bob@Example.com> or \
                    mailto:accounts@example.org today.\nThanks";
        assert_eq!(
            values_in_text(body),
            owned(&[
                (ValueKind::Email, "bob@example.com"),
                (ValueKind::Email, "accounts@example.org"),
            ])
        );
    }

    #[test]
    fn text_email_domain_is_not_also_a_host() {
        assert_eq!(
            values_in_text("write to bob.smith@mail.example.com."),
            owned(&[(ValueKind::Email, "bob.smith@mail.example.com")])
        );
    }

    #[test]
    fn text_urls_and_hosts() {
        assert_eq!(
            values_in_text("Pay at https://Example.com/Pay/."),
            owned(&[(ValueKind::Url, "example.com/Pay")])
        );
        assert_eq!(
            values_in_text("Go to evil.example.com/x, then (see www.example.org)!"),
            owned(&[
                (ValueKind::Url, "evil.example.com/x"),
                (ValueKind::Url, "www.example.org"),
            ])
        );
        assert_eq!(
            values_in_text("Read (https://en.wikipedia.org/wiki/Foo_(bar))."),
            owned(&[(ValueKind::Url, "en.wikipedia.org/wiki/Foo_(bar)")])
        );
        assert_eq!(
            values_in_text("\"http://example.com:8080/a?b=1\" and example.net?"),
            owned(&[
                (ValueKind::Url, "example.com:8080/a"),
                (ValueKind::Url, "example.net"),
            ])
        );
        // Hosts inside a path or word, and other schemes, are not hosts.
        assert!(values_in_text("ftp://files.example.com/x and dir/file.txt_x").is_empty());
        assert!(values_in_text("e.g. version 1.2.3, i.e. U.S.A.").is_empty());
    }

    #[test]
    fn text_ibans() {
        assert_eq!(
            values_in_text("IBAN: DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX."),
            owned(&[(ValueKind::Account, "DE89370400440532013000")])
        );
        assert_eq!(
            values_in_text("to DE89370400440532013000."),
            owned(&[(ValueKind::Account, "DE89370400440532013000")])
        );
        // The word after the last full group is not part of the IBAN.
        assert_eq!(
            values_in_text("BE68 5390 0754 7034 BIC GEBABEBB"),
            owned(&[(ValueKind::Account, "BE68539007547034")])
        );
        assert!(values_in_text("XDE89370400440532013000").is_empty());
    }

    #[test]
    fn text_phones_and_handles() {
        assert_eq!(
            values_in_text("Call +49 30 1234567 or +1 (555) 123-4567."),
            owned(&[
                (ValueKind::Phone, "+49301234567"),
                (ValueKind::Phone, "+15551234567"),
            ])
        );
        assert_eq!(
            values_in_text("@Alice, ask @bob.smith. Not x@carol or (@dave)."),
            owned(&[
                (ValueKind::Handle, "alice"),
                (ValueKind::Handle, "bob.smith"),
            ])
        );
        assert_eq!(
            values_in_text("DM ＠ａｌｉｃｅ"),
            owned(&[(ValueKind::Handle, "alice")])
        );
    }

    #[test]
    fn text_digits_in_prose_yield_nothing() {
        assert!(values_in_text("on 2024-05-01 pay 1200").is_empty());
        assert!(values_in_text("total 1,200.50 EUR, ref 12345678, 3+4=7").is_empty());
    }

    #[test]
    fn text_values_are_unique_and_in_order() {
        assert_eq!(
            values_in_text("@alice a@x.org @Alice A@X.org https://x.org x.org"),
            owned(&[
                (ValueKind::Handle, "alice"),
                (ValueKind::Email, "a@x.org"),
                (ValueKind::Url, "x.org"),
            ])
        );
    }

    #[test]
    fn text_is_capped() {
        let many: String = (0..1500).map(|i| format!("@user{i} ")).collect();
        let found = values_in_text(&many);
        assert_eq!(found.len(), 1000);
        assert_eq!(
            found.first(),
            Some(&(ValueKind::Handle, "user0".to_owned()))
        );

        let late = format!("{} bob@example.com", "x ".repeat(MAX_SCAN / 2));
        assert!(values_in_text(&late).is_empty());
        let early = format!("bob@example.com {}", "x ".repeat(MAX_SCAN / 2));
        assert_eq!(values_in_text(&early).len(), 1);
    }

    #[test]
    fn head_cuts_on_a_character_boundary() {
        assert_eq!(head("aé", 2), "a");
        assert_eq!(head("aé", 3), "aé");
        assert_eq!(head("abc", 10), "abc");
    }
}
