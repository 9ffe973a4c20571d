//! Google Gemini (`generateContent`, `streamGenerateContent?alt=sse`).

use super::http::{HttpSettings, HttpUpstream};
use super::{CallOptions, Capabilities, ChatStream, ProviderKind};
use crate::error::{Error, Result, TimeoutPhase};
use crate::policy::timeout::{earliest, guard_stream};
use crate::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};
use crate::wire::gemini::{
    BatchEmbedResponse, GenerateContentResponse, StreamDecoder, from_gemini_embed, from_gemini_response,
    to_gemini_embed, to_gemini_request,
};
use futures::StreamExt;
use std::sync::Arc;

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// A Gemini provider.
#[derive(Debug, Clone)]
pub struct Gemini {
    http: HttpUpstream,
}

impl Gemini {
    /// A provider named `name`.
    pub fn new(name: impl Into<Arc<str>>, settings: &HttpSettings) -> Result<Self> {
        let auth = super::http::key_header(settings, "x-goog-api-key", "")?;
        Ok(Gemini {
            http: HttpUpstream::new(name.into(), settings, auth)?,
        })
    }

    fn model_url(&self, model: &str, method: &str) -> Result<http::Uri> {
        // The model is a path segment: refuse anything that could escape it.
        if model.is_empty() || model.contains(['/', '?', '#', '%']) || model.contains("..") {
            return Err(
                Error::invalid_param("model", format!("`{model}` is not a valid Gemini model name"))
                    .with_provider(&self.http.name),
            );
        }
        self.http.endpoint(&format!("/models/{model}:{method}"))
    }
}

impl Gemini {
    /// A complete answer from `model` (in place of `req.model`).
    async fn complete(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse> {
        let clock = self.http.clock(opts.deadline);
        // Encoded at once: the translated request is not held while the call waits.
        let body = self
            .http
            .encode(&to_gemini_request(req).map_err(|e| e.with_provider(&self.http.name))?)?;
        let url = self.model_url(model, "generateContent")?;
        let resp = self
            .http
            .post_encoded(
                url,
                body,
                clock.total_at,
                TimeoutPhase::Total,
                opts.request_id.as_deref(),
            )
            .await?;
        let g: GenerateContentResponse = self.http.read_json(resp, clock.total_at).await?;
        from_gemini_response(g, model).map_err(|e| e.with_provider(&self.http.name))
    }

    /// A streamed answer from `model` (in place of `req.model`).
    async fn open(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream> {
        let clock = self.http.clock(opts.deadline);
        let body = self
            .http
            .encode(&to_gemini_request(req).map_err(|e| e.with_provider(&self.http.name))?)?;
        let url = self.model_url(model, "streamGenerateContent?alt=sse")?;
        let until = earliest(clock.first_token_at, clock.total_at);
        let resp = self
            .http
            .post_encoded(url, body, until, TimeoutPhase::FirstToken, opts.request_id.as_deref())
            .await?;
        let name = self.http.name.clone();
        let mut decoder = StreamDecoder::new(model);
        let chunks = self
            .http
            .events(resp)
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .flat_map(move |item| {
                let out: Vec<Result<_>> = match item {
                    Some(Ok(ev)) => match serde_json::from_str::<GenerateContentResponse>(&ev.data) {
                        Ok(piece) => match decoder.push(piece) {
                            Ok(chunks) => chunks.into_iter().map(Ok).collect(),
                            Err(e) => vec![Err(e.with_provider(&name))],
                        },
                        Err(e) => vec![Err(Error::unparseable(ev.data.as_bytes(), &e).with_provider(&name))],
                    },
                    Some(Err(e)) => vec![Err(e)],
                    None => match decoder.end() {
                        Ok(c) => c.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e.with_provider(&name))],
                    },
                };
                futures::stream::iter(out)
            });
        Ok(guard_stream(
            Box::pin(chunks),
            clock.first_token_at,
            Some(self.http.timeouts.idle()),
            clock.total_at,
        ))
    }
}

impl_provider_by_model!(Gemini {
    fn name(&self) -> &Arc<str> {
        &self.http.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_json_schema: true,
            assistant_prefill: false,
            embeddings: true,
            tools: true,
        }
    }

    async fn embed(&self, req: &EmbeddingRequest, opts: &CallOptions) -> Result<EmbeddingResponse> {
        let clock = self.http.clock(opts.deadline);
        let body = to_gemini_embed(req).map_err(|e| e.with_provider(&self.http.name))?;
        let url = self.model_url(&req.model, "batchEmbedContents")?;
        let resp = self
            .http
            .post_json(
                url,
                &body,
                clock.total_at,
                TimeoutPhase::Total,
                opts.request_id.as_deref(),
            )
            .await?;
        let g: BatchEmbedResponse = self.http.read_json(resp, clock.total_at).await?;
        Ok(from_gemini_embed(g, req))
    }

    async fn probe(&self, opts: &CallOptions) -> Result<()> {
        let until = earliest(
            opts.deadline,
            Some(tokio::time::Instant::now() + self.http.timeouts.first_token()),
        );
        let resp = self
            .http
            .get(self.http.endpoint("/models")?, until, opts.request_id.as_deref())
            .await?;
        let _: serde_json::Value = self.http.read_json(resp, until).await?;
        Ok(())
    }
});
