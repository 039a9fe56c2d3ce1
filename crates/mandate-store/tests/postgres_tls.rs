//! TLS to a real PostgreSQL serving a certificate made here: `verify-full`
//! connects only when the chain and the name check out, `verify-ca` when the
//! chain does, and the session is encrypted; nothing is written to a
//! database whose certificate failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mandate_store::postgres::PgStore;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use test_postgres::Postgres;

/// A CA's PEM certificate, and a server certificate it signed for
/// `localhost` only (not for 127.0.0.1).
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_pem: server.pem(),
        server_key: server_key.serialize_pem(),
    }
}

/// One TLS-serving server for this file, and the files the tests name.
struct Setup {
    pg: Postgres,
    dir: tempfile::TempDir,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pki = pki();
        let pg = Postgres::start_with_tls(&pki.server_pem, &pki.server_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
        // Another CA, which signed nothing the server has.
        std::fs::write(dir.path().join("other-ca.pem"), pki_of_another_ca()).unwrap();
        Setup { pg, dir }
    })
}

fn pki_of_another_ca() -> String {
    pki().ca_pem
}

impl Setup {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new database's URL with `host` in place of 127.0.0.1 and `query`.
    fn url(&self, host: &str, query: &str) -> String {
        let url = self.pg.database().replace("127.0.0.1", host);
        format!("{url}?{query}")
    }
}

fn encoded(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// Whether every session Mandate holds on the database of `url` runs over
/// TLS (`Some(true)`), none does (`Some(false)`), or there is none, as the
/// server sees them.
fn encrypted(pg: &Postgres, url: &str) -> Option<bool> {
    let plain = url
        .split('?')
        .next()
        .unwrap()
        .replace("localhost", "127.0.0.1");
    let answer = pg.query(
        &plain,
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = current_database() AND a.application_name = 'mandate'",
    );
    match answer.trim() {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_over_tls_when_chain_and_name_check_out() {
    let s = setup();
    let ca = encoded(&s.file("ca.pem"));
    let url = s.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let store = PgStore::connect(&url).await.unwrap();
    assert_eq!(encrypted(&s.pg, &url), Some(true));
    // The store works over it: the schema was migrated, a setting recorded.
    store.agree("test.key", "value").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_not_for_the_host_or_from_another_ca() {
    let s = setup();
    let ca = encoded(&s.file("ca.pem"));
    // The certificate names localhost, not 127.0.0.1.
    let wrong_name = s.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let e = PgStore::connect(&wrong_name).await.unwrap_err().to_string();
    assert!(e.contains("not valid for name \"127.0.0.1\""), "{e}");

    let other = encoded(&s.file("other-ca.pem"));
    let wrong_ca = s.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    let e = PgStore::connect(&wrong_ca).await.unwrap_err().to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let s = setup();
    let ca = encoded(&s.file("ca.pem"));
    let url = s.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let _store = PgStore::connect(&url).await.unwrap();
    assert_eq!(encrypted(&s.pg, &url), Some(true));

    let other = encoded(&s.file("other-ca.pem"));
    let e = PgStore::connect(&s.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sslmode_the_session_is_plain_and_weak_modes_are_refused() {
    let s = setup();
    let url = s.pg.database();
    let _store = PgStore::connect(&url).await.unwrap();
    assert_eq!(encrypted(&s.pg, &url), Some(false));
    let e = PgStore::connect(&s.url("localhost", "sslmode=require"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("verify-full"), "{e}");
}
