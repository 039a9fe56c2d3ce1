//! The OpenAPI document, generated from the handlers and wire types.

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
        routes::openapi_json,
        routes::metrics
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
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

/// The OpenAPI 3 document of the HTTP API.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
