//! Providers: the [`Provider`] trait and its adapters. Each adapter
//! translates the canonical (OpenAI-shaped) types to its upstream's wire
//! format and back, streams and errors included.

pub mod anthropic;
pub mod discover;
pub mod gemini;
mod h1;
pub(crate) use h1::H1Error;
mod http;
pub mod openai;
pub mod simulator;
mod transport;

pub use http::HttpSettings;

use crate::error::Result;
use crate::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::time::Instant;

pub use crate::policy::timeout::ChunkStream as ChatStream;

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI and every OpenAI-compatible server (llama-server, vLLM, Ollama, Groq…).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// The built-in simulator.
    Simulator,
}

impl ProviderKind {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Simulator => "simulator",
        }
    }
}

/// What a provider can do, for routing and structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Enforces `response_format: json_schema` itself.
    pub native_json_schema: bool,
    /// Continues from a trailing assistant message (prefill).
    pub assistant_prefill: bool,
    /// Offers embeddings.
    pub embeddings: bool,
    /// Supports tool calls.
    pub tools: bool,
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The caller's overall deadline; the provider's own timeouts may be shorter.
    pub deadline: Option<Instant>,
    /// Correlation id, forwarded upstream as `x-request-id`.
    pub request_id: Option<Arc<str>>,
}

/// An LLM upstream.
///
/// The request's `model` is the upstream model name. Implementations apply
/// their configured timeouts and the call's deadline, classify every failure
/// into an [`crate::error::ErrorKind`], and return streams that end with an
/// error (never silently) when the upstream breaks off.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The configured name (`providers.<name>`), used in errors and metrics.
    fn name(&self) -> &Arc<str>;

    /// The wire protocol.
    fn kind(&self) -> ProviderKind;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// A complete answer.
    async fn chat(&self, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse>;

    /// A streamed answer. The stream yields chunks, then ends; or yields an
    /// error as its last item.
    async fn chat_stream(&self, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream>;

    /// Embeddings.
    async fn embed(&self, req: &EmbeddingRequest, opts: &CallOptions) -> Result<EmbeddingResponse>;

    /// A cheap health check (a model list), used by active health probes.
    async fn probe(&self, opts: &CallOptions) -> Result<()>;
}

/// A shared provider.
pub type DynProvider = Arc<dyn Provider>;
