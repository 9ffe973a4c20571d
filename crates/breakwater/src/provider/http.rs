//! HTTP plumbing shared by the adapters: pooled connections per provider
//! (and per worker),
//! sending with deadlines, bounded body reads, error classification, and
//! event streams.

use super::transport::{self, Transport, UpstreamResponse};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase, TransportCause, classify_http, classify_transport};
use crate::policy::timeout::{Timeouts, earliest, run_until};
use crate::secret::Secret;
use crate::sse::{SseEvent, SseItem, SseStream};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyDataStream, BodyExt};
use hyper_util::client::proxy::matcher::Matcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tokio::time::Instant;

/// The most of an error body we read to classify it.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Connection settings of an HTTP provider.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// API key, if the upstream needs one.
    pub api_key: Option<Secret>,
    /// Extra headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Largest response body accepted (non-streamed) or event (streamed).
    pub max_response_bytes: usize,
}

impl HttpSettings {
    /// Settings for `base_url` with defaults for the rest.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpSettings {
            base_url: base_url.into(),
            api_key: None,
            headers: BTreeMap::new(),
            timeouts: Timeouts::default(),
            max_response_bytes: 32 * 1024 * 1024,
        }
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }
}

/// The header carrying the API key (`name: prefix KEY`), marked sensitive
/// so it never appears in debug output; empty when there is no key.
pub(crate) fn key_header(settings: &HttpSettings, name: &'static str, prefix: &str) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    if let Some(key) = settings.api_key.as_ref().filter(|k| !k.is_empty()) {
        let mut v = HeaderValue::from_str(&format!("{prefix}{}", key.expose()))
            .map_err(|_| Error::invalid_param("api_key", "the API key has characters not allowed in a header"))?;
        v.set_sensitive(true);
        h.insert(name, v);
    }
    Ok(h)
}

/// The `Host` header for a plain `http://` upstream, made once: hyper's
/// pooled client would otherwise format `host:port` again for every
/// request. Only for plain HTTP, which is always HTTP/1.1 here; over TLS
/// the connection may turn out to be HTTP/2, which carries the authority
/// in `:authority` instead, so the client is left to decide.
fn plain_http_host(base: &Uri) -> Option<HeaderValue> {
    if base.scheme_str() != Some("http") {
        return None;
    }
    let host = base.host()?;
    let value = match base.port_u16() {
        Some(80) | None => HeaderValue::from_str(host),
        Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
    };
    value.ok()
}

/// How many worker runtimes get a connection pool of their own; workers
/// beyond share by their index modulo this.
const MAX_POOLS: usize = 64;

/// One transport (one connection pool) per worker runtime, see
/// [`crate::runtime`]: worker 0's is built with the provider, the others
/// the first time their worker calls.
struct Pools {
    first: Transport,
    more: [OnceLock<Transport>; MAX_POOLS - 1],
    base: Uri,
    settings: transport::Settings,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = 1 + self.more.iter().filter(|p| p.get().is_some()).count();
        f.debug_struct("Pools").field("made", &made).finish()
    }
}

impl Pools {
    fn build(base: &Uri, settings: transport::Settings) -> std::result::Result<Transport, transport::TransportError> {
        Transport::new(base, settings, &Matcher::from_env())
    }

    /// The current worker's transport.
    fn transport(&self) -> &Transport {
        match crate::runtime::worker() % MAX_POOLS {
            0 => &self.first,
            // The same settings built `first`, so building again cannot fail
            // for them; if it somehow did, share `first`.
            w => self.more[w - 1]
                .get_or_init(|| Self::build(&self.base, self.settings).unwrap_or_else(|_| self.first.clone())),
        }
    }
}

/// A configured HTTP upstream.
#[derive(Debug, Clone)]
pub(crate) struct HttpUpstream {
    pub name: Arc<str>,
    pools: Arc<Pools>,
    base_url: String,
    headers: HeaderMap,
    pub timeouts: Timeouts,
    pub max_response_bytes: usize,
}

/// When each clock of one call runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    pub first_token_at: Option<Instant>,
    pub total_at: Option<Instant>,
}

