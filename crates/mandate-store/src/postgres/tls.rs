//! TLS to PostgreSQL, set in the URL as libpq sets it: `sslmode` and
//! `sslrootcert` in the query (`postgres://…/db?sslmode=verify-full`).
//!
//! `tokio-postgres` reads only `disable`, `prefer` and `require` and leaves
//! certificate checks to the connector, so the two parameters are taken out
//! of the URL here and become a rustls connector that always verifies:
//!
//! - `verify-full`: the chain up to a trusted root, and the host name (or
//!   IP address) of the URL in the certificate. Roots: `sslrootcert=FILE`
//!   (PEM), or the system's store when absent or `system`.
//! - `verify-ca`: the chain only, up to the roots in `sslrootcert=FILE`
//!   (required: with the system's roots anyone with a public certificate
//!   would pass, which is why libpq refuses it too).
//! - `disable`, or no `sslmode`: no TLS (a database on a private network or
//!   a Unix socket).
//!
//! `allow`, `prefer` and `require` are refused: each would accept a
//! certificate nobody checked (libpq's `require` does not verify), so a
//! party on the path could read the credentials and receipts that pass.

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StateError;

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS; the chain is verified up to the roots, not the host name.
    VerifyCa(Roots),
    /// TLS; the chain and the host name are verified.
    VerifyFull(Roots),
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store.
    System,
    /// The certificates in a PEM file.
    File(PathBuf),
}

/// A URL with its TLS parameters taken out, and what they said.
#[derive(Debug)]
pub(crate) struct Split {
    /// The URL as `tokio-postgres` reads it.
    pub url: String,
    /// What `sslmode` and `sslrootcert` asked for.
    pub mode: TlsMode,
}

/// Takes `sslmode` and `sslrootcert` out of `url`'s query and checks them.
/// A URL in key/value form (`host=… dbname=…`) may not set `sslmode`: it
/// would reach `tokio-postgres` unchecked.
pub(crate) fn split(url: &str) -> Result<Split, StateError> {
    let refuse = |why: String| StateError::Unsupported(why);
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !is_url {
        if url.contains("sslmode") || url.contains("sslrootcert") {
            return Err(refuse(
                "set `sslmode` in a URL (postgres://…?sslmode=verify-full), not in key/value form"
                    .to_owned(),
            ));
        }
        return Ok(Split {
            url: url.to_owned(),
            mode: TlsMode::Disable,
        });
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut sslmode, mut rootcert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| refuse(format!("`{key}` in the PostgreSQL URL is not UTF-8")))
        };
        let slot = match key {
            "sslmode" => &mut sslmode,
            "sslrootcert" => &mut rootcert,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        if slot.replace(decoded()?).is_some() {
            return Err(refuse(format!(
                "`{key}` appears twice in the PostgreSQL URL"
            )));
        }
    }
    let roots = |rootcert: Option<String>| match rootcert.as_deref() {
        None | Some("system") => Roots::System,
        Some(path) => Roots::File(PathBuf::from(path)),
    };
    let mode = match sslmode.as_deref() {
        None | Some("disable") => {
            if rootcert.is_some() {
                return Err(refuse(
                    "`sslrootcert` without `sslmode=verify-full` or `verify-ca` would be ignored; set the mode too".to_owned(),
                ));
            }
            TlsMode::Disable
        }
        Some("verify-full") => TlsMode::VerifyFull(roots(rootcert)),
        Some("verify-ca") => match roots(rootcert) {
            Roots::System => {
                return Err(refuse(
                    "`sslmode=verify-ca` needs `sslrootcert=FILE` (the CA that signed the database's certificate): against the system's roots it would accept any publicly issued certificate; use `verify-full` for those".to_owned(),
                ));
            }
            file => TlsMode::VerifyCa(file),
        },
        Some(mode @ ("allow" | "prefer" | "require")) => {
            return Err(refuse(format!(
                "`sslmode={mode}` would accept a certificate nobody verified; use `sslmode=verify-full` (optionally with `sslrootcert=FILE`), `verify-ca` with `sslrootcert=FILE`, or `disable` on a private network"
            )));
        }
        Some(other) => {
            return Err(refuse(format!(
                "`sslmode={other}` is not a mode; use `verify-full`, `verify-ca` or `disable`"
            )));
        }
    };
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Split { url, mode })
}

