//! Mandate's gRPC front ends over the decision service
//! ([`mandate_server::Decider`]):
//!
//! - [`DecisionApi`]: the decision API over gRPC (`mandate.v1.DecisionService`,
//!   protos in `proto/`), with the same checks and the same answers as
//!   `POST /v1/decide`; the HTTP API stays the reference;
//! - [`ExtAuthz`]: Envoy's external authorization service
//!   (`envoy.service.auth.v3.Authorization/Check`), which maps an HTTP
//!   request to a tool call by configured [`Routes`] and decides it under
//!   the caller's task credential.
//!
//! Each parses its own wire format, asks the decider, and maps the answer
//! and its errors to its own terms; nothing about a decision is decided
//! here. [`serve`] runs a set of gRPC services on a listener within
//! [`GrpcLimits`]; [`decision_services`] and [`ext_authz_services`] are
//! what a server puts on its listeners.

mod decision;
mod ext_authz;
mod listener;
mod routes;
mod structs;

pub use decision::DecisionApi;
pub use ext_authz::ExtAuthz;
pub use listener::{GrpcLimits, serve};
pub use routes::{RouteError, RouteSettings, Routes};
pub use tonic::service::Routes as Services;

use mandate_server::Decider;

/// The decision API's services: `mandate.v1.DecisionService` and gRPC
/// server reflection (v1) describing it, for `grpcurl` and other generic
/// clients.
pub fn decision_services(
    decider: Decider,
    max_message_bytes: usize,
) -> Result<Services, tonic_reflection::server::Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(
        Services::new(DecisionApi::new(decider).into_service(max_message_bytes))
            .add_service(reflection),
    )
}

/// The ext_authz service for `routes`.
pub fn ext_authz_services(decider: Decider, routes: Routes, max_message_bytes: usize) -> Services {
    Services::new(ExtAuthz::new(decider, routes).into_service(max_message_bytes))
}

/// The generated protobuf types and service of `mandate.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("mandate.v1");

    /// The encoded descriptors of `proto/`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mandate_descriptor.bin"));
}

/// The metadata key naming why a call got no decision, with the same codes
/// as the HTTP API's `error` field (`invalid_token`, `invalid_request`, …).
pub const ERROR_CODE_METADATA: &str = "mandate-error";
