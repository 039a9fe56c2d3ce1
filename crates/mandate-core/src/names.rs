//! What a name may be: the grammars of server names, tool names, agent ids,
//! labels and the person an agent acts for.
//!
//! Policies match names by exact string. A name that only looks like another
//! (a Cyrillic `е` for `e`, a fullwidth letter, a zero-width or no-break
//! space, a soft hyphen, a right-to-left override, `BANK` for `bank`, `%65`
//! for `e`) would slip past a `forbid` written for the real one, while a tool
//! server, a log reader or an approver may take both for the same. So every
//! name a policy can match has an ASCII grammar, and a request naming
//! anything outside it is refused before any policy sees it.
//!
//! Names are refused, not folded: a gateway that routes by the name it sent
//! must act on exactly the name that was decided. The one free-form name, the
//! person behind an agent (`on_behalf_of`), may hold any letters; it is
//! normalised to Unicode NFC and refused when it carries invisible, control or
//! bidirectional characters (see [`person`]).

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Longest server name, in bytes.
pub const MAX_SERVER: usize = 64;
/// Longest tool name, in bytes: the MCP specification's guidance.
pub const MAX_TOOL: usize = 128;
/// Longest label, in bytes.
pub const MAX_LABEL: usize = 64;
/// Longest agent id that is not a SPIFFE ID, in bytes (an OIDC `sub` is at
/// most 255 ASCII characters).
pub const MAX_AGENT: usize = 255;
/// Longest SPIFFE ID, in bytes (the SPIFFE ID standard's limit).
pub const MAX_SPIFFE_ID: usize = 2048;
/// Longest SPIFFE trust domain, in bytes.
pub const MAX_TRUST_DOMAIN: usize = 255;
/// Longest person name, in bytes after normalisation.
pub const MAX_PERSON: usize = 256;

/// The kind of name, as messages say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// The server (MCP server or tool provider) that offers a tool.
    Server,
    /// A tool's name on its server.
    Tool,
    /// A workload identity: a SPIFFE ID or another agent id.
    Agent,
    /// A data label, such as `confidential` or `untrusted`.
    Label,
    /// The person an agent acts for.
    Person,
}

impl NameKind {
    /// What names of this kind may be made of.
    pub fn grammar(self) -> &'static str {
        match self {
            NameKind::Server => {
                "a server name is 1 to 64 lowercase ASCII letters, digits, `_`, `-` and `.`"
            }
            NameKind::Tool => {
                "a tool name is 1 to 128 ASCII letters, digits, `_`, `-` and `.` (the MCP tool-name rules)"
            }
            NameKind::Agent => {
                "an agent id is a SPIFFE ID (`spiffe://trust-domain/path`: lowercase trust domain of `a-z 0-9 . _ -`, path segments of `A-Z a-z 0-9 . _ -`) or 1 to 255 ASCII letters, digits and `. _ - : @ / + = ~ |`"
            }
            NameKind::Label => {
                "a label is 1 to 64 lowercase ASCII letters, digits, `_`, `-`, `.` and `:`"
            }
            NameKind::Person => {
                "a person is named by at most 256 bytes of text without control, invisible or bidirectional characters, other whitespace than spaces, or spaces at either end"
            }
        }
    }

    fn noun(self) -> &'static str {
        match self {
            NameKind::Server => "server name",
            NameKind::Tool => "tool name",
            NameKind::Agent => "agent id",
            NameKind::Label => "label",
            NameKind::Person => "person",
        }
    }
}

/// A name outside its grammar: what it is, what is wrong, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} `{shown}` {problem}; {}", .kind.noun(), .kind.grammar())]
pub struct NameError {
    /// The kind of name.
    pub kind: NameKind,
    /// The name as sent, with everything but printable ASCII escaped
    /// (`\u{435}`), so that a look-alike shows what it is.
    pub shown: String,
    /// What is wrong with it.
    pub problem: String,
}

impl NameError {
    fn new(kind: NameKind, name: &str, problem: impl Into<String>) -> Self {
        NameError {
            kind,
            shown: shown(name),
            problem: problem.into(),
        }
    }
}

/// Checks a server name: `[a-z0-9_.-]{1,64}`.
pub fn server(name: &str) -> Result<(), NameError> {
    ascii_name(NameKind::Server, name, MAX_SERVER, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
    })
}

