//! Anthropic Messages API.

use super::http::{HttpSettings, HttpUpstream};
use super::{CallOptions, Capabilities, ChatStream, ProviderKind};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase, TransportCause};
use crate::policy::timeout::{earliest, guard_stream};
use crate::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};
use crate::wire::anthropic::{MessagesResponse, StreamDecoder, from_anthropic_response, to_anthropic_request};
use futures::StreamExt;
use http::HeaderValue;
use std::sync::Arc;

/// The API version header we speak.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

/// An Anthropic provider.
#[derive(Debug, Clone)]
pub struct Anthropic {
    http: HttpUpstream,
    messages_url: http::Uri,
    models_url: http::Uri,
}

impl Anthropic {
    /// A provider named `name` (base URL e.g. `https://api.anthropic.com/v1`).
    pub fn new(name: impl Into<Arc<str>>, settings: &HttpSettings) -> Result<Self> {
        let mut auth = super::http::key_header(settings, "x-api-key", "")?;
        auth.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
        let http = HttpUpstream::new(name.into(), settings, auth)?;
        Ok(Anthropic {
            messages_url: http.endpoint("/messages")?,
            models_url: http.endpoint("/models")?,
            http,
        })
    }
}

impl Anthropic {
    /// A complete answer from `model` (in place of `req.model`).
    async fn complete(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse> {
        let clock = self.http.clock(opts.deadline);
        // Encoded at once: the translated request is not held while the call waits.
        let body = {
            let mut body = to_anthropic_request(req).map_err(|e| e.with_provider(&self.http.name))?;
            model.clone_into(&mut body.model);
            self.http.encode(&body)?
        };
        let resp = self
            .http
            .post_encoded(
                self.messages_url.clone(),
                body,
                clock.total_at,
                TimeoutPhase::Total,
                opts.request_id.as_deref(),
            )
            .await?;
        let msg: MessagesResponse = self.http.read_json(resp, clock.total_at).await?;
        Ok(from_anthropic_response(msg))
    }

    /// A streamed answer from `model` (in place of `req.model`).
    async fn open(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream> {
        let clock = self.http.clock(opts.deadline);
        let body = {
            let mut body = to_anthropic_request(req).map_err(|e| e.with_provider(&self.http.name))?;
            model.clone_into(&mut body.model);
            body.stream = Some(true);
            self.http.encode(&body)?
        };
        let until = earliest(clock.first_token_at, clock.total_at);
        let resp = self
            .http
            .post_encoded(
                self.messages_url.clone(),
                body,
                until,
                TimeoutPhase::FirstToken,
                opts.request_id.as_deref(),
            )
            .await?;
        let name = self.http.name.clone();
        let mut decoder = StreamDecoder::new();
        let chunks = self
            .http
            .events(resp)
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .flat_map(move |item| {
                let out: Vec<Result<_>> = match item {
                    Some(Ok(_)) if decoder.is_done() => vec![],
                    Some(Ok(ev)) => match decoder.push(&ev.data) {
                        Ok(chunks) => chunks.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e.with_provider(&name))],
                    },
                    Some(Err(e)) => vec![Err(e)],
                    None if decoder.is_done() => vec![],
                    None => vec![Err(Error::network(
                        TransportCause::Truncated,
                        "the stream ended before message_stop",
                    )
                    .with_provider(&name))],
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

impl_provider_by_model!(Anthropic {
    fn name(&self) -> &Arc<str> {
        &self.http.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_json_schema: false,
            assistant_prefill: true,
            embeddings: false,
            tools: true,
        }
    }

    async fn embed(&self, _req: &EmbeddingRequest, _opts: &CallOptions) -> Result<EmbeddingResponse> {
        Err(
            Error::new(ErrorKind::InvalidRequest, "Anthropic offers no embeddings endpoint")
                .with_provider(&self.http.name),
        )
    }

    async fn probe(&self, opts: &CallOptions) -> Result<()> {
        let until = earliest(
            opts.deadline,
            Some(tokio::time::Instant::now() + self.http.timeouts.first_token()),
        );
        let resp = self
            .http
            .get(self.models_url.clone(), until, opts.request_id.as_deref())
            .await?;
        let _: serde_json::Value = self.http.read_json(resp, until).await?;
        Ok(())
    }
});
