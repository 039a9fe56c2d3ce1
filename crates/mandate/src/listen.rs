//! Listen addresses as people write them: `IP:PORT` (`127.0.0.1:8181`,
//! `[::1]:8181`) or `HOST:PORT` (`localhost:8181`).
//!
//! A host name is resolved once, at start, to one address. When it names
//! both IPv4 and IPv6 addresses (as `localhost` does), the first IPv4 one
//! is used, so that `localhost:8181` listens where `127.0.0.1:8181` would
//! and the default resource identifier (`http://<listen>`) stays the same.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `IP:PORT` or `HOST:PORT` into the address to bind.
pub fn parse(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` is not an address to listen on: use HOST:PORT or IP:PORT (127.0.0.1:8181, localhost:8181, [::1]:8181)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{text}` is not a port (0-65535)"))?;
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return Err(format!(
            "`{text}` is not an address to listen on: use HOST:PORT or IP:PORT"
        ));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}` to listen on: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address to listen on"))
}

/// [`parse`] for serde: `listen` in the config file or `MANDATE_LISTEN`.
pub fn deserialize<'de, D>(deserializer: D) -> Result<SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// [`deserialize`] for a listener that is off unless set.
pub fn deserialize_optional<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <Option<String> as serde::Deserialize>::deserialize(deserializer)?;
    text.map(|text| parse(&text).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_host_names_are_accepted() {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse("127.0.0.1:8181"), Ok(loopback(8181)));
        assert_eq!(
            parse("[::1]:0"),
            Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)))
        );
        // localhost names loopback on every machine; IPv4 first.
        assert_eq!(parse("localhost:8181"), Ok(loopback(8181)));
        assert_eq!(parse(" localhost:0 "), Ok(loopback(0)));
    }

    #[test]
    fn what_is_not_an_address_is_refused_saying_what_to_write() {
        for bad in ["8181", "localhost", ":8181", "a b:1", "[::1:80"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("HOST:PORT"), "{bad}: {error}");
        }
        for bad in ["localhost:", "localhost:http", "localhost:70000"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("is not a port"), "{bad}: {error}");
        }
    }
}