impl HttpUpstream {
    /// Builds the client. `auth` are the provider-specific auth headers.
    pub fn new(name: Arc<str>, s: &HttpSettings, auth: HeaderMap) -> Result<Self> {
        let mut headers = auth;
        for (k, v) in &s.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Error::invalid_param(format!("headers.{k}"), format!("`{k}` is not a valid header name"))
            })?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::invalid_param(format!("headers.{k}"), "header value has invalid characters"))?;
            headers.insert(name, value);
        }
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("breakwater/", env!("CARGO_PKG_VERSION"))),
            );
        }
        let base_url = s.base_url.trim_end_matches('/').to_string();
        let base = parse_uri(&base_url)?;
        if !matches!(base.scheme_str(), Some("http" | "https")) || base.host().is_none() {
            return Err(Error::invalid_param(
                "base_url",
                format!("`{base_url}` is not an http:// or https:// URL"),
            ));
        }
        if let Some(host) = plain_http_host(&base)
            && !headers.contains_key(http::header::HOST)
        {
            headers.insert(http::header::HOST, host);
        }
        let settings = transport::Settings {
            connect_timeout: s.timeouts.connect(),
        };
        let first = Pools::build(&base, settings)
            .map_err(|e| Error::new(ErrorKind::InvalidRequest, format!("cannot reach {base_url}: {}", e.0)))?;
        Ok(HttpUpstream {
            name,
            pools: Arc::new(Pools {
                first,
                more: std::array::from_fn(|_| OnceLock::new()),
                base,
                settings,
            }),
            base_url,
            headers,
            timeouts: s.timeouts,
            max_response_bytes: s.max_response_bytes,
        })
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        let mut u = String::with_capacity(self.base_url.len() + path.len());
        u.push_str(&self.base_url);
        u.push_str(path);
        u
    }

    /// `base_url` + `path` as a URI: made once per endpoint when the
    /// provider is built, so requests only clone it.
    pub fn endpoint(&self, path: &str) -> Result<Uri> {
        parse_uri(&self.url(path))
    }

    /// The clocks of a call starting now.
    pub fn clock(&self, deadline: Option<Instant>) -> CallClock {
        let now = Instant::now();
        CallClock {
            first_token_at: Some(now + self.timeouts.first_token()),
            total_at: earliest(Some(now + self.timeouts.total()), deadline),
        }
    }

    fn tag(&self, e: Error) -> Error {
        e.with_provider(&self.name)
    }

    /// Sends a request and waits for a successful response's head until
    /// `until`. A non-success status becomes a classified error.
    ///
    /// Not an `async fn`: the request is built at once, and the future holds
    /// it alone rather than every argument twice.
    fn send(
        &self,
        method: http::Method,
        uri: Uri,
        body: Bytes,
        until: Option<Instant>,
        phase: TimeoutPhase,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<UpstreamResponse>> + Send {
        let mut req = http::Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.reserve(self.headers.len() + 2);
        for (k, v) in &self.headers {
            h.insert(k, v.clone());
        }
        if *req.method() == http::Method::POST {
            req.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            req.headers_mut().insert(X_REQUEST_ID, id);
        }
        async move {
            let fut = async {
                let resp = self
                    .pools
                    .transport()
                    .request(req)
                    .await
                    .map_err(|e| classify_transport(&*e, phase))?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(resp);
                }
                let headers = resp.headers().clone();
                // A body we cannot read whole still classifies by status.
                let body = read_limited(resp, MAX_ERROR_BODY, true).await.unwrap_or_default();
                Err(classify_http(status.as_u16(), &headers, &body))
            };
            run_until(until, phase, fut).await.map_err(|e| self.tag(e))
        }
    }

    /// POSTs JSON.
    pub async fn post_json(
        &self,
        uri: Uri,
        body: &impl Serialize,
        until: Option<Instant>,
        phase: TimeoutPhase,
        request_id: Option<&str>,
    ) -> Result<UpstreamResponse> {
        let bytes = self.encode(body)?;
        self.post_encoded(uri, bytes, until, phase, request_id).await
    }

    /// A request body as JSON. Encoding before the call lets the caller drop
    /// what it encoded instead of holding it while the call waits.
    pub fn encode(&self, body: &impl Serialize) -> Result<Bytes> {
        // Sized for a typical request: `to_vec` starts at 128 bytes and
        // grows by copying.
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, body)
            .map(|()| Bytes::from(out))
            .map_err(|e| {
                self.tag(Error::new(
                    ErrorKind::InvalidRequest,
                    format!("cannot encode request: {e}"),
                ))
            })
    }

    /// POSTs a body made by [`HttpUpstream::encode`].
    pub fn post_encoded(
        &self,
        uri: Uri,
        body: Bytes,
        until: Option<Instant>,
        phase: TimeoutPhase,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<UpstreamResponse>> + Send {
        self.send(http::Method::POST, uri, body, until, phase, request_id)
    }

    /// GETs a URI.
    pub async fn get(&self, uri: Uri, until: Option<Instant>, request_id: Option<&str>) -> Result<UpstreamResponse> {
        self.send(
            http::Method::GET,
            uri,
            Bytes::new(),
            until,
            TimeoutPhase::Total,
            request_id,
        )
        .await
    }

    /// Reads a whole JSON body (bounded) until `until`.
    pub async fn read_json<T: DeserializeOwned>(&self, resp: UpstreamResponse, until: Option<Instant>) -> Result<T> {
        let limit = self.max_response_bytes;
        let body = run_until(until, TimeoutPhase::Total, async move {
            read_limited(resp, limit, false).await
        })
        .await
        .map_err(|e| self.tag(e))?;
        parse_json_body(&body).map_err(|e| self.tag(e))
    }

    /// The response's events, with transport and parse failures classified.
    pub fn events(&self, resp: UpstreamResponse) -> impl Stream<Item = Result<SseEvent>> + Send + 'static {
        let name = self.name.clone();
        let parser = crate::sse::SseParser::with_max_event_bytes(self.max_response_bytes);
        let bytes = BodyDataStream::new(resp.into_body());
        SseStream::with_parser(bytes, parser).map(move |item| match item {
            SseItem::Event(e) => Ok(e),
            SseItem::Invalid(e) => {
                Err(Error::new(ErrorKind::UpstreamUnparseable, format!("bad event stream: {e}")).with_provider(&name))
            }
            SseItem::Transport(e) => Err(body_error(&*e).with_provider(&name)),
        })
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn parse_uri(url: &str) -> Result<Uri> {
    url.parse::<Uri>()
        .map_err(|e| Error::invalid_param("base_url", format!("`{url}` is not a valid URL: {e}")))
}

/// A failure reading an answer's body: the connection broke mid-answer.
fn body_error(e: &(dyn std::error::Error + 'static)) -> Error {
    let mut err = classify_transport(e, TimeoutPhase::Idle);
    if err.kind == ErrorKind::Network && err.cause == Some(TransportCause::Other) {
        err.cause = Some(TransportCause::ConnectionReset);
    }
    err
}

/// Parses a JSON body; an `{"error": …}` body with a 200 (some compatible
/// servers do this) is classified as the error it reports.
pub(crate) fn parse_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    match crate::types::from_json_bytes::<T>(body) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
                && v.get("error").is_some()
            {
                return Err(crate::error::classify_stream_error(body));
            }
            Err(Error::unparseable(body, &e))
        }
    }
}

