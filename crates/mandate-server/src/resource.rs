//! This server as an OAuth protected resource (RFC 9728): its identifier,
//! where its metadata is served, the authorization servers it trusts, and
//! the endpoints it names in that metadata.

/// Where the token endpoint (RFC 8693) is, below the resource.
pub const TOKEN_PATH: &str = "/v1/token";

/// Where the JWKS of the tokens Mandate mints is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The path of the RFC 9728 protected resource metadata, before the
/// resource's own path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// This server's resource identifier and the metadata derived from it.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    resource: String,
    metadata_url: String,
    metadata_path: String,
    authorization_servers: Vec<String>,
}

impl ResourceMetadata {
    /// The metadata of `resource` (an absolute `http` or `https` URL without
    /// query or fragment; `None` otherwise) trusting `authorization_servers`.
    pub fn new(resource: &str, authorization_servers: Vec<String>) -> Option<Self> {
        let (metadata_url, metadata_path) = metadata_location(resource)?;
        Some(Self {
            resource: resource.to_owned(),
            metadata_url,
            metadata_path,
            authorization_servers,
        })
    }

    /// This server's resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The issuers of the configured identity tokens, as RFC 9728
    /// `authorization_servers` (SPIFFE trust domains without an `issuer` are
    /// not listed).
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// The URL of the protected resource metadata (RFC 9728 §3.1).
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The path this server serves the metadata at, besides
    /// [`METADATA_PATH`] (the same, when the resource has no path).
    pub fn metadata_path(&self) -> &str {
        &self.metadata_path
    }

    /// The URL of the token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.resource.trim_end_matches('/'))
    }

    /// The URL of the JWKS of the tokens Mandate mints.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.resource.trim_end_matches('/'))
    }
}

/// Where the protected resource metadata of `resource` lives (RFC 9728
/// §3.1: the well-known path goes between the host and the resource's
/// path): its URL, and the path this server answers on.
fn metadata_location(resource: &str) -> Option<(String, String)> {
    let (scheme, rest) = resource.split_once("://")?;
    if !matches!(scheme, "http" | "https") || resource.contains(['?', '#']) {
        return None;
    }
    if resource
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return None;
    }
    let path = format!("{METADATA_PATH}{}", path.trim_end_matches('/'));
    Some((format!("{scheme}://{authority}{path}"), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_goes_between_host_and_path() {
        assert_eq!(
            metadata_location("https://mandate.example.com"),
            Some((
                "https://mandate.example.com/.well-known/oauth-protected-resource".to_owned(),
                METADATA_PATH.to_owned()
            ))
        );
        assert_eq!(
            metadata_location("http://127.0.0.1:8181/"),
            Some((
                "http://127.0.0.1:8181/.well-known/oauth-protected-resource".to_owned(),
                METADATA_PATH.to_owned()
            ))
        );
        assert_eq!(
            metadata_location("https://gw.example.com/mandate"),
            Some((
                "https://gw.example.com/.well-known/oauth-protected-resource/mandate".to_owned(),
                "/.well-known/oauth-protected-resource/mandate".to_owned()
            ))
        );
        for bad in [
            "mandate",
            "ftp://x",
            "https://",
            "https:///path",
            "https://x/?q",
            "https://x#f",
            "https://x y",
        ] {
            assert_eq!(metadata_location(bad), None, "{bad}");
        }
    }
}
