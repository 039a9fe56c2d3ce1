//! End-to-end tests of the token exchange (RFC 8693, `POST /v1/token`) on
//! the real `mandate serve`: a delegated sub-agent exchanges its task
//! credential, after an allowed decision, for a JWT for one downstream tool;
//! the JWT is checked with `jsonwebtoken` against the JWKS the server
//! publishes; and every refusal has its OAuth error and mints nothing.

// Tests assert by panicking, and index JSON freely.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod util;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};
use util::tasks::{Gateway, HUMAN, RESOURCE, ROOT_AGENT, SUB_AGENT, gateway_with, text};
use util::{Reply, openapi_validator};

const MAIL: &str = "https://tools.test/mail";
const WEB: &str = "https://tools.test/web";
const QUICK: &str = "https://tools.test/quick";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const CREDENTIAL_TYPE: &str = "urn:mandate:token-type:task-credential";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Three downstream resources: mail (60 s), web (default lifetime), and one
/// whose tokens live a second.
const DOWNSTREAM: &str = r#"
[[downstream]]
resource = "https://tools.test/mail"
tools = ["mail/send_email", "mail/read_inbox", "mail/delete_email"]
ttl_seconds = 60

[[downstream]]
resource = "https://tools.test/web"
tools = ["web/fetch_url"]

[[downstream]]
resource = "https://tools.test/quick"
tools = ["mail/read_inbox"]
ttl_seconds = 1
"#;

fn gateway() -> Gateway {
    gateway_with(DOWNSTREAM)
}

