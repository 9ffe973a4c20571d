//! Classification of upstream failures into [`ErrorKind`]s.
//!
//! One function for every provider: the error bodies of OpenAI (and
//! OpenAI-compatible servers such as llama-server), Anthropic and Gemini do
//! not collide, so reading all their fields at once is both simpler and more
//! robust than trusting which provider we think we talk to.

use super::headers::{RateLimitHeaders, parse_duration_text, parse_retry_after};
use super::{Error, ErrorKind, TimeoutPhase, TransportCause};
use http::HeaderMap;
use serde_json::Value;
use std::time::SystemTime;

/// The most of an error body we quote in a message.
const MAX_MESSAGE_CHARS: usize = 500;

/// What an error body says, whoever wrote it.
#[derive(Debug, Default)]
struct BodyFacts {
    message: Option<String>,
    /// `type`, `code`, `status`, `reason` values, lower-cased.
    tags: Vec<String>,
    param: Option<String>,
    retry_delay: Option<std::time::Duration>,
}

impl BodyFacts {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    fn first_code(&self) -> Option<String> {
        self.tags.first().cloned()
    }
}

fn push_tag(tags: &mut Vec<String>, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) if !s.is_empty() => tags.push(s.to_ascii_lowercase()),
        _ => {}
    }
}

fn read_body(body: &[u8]) -> BodyFacts {
    let mut facts = BodyFacts::default();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(mut v) = parsed else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if !text.is_empty() {
            facts.message = Some(truncate(text));
        }
        return facts;
    };
    // Gemini sometimes wraps errors of streaming calls in an array.
    if let Value::Array(items) = &mut v
        && let Some(first) = items.first()
    {
        v = first.clone();
    }
    let err = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        Some(Value::String(s)) => {
            facts.message = Some(truncate(s));
            return facts;
        }
        _ => &v,
    };
    // Specific codes first so `first_code` is the most telling one.
    push_tag(&mut facts.tags, err.get("code"));
    push_tag(&mut facts.tags, err.get("type"));
    push_tag(&mut facts.tags, err.get("status"));
    if let Some(details) = err.get("details").and_then(Value::as_array) {
        for d in details {
            push_tag(&mut facts.tags, d.get("reason"));
            if let Some(delay) = d.get("retryDelay").and_then(Value::as_str) {
                facts.retry_delay = parse_duration_text(delay);
            }
        }
    }
    facts.message = err.get("message").and_then(Value::as_str).map(truncate);
    facts.param = err.get("param").and_then(Value::as_str).map(str::to_string);
    facts
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
        out
    }
}

/// Kinds that a specific code decides whatever the status says.
fn specific_kind(f: &BodyFacts, msg: &str) -> Option<ErrorKind> {
    if f.has("insufficient_quota") || f.has("billing_error") || f.has("billing_hard_limit_reached") {
        return Some(ErrorKind::QuotaExceeded);
    }
    if f.has("context_length_exceeded")
        || f.has("exceed_context_size_error")
        || f.has("string_above_max_length")
        || msg.contains("maximum context length")
        || msg.contains("prompt is too long")
        || msg.contains("context window")
        || msg.contains("exceeds the context size")
    {
        return Some(ErrorKind::ContextLengthExceeded);
    }
    if f.has("content_filter") || f.has("content_policy_violation") {
        return Some(ErrorKind::ContentFiltered);
    }
    if f.has("api_key_invalid") || f.has("invalid_api_key") || f.has("authentication_error") || f.has("unauthenticated")
    {
        return Some(ErrorKind::Authentication);
    }
    None
}

/// Kinds from the general codes, for errors without a telling status
/// (errors inside a stream).
fn tag_kind(f: &BodyFacts) -> Option<ErrorKind> {
    for t in &f.tags {
        let k = match t.as_str() {
            "rate_limit_error"
            | "rate_limit_exceeded"
            | "resource_exhausted"
            | "rate_limited"
            | "tokens"
            | "requests" => ErrorKind::RateLimited,
            "overloaded_error" | "overloaded" | "unavailable" | "server_overloaded" => ErrorKind::Overloaded,
            "api_error" | "internal" | "server_error" | "internal_error" | "internal_server_error" => {
                ErrorKind::ServerError
            }
            "permission_error" | "permission_denied" => ErrorKind::PermissionDenied,
            "not_found_error" | "not_found" | "model_not_found" => ErrorKind::NotFound,
            "invalid_request_error" | "invalid_argument" | "failed_precondition" | "request_too_large" => {
                ErrorKind::InvalidRequest
            }
            "deadline_exceeded" | "timeout" => ErrorKind::Timeout,
            _ => continue,
        };
        return Some(k);
    }
    None
}

