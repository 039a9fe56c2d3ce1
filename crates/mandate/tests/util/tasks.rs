//! Tasks over HTTP: an identity provider made up here (an Ed25519 key, its
//! JWKS in a file, JWTs signed with it) and a gateway that trusts it, with
//! the requests and assertions the task tests share.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate_auth::{CredentialVerifier, TaskAuthority};
use mandate_core::api::{DelegateTask, Delegated, StartTask, TaskStarted};
use rand_core::OsRng;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{Launch, Reply, Server};

/// The test identity provider's issuer.
pub const ISSUER: &str = "https://idp.test";
/// The gateway's resource identifier (the identity tokens' audience).
pub const RESOURCE: &str = "https://mandate.test";
/// Where the gateway's protected resource metadata lives.
pub const METADATA: &str = "https://mandate.test/.well-known/oauth-protected-resource";
/// The audience of the task credentials (the default).
pub const AUDIENCE: &str = "mandate";
/// The agent that starts tasks.
pub const ROOT_AGENT: &str = "spiffe://example.org/agent/planner";
/// Its sub-agent (depth 1).
pub const SUB_AGENT: &str = "spiffe://example.org/agent/mailer";
/// The sub-agent's sub-agent (depth 2).
pub const SUB_SUB_AGENT: &str = "spiffe://example.org/agent/reader";
/// The person the agents act for (the tokens' `obo` claim).
pub const HUMAN: &str = "alice@example.com";

/// Seconds since the epoch, `offset` from now.
pub fn epoch(offset: i64) -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(now.as_secs()).unwrap() + offset
}

/// The identity provider: an Ed25519 key that signs agents' JWTs.
pub struct Idp {
    pub key: ed25519_dalek::SigningKey,
    pub kid: &'static str,
}

impl Idp {
    pub fn new(kid: &'static str) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::generate(&mut OsRng),
            kid,
        }
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        }]})
    }

    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ed_der(self.key.to_pkcs8_der().unwrap().as_bytes())
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// A valid identity token of `sub`, acting for alice.
    pub fn token(&self, sub: &str) -> String {
        self.sign(&claims(sub))
    }
}

/// The claims of a valid identity token of `sub`.
pub fn claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": RESOURCE,
        "iat": epoch(-5), "exp": epoch(300), "obo": HUMAN, "team": "support",
    })
}

/// A running gateway that trusts `idp`, with its data directory.
pub struct Gateway {
    pub server: Server,
    pub data: PathBuf,
    pub dir: TempDir,
    pub idp: Idp,
}

/// The config file: one OIDC issuer (audiences left to the default, the
/// resource), the resource, and the lines of `extra`.
pub fn write_config(dir: &Path, idp: &Idp, extra: &str) -> PathBuf {
    let jwks = dir.join("idp-jwks.json");
    std::fs::write(&jwks, idp.jwks().to_string()).unwrap();
    let config = dir.join("mandate.toml");
    std::fs::write(
        &config,
        format!(
            "resource = \"{RESOURCE}\"\n{extra}\n\n[[issuers]]\nissuer = \"{ISSUER}\"\njwks_file = {jwks:?}\non_behalf_of_claim = \"obo\"\n",
        ),
    )
    .unwrap();
    config
}

/// A gateway trusting a new identity provider, with default settings.
pub fn gateway() -> Gateway {
    gateway_with("")
}

/// A gateway trusting a new identity provider, with the config lines of
/// `extra`.
pub fn gateway_with(extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let idp = Idp::new("idp-1");
    let config = write_config(dir.path(), &idp, extra);
    let data = dir.path().join("data");
    let server = Launch::serve(&data).arg("--config").arg(&config).start();
    Gateway {
        server,
        data,
        dir,
        idp,
    }
}

