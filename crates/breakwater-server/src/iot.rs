//! The IoT command system inside the gateway: its routes under `/iot`,
//! authenticated like the API routes, and its LLM calls through the
//! gateway's current client (so a reload changes them too).

use crate::routes::common::{Peer, authorize};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use breakwater_iot::{LlmBackend, LlmReply};
use std::sync::Arc;

/// The gateway's client as the IoT system's language model.
pub struct CurrentClient(pub Arc<AppState>);

#[async_trait::async_trait]
impl LlmBackend for CurrentClient {
    async fn complete(&self, req: breakwater::types::ChatRequest) -> Result<LlmReply, breakwater::Error> {
        let client = self.0.gateway.load().client.clone();
        LlmBackend::complete(&client, req).await
    }
}

/// Virtual-key (or open-mode loopback) authentication for `/iot/*`.
pub async fn guard(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let gw = app.gateway.load_full();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0)
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    if let Err(e) = authorize(&gw, req.headers(), peer, "") {
        return crate::errors::ApiError::new(e, crate::errors::Flavor::OpenAi, &Arc::from("iot")).into_response();
    }
    next.run(req).await
}