fn status_kind(status: u16, msg: &str) -> ErrorKind {
    match status {
        401 => ErrorKind::Authentication,
        402 => ErrorKind::QuotaExceeded,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        // llama.cpp answers 500 to a body it cannot parse, and to a feature
        // the loaded model lacks ("image input is not supported"): that is
        // the request's fault, the same on every retry, not the server's
        // health. 501 (llama.cpp: an endpoint not enabled) likewise.
        500 if msg.contains("json.exception.parse_error")
            || msg.contains("parse error")
            || msg.contains("is not supported") =>
        {
            ErrorKind::InvalidRequest
        }
        501 => ErrorKind::InvalidRequest,
        503 | 529 => ErrorKind::Overloaded,
        504 => ErrorKind::Timeout,
        400..=499 => ErrorKind::InvalidRequest,
        500..=599 => ErrorKind::ServerError,
        // A 1xx/3xx where a result was expected.
        _ => ErrorKind::UpstreamUnparseable,
    }
}

/// Classifies a non-success HTTP response from an upstream.
///
/// `body` is the (possibly truncated) response body. The retry-after comes
/// from `retry-after-ms` / `retry-after`, Gemini's `RetryInfo`, or — for a
/// 429 without either — the reset of an exhausted rate-limit window.
pub fn classify_http(status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    let facts = read_body(body);
    let lower = facts.message.as_deref().unwrap_or("").to_ascii_lowercase();
    let kind = specific_kind(&facts, &lower).unwrap_or_else(|| status_kind(status, &lower));
    let now = SystemTime::now();
    let mut retry_after = parse_retry_after(headers, now).or(facts.retry_delay);
    if retry_after.is_none() && kind == ErrorKind::RateLimited {
        retry_after = RateLimitHeaders::parse(headers, now).exhausted_wait();
    }
    let message = facts
        .message
        .clone()
        .unwrap_or_else(|| format!("upstream answered HTTP {status} with no error message"));
    let mut e = Error::new(kind, message)
        .with_status(status)
        .with_retry_after(retry_after);
    if kind == ErrorKind::Timeout {
        e.phase = Some(TimeoutPhase::Upstream);
    }
    e.code = facts.first_code();
    e.param = facts.param;
    e
}

/// Classifies an error reported inside a stream (Anthropic's `event: error`,
/// an OpenAI-compatible `data: {"error": …}`, a Gemini chunk with `error`).
pub fn classify_stream_error(body: &[u8]) -> Error {
    let facts = read_body(body);
    let lower = facts.message.as_deref().unwrap_or("").to_ascii_lowercase();
    let kind = specific_kind(&facts, &lower)
        .or_else(|| tag_kind(&facts))
        .or_else(|| {
            // Some servers put the HTTP status in `code` as a number.
            let v: Value = serde_json::from_slice(body).ok()?;
            let code = v.get("error")?.get("code")?.as_u64()?;
            Some(status_kind(u16::try_from(code).ok()?, &lower))
        })
        .unwrap_or(ErrorKind::ServerError);
    let message = facts
        .message
        .clone()
        .unwrap_or_else(|| "the upstream reported an error in the stream".to_string());
    let mut e = Error::new(kind, message).with_retry_after(facts.retry_delay);
    if kind == ErrorKind::Timeout {
        e.phase = Some(TimeoutPhase::Upstream);
    }
    e.code = facts.first_code();
    e.param = facts.param;
    e
}