impl TlsMode {
    /// What `tokio-postgres` is told: TLS required, or none.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::VerifyCa(_) | TlsMode::VerifyFull(_) => SslMode::Require,
        }
    }

    /// The connector every connection of the store uses. With
    /// [`TlsMode::Disable`] it is never called (`sslmode` is `disable`).
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, StateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| StateError::Unsupported(format!("TLS: {e}")))?;
        let config = match self {
            TlsMode::Disable => builder
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
            TlsMode::VerifyFull(roots) => builder
                .with_root_certificates(load(roots)?)
                .with_no_client_auth(),
            TlsMode::VerifyCa(roots) => {
                let chain =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(load(roots)?), provider)
                        .build()
                        .map_err(|e| StateError::Unsupported(format!("TLS: {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
                    .with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The trusted roots; none usable is an error, not an empty store that
/// refuses every server with a puzzling message.
fn load(roots: &Roots) -> Result<RootCertStore, StateError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unusable system certificate does not spoil the rest.
                let _ = store.add(cert);
            }
        }
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                StateError::Unsupported(format!("sslrootcert `{}`: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    StateError::Unsupported(format!("sslrootcert `{}`: {e}", path.display()))
                })?;
                store.add(cert).map_err(|e| {
                    StateError::Unsupported(format!("sslrootcert `{}`: {e}", path.display()))
                })?;
            }
        }
    }
    if store.is_empty() {
        let from = match roots {
            Roots::System => "the system's store".to_owned(),
            Roots::File(path) => format!("`{}`", path.display()),
        };
        return Err(StateError::Unsupported(format!(
            "no trusted root certificate found in {from}; name the CA's PEM file with `sslrootcert=FILE`"
        )));
    }
    Ok(store)
}

/// `verify-ca`: every check of the full verification but the name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // The chain is checked before the name, so a name mismatch means
        // the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(url: &str) -> Result<TlsMode, String> {
        split(url).map(|s| s.mode).map_err(|e| e.to_string())
    }

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_rest_stays() {
        let s = split("postgres://u@db:5432/m?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3").unwrap();
        assert_eq!(
            s.url,
            "postgres://u@db:5432/m?application_name=x&connect_timeout=3"
        );
        assert_eq!(
            s.mode,
            TlsMode::VerifyFull(Roots::File("/etc/ca.pem".into()))
        );
        let s = split("postgresql://u@db/m?sslmode=disable").unwrap();
        assert_eq!(s.url, "postgresql://u@db/m");
        assert_eq!(s.mode, TlsMode::Disable);
        assert_eq!(mode("postgres://u@db/m").unwrap(), TlsMode::Disable);
        assert_eq!(
            mode("postgres://u@db/m?sslmode=verify-full").unwrap(),
            TlsMode::VerifyFull(Roots::System)
        );
        assert_eq!(
            mode("postgres://u@db/m?sslmode=verify-full&sslrootcert=system").unwrap(),
            TlsMode::VerifyFull(Roots::System)
        );
        assert_eq!(
            mode("postgres://u@db/m?sslmode=verify-ca&sslrootcert=ca.pem").unwrap(),
            TlsMode::VerifyCa(Roots::File("ca.pem".into()))
        );
        assert_eq!(mode("host=db dbname=m").unwrap(), TlsMode::Disable);
    }

    #[test]
    fn modes_that_verify_nothing_are_refused_with_what_to_write() {
        for weak in ["allow", "prefer", "require"] {
            let e = mode(&format!("postgres://u@db/m?sslmode={weak}")).unwrap_err();
            assert!(e.contains("verify-full"), "{e}");
        }
        let e = mode("postgres://u@db/m?sslmode=verify-ca").unwrap_err();
        assert!(e.contains("sslrootcert=FILE"), "{e}");
        let e = mode("postgres://u@db/m?sslmode=verify-ca&sslrootcert=system").unwrap_err();
        assert!(e.contains("sslrootcert=FILE"), "{e}");
        let e = mode("postgres://u@db/m?sslmode=maybe").unwrap_err();
        assert!(e.contains("not a mode"), "{e}");
        let e = mode("postgres://u@db/m?sslmode=verify-full&sslmode=disable").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = mode("postgres://u@db/m?sslrootcert=ca.pem").unwrap_err();
        assert!(e.contains("sslmode"), "{e}");
        let e = mode("host=db sslmode=require").unwrap_err();
        assert!(e.contains("key/value"), "{e}");
    }

    #[test]
    fn a_root_file_without_certificates_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("mandate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = TlsMode::VerifyFull(Roots::File(empty.clone()))
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("empty.pem"), "{e}");
        let missing = dir.join("missing.pem");
        let e = TlsMode::VerifyCa(Roots::File(missing))
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
