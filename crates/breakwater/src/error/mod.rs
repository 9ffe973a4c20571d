//! The error taxonomy: one [`ErrorKind`] per way a call can fail, each with a
//! policy (retry? fail over?), and classification of upstream failures into
//! kinds from status codes, headers, bodies and transport errors.

mod classify;
mod headers;

pub use classify::{classify_http, classify_stream_error, classify_transport};
pub use headers::{RateLimitHeaders, parse_duration_text, parse_retry_after};
/// Header map type used by the classification functions (re-exported so
/// callers need not depend on `http` themselves).
pub use http::HeaderMap;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, as far as a caller's policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Too many requests or tokens; may carry a retry-after.
    RateLimited,
    /// The credentials were rejected.
    Authentication,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// The account is out of quota or credit (not transient).
    QuotaExceeded,
    /// The upstream is temporarily over capacity.
    Overloaded,
    /// The upstream failed (5xx).
    ServerError,
    /// A deadline passed; the phase says which.
    Timeout,
    /// The connection failed: DNS, refused, reset, TLS.
    Network,
    /// The request is malformed or unsupported.
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// A content filter withheld the input or output.
    ContentFiltered,
    /// The model or route does not exist.
    NotFound,
    /// The target's circuit breaker is open; the call was not made.
    CircuitOpen,
    /// The caller's token or money budget is spent.
    BudgetExceeded,
    /// The upstream answered something we cannot parse.
    UpstreamUnparseable,
    /// The caller went away.
    Cancelled,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::RateLimited,
        ErrorKind::Authentication,
        ErrorKind::PermissionDenied,
        ErrorKind::QuotaExceeded,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::NotFound,
        ErrorKind::CircuitOpen,
        ErrorKind::BudgetExceeded,
        ErrorKind::UpstreamUnparseable,
        ErrorKind::Cancelled,
    ];

    /// The snake_case name used in config, logs, metrics and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::ContentFiltered => "content_filtered",
            ErrorKind::NotFound => "not_found",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::UpstreamUnparseable => "upstream_unparseable",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether trying the same target again may succeed: the failure is
    /// transient (capacity, a 5xx, a timeout, a dropped connection, a garbled
    /// answer). Never for the caller's own mistakes or permanent refusals.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Network
                | ErrorKind::UpstreamUnparseable
        )
    }

    /// Whether another target may succeed where this one failed. True for
    /// everything that is about the target (its capacity, health, account,
    /// credentials or model list); false for what is about the request
    /// itself, which every target would refuse alike.
    /// `ContextLengthExceeded` is false here: it may only go to a target
    /// configured as the larger-context fallback.
    pub fn allows_failover(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Network
                | ErrorKind::UpstreamUnparseable
                | ErrorKind::CircuitOpen
                | ErrorKind::QuotaExceeded
                | ErrorKind::Authentication
                | ErrorKind::PermissionDenied
                | ErrorKind::NotFound
        )
    }

    /// Whether the failure says something about the target's health, so a
    /// circuit breaker should count it. A 400, 401 or 404 is the request's or
    /// the account's problem, not a sign the target is down.
    pub fn counts_for_health(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Network
                | ErrorKind::UpstreamUnparseable
        )
    }

    /// The HTTP status a gateway answers with for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => 429,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::QuotaExceeded => 429,
            ErrorKind::Overloaded | ErrorKind::CircuitOpen => 503,
            ErrorKind::ServerError => 502,
            ErrorKind::Timeout => 504,
            ErrorKind::Network | ErrorKind::UpstreamUnparseable => 502,
            ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentFiltered => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Cancelled => 499,
        }
    }

    /// The `error.type` of OpenAI's error shape.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => "rate_limit_error",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentFiltered => {
                "invalid_request_error"
            }
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Overloaded | ErrorKind::CircuitOpen => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ServerError | ErrorKind::Network | ErrorKind::UpstreamUnparseable => "api_error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPhase {
    /// Establishing the connection (TCP + TLS).
    Connect,
    /// Waiting for the response headers.
    FirstByte,
    /// Waiting for the first streamed token.
    FirstToken,
    /// Waiting between two streamed chunks (a stall).
    Idle,
    /// The whole call or request.
    Total,
    /// The upstream reported a timeout of its own (408, 504, DEADLINE_EXCEEDED).
    Upstream,
}

