//! The OpenAPI document, generated from the handlers and wire types.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mandate",
        description = "Runtime authorization for AI agents: decide each tool call as it is attempted.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::decide::decide,
        routes::results::report,
        routes::tasks::start,
        routes::tasks::show,
        routes::tasks::delegate,
        routes::tasks::end,
        routes::tasks::revocations,
        routes::approvals::list,
        routes::approvals::show,
        routes::approvals::approve,
        routes::approvals::deny,
        routes::approvals::withdraw,
        routes::approvals::me,
        routes::approvals::receipts,
        routes::approvals::tasks,
        routes::well_known::protected_resource,
        routes::well_known::jwks,
        routes::token::token,
        routes::ledger::checkpoint,
        routes::ledger::receipt,
        routes::ledger::consistency,
        routes::health::health,
        openapi_json,
        routes::metrics
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &TransportErrors),
    tags(
        (name = "decisions", description = "Decide tool calls, and report what allowed calls returned"),
        (name = "tasks", description = "Tasks, their credentials and delegations, and the revocation list"),
        (name = "approvals", description = "Calls waiting for a person: the queue, approve and deny, and the agent's long poll"),
        (name = "receipts", description = "The signed, tamper-evident log of every decision"),
        (name = "meta", description = "Health, metrics and this document")
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the task endpoints use.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An agent's identity token (JWT from a configured issuer) or a task credential (Biscuit), as each endpoint says",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "approver",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An approver token configured in `[[approvers]]` (by its SHA-256); never an agent's token",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the errors every endpoint can answer before its handler runs:
/// `414` and `431` (the request line or headers over Mandate's limits), and
/// for endpoints that take a body, `408` (it did not arrive in time) and
/// `413` (over `max_body_bytes`). Declared once here rather than on each
/// handler, where they would be repeated and forgotten on the next one.
struct TransportErrors;

impl Modify for TransportErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, Response, ResponseBuilder};
        let error = |description: &str| -> Response {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add("414", "`uri_too_long`: the path and query are over 8 KiB");
                add(
                    "431",
                    "`headers_too_large`: more than 64 header fields, or over 32 KiB of them",
                );
                if has_body {
                    add(
                        "408",
                        "`body_timeout`: the body did not arrive within `body_timeout_ms` of the headers",
                    );
                    add(
                        "413",
                        "`body_too_large`: the body is larger than `max_body_bytes`",
                    );
                }
            }
        }
    }
}

/// The OpenAPI 3 document of the HTTP API.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /v1/openapi.json`: the OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(api_doc())
}
