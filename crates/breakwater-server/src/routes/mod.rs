//! The router.

pub mod admin;
pub mod anthropic;
pub mod common;
pub mod openai;

#[cfg(test)]
mod future_sizes;

pub(crate) use openai::hold_settle as openai_settle;

use crate::dashboard;
use crate::errors::{ApiError, Flavor};
use crate::state::AppState;
use axum::Router;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use breakwater::error::{Error, ErrorKind};
use std::sync::Arc;

async fn not_found(uri: Uri) -> Response {
    let e = Error::new(ErrorKind::NotFound, format!("no route for {}", uri.path())).with_code("unknown_route");
    ApiError::new(e, Flavor::OpenAi, &Arc::from("none")).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let e = Error::new(
        ErrorKind::InvalidRequest,
        format!("{method} is not allowed on {}", uri.path()),
    )
    .with_code("method_not_allowed");
    ApiError::new(e, Flavor::OpenAi, &Arc::from("none")).into_response()
}

/// Every route of the gateway.
pub fn router(app: Arc<AppState>) -> Router {
    let mut r = api(app.clone());
    if let Some(iot) = app.iot.get() {
        let iot_routes = iot
            .router()
            .layer(axum::middleware::from_fn_with_state(app.clone(), crate::iot::guard));
        r = r.merge(iot_routes);
    }
    r
}

fn api(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/cache", delete(admin::invalidate))
        .route("/admin/reload", post(admin::reload))
        .route("/dashboard", get(dashboard::page).post(dashboard::sign_in_form))
        .route("/dashboard/events", get(dashboard::events))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}