impl TimeoutPhase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first_byte",
            TimeoutPhase::FirstToken => "first_token",
            TimeoutPhase::Idle => "idle",
            TimeoutPhase::Total => "total",
            TimeoutPhase::Upstream => "upstream",
        }
    }
}

/// What broke in the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportCause {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at the address.
    ConnectionRefused,
    /// The peer reset or closed the connection.
    ConnectionReset,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// A stream ended before its end marker.
    Truncated,
    /// Something else at the transport level.
    Other,
}

impl TransportCause {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportCause::Dns => "dns",
            TransportCause::ConnectionRefused => "connection_refused",
            TransportCause::ConnectionReset => "connection_reset",
            TransportCause::Tls => "tls",
            TransportCause::Truncated => "truncated",
            TransportCause::Other => "other",
        }
    }
}

/// A failed call: its kind plus what is known about it.
///
/// Cheap to clone (coalesced waiters each get a copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The kind, which decides the policy.
    pub kind: ErrorKind,
    /// A human-readable message (never contains secrets).
    pub message: String,
    /// The upstream's HTTP status, when there was one.
    pub status: Option<u16>,
    /// How long the upstream asked us to wait.
    pub retry_after: Option<Duration>,
    /// For timeouts, which deadline fired.
    pub phase: Option<TimeoutPhase>,
    /// For network errors, what broke.
    pub cause: Option<TransportCause>,
    /// The upstream's own error code or type (`insufficient_quota`, …).
    pub code: Option<String>,
    /// The provider (configured name) that failed.
    pub provider: Option<Arc<str>>,
    /// The parameter at fault, for invalid requests.
    pub param: Option<String>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            phase: None,
            cause: None,
            code: None,
            provider: None,
            param: None,
        }
    }

    /// A timeout in `phase`.
    pub fn timeout(phase: TimeoutPhase, message: impl Into<String>) -> Self {
        Error {
            phase: Some(phase),
            ..Error::new(ErrorKind::Timeout, message)
        }
    }

    /// A network failure with its cause.
    pub fn network(cause: TransportCause, message: impl Into<String>) -> Self {
        Error {
            cause: Some(cause),
            ..Error::new(ErrorKind::Network, message)
        }
    }

    /// An invalid request naming the parameter at fault.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            param: Some(param.into()),
            ..Error::new(ErrorKind::InvalidRequest, message)
        }
    }

    /// An `upstream_unparseable` error quoting the start of what arrived.
    pub fn unparseable(body: &[u8], cause: &dyn fmt::Display) -> Self {
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]);
        Error::new(
            ErrorKind::UpstreamUnparseable,
            format!("cannot parse the upstream's answer ({cause}): {snippet:?}"),
        )
    }

    /// The caller went away.
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "the caller cancelled the request")
    }

    /// Sets the retry-after.
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }

    /// Sets the upstream status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the upstream error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Names the provider the error came from.
    pub fn with_provider(mut self, provider: &Arc<str>) -> Self {
        self.provider = Some(provider.clone());
        self
    }

    /// Shorthand for `self.kind.is_retryable()`.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Shorthand for `self.kind.allows_failover()`.
    pub fn allows_failover(&self) -> bool {
        self.kind.allows_failover()
    }

    /// A one-line hint for a person reading the error in a terminal.
    pub fn hint(&self) -> String {
        let provider = self.provider.as_deref().unwrap_or("the provider");
        let env = match provider {
            p if p.contains("anthropic") => "ANTHROPIC_API_KEY",
            p if p.contains("gemini") || p.contains("google") => "GEMINI_API_KEY",
            _ => "OPENAI_API_KEY",
        };
        match self.kind {
            ErrorKind::RateLimited => match self.retry_after {
                Some(d) => format!(
                    "rate limited by {provider}: retry in {:.1}s or lower the request rate",
                    d.as_secs_f64()
                ),
                None => format!("rate limited by {provider}: slow down or raise your limits"),
            },
            ErrorKind::Authentication => format!("authentication: check {env} (the key was rejected by {provider})"),
            ErrorKind::PermissionDenied => {
                format!("permission denied: the key for {provider} may not use this model or endpoint")
            }
            ErrorKind::QuotaExceeded => format!("quota exceeded: the account at {provider} is out of credit or quota"),
            ErrorKind::Overloaded => format!("{provider} is overloaded: retry later or add a fallback target"),
            ErrorKind::ServerError => {
                format!("{provider} failed with a server error: retry later or add a fallback target")
            }
            ErrorKind::Timeout => match self.phase {
                Some(TimeoutPhase::Connect) => {
                    format!("timed out connecting to {provider}: check the base URL and network")
                }
                Some(TimeoutPhase::FirstToken) | Some(TimeoutPhase::FirstByte) => {
                    format!(
                        "{provider} did not start answering in time: raise timeouts.first_token_ms or use a faster model"
                    )
                }
                Some(TimeoutPhase::Idle) => format!("{provider} stalled mid-stream: raise timeouts.idle_ms or retry"),
                _ => "the request ran out of time: raise the deadline (x-breakwater-timeout-ms)".to_string(),
            },
            ErrorKind::Network => match self.cause {
                Some(TransportCause::Dns) => format!("could not resolve the host of {provider}: check base_url"),
                Some(TransportCause::ConnectionRefused) => {
                    format!("nothing listens at the address of {provider}: is the server running? check base_url")
                }
                Some(TransportCause::Tls) => {
                    format!("TLS failed talking to {provider}: check https/http in base_url and certificates")
                }
                _ => format!("the connection to {provider} broke: retry"),
            },
            ErrorKind::InvalidRequest => match &self.param {
                Some(p) => format!("invalid request: fix the field `{p}`"),
                None => "invalid request: fix the request (see the message)".to_string(),
            },
            ErrorKind::ContextLengthExceeded => {
                "the prompt is too long for the model: shorten it or use a larger-context model".to_string()
            }
            ErrorKind::ContentFiltered => "a content filter blocked the request or answer".to_string(),
            ErrorKind::NotFound => "not found: check the model name".to_string(),
            ErrorKind::CircuitOpen => {
                format!("{provider} is marked down (circuit open): it will be probed again shortly")
            }
            ErrorKind::BudgetExceeded => {
                "budget exhausted for this period: raise the budget or wait for the next period".to_string()
            }
            ErrorKind::UpstreamUnparseable => format!("{provider} sent a reply that could not be parsed: retry"),
            ErrorKind::Cancelled => "the request was cancelled".to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(p) = self.phase {
            write!(f, " ({})", p.as_str())?;
        }
        if let Some(c) = self.cause {
            write!(f, " ({})", c.as_str())?;
        }
        if let Some(p) = &self.provider {
            write!(f, " from {p}")?;
        }
        if let Some(s) = self.status {
            write!(f, " [HTTP {s}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of breakwater calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }

    #[test]
    fn policy_table() {
        use ErrorKind::*;
        // (kind, retryable, failover, health)
        let table = [
            (RateLimited, true, true, false),
            (Authentication, false, true, false),
            (PermissionDenied, false, true, false),
            (QuotaExceeded, false, true, false),
            (Overloaded, true, true, true),
            (ServerError, true, true, true),
            (Timeout, true, true, true),
            (Network, true, true, true),
            (InvalidRequest, false, false, false),
            (ContextLengthExceeded, false, false, false),
            (ContentFiltered, false, false, false),
            (NotFound, false, true, false),
            (CircuitOpen, false, true, false),
            (BudgetExceeded, false, false, false),
            (UpstreamUnparseable, true, true, true),
            (Cancelled, false, false, false),
        ];
        assert_eq!(table.len(), ErrorKind::ALL.len());
        for (k, r, f, h) in table {
            assert_eq!(k.is_retryable(), r, "{k} retryable");
            assert_eq!(k.allows_failover(), f, "{k} failover");
            assert_eq!(k.counts_for_health(), h, "{k} health");
        }
    }

    #[test]
    fn display_and_hint_name_the_problem() {
        let e = Error::new(ErrorKind::Authentication, "bad key").with_provider(&Arc::from("anthropic"));
        assert_eq!(e.to_string(), "authentication from anthropic: bad key");
        assert!(e.hint().contains("ANTHROPIC_API_KEY"));
        let t = Error::timeout(TimeoutPhase::Idle, "no chunk for 30s");
        assert!(t.to_string().starts_with("timeout (idle)"));
    }
}