/// Reads a body up to `limit` bytes. Over the limit it is an error, unless
/// `truncate` (for error bodies, where the start is enough). An answer that
/// comes in one piece (the usual case) is kept as it is, without copying.
async fn read_limited(resp: UpstreamResponse, limit: usize, truncate: bool) -> Result<Bytes> {
    let mut body = resp.into_body();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                let mut err = body_error(&*e);
                if err.kind == ErrorKind::Timeout {
                    err.phase = Some(TimeoutPhase::Total);
                }
                return Err(err);
            }
        };
        let Ok(c) = frame.into_data() else { continue };
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + c.len() > limit {
            if truncate {
                if let Some(f) = first.take() {
                    buf.extend_from_slice(&f);
                }
                buf.extend_from_slice(&c[..limit - have]);
                return Ok(buf.freeze());
            }
            return Err(Error::new(
                ErrorKind::UpstreamUnparseable,
                format!("the upstream's answer is larger than {limit} bytes"),
            ));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(c),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&c);
            }
            None => buf.extend_from_slice(&c),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_upstreams_get_their_host_header_made_once() {
        let host = |u: &str| plain_http_host(&u.parse().expect("a URI")).map(|v| v.to_str().expect("text").to_string());
        assert_eq!(host("http://127.0.0.1:8080/v1").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host("http://llm.internal/v1").as_deref(), Some("llm.internal"));
        assert_eq!(host("http://llm.internal:80/v1").as_deref(), Some("llm.internal"));
        assert_eq!(host("http://[::1]:9/v1").as_deref(), Some("[::1]:9"));
        assert_eq!(
            host("https://api.openai.com/v1"),
            None,
            "TLS may be HTTP/2: left to the client"
        );
        let up = HttpUpstream::new(
            Arc::from("p"),
            &HttpSettings::new("http://127.0.0.1:1/v1"),
            HeaderMap::new(),
        )
        .expect("an upstream");
        assert_eq!(
            up.headers.get(http::header::HOST).map(|v| v.as_bytes()),
            Some(&b"127.0.0.1:1"[..])
        );
        let mut own = HttpSettings::new("http://127.0.0.1:1/v1");
        own.headers.insert("host".into(), "gateway.example".into());
        let up = HttpUpstream::new(Arc::from("p"), &own, HeaderMap::new()).expect("an upstream");
        assert_eq!(
            up.headers.get(http::header::HOST).map(|v| v.as_bytes()),
            Some(&b"gateway.example"[..]),
            "a configured Host header wins"
        );
    }

    #[test]
    fn each_worker_gets_its_own_connection_pool() {
        let up = HttpUpstream::new(
            Arc::from("p"),
            &HttpSettings::new("http://127.0.0.1:1/v1"),
            HeaderMap::new(),
        )
        .expect("an upstream");
        let first: *const Transport = up.pools.transport();
        assert!(std::ptr::eq(first, &up.pools.first));
        let pools = up.pools.clone();
        let (one, one_again, wrapped) = std::thread::spawn(move || {
            crate::runtime::set_worker(1);
            let one: *const Transport = pools.transport();
            let one_again: *const Transport = pools.transport();
            crate::runtime::set_worker(MAX_POOLS);
            let wrapped: *const Transport = pools.transport();
            (one as usize, one_again as usize, wrapped as usize)
        })
        .join()
        .expect("the worker thread");
        assert_ne!(one, first as usize, "worker 1 has a pool of its own");
        assert_eq!(one, one_again, "and keeps it");
        assert_eq!(wrapped, first as usize, "workers past the last pool share by index");
        assert_eq!(format!("{:?}", up.pools), "Pools { made: 2 }");
    }
}
