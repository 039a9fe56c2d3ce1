//! The rules every merged endpoint follows, over HTTP (`mandate mcp proxy`'s
//! `/mcp`) and stdio (`mandate mcp wrap` with `[[servers]]`): one MCP server
//! to the client with the tools of several, each named `NAME__tool`.
//!
//! MCP tool names are made of `A-Z a-z 0-9 _ -`, so the separator is `__`,
//! and a server name may neither contain it nor end with `_`: then every
//! merged name has one reading.

/// Between a server's name and its tool's in a merged tool name.
pub const SEPARATOR: &str = "__";

/// Whether `name` may name a server: the server-name grammar every
/// decision holds `action.server` to (`mandate_core::names::server`).
pub fn valid_server_name(name: &str) -> bool {
    mandate_core::names::server(name).is_ok()
}

/// Whether `name` can prefix tool names unambiguously.
pub fn prefixable(name: &str) -> bool {
    !name.contains(SEPARATOR) && !name.ends_with('_')
}

/// What a client's names of server `server`'s tools start with.
pub fn prefix(server: &str) -> String {
    format!("{server}{SEPARATOR}")
}

/// The server and the tool a merged name stands for, when `server` is one
/// of `servers` and the tool's own name is not empty.
pub fn split<'a, 'n>(
    name: &'n str,
    servers: impl IntoIterator<Item = &'a str>,
) -> Option<(&'n str, &'n str)> {
    let (server, tool) = name.split_once(SEPARATOR)?;
    (!tool.is_empty() && servers.into_iter().any(|s| s == server)).then_some((server, tool))
}

/// The protocol version of a merged session: the client's when every
/// server took it, else the oldest a server answered (versions are dates).
pub fn agreed_version<'a>(client: &str, answered: impl IntoIterator<Item = &'a str>) -> String {
    let answered: Vec<&str> = answered.into_iter().collect();
    if answered.iter().all(|v| *v == client) {
        client.to_owned()
    } else {
        answered.into_iter().min().unwrap_or(client).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_names_have_one_reading() {
        let servers = ["fs", "web"];
        assert_eq!(split("fs__write_file", servers), Some(("fs", "write_file")));
        assert_eq!(split("web__fetch__x", servers), Some(("web", "fetch__x")));
        assert_eq!(split("db__query", servers), None);
        assert_eq!(split("fs__", servers), None);
        assert_eq!(split("write_file", servers), None);
        assert!(prefixable("fs") && !prefixable("a__b") && !prefixable("fs_"));
        assert!(
            valid_server_name("web-1.x") && !valid_server_name("a/b") && !valid_server_name("")
        );
    }

    #[test]
    fn the_oldest_version_wins_unless_all_took_the_clients() {
        assert_eq!(
            agreed_version("2025-11-25", ["2025-11-25", "2025-11-25"]),
            "2025-11-25"
        );
        assert_eq!(
            agreed_version("2025-11-25", ["2025-06-18", "2025-11-25"]),
            "2025-06-18"
        );
    }
}