/// A task of the root agent with three tools, one delegation hop allowed;
/// returns its id and root credential.
fn start(gw: &Gateway) -> (String, String) {
    let reply = gw.start(
        &gw.idp.token(ROOT_AGENT),
        &json!({
            "intent": "answer customer questions about their orders",
            "tools": ["mail/read_inbox", "mail/send_email", "web/fetch_url"],
            "params": { "allowed_recipients": ["carol@example.com"] },
            "ttl_seconds": 600,
            "max_depth": 1
        }),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
    let body = reply.json();
    (
        text(&body, "task_id").to_owned(),
        text(&body, "credential").to_owned(),
    )
}

/// The sub-agent's credential: the two mail tools, `ttl` seconds if given.
fn delegate(gw: &Gateway, task_id: &str, root: &str, ttl: Option<u64>) -> Value {
    let mut body = json!({ "agent": SUB_AGENT, "tools": ["mail/read_inbox", "mail/send_email"] });
    if let Some(ttl) = ttl {
        body["ttl_seconds"] = json!(ttl);
    }
    let reply = gw.delegate(task_id, root, &body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()
}

/// `agent` sends a mail to `to` under `credential`; returns the decision.
/// The mail system is the organisation's own (closed world): an allowed
/// call of an open-world tool labels the session `untrusted` at once, and
/// the example pack would then ask a person for every later send, which
/// is not what these tests are about.
fn send(gw: &Gateway, credential: &str, agent: &str, to: &str) -> Value {
    gw.decide(
        credential,
        &json!({
            "principal": { "id": agent },
            "action": {
                "server": "mail", "tool": "send_email",
                "annotations": { "readOnlyHint": false, "destructiveHint": false, "openWorldHint": false }
            },
            "arguments": { "to": to, "subject": "Your order", "body": "It shipped." }
        }),
    )
    .decision()
}

/// `agent` calls `server/tool` (read-only, closed world) under `credential`.
fn read(gw: &Gateway, credential: &str, agent: &str, server: &str, tool: &str) -> Value {
    gw.decide(
        credential,
        &json!({
            "principal": { "id": agent },
            "action": {
                "server": server, "tool": tool,
                "annotations": { "readOnlyHint": true, "openWorldHint": false }
            }
        }),
    )
    .decision()
}

/// The root agent uses both mail tools first (allowed: it sends to carol),
/// so that the sub-agent's calls are not a first use of a tool in the task
/// (which the example pack steps up); returns the root's mail decision.
fn warm_up(gw: &Gateway, root: &str) -> Value {
    let sent = send(gw, root, ROOT_AGENT, "carol@example.com");
    assert_eq!(sent["decision"], "allow", "{sent}");
    let read = read(gw, root, ROOT_AGENT, "mail", "read_inbox");
    assert_eq!(read["decision"], "allow", "{read}");
    sent
}

/// The form of an exchange of `credential` for `resource` after decision
/// `decision_id`.
fn form(credential: &str, resource: &str, decision_id: &str) -> Vec<(String, String)> {
    [
        ("grant_type", GRANT),
        ("subject_token", credential),
        ("subject_token_type", CREDENTIAL_TYPE),
        ("resource", resource),
        ("decision_id", decision_id),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// `form` with `name` set to `value` (added if absent), or removed.
fn with(mut form: Vec<(String, String)>, name: &str, value: Option<&str>) -> Vec<(String, String)> {
    form.retain(|(k, _)| k != name);
    if let Some(value) = value {
        form.push((name.to_owned(), value.to_owned()));
    }
    form
}

/// `application/x-www-form-urlencoded` of the pairs.
fn encode(form: &[(String, String)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(form);
    url.query().unwrap_or_default().to_owned()
}

fn exchange(gw: &Gateway, form: &[(String, String)]) -> Reply {
    gw.server.post_raw(
        "/v1/token",
        encode(form),
        Some("application/x-www-form-urlencoded"),
        &[],
    )
}

/// Asserts an OAuth error `{"error", "error_description"}` with `status`
/// whose description contains `reason`, answered with `no-store`.
fn assert_oauth_error(reply: &Reply, status: u16, error: &str, reason: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "error_description"], "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        text(&body, "error_description").contains(reason),
        "`{reason}` not in {body}"
    );
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
}

/// The JWKS the server publishes, as a verifier reads it.
fn published_keys(gw: &Gateway) -> JwkSet {
    let reply = gw.server.get("/.well-known/jwks.json");
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// Verifies `token` with the published JWKS, for audience `aud`; returns its
/// header's `typ` and its claims.
fn verify(gw: &Gateway, token: &str, aud: &str) -> (Option<String>, Value) {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let keys = published_keys(gw);
    let kid = header.kid.clone().expect("a kid");
    let jwk = keys.find(&kid).expect("the token's kid is published");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[RESOURCE]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "aud", "iss", "sub", "jti"]);
    let data =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap_or_else(|e| panic!("the token does not verify: {e}"));
    (header.typ, data.claims)
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn a_sub_agent_exchanges_its_credential_for_a_narrowed_jwt() {
    let gw = gateway();
    let (task_id, root) = start(&gw);
    let sub = delegate(&gw, &task_id, &root, None);
    let sub_credential = text(&sub, "credential");
    warm_up(&gw, &root);

    // The metadata says where to exchange and where the keys are.
    let meta = gw.metadata();
    assert_eq!(
        meta["jwks_uri"],
        format!("{RESOURCE}/.well-known/jwks.json")
    );
    assert_eq!(
        meta["mandate_token_exchange"],
        json!({
            "token_endpoint": format!("{RESOURCE}/v1/token"),
            "issuer": RESOURCE,
            "subject_token_type": CREDENTIAL_TYPE,
        })
    );

    let decided = send(&gw, sub_credential, SUB_AGENT, "carol@example.com");
    assert_eq!(decided["decision"], "allow", "{decided}");
    let decision_id = text(&decided, "decision_id");
    let request = with(
        form(sub_credential, MAIL, decision_id),
        "scope",
        Some("mail/send_email"),
    );
    let request = with(request, "requested_token_type", Some(JWT_TYPE));
    let before = Utc::now().timestamp();
    let reply = exchange(&gw, &request);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    let answer = reply.json();
    assert_eq!(answer["issued_token_type"], JWT_TYPE);
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["scope"], "mail/send_email");
    let expires_in = answer["expires_in"].as_u64().unwrap();
    assert!((58..=60).contains(&expires_in), "{expires_in}");

    // An independent verifier, with the published keys only.
    let (typ, claims) = verify(&gw, text(&answer, "access_token"), MAIL);
    assert_eq!(typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims["iss"], RESOURCE);
    assert_eq!(claims["aud"], MAIL);
    // The person is the subject; the actors nest, current holder outermost.
    assert_eq!(claims["sub"], HUMAN);
    assert_eq!(
        claims["act"],
        json!({ "sub": SUB_AGENT, "act": { "sub": ROOT_AGENT } })
    );
    assert_eq!(claims["client_id"], SUB_AGENT);
    assert_eq!(claims["scope"], "mail/send_email");
    assert_eq!(claims["task_id"], task_id.as_str());
    assert_eq!(claims["decision_id"], decision_id);
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(
        iat >= before - 1 && iat <= Utc::now().timestamp(),
        "{claims}"
    );
    assert_eq!(nbf, iat);
    assert_eq!(exp - iat, 60, "{claims}");
    assert_eq!(
        uuid::Uuid::parse_str(text(&claims, "jti"))
            .unwrap()
            .get_version_num(),
        7
    );

    // Another resource's audience does not accept it.
    let keys = published_keys(&gw);
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[WEB]);
    let jwk = &keys.keys[0];
    assert!(
        jsonwebtoken::decode::<Value>(
            text(&answer, "access_token"),
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation
        )
        .is_err()
    );

    // A decision is exchanged once.
    assert_oauth_error(
        &exchange(&gw, &request),
        400,
        "invalid_grant",
        "exchanged for a token already",
    );

    // Without `scope`, the token is for the decided tool alone.
    let read_decision = read(&gw, sub_credential, SUB_AGENT, "mail", "read_inbox");
    let reply = exchange(
        &gw,
        &form(sub_credential, MAIL, text(&read_decision, "decision_id")),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["scope"], "mail/read_inbox");

    // The root agent's token for the same person has the root agent as its
    // only actor.
    let root_decision = read(&gw, &root, ROOT_AGENT, "web", "fetch_url");
    let reply = exchange(&gw, &form(&root, WEB, text(&root_decision, "decision_id")));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (_, claims) = verify(&gw, text(&reply.json(), "access_token"), WEB);
    assert_eq!(claims["sub"], HUMAN);
    assert_eq!(claims["act"], json!({ "sub": ROOT_AGENT }));
    assert_eq!(claims["client_id"], ROOT_AGENT);
    assert_eq!(claims["scope"], "web/fetch_url");

    // Three tokens, three exchanges recorded.
    assert_eq!(gw.rows("token_exchanges"), 3);
}

#[test]
fn a_token_never_outlives_the_credential() {
    let gw = gateway();
    let (task_id, root) = start(&gw);
    let sub = delegate(&gw, &task_id, &root, Some(20));
    let credential = text(&sub, "credential");
    warm_up(&gw, &root);
    let expires_at = time(&sub["expires_at"]);
    let decided = send(&gw, credential, SUB_AGENT, "carol@example.com");
    let reply = exchange(&gw, &form(credential, MAIL, text(&decided, "decision_id")));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert!(answer["expires_in"].as_u64().unwrap() <= 20, "{answer}");
    let (_, claims) = verify(&gw, text(&answer, "access_token"), MAIL);
    assert_eq!(claims["exp"].as_i64().unwrap(), expires_at.timestamp());
}

#[test]
fn every_refusal_has_its_error_and_mints_nothing() {
    let gw = gateway();
    let (task_id, root) = start(&gw);
    let sub = delegate(&gw, &task_id, &root, None);
    let sub_credential = text(&sub, "credential").to_owned();
    let parents = warm_up(&gw, &root);
    let allowed = send(&gw, &sub_credential, SUB_AGENT, "carol@example.com");
    let allowed_id = text(&allowed, "decision_id").to_owned();
    let valid = form(&sub_credential, MAIL, &allowed_id);
    let mut replies: Vec<(u16, Reply)> = Vec::new();
    let mut refused = |reply: Reply, status: u16, error: &str, reason: &str| {
        assert_oauth_error(&reply, status, error, reason);
        replies.push((status, reply));
    };

    // The request itself.
    refused(
        exchange(
            &gw,
            &with(valid.clone(), "grant_type", Some("client_credentials")),
        ),
        400,
        "unsupported_grant_type",
        "`client_credentials` is not supported",
    );
    for missing in [
        "grant_type",
        "subject_token",
        "subject_token_type",
        "resource",
        "decision_id",
    ] {
        refused(
            exchange(&gw, &with(valid.clone(), missing, None)),
            400,
            "invalid_request",
            &format!("`{missing}` is required"),
        );
    }
    let mut twice = valid.clone();
    twice.push(("decision_id".to_owned(), allowed_id.clone()));
    refused(
        exchange(&gw, &twice),
        400,
        "invalid_request",
        "more than once",
    );
    refused(
        gw.server.post_raw(
            "/v1/token",
            json!({ "grant_type": GRANT }).to_string(),
            Some("application/json"),
            &[],
        ),
        400,
        "invalid_request",
        "application/x-www-form-urlencoded",
    );
    refused(
        exchange(
            &gw,
            &with(
                valid.clone(),
                "requested_token_type",
                Some("urn:ietf:params:oauth:token-type:access_token"),
            ),
        ),
        400,
        "invalid_request",
        "`requested_token_type`",
    );
    refused(
        exchange(&gw, &with(valid.clone(), "actor_token", Some("x"))),
        400,
        "invalid_request",
        "`actor_token` is not accepted",
    );
    // Client authentication is refused, whatever the scheme.
    let reply = gw.server.post_raw(
        "/v1/token",
        encode(&valid),
        Some("application/x-www-form-urlencoded"),
        &[("authorization", &format!("Bearer {sub_credential}"))],
    );
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"mandate\"")
    );
    refused(reply, 401, "invalid_client", "authenticates no client");

    // The target.
    refused(
        exchange(
            &gw,
            &with(valid.clone(), "resource", Some("https://tools.test/nope")),
        ),
        400,
        "invalid_target",
        "`https://tools.test/nope` is not a downstream resource",
    );
    refused(
        exchange(
            &gw,
            &with(valid.clone(), "resource", Some("https://tools.test/mail/")),
        ),
        400,
        "invalid_target",
        "is not a downstream resource",
    );
    refused(
        exchange(&gw, &with(valid.clone(), "audience", Some(WEB))),
        400,
        "invalid_target",
        "different targets",
    );

    // The subject token: a JWT, whatever type it claims, and garbage.
    let jwt = gw.idp.token(SUB_AGENT);
    refused(
        exchange(&gw, &with(valid.clone(), "subject_token", Some(&jwt))),
        400,
        "invalid_request",
        "identity tokens are not exchanged",
    );
    refused(
        exchange(
            &gw,
            &with(
                with(valid.clone(), "subject_token", Some(&jwt)),
                "subject_token_type",
                Some(JWT_TYPE),
            ),
        ),
        400,
        "invalid_request",
        "only task credentials are exchanged",
    );
    refused(
        exchange(&gw, &with(valid.clone(), "subject_token", Some("AAAA"))),
        400,
        "invalid_request",
        "the subject token is refused",
    );

    // The decision: unknown, denied, of the parent's credential, of another
    // task, for a tool the resource does not serve, too old.
    refused(
        exchange(
            &gw,
            &with(
                valid.clone(),
                "decision_id",
                Some("01a2088f-0000-7000-8000-000000000000"),
            ),
        ),
        400,
        "invalid_grant",
        "no decision `01a2088f-0000-7000-8000-000000000000`",
    );
    refused(
        exchange(
            &gw,
            &with(valid.clone(), "decision_id", Some(&"d".repeat(129))),
        ),
        400,
        "invalid_request",
        "`decision_id` is not a decision id",
    );
    let denied = send(&gw, &sub_credential, SUB_AGENT, "mallory@evil.example");
    assert_eq!(denied["decision"], "deny", "{denied}");
    refused(
        exchange(
            &gw,
            &form(&sub_credential, MAIL, text(&denied, "decision_id")),
        ),
        400,
        "invalid_grant",
        "was `deny`",
    );
    refused(
        exchange(
            &gw,
            &form(&sub_credential, MAIL, text(&parents, "decision_id")),
        ),
        400,
        "invalid_grant",
        "not made under the credential presented",
    );
    let (_, other_root) = start(&gw);
    let others = send(&gw, &other_root, ROOT_AGENT, "carol@example.com");
    refused(
        exchange(&gw, &form(&root, MAIL, text(&others, "decision_id"))),
        400,
        "invalid_grant",
        "made under another task",
    );
    let fetch = read(&gw, &root, ROOT_AGENT, "web", "fetch_url");
    refused(
        exchange(&gw, &form(&root, MAIL, text(&fetch, "decision_id"))),
        400,
        "invalid_target",
        "does not serve",
    );
    let quick = read(&gw, &sub_credential, SUB_AGENT, "mail", "read_inbox");
    std::thread::sleep(Duration::from_millis(2100));
    refused(
        exchange(
            &gw,
            &form(&sub_credential, QUICK, text(&quick, "decision_id")),
        ),
        400,
        "invalid_grant",
        "is older than 1 s",
    );

    // The scope: wider than the decided call (another tool the credential
    // and the resource both allow was not decided), wider than the
    // credential (the resource serves mail/delete_email, the sub-agent does
    // not hold it), without the decided tool, or malformed.
    refused(
        exchange(
            &gw,
            &with(
                valid.clone(),
                "scope",
                Some("mail/send_email mail/read_inbox"),
            ),
        ),
        400,
        "invalid_scope",
        "mail/read_inbox",
    );
    refused(
        exchange(
            &gw,
            &with(
                valid.clone(),
                "scope",
                Some("mail/send_email mail/delete_email"),
            ),
        ),
        400,
        "invalid_scope",
        "mail/delete_email",
    );
    refused(
        exchange(&gw, &with(valid.clone(), "scope", Some("mail/read_inbox"))),
        400,
        "invalid_scope",
        "must include `mail/send_email`",
    );
    refused(
        exchange(&gw, &with(valid.clone(), "scope", Some("send_email"))),
        400,
        "invalid_scope",
        "`server/tool`",
    );

    // Nothing was minted or recorded; the allowed decision is still good.
    assert_eq!(gw.rows("token_exchanges"), 0);
    let ok = exchange(&gw, &valid);
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Once the task ends, its credentials are refused here too.
    let another = send(&gw, &sub_credential, SUB_AGENT, "carol@example.com");
    let ended = gw.end(&task_id, &root);
    assert_eq!(ended.status, 200, "{}", ended.body);
    refused(
        exchange(
            &gw,
            &form(&sub_credential, MAIL, text(&another, "decision_id")),
        ),
        400,
        "invalid_request",
        "revoked",
    );
    assert_eq!(gw.rows("token_exchanges"), 1);

    // Every answer matches the OpenAPI document.
    let doc = gw.server.get("/v1/openapi.json").json();
    let operation = &doc["paths"]["/v1/token"]["post"];
    assert!(
        operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
            .is_object(),
        "{operation}"
    );
    replies.push((200, ok));
    for (status, reply) in &replies {
        let schema = &operation["responses"][status.to_string().as_str()]["content"]["application/json"]
            ["schema"];
        let validator = openapi_validator(&doc, schema);
        let errors: Vec<String> = validator
            .iter_errors(&reply.json())
            .map(|e| format!("{e} (at `{}`)", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{status}: {errors:?}\n{}", reply.body);
    }
    let jwks = gw.server.get("/.well-known/jwks.json");
    let schema = &doc["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert!(openapi_validator(&doc, schema).is_valid(&jwks.json()));
    let meta = gw.server.get("/.well-known/oauth-protected-resource");
    let schema = &doc["paths"]["/.well-known/oauth-protected-resource"]["get"]["responses"]["200"]
        ["content"]["application/json"]["schema"];
    assert!(openapi_validator(&doc, schema).is_valid(&meta.json()));
    assert_eq!(
        gw.server.request(Method::GET, "/v1/token").status,
        405,
        "GET /v1/token"
    );
}

#[test]
fn without_downstream_resources_every_exchange_is_invalid_target() {
    let gw = gateway_with("");
    let (_, root) = start(&gw);
    let decided = send(&gw, &root, ROOT_AGENT, "carol@example.com");
    assert_oauth_error(
        &exchange(&gw, &form(&root, MAIL, text(&decided, "decision_id"))),
        400,
        "invalid_target",
        "is not a downstream resource",
    );
    // The key is published all the same, and stable across restarts of the
    // same data directory (it is derived from the task key).
    let keys = published_keys(&gw);
    assert_eq!(keys.keys.len(), 1);
}

#[test]
fn a_bad_downstream_configuration_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    for (config, message) in [
        (
            "[[downstream]]\nresource = \"tools\"\ntools = [\"mail/send_email\"]\n",
            "must be an absolute URI",
        ),
        (
            "[[downstream]]\nresource = \"https://t.test\"\ntools = [\"send_email\"]\n",
            "is not `server/tool`",
        ),
        (
            "[[downstream]]\nresource = \"https://t.test\"\ntools = [\"m/s\"]\nttl_seconds = 7200\n",
            "must be from 1 to 3600",
        ),
        (
            "[[downstream]]\nresource = \"https://t.test\"\ntools = [\"m/s\"]\n[[downstream]]\nresource = \"https://t.test\"\ntools = [\"m/t\"]\n",
            "configured twice",
        ),
    ] {
        let path = dir.path().join("mandate.toml");
        std::fs::write(&path, config).unwrap();
        let (status, stderr) = util::Launch::serve(&dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .run_to_exit();
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(message), "`{message}` not in {stderr}");
    }
    // The same list from the environment.
    let (status, stderr) = util::Launch::serve(&dir.path().join("data"))
        .env(
            "MANDATE_DOWNSTREAM",
            r#"[{resource = "mail", tools = ["mail/send_email"]}]"#,
        )
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid `downstream` entry 1"), "{stderr}");
}
