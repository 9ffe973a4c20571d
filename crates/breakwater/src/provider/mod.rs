//! Providers: the [`Provider`] trait and its adapters. Each adapter
//! translates the canonical (OpenAI-shaped) types to its upstream's wire
//! format and back, streams and errors included.

/// `impl Provider for $ty` for an adapter with inherent `complete` and
/// `open` methods that take the upstream model: the four chat methods
/// delegate to them (awaited in place, not boxed a second time), and the
/// block given supplies the rest.
macro_rules! impl_provider_by_model {
    ($ty:ty { $($rest:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::provider::Provider for $ty {
            async fn chat(
                &self,
                req: &$crate::types::ChatRequest,
                opts: &$crate::provider::CallOptions,
            ) -> $crate::error::Result<$crate::types::ChatResponse> {
                self.complete(&req.model, req, opts).await
            }

            async fn chat_stream(
                &self,
                req: &$crate::types::ChatRequest,
                opts: &$crate::provider::CallOptions,
            ) -> $crate::error::Result<$crate::provider::ChatStream> {
                self.open(&req.model, req, opts).await
            }

            async fn chat_as(
                &self,
                model: &str,
                req: &$crate::types::ChatRequest,
                opts: &$crate::provider::CallOptions,
            ) -> $crate::error::Result<$crate::types::ChatResponse> {
                self.complete(model, req, opts).await
            }

            async fn chat_stream_as(
                &self,
                model: &str,
                req: &$crate::types::ChatRequest,
                opts: &$crate::provider::CallOptions,
            ) -> $crate::error::Result<$crate::provider::ChatStream> {
                self.open(model, req, opts).await
            }

            $($rest)*
        }
    };
}

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

    /// A complete answer from the upstream model `model`; `req`'s own
    /// `model`, `stream` and `stream_options` are ignored. The client calls
    /// this (a target's model differs from the alias the caller named).
    /// The default copies the request with those fields set and calls
    /// [`Provider::chat`]; adapters that can encode the request with the
    /// fields replaced override it and skip the copy (a deep one, on every
    /// attempt).
    async fn chat_as(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse> {
        if req.model == model && req.stream.is_none() && req.stream_options.is_none() {
            return self.chat(req, opts).await;
        }
        let mut r = req.clone();
        model.clone_into(&mut r.model);
        r.stream = None;
        // Only allowed with `stream` (OpenAI refuses it otherwise).
        r.stream_options = None;
        self.chat(&r, opts).await
    }

    /// A streamed answer from the upstream model `model`; `req`'s own
    /// `model` and `stream` are ignored. Like [`Provider::chat_as`], the
    /// default copies the request and calls [`Provider::chat_stream`].
    async fn chat_stream_as(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream> {
        if req.model == model && req.stream == Some(true) {
            return self.chat_stream(req, opts).await;
        }
        let mut r = req.clone();
        model.clone_into(&mut r.model);
        r.stream = Some(true);
        self.chat_stream(&r, opts).await
    }

    /// Embeddings.
    async fn embed(&self, req: &EmbeddingRequest, opts: &CallOptions) -> Result<EmbeddingResponse>;

    /// A cheap health check (a model list), used by active health probes.
    async fn probe(&self, opts: &CallOptions) -> Result<()>;
}

/// A shared provider.
pub type DynProvider = Arc<dyn Provider>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::types::StreamOptions;
    use std::sync::Mutex;

    /// Records what `chat` and `chat_stream` were given; implements
    /// nothing else, like a provider written outside this crate.
    struct Recorder {
        name: Arc<str>,
        seen: Mutex<Vec<(String, Option<bool>, bool)>>,
    }

    impl Recorder {
        fn record(&self, req: &ChatRequest) -> Error {
            let mut seen = self.seen.lock().unwrap();
            seen.push((req.model.clone(), req.stream, req.stream_options.is_some()));
            Error::new(ErrorKind::ServerError, "recorded")
        }
    }

    #[async_trait]
    impl Provider for Recorder {
        fn name(&self) -> &Arc<str> {
            &self.name
        }
        fn kind(&self) -> ProviderKind {
            ProviderKind::Simulator
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                native_json_schema: false,
                assistant_prefill: false,
                embeddings: false,
                tools: false,
            }
        }
        async fn chat(&self, req: &ChatRequest, _: &CallOptions) -> Result<ChatResponse> {
            Err(self.record(req))
        }
        async fn chat_stream(&self, req: &ChatRequest, _: &CallOptions) -> Result<ChatStream> {
            Err(self.record(req))
        }
        async fn embed(&self, _: &EmbeddingRequest, _: &CallOptions) -> Result<EmbeddingResponse> {
            Err(Error::new(ErrorKind::InvalidRequest, "no embeddings"))
        }
        async fn probe(&self, _: &CallOptions) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_default_methods_send_a_copy_with_the_model_and_stream_fields_set() {
        let p = Recorder {
            name: Arc::from("rec"),
            seen: Mutex::new(Vec::new()),
        };
        let mut req = ChatRequest::user("alias", "hi");
        req.stream = Some(true);
        req.stream_options = Some(StreamOptions::default());
        let o = CallOptions::default();
        assert!(p.chat_as("upstream-1", &req, &o).await.is_err());
        assert!(p.chat_stream_as("upstream-2", &req, &o).await.is_err());
        // Already right: passed as it is.
        req.model = "upstream-3".into();
        assert!(p.chat_stream_as("upstream-3", &req, &o).await.is_err());
        let seen = p.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                ("upstream-1".to_string(), None, false),
                ("upstream-2".to_string(), Some(true), true),
                ("upstream-3".to_string(), Some(true), true),
            ]
        );
    }
}
