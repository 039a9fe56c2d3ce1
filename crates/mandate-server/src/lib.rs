//! Mandate's HTTP decision API.
//!
//! The decision itself is a transport-free service, [`Decider`]; the
//! handlers in `routes` parse HTTP, call it (or the task and approval
//! operations) and map errors to statuses once. Background loops (key
//! refresh, policy reload, expiry sweeps) start with [`background::spawn`].
//! [`router`] assembles the axum application around an [`AppState`];
//! [`serve`] binds it and runs until shutdown, with time limits and a cap
//! on connections ([`connections`]). Policies come from a
//! directory ([`policy_dir`]) and are swapped atomically on change
//! ([`reload`]); a failed reload keeps the pack in force. Tasks, the agents'
//! identities and their task credentials are in [`tasks`].

mod approval_flow;
pub mod approvals;
mod auth;
pub mod background;
mod body_limit;
pub mod callers;
pub mod connections;
pub mod credentials;
pub mod decider;
mod error;
mod error_bodies;
mod extract;
mod head_limits;
pub mod journal;
pub mod jwks;
pub mod metrics;
mod openapi;
pub mod policy_dir;
pub mod receipts;
pub mod reload;
pub mod replay;
pub mod resource;
mod routes;
pub mod shadow;
mod state;
pub mod tasks;
pub mod telemetry;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

pub use approvals::{ApprovalSettings, Approvals, ApproverToken, Webhook};
pub use auth::{BearerProblem, bearer_of, bearer_token, credential_refusal};
pub use callers::{CALLER_TOKEN_PREFIX, Callers, CallersError, DecideAccess};
pub use connections::ConnectionLimits;
pub use decider::{Authority, AuthorityError, DecideError, Decided, Decider, Refused};
pub use error::{ApiError, ErrorBody};
pub use mandate_core::api::StartTask;
pub use openapi::api_doc;
pub use receipts::ReceiptSettings;
pub use routes::tasks::{TaskTerms, check_start};
pub use state::{AppState, ReloadStatus};
pub use tasks::{TaskSettings, Tasks, TasksError};

/// Settings the server needs once the binary has resolved its configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How often the policy directory is checked for changes.
    pub reload_interval: Duration,
    /// Timeouts and the cap on connections served at once.
    pub limits: ConnectionLimits,
}

/// The application: routes, then the layers every request passes.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut router = Router::new()
        .route("/v1/decide", post(routes::decide::decide))
        .route("/v1/decisions/{id}/result", post(routes::results::report))
        .route(
            "/v1/tasks",
            post(routes::tasks::start).get(routes::approvals::tasks),
        )
        .route(
            "/v1/tasks/{id}",
            get(routes::tasks::show).delete(routes::tasks::end),
        )
        .route("/v1/tasks/{id}/delegate", post(routes::tasks::delegate))
        .route("/v1/revocations", get(routes::tasks::revocations))
        .route(resource::TOKEN_PATH, post(routes::token::token))
        .route(resource::JWKS_PATH, get(routes::well_known::jwks))
        .route("/v1/approvals", get(routes::approvals::list))
        .route("/v1/approvals/{id}", get(routes::approvals::show))
        .route(
            "/v1/approvals/{id}/approve",
            post(routes::approvals::approve),
        )
        .route("/v1/approvals/{id}/deny", post(routes::approvals::deny))
        .route(
            "/v1/approvals/{id}/withdraw",
            post(routes::approvals::withdraw),
        )
        .route("/v1/approvers/me", get(routes::approvals::me))
        .route("/v1/receipts", get(routes::approvals::receipts))
        .route(
            resource::METADATA_PATH,
            get(routes::well_known::protected_resource),
        );
    // RFC 9728 §3.1: a resource with a path has its metadata under that path.
    let metadata_path = state.tasks().resource().metadata_path();
    if metadata_path != resource::METADATA_PATH {
        router = router.route(metadata_path, get(routes::well_known::protected_resource));
    }
    router
        .route("/v1/health", get(routes::health::health))
        .route("/v1/checkpoint", get(routes::ledger::checkpoint))
        .route("/v1/receipts/{decision_id}", get(routes::ledger::receipt))
        .route("/v1/proofs/consistency", get(routes::ledger::consistency))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(routes::metrics))
        // The web console: static files; its data comes from the API above.
        .route("/ui", get(routes::console::index))
        .route("/ui/", get(routes::console::index))
        .route("/ui/console.js", get(routes::console::script))
        .route("/ui/console.css", get(routes::console::stylesheet))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // Bodies over the limit are refused before they are buffered (413).
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // A body declared over the limit is refused before it is asked for,
        // so `Expect: 100-continue` gets its 413 instead of `100 Continue`.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            move |State(state): State<AppState>, request, next| {
                body_limit::refuse_declared_oversize(state, max_body_bytes, request, next)
            },
        ))
        // A request line or headers over Mandate's limits: 414 or 431 that
        // say which, before anything else looks at the request.
        .layer(axum::middleware::from_fn(head_limits::refuse_large_heads))
        // Whatever answered an error without the API's body (an axum
        // extractor's plain-text rejection, say) gets it here.
        .layer(axum::middleware::map_response(error_bodies::json_errors))
        // An answer given with the body unread ends the connection, and says so.
        .layer(axum::middleware::map_response(
            body_limit::close_when_body_unread,
        ))
        // A bug must not take the process down or leak a trace: answer 500,
        // which every enforcement point treats as deny.
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

/// Binds `config.listen` and serves, within `config.limits`, until ctrl-c
/// or SIGTERM.
pub async fn serve(config: ServerConfig, state: AppState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "mandate is listening");
    let app = router(state, config.max_body_bytes);
    connections::serve(listener, app, config.limits, shutdown_signal()).await
}

/// Completes on ctrl-c or SIGTERM: when every listener stops accepting.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
