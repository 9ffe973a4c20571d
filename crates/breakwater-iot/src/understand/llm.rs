//! The LLM behind understanding, as a small trait, implemented for a plain
//! [`breakwater::provider::DynProvider`] and for the library's assembled
//! resilient [`breakwater::client::Client`], which reports which target
//! answered, after how many attempts, and whether a degraded path did.

use async_trait::async_trait;
use breakwater::client::{Client, RequestOptions};
use breakwater::provider::{CallOptions, DynProvider};
use breakwater::types::{ChatRequest, ChatResponse};
use std::sync::Arc;

/// An answer plus what is known about how it was obtained.
#[derive(Debug, Clone)]
pub struct LlmReply {
    /// The response.
    pub response: ChatResponse,
    /// `provider/model` that answered.
    pub target: String,
    /// Upstream attempts it took (1 = first try).
    pub attempts: u32,
    /// Whether a fallback or otherwise degraded path answered.
    pub degraded: bool,
}

/// Something that completes chat requests.
#[async_trait]
pub trait LlmBackend: Send + Sync + 'static {
    /// Sends `req` (its `model` is the alias or upstream model name the
    /// backend understands) and returns the answer or a classified error.
    async fn complete(&self, req: ChatRequest) -> Result<LlmReply, breakwater::Error>;
}

/// A shared backend.
pub type DynBackend = Arc<dyn LlmBackend>;

#[async_trait]
impl LlmBackend for DynProvider {
    async fn complete(&self, req: ChatRequest) -> Result<LlmReply, breakwater::Error> {
        let response = self.chat(&req, &CallOptions::default()).await?;
        let model = if response.model.is_empty() {
            req.model.clone()
        } else {
            response.model.clone()
        };
        Ok(LlmReply {
            target: format!("{}/{}", self.name(), model),
            response,
            attempts: 1,
            degraded: false,
        })
    }
}

/// Through the resilient client: `req.model` is the alias (`iot.model`);
/// retries, failover, breakers and the degradation chain happen inside, and
/// the reply says where the answer came from.
#[async_trait]
impl LlmBackend for Client {
    async fn complete(&self, req: ChatRequest) -> Result<LlmReply, breakwater::Error> {
        let alias = req.model.clone();
        let out = self.chat(req, RequestOptions::default()).await?;
        Ok(LlmReply {
            response: (*out.response).clone(),
            target: out.meta.target.as_deref().map(str::to_string).unwrap_or(alias),
            attempts: u32::try_from(out.meta.upstream_attempts()).unwrap_or(u32::MAX),
            degraded: out.meta.degraded.is_some(),
        })
    }
}
