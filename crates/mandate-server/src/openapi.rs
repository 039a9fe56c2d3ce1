//! The OpenAPI document, generated from the handlers and wire types.

use utoipa::OpenApi;

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
        routes::ledger::checkpoint,
        routes::ledger::receipt,
        routes::ledger::consistency,
        routes::health::health,
        routes::openapi_json,
        routes::metrics
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "decisions", description = "Decide tool calls"),
        (name = "receipts", description = "The signed, tamper-evident log of every decision"),
        (name = "meta", description = "Health, metrics and this document")
    )
)]
struct ApiDoc;

/// The OpenAPI 3 document of the HTTP API.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
