//! OpenAI, and every server that speaks its chat-completions API
//! (llama.cpp's llama-server, vLLM, Ollama, Groq, Together, …).

use super::http::{HttpSettings, HttpUpstream};
use super::{CallOptions, Capabilities, ChatStream, ProviderKind};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase, TransportCause, classify_stream_error};
use crate::policy::timeout::{earliest, guard_stream};
use crate::types::{
    ChatChunk, ChatRequest, ChatRequestAs, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamOptions,
};
use futures::StreamExt;
use std::sync::Arc;

/// An OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAi {
    http: HttpUpstream,
    caps: Capabilities,
    chat_url: http::Uri,
    embeddings_url: http::Uri,
    models_url: http::Uri,
}

impl OpenAi {
    /// A provider named `name` talking to `settings.base_url`.
    pub fn new(name: impl Into<Arc<str>>, settings: &HttpSettings) -> Result<Self> {
        let auth = super::http::key_header(settings, "authorization", "Bearer ")?;
        let http = HttpUpstream::new(name.into(), settings, auth)?;
        Ok(OpenAi {
            chat_url: http.endpoint("/chat/completions")?,
            embeddings_url: http.endpoint("/embeddings")?,
            models_url: http.endpoint("/models")?,
            http,
            caps: Capabilities {
                native_json_schema: true,
                assistant_prefill: false,
                embeddings: true,
                tools: true,
            },
        })
    }

    /// A complete answer from `model`, `req` encoded with its model and
    /// stream fields replaced rather than copied.
    async fn complete(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatResponse> {
        let clock = self.http.clock(opts.deadline);
        let body = self.http.encode(&ChatRequestAs {
            req,
            model,
            stream: None,
            // Only allowed with `stream` (OpenAI refuses it otherwise).
            stream_options: None,
        })?;
        let resp = self
            .http
            .post_encoded(
                self.chat_url.clone(),
                body,
                clock.total_at,
                TimeoutPhase::Total,
                opts.request_id.as_deref(),
            )
            .await?;
        let r: ChatResponse = self.http.read_json(resp, clock.total_at).await?;
        if r.choices.is_empty() {
            return Err(
                Error::new(ErrorKind::UpstreamUnparseable, "the answer has no choices").with_provider(&self.http.name)
            );
        }
        Ok(r)
    }

    /// A streamed answer from `model`, encoded like [`OpenAi::complete`].
    async fn open(&self, model: &str, req: &ChatRequest, opts: &CallOptions) -> Result<ChatStream> {
        let clock = self.http.clock(opts.deadline);
        // In a block: the options are not held while the call waits.
        let body = {
            // Always ask for usage: accounting needs it.
            let so = StreamOptions {
                include_usage: Some(true),
                extra: req.stream_options.as_ref().map(|o| o.extra.clone()).unwrap_or_default(),
            };
            self.http.encode(&ChatRequestAs {
                req,
                model,
                stream: Some(true),
                stream_options: Some(&so),
            })?
        };
        let until = earliest(clock.first_token_at, clock.total_at);
        let resp = self
            .http
            .post_encoded(
                self.chat_url.clone(),
                body,
                until,
                TimeoutPhase::FirstToken,
                opts.request_id.as_deref(),
            )
            .await?;
        let name = self.http.name.clone();
        let mut done = false;
        let events = self.http.events(resp);
        let chunks = events
            .map(Some)
            .chain(futures::stream::once(async { None }))
            .filter_map(move |item| {
                let out = match item {
                    Some(Ok(_)) if done => None,
                    Some(Ok(ev)) => match parse_stream_event(&ev.data) {
                        Ok(Some(c)) => Some(Ok(c)),
                        Ok(None) => {
                            done = true;
                            None
                        }
                        Err(e) => Some(Err(e.with_provider(&name))),
                    },
                    Some(Err(e)) => Some(Err(e)),
                    None if done => None,
                    None => Some(Err(Error::network(
                        TransportCause::Truncated,
                        "the stream ended without [DONE]",
                    )
                    .with_provider(&name))),
                };
                futures::future::ready(out)
            });
        Ok(guard_stream(
            Box::pin(chunks),
            clock.first_token_at,
            Some(self.http.timeouts.idle()),
            clock.total_at,
        ))
    }

    /// Overrides the capabilities (e.g. a compatible server that does
    /// continue a trailing assistant message, like llama-server).
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }
}

/// Turns one event of an OpenAI stream into a chunk; `Ok(None)` for `[DONE]`
/// and for events without data worth passing.
pub fn parse_stream_event(data: &str) -> Result<Option<ChatChunk>> {
    if data == "[DONE]" {
        return Ok(None);
    }
    match serde_json::from_str::<ChatChunk>(data) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                && v.get("error").is_some()
            {
                return Err(classify_stream_error(data.as_bytes()));
            }
            Err(Error::unparseable(data.as_bytes(), &e))
        }
    }
}

impl_provider_by_model!(OpenAi {
    fn name(&self) -> &Arc<str> {
        &self.http.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn embed(&self, req: &EmbeddingRequest, opts: &CallOptions) -> Result<EmbeddingResponse> {
        let clock = self.http.clock(opts.deadline);
        let resp = self
            .http
            .post_json(
                self.embeddings_url.clone(),
                req,
                clock.total_at,
                TimeoutPhase::Total,
                opts.request_id.as_deref(),
            )
            .await?;
        self.http.read_json(resp, clock.total_at).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events() {
        assert!(parse_stream_event("[DONE]").unwrap().is_none());
        let c = parse_stream_event(
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.text(), "Hi");
        let e = parse_stream_event(r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        let e = parse_stream_event(r#"{"id": 5"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UpstreamUnparseable);
    }
}
