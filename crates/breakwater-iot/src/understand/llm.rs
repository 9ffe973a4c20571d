//! The LLM behind understanding, as a small trait: today a plain
//! [`breakwater::provider::DynProvider`]; tomorrow the library's assembled
//! resilient client, which reports which target answered, after how many
//! attempts, and whether a degraded path did.

use async_trait::async_trait;
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