/// Checks a tool name: `[A-Za-z0-9_.-]{1,128}`, the characters and length
/// the MCP specification asks tool names to keep to. Tool names are
/// case-sensitive, as in MCP.
pub fn tool(name: &str) -> Result<(), NameError> {
    ascii_name(NameKind::Tool, name, MAX_TOOL, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
    })
}

/// Checks a label: `[a-z0-9_.:-]{1,64}`.
pub fn label(name: &str) -> Result<(), NameError> {
    ascii_name(NameKind::Label, name, MAX_LABEL, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b':')
    })
}

/// Checks a tool named with its server, `server/tool`, as tasks declare
/// tools and as `Mandate::Tool` entities are named.
pub fn tool_ref(name: &str) -> Result<(), NameError> {
    let Some((server_name, tool_name)) = name.split_once('/') else {
        return Err(NameError {
            kind: NameKind::Tool,
            shown: shown(name),
            problem: "does not name its server: write `server/tool`".into(),
        });
    };
    server(server_name)?;
    tool(tool_name)
}

/// Checks an agent id: a SPIFFE ID of a workload, or another id of
/// `[A-Za-z0-9._:@/+=~|-]{1,255}` (an OIDC subject, a plain name). Anything
/// that starts like a SPIFFE ID in any case must be a valid one.
pub fn agent(name: &str) -> Result<(), NameError> {
    let kind = NameKind::Agent;
    if name
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("spiffe:"))
    {
        return spiffe_id(name).map(|_| ());
    }
    ascii_name(kind, name, MAX_AGENT, |b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'.' | b'_' | b'-' | b':' | b'@' | b'/' | b'+' | b'=' | b'~' | b'|'
            )
    })
}

/// Splits a workload's SPIFFE ID into trust domain and path, checking it
/// against the SPIFFE ID standard: exactly `spiffe://`, a trust domain of
/// `[a-z0-9._-]` (at most 255 bytes), a non-empty path of non-empty segments
/// of `[A-Za-z0-9._-]`, none `.` or `..`, no query, fragment, port or
/// percent-encoding, at most 2048 bytes in all.
pub fn spiffe_id(name: &str) -> Result<(&str, &str), NameError> {
    let kind = NameKind::Agent;
    let refuse = |problem: String| Err(NameError::new(kind, name, problem));
    if name.len() > MAX_SPIFFE_ID {
        return refuse(format!("is longer than {MAX_SPIFFE_ID} bytes"));
    }
    let Some(rest) = name.strip_prefix("spiffe://") else {
        return refuse(
            "is not a SPIFFE ID: the scheme is written `spiffe://`, in lowercase".into(),
        );
    };
    let Some((domain, path)) = rest.split_once('/') else {
        return refuse(
            "has no path: a workload's SPIFFE ID is `spiffe://trust-domain/path`".into(),
        );
    };
    if let Err(problem) = trust_domain_problem(domain) {
        return refuse(problem);
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return refuse("has an empty path segment (`//` or a trailing `/`)".into());
        }
        if segment == "." || segment == ".." {
            return refuse(format!("has a `{segment}` path segment"));
        }
        let path_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if let Some(c) = segment
            .chars()
            .find(|&c| !u8::try_from(c).is_ok_and(path_byte))
        {
            return refuse(format!("has {} in its path", describe(c, false)));
        }
    }
    Ok((domain, path))
}

/// Checks a SPIFFE trust domain name (no `spiffe://`): `[a-z0-9._-]`, 1
/// to 255 bytes.
pub fn trust_domain(domain: &str) -> Result<(), NameError> {
    trust_domain_problem(domain).map_err(|problem| NameError::new(NameKind::Agent, domain, problem))
}

fn trust_domain_problem(domain: &str) -> Result<(), String> {
    if domain.is_empty() || domain.len() > MAX_TRUST_DOMAIN {
        return Err(format!(
            "has a trust domain that is empty or longer than {MAX_TRUST_DOMAIN} bytes"
        ));
    }
    let domain_byte =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    match domain
        .chars()
        .find(|&c| !u8::try_from(c).is_ok_and(domain_byte))
    {
        Some(c) => Err(format!("has {} in its trust domain", describe(c, true))),
        None => Ok(()),
    }
}