/// A task for `intent` calling `tools` for `ttl_seconds`: no labels, no
/// params, no delegation (set them with `StartTask { .., ..task_of(..) }`).
pub fn task_of(intent: &str, tools: &[&str], ttl_seconds: u64) -> StartTask {
    StartTask {
        intent: intent.to_owned(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        labels: Vec::new(),
        params: serde_json::Map::new(),
        ttl_seconds,
        max_depth: 0,
        prompt: None,
        grounded_values: Vec::new(),
    }
}

/// A delegation of `tools` to `agent`, keeping every label, for as long as
/// the delegating credential lives.
pub fn delegation_of(agent: &str, tools: &[&str]) -> DelegateTask {
    DelegateTask {
        agent: agent.to_owned(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        labels: None,
        ttl_seconds: None,
    }
}

impl Gateway {
    /// Starts `task` with `agent`'s identity token, asserting 201: the
    /// server's answer, read as the API's type.
    pub fn start_task_of(&self, agent: &str, task: &StartTask) -> TaskStarted {
        let reply = self.start(&self.idp.token(agent), &serde_json::to_value(task).unwrap());
        assert_eq!(reply.status, 201, "start a task: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    /// Delegates task `id` under `credential` as `delegation` says,
    /// asserting 201: the server's answer, read as the API's type.
    pub fn delegate_task(
        &self,
        id: &str,
        credential: &str,
        delegation: &DelegateTask,
    ) -> Delegated {
        let reply = self.delegate(id, credential, &serde_json::to_value(delegation).unwrap());
        assert_eq!(reply.status, 201, "delegate: {}", reply.body);
        serde_json::from_str(&reply.body).unwrap()
    }

    pub fn start(&self, token: &str, body: &Value) -> Reply {
        self.server
            .call(Method::POST, "/v1/tasks", Some(token), Some(body))
    }

    pub fn show(&self, id: &str, token: &str) -> Reply {
        self.server
            .call(Method::GET, &format!("/v1/tasks/{id}"), Some(token), None)
    }

    pub fn delegate(&self, id: &str, credential: &str, body: &Value) -> Reply {
        self.server.call(
            Method::POST,
            &format!("/v1/tasks/{id}/delegate"),
            Some(credential),
            Some(body),
        )
    }

    pub fn end(&self, id: &str, token: &str) -> Reply {
        self.server.call(
            Method::DELETE,
            &format!("/v1/tasks/{id}"),
            Some(token),
            None,
        )
    }

    pub fn metadata(&self) -> Value {
        let reply = self.server.get("/.well-known/oauth-protected-resource");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// A verifier built from the public key the server publishes.
    pub fn verifier(&self) -> CredentialVerifier {
        let meta = self.metadata();
        let key = meta["mandate_task_credentials"]["public_key"]
            .as_str()
            .unwrap();
        CredentialVerifier::from_public_key_hex(key, AUDIENCE).unwrap()
    }

    /// The task signing key the server generated, as an attacker who stole
    /// it would hold it (for tests that need Mandate-signed tokens).
    pub fn authority(&self) -> TaskAuthority {
        let hex = std::fs::read_to_string(self.data.join("keys").join("tasks.key")).unwrap();
        TaskAuthority::from_private_key_hex(&hex).unwrap()
    }

    /// Rows of `table` in the state database, read beside the server.
    pub fn rows(&self, table: &str) -> i64 {
        let conn = rusqlite::Connection::open_with_flags(
            self.data.join("state.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    }

    /// `POST /v1/decide` of `request` under the task credential `credential`.
    pub fn decide(&self, credential: &str, request: &Value) -> Reply {
        self.server
            .call(Method::POST, "/v1/decide", Some(credential), Some(request))
    }

    /// `POST /v1/decisions/{decision_id}/result` with `credential`.
    pub fn report(&self, decision_id: &str, credential: &str, result: &Value) -> Reply {
        self.server.call(
            Method::POST,
            &format!("/v1/decisions/{decision_id}/result"),
            Some(credential),
            Some(result),
        )
    }

    /// The receipt of decision `decision_id` (asserting 200).
    pub fn receipt(&self, decision_id: &str) -> Value {
        let reply = self.server.get(&format!("/v1/receipts/{decision_id}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["receipt"].clone()
    }

    /// The revocation list (asserting 200).
    pub fn revocations(&self) -> Vec<Value> {
        let reply = self.server.get("/v1/revocations");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["revocations"].as_array().unwrap().clone()
    }
}

/// The string at `key` of `v`; panics without one.
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

/// Asserts a 401/403 with its body code and a `WWW-Authenticate` challenge
/// naming the resource metadata, the RFC 6750 `error` and a description
/// containing `reason`.
pub fn assert_refused(reply: &Reply, status: u16, code: &str, error: &str, reason: &str) {
    reply.assert_error(status, code);
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate on {status}: {}", reply.body));
    let prefix =
        format!("Bearer resource_metadata=\"{METADATA}\", error=\"{error}\", error_description=\"");
    assert!(challenge.starts_with(&prefix), "{challenge}");
    let description = challenge
        .strip_prefix(&prefix)
        .unwrap()
        .strip_suffix('"')
        .unwrap();
    assert!(
        description.contains(reason),
        "`{reason}` not in the description: {challenge}"
    );
    assert!(
        text(&reply.json(), "message").contains(reason),
        "`{reason}` not in the message: {}",
        reply.body
    );
}

pub fn assert_invalid_token(reply: &Reply, reason: &str) {
    assert_refused(reply, 401, "invalid_token", "invalid_token", reason);
}

pub fn assert_insufficient_scope(reply: &Reply, reason: &str) {
    assert_refused(
        reply,
        403,
        "insufficient_scope",
        "insufficient_scope",
        reason,
    );
}