/// Classifies a transport failure of an HTTP client (breakwater's own,
/// hyper's, or reqwest's). `phase` is the phase the call was in, used when
/// the client reports a timeout.
pub fn classify_transport(err: &(dyn std::error::Error + 'static), phase: TimeoutPhase) -> Error {
    let chain = error_chain_text(err);
    let lower = chain.to_ascii_lowercase();
    let facts = TransportFacts::of(err);
    if facts.timed_out {
        let phase = if facts.connect { TimeoutPhase::Connect } else { phase };
        return Error::timeout(phase, format!("timed out: {chain}"));
    }
    let cause = if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
    {
        TransportCause::Dns
    } else if facts.io == Some(std::io::ErrorKind::ConnectionRefused) || lower.contains("connection refused") {
        TransportCause::ConnectionRefused
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("invalidcontenttype")
    {
        TransportCause::Tls
    } else if matches!(
        facts.io,
        Some(
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    ) || lower.contains("connection reset")
        || lower.contains("connection closed")
        || lower.contains("incomplete")
        || lower.contains("unexpected eof")
        || lower.contains("broken pipe")
        || facts.broken_body
    {
        TransportCause::ConnectionReset
    } else {
        TransportCause::Other
    };
    Error::network(cause, chain)
}

/// What the error types of the chain say about a transport failure.
#[derive(Default)]
struct TransportFacts {
    timed_out: bool,
    connect: bool,
    broken_body: bool,
    io: Option<std::io::ErrorKind>,
}

impl TransportFacts {
    fn of(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut f = TransportFacts::default();
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = src {
            if let Some(r) = e.downcast_ref::<reqwest::Error>() {
                f.timed_out |= r.is_timeout();
                f.connect |= r.is_connect();
                f.broken_body |= r.is_body() || r.is_decode();
            }
            if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                f.connect |= h.is_connect();
            }
            if let Some(h) = e.downcast_ref::<crate::provider::H1Error>() {
                f.connect |= h.is_connect();
                f.broken_body |= h.is_incomplete();
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                f.timed_out |= h.is_timeout();
                f.broken_body |= h.is_incomplete_message() || h.is_body_write_aborted() || h.is_closed();
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                f.io.get_or_insert(io.kind());
                f.timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            src = e.source();
        }
        f
    }
}

/// The error and its sources, joined, without a URL (which may carry a key
/// in a query string).
fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let first = match err.downcast_ref::<reqwest::Error>() {
        Some(r) => r.without_url_ref(),
        None => err.to_string(),
    };
    let mut parts = vec![first];
    let mut src: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = src {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        src = e.source();
    }
    parts.join(": ")
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<upstream>");
            // Also strip a bare form (reqwest prints "for url (…)").
            s = s.replace(" for url (<upstream>)", "");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    /// (what, status, headers, body, kind, retry-after ms, code)
    type Case = (
        &'static str,
        u16,
        Vec<(&'static str, &'static str)>,
        &'static str,
        ErrorKind,
        Option<u64>,
        Option<&'static str>,
    );

    /// Payloads as the providers document them.
    fn cases() -> Vec<Case> {
        use ErrorKind::*;
        vec![
            (
                "openai rate limit",
                429,
                vec![("retry-after", "2")],
                r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                RateLimited,
                Some(2000),
                Some("rate_limit_exceeded"),
            ),
            (
                "openai rate limit, reset headers only",
                429,
                vec![
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", "1.5s"),
                ],
                r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                RateLimited,
                Some(1500),
                Some("rate_limit_exceeded"),
            ),
            (
                "openai quota",
                429,
                vec![],
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                QuotaExceeded,
                None,
                Some("insufficient_quota"),
            ),
            (
                "openai context length",
                400,
                vec![],
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                ContextLengthExceeded,
                None,
                Some("context_length_exceeded"),
            ),
            (
                "openai bad key",
                401,
                vec![],
                r#"{"error":{"message":"Incorrect API key provided: sk-fake. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                Authentication,
                None,
                Some("invalid_api_key"),
            ),
            (
                "openai model not found",
                404,
                vec![],
                r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                NotFound,
                None,
                Some("model_not_found"),
            ),
            (
                "openai content policy",
                400,
                vec![],
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
                ContentFiltered,
                None,
                Some("content_policy_violation"),
            ),
            (
                "openai bad param",
                400,
                vec![],
                r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":null}}"#,
                InvalidRequest,
                None,
                Some("invalid_request_error"),
            ),
            (
                "openai server error",
                500,
                vec![],
                r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
                ServerError,
                None,
                Some("server_error"),
            ),
            (
                "openai engine overloaded",
                503,
                vec![],
                r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error"}}"#,
                Overloaded,
                None,
                Some("server_error"),
            ),
            (
                "openai region",
                403,
                vec![],
                r#"{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}"#,
                PermissionDenied,
                None,
                Some("unsupported_country_region_territory"),
            ),
            (
                "anthropic overloaded",
                529,
                vec![],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                Overloaded,
                None,
                Some("overloaded_error"),
            ),
            (
                "anthropic rate limit",
                429,
                vec![("retry-after", "7")],
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
                RateLimited,
                Some(7000),
                Some("rate_limit_error"),
            ),
            (
                "anthropic auth",
                401,
                vec![],
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                Authentication,
                None,
                Some("authentication_error"),
            ),
            (
                "anthropic permission",
                403,
                vec![],
                r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
                PermissionDenied,
                None,
                Some("permission_error"),
            ),
            (
                "anthropic prompt too long",
                400,
                vec![],
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                ContextLengthExceeded,
                None,
                Some("invalid_request_error"),
            ),
            (
                "anthropic too large",
                413,
                vec![],
                r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
                InvalidRequest,
                None,
                Some("request_too_large"),
            ),
            (
                "anthropic api error",
                500,
                vec![],
                r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
                ServerError,
                None,
                Some("api_error"),
            ),
            (
                "anthropic billing",
                400,
                vec![],
                r#"{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low to access the Anthropic API."}}"#,
                QuotaExceeded,
                None,
                Some("billing_error"),
            ),
            (
                "gemini resource exhausted",
                429,
                vec![],
                r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#,
                RateLimited,
                Some(37000),
                Some("resource_exhausted"),
            ),
            (
                "gemini unavailable",
                503,
                vec![],
                r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
                Overloaded,
                None,
                Some("unavailable"),
            ),
            (
                "gemini bad key",
                400,
                vec![],
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
                Authentication,
                None,
                Some("invalid_argument"),
            ),
            (
                "gemini deadline",
                504,
                vec![],
                r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#,
                Timeout,
                None,
                Some("deadline_exceeded"),
            ),
            (
                "gemini internal",
                500,
                vec![],
                r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
                ServerError,
                None,
                Some("internal"),
            ),
            (
                "gemini not found",
                404,
                vec![],
                r#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#,
                NotFound,
                None,
                Some("not_found"),
            ),
            (
                "llama-server context",
                400,
                vec![],
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":1024}}"#,
                ContextLengthExceeded,
                None,
                Some("exceed_context_size_error"),
            ),
            (
                "llama-server malformed json quirk",
                500,
                vec![],
                r#"{"error":{"code":500,"message":"[json.exception.parse_error.101] parse error at line 1, column 2: syntax error","type":"server_error"}}"#,
                InvalidRequest,
                None,
                Some("server_error"),
            ),
            (
                "llama-server image to a text-only model",
                500,
                vec![],
                r#"{"error":{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may need to provide the mmproj","type":"server_error"}}"#,
                InvalidRequest,
                None,
                Some("server_error"),
            ),
            (
                "llama-server endpoint not enabled",
                501,
                vec![],
                r#"{"error":{"code":501,"message":"This server does not support embeddings. Start it with `--embeddings`","type":"not_supported_error"}}"#,
                InvalidRequest,
                None,
                Some("not_supported_error"),
            ),
            (
                "html from a proxy",
                502,
                vec![],
                "<html><body>Bad Gateway</body></html>",
                ServerError,
                None,
                None,
            ),
            (
                "empty body 503 with retry-after",
                503,
                vec![("retry-after", "3")],
                "",
                Overloaded,
                Some(3000),
                None,
            ),
            (
                "invalid utf-8 body",
                500,
                vec![],
                "\u{FFFD}\u{FFFD}",
                ServerError,
                None,
                None,
            ),
            ("unexpected redirect", 302, vec![], "", UpstreamUnparseable, None, None),
        ]
    }

    #[test]
    fn documented_payloads_classify() {
        for (what, status, headers, body, kind, ra, code) in cases() {
            let e = classify_http(status, &h(&headers), body.as_bytes());
            assert_eq!(e.kind, kind, "{what}: {e}");
            assert_eq!(e.retry_after.map(|d| d.as_millis() as u64), ra, "{what}: retry-after");
            assert_eq!(e.code.as_deref(), code, "{what}: code");
            assert_eq!(e.status, Some(status), "{what}");
            assert!(!e.message.is_empty(), "{what}");
        }
    }

    #[test]
    fn garbage_bodies_never_panic() {
        let bodies: [&[u8]; 6] = [b"", b"\xff\xfe\x00", b"{", b"[]", b"null", b"{\"error\": 5}"];
        for b in bodies {
            for status in [400u16, 429, 500, 503, 529, 200] {
                let e = classify_http(status, &HeaderMap::new(), b);
                assert!(!e.message.is_empty());
                let _ = classify_stream_error(b);
            }
        }
        let long = "x".repeat(10_000);
        let e = classify_http(500, &HeaderMap::new(), long.as_bytes());
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn stream_errors() {
        let e =
            classify_stream_error(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(e.kind, ErrorKind::Overloaded);
        let e = classify_stream_error(br#"{"error":{"message":"boom","type":"server_error"}}"#);
        assert_eq!(e.kind, ErrorKind::ServerError);
        let e = classify_stream_error(br#"{"error":{"code":429,"message":"slow down"}}"#);
        assert_eq!(e.kind, ErrorKind::RateLimited);
        let e = classify_stream_error(
            br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"q","details":[{"retryDelay":"2s"}]}}"#,
        );
        assert_eq!(
            (e.kind, e.retry_after),
            (ErrorKind::RateLimited, Some(Duration::from_secs(2)))
        );
        assert_eq!(classify_stream_error(b"not json").kind, ErrorKind::ServerError);
    }
}