/// Checks the name of the person an agent acts for and returns it in
/// Unicode NFC, the form policies see: `Jose\u{301}` and `José` are one
/// person. Letters of any script are fine; control characters, invisible
/// and bidirectional formatting characters, whitespace other than U+0020,
/// and spaces at either end are refused.
pub fn person(name: &str) -> Result<String, NameError> {
    let kind = NameKind::Person;
    if name.is_empty() {
        return Err(NameError::new(kind, name, "is empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c != ' ' && (c.is_control() || c.is_whitespace() || invisible(c)))
    {
        return Err(NameError::new(
            kind,
            name,
            format!("has {}", describe(c, false)),
        ));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(NameError::new(kind, name, "starts or ends with a space"));
    }
    let normal: String = name.nfc().collect();
    if normal.len() > MAX_PERSON {
        return Err(NameError::new(
            kind,
            name,
            format!("is longer than {MAX_PERSON} bytes"),
        ));
    }
    Ok(normal)
}

/// A name of ASCII bytes that `allowed` accepts, 1 to `max` bytes long.
fn ascii_name(
    kind: NameKind,
    name: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(kind, name, "is empty"));
    }
    let lowercase_only = matches!(kind, NameKind::Server | NameKind::Label);
    if let Some(c) = name.chars().find(|&c| !u8::try_from(c).is_ok_and(&allowed)) {
        return Err(NameError::new(
            kind,
            name,
            format!("has {}", describe(c, lowercase_only)),
        ));
    }
    if name.len() > max {
        return Err(NameError::new(
            kind,
            name,
            format!("is longer than {max} bytes"),
        ));
    }
    Ok(())
}

/// Says what a refused character is, in words a reader can act on.
fn describe(c: char, lowercase_only: bool) -> String {
    let code = format!("U+{:04X}", u32::from(c));
    if c.is_ascii_uppercase() && lowercase_only {
        format!(
            "the uppercase letter `{c}` (these names are lowercase, so write `{}`)",
            c.to_ascii_lowercase()
        )
    } else if c == '%' {
        "`%`: percent-encoding is not decoded, so write the characters themselves".into()
    } else if bidi_control(c) {
        format!("a bidirectional control character ({code})")
    } else if invisible(c) {
        format!("an invisible formatting character ({code})")
    } else if c.is_control() {
        format!("a control character ({code})")
    } else if c.is_whitespace() {
        format!("whitespace ({code})")
    } else if c.is_ascii() {
        format!("`{c}`, which is not allowed")
    } else {
        format!("the non-ASCII character {code}")
    }
}

/// Bidirectional formatting controls (Unicode `Bidi_Control`): they reorder
/// how text around them is shown, so that a name can read as another.
fn bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show as nothing: Unicode's `Default_Ignorable_Code_Point`
/// set (DerivedCoreProperties.txt), which includes the soft hyphen, the
/// zero-width characters, the bidirectional controls, variation selectors
/// and tag characters. Names and destination values refuse them alike.
pub(crate) fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The name with everything but printable ASCII escaped, and cut short.
fn shown(name: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == MAX_SHOWN {
            out.push('…');
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    out
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Check = fn(&str) -> Result<(), NameError>;

    /// Look-alikes of `wipe_mailbox`, `bank` and `spiffe://example.org/evil`:
    /// each must be refused, never read as a different name.
    const LOOK_ALIKES: &[(&str, Check, &str)] = &[
        ("tool", tool, "wip\u{435}_mailbox"),
        ("tool", tool, "\u{ff57}ipe_mailbox"),
        ("tool", tool, "wipe\u{200b}_mailbox"),
        ("tool", tool, "wipe_mailbox "),
        ("tool", tool, "wipe_mailbox\u{a0}"),
        ("tool", tool, "wipe_mail\u{ad}box"),
        ("tool", tool, "\u{202e}xobliam_epiw"),
        ("tool", tool, "wipe_mailbox\u{feff}"),
        ("tool", tool, "wipe_mailbox\u{e0041}"),
        ("tool", tool, "wipe%5Fmailbox"),
        ("tool", tool, "wipe_mailbox\u{fe0f}"),
        ("tool", tool, "wipe_mailbo\u{445}"),
        ("server", server, "BANK"),
        ("server", server, "b\u{430}nk"),
        ("server", server, "bank\u{2060}"),
        ("server", server, "\u{ff42}ank"),
        ("server", server, "bank/x"),
        ("agent", agent, "spiffe://example.org/\u{435}vil"),
        ("agent", agent, "SPIFFE://example.org/evil"),
        ("agent", agent, "spiffe://example.org/%65vil"),
        ("agent", agent, "spiffe://EXAMPLE.org/evil"),
        ("agent", agent, "spiffe://example.org/evil/"),
        ("agent", agent, "spiffe://example.org//evil"),
        ("agent", agent, "spiffe://example.org/../evil"),
        ("agent", agent, "spiffe://example.org:443/evil"),
        ("agent", agent, "spiffe://example.org/evil?x"),
        ("agent", agent, "spiffe://example.org"),
        ("agent", agent, "spiffe:example.org/evil"),
        ("agent", agent, "evil\u{200d}"),
        ("agent", agent, "%65vil"),
        ("agent", agent, "ev il"),
        ("label", label, "Confidential"),
        ("label", label, "con\u{fb01}dential"),
        ("label", label, "untrusted "),
    ];

    #[test]
    fn look_alikes_are_refused_with_what_is_wrong() {
        for (kind, check, name) in LOOK_ALIKES {
            let error = check(name).expect_err(&format!("{kind} {name:?} must be refused"));
            let message = error.to_string();
            assert!(message.is_ascii(), "{message}");
            assert!(message.contains(error.kind.grammar()), "{message}");
        }
        let error = tool("wip\u{435}_mailbox").unwrap_err();
        assert_eq!(error.shown, "wip\\u{435}_mailbox");
        assert!(error.problem.contains("U+0435"), "{}", error.problem);
        assert!(server("BANK").unwrap_err().problem.contains("write `b`"));
        assert!(
            tool("a\u{202e}b")
                .unwrap_err()
                .problem
                .contains("bidirectional")
        );
        assert!(tool("a\u{ad}b").unwrap_err().problem.contains("invisible"));
        assert!(
            agent("%65vil")
                .unwrap_err()
                .problem
                .contains("percent-encoding")
        );
    }

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "wipe_mailbox",
            "read_text_file",
            "get-tiny-image",
            "admin.tools.list",
            "DATA_EXPORT_v2",
        ] {
            assert_eq!(tool(name), Ok(()), "{name}");
        }
        assert!(tool(&"t".repeat(128)).is_ok() && tool(&"t".repeat(129)).is_err());
        for name in ["bank", "fs", "mail-2", "files.internal"] {
            assert_eq!(server(name), Ok(()), "{name}");
        }
        assert!(server(&"s".repeat(64)).is_ok() && server(&"s".repeat(65)).is_err());
        for name in ["confidential", "untrusted", "pii:email", "tier-1"] {
            assert_eq!(label(name), Ok(()), "{name}");
        }
        for name in [
            "spiffe://example.org/agent/mailer",
            "spiffe://prod.example-1.org/ns/Default/sa/Agent_1.v2",
            "a",
            "someone-else",
            "auth0|5f7c8ec7",
            "alice@example.org",
            "https://issuer.example/agents/7",
        ] {
            assert_eq!(agent(name), Ok(()), "{name}");
        }
        assert_eq!(
            spiffe_id("spiffe://example.org/agent/mailer"),
            Ok(("example.org", "agent/mailer"))
        );
        assert_eq!(tool_ref("bank/wipe_mailbox"), Ok(()));
        assert!(tool_ref("wipe_mailbox").is_err());
        assert!(tool_ref("BANK/wipe_mailbox").is_err());
        assert!(tool_ref("bank/wipe/mailbox").is_err());
    }

    #[test]
    fn a_person_is_normalised_and_kept_visible() {
        assert_eq!(person("Jose\u{301} Ñúñez").unwrap(), "Jos\u{e9} Ñúñez");
        assert_eq!(person("alice@example.org").unwrap(), "alice@example.org");
        assert_eq!(person("李小龍").unwrap(), "李小龍");
        for bad in [
            "",
            " alice",
            "alice ",
            "al\u{200b}ice",
            "alice\u{a0}",
            "\u{202e}ecila",
            "al\u{ad}ice",
            "alice\n",
            "alice\u{3000}smith",
        ] {
            assert!(person(bad).is_err(), "{bad:?}");
        }
        assert!(person(&"é".repeat(128)).is_ok());
        assert!(person(&"é".repeat(129)).is_err());
    }
}
