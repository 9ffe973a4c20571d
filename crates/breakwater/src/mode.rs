//! The adaptive response mode: whether breakwater calls the upstream
//! streaming or for a complete answer. The gateway and the batch runner use
//! the same decision.
//!
//! A caller that streams is always served a stream. A caller that wants a
//! complete answer may still be served from an upstream *stream* that
//! breakwater assembles: for long generations this buys the first-token and
//! idle-stall timeouts, so a hung upstream is caught in seconds instead of at
//! the total deadline.

use crate::types::{ChatRequest, Content, Role};
use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Per-alias setting (`models.*.response_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// Decide per request.
    #[default]
    Auto,
    /// Always call upstream streaming.
    Stream,
    /// Call upstream for complete answers unless the caller streams.
    Complete,
}

/// How the upstream is called for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    /// Streaming.
    Stream,
    /// One complete answer.
    Complete,
}

/// Expected output above which `auto` streams upstream.
pub const LONG_OUTPUT_TOKENS: u32 = 512;

/// Words that announce long-form output (as the source chapter's heuristic).
const LONG_FORM: &[&str] = &[
    "write",
    "explain",
    "describe",
    "story",
    "report",
    "detailed",
    "essay",
    "article",
    "summarize",
    "summarise",
    "translate",
    "list all",
    "step by step",
];

/// How many tokens the answer is expected to take: `max_tokens` when given,
/// else a guess from the prompt (long-form wording → long).
pub fn expected_output_tokens(req: &ChatRequest) -> u32 {
    if let Some(m) = req.max_output_tokens() {
        return m;
    }
    let long_form = match req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| &m.content)
    {
        Some(Some(Content::Text(t))) => announces_long_form(t),
        Some(Some(c @ Content::Parts(_))) => announces_long_form(&c.text()),
        _ => false,
    };
    if long_form { 1024 } else { 256 }
}

/// Whether `text` has one of the [`LONG_FORM`] words, in any ASCII case:
/// one pass over the text, without copying it. This runs several times per
/// request (limits, mode, each attempt), on prompts of any length.
fn announces_long_form(text: &str) -> bool {
    static WORDS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(LONG_FORM)
            .ok()
    });
    match &*WORDS {
        Some(words) => words.is_match(text),
        None => {
            let lower = text.to_lowercase();
            LONG_FORM.iter().any(|w| lower.contains(w))
        }
    }
}

/// The decision: the caller's choice first, then the alias's setting, then
/// the expected length.
pub fn decide(req: &ChatRequest, alias: ResponseMode) -> UpstreamMode {
    if req.is_stream() {
        return UpstreamMode::Stream;
    }
    match alias {
        ResponseMode::Stream => UpstreamMode::Stream,
        ResponseMode::Complete => UpstreamMode::Complete,
        ResponseMode::Auto => {
            if expected_output_tokens(req) >= LONG_OUTPUT_TOKENS {
                UpstreamMode::Stream
            } else {
                UpstreamMode::Complete
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let mut r = ChatRequest::user("m", "What is the capital of Japan?");
        assert_eq!(decide(&r, ResponseMode::Auto), UpstreamMode::Complete);
        assert_eq!(decide(&r, ResponseMode::Stream), UpstreamMode::Stream);
        r.stream = Some(true);
        assert_eq!(
            decide(&r, ResponseMode::Complete),
            UpstreamMode::Stream,
            "the caller's choice wins"
        );
        let mut long = ChatRequest::user("m", "Write a detailed report on rivers");
        assert_eq!(decide(&long, ResponseMode::Auto), UpstreamMode::Stream);
        long.max_tokens = Some(50);
        assert_eq!(
            decide(&long, ResponseMode::Auto),
            UpstreamMode::Complete,
            "max_tokens is the better signal"
        );
        let mut big = ChatRequest::user("m", "hi");
        big.max_completion_tokens = Some(4000);
        assert_eq!(decide(&big, ResponseMode::Auto), UpstreamMode::Stream);
        assert_eq!(decide(&big, ResponseMode::Complete), UpstreamMode::Complete);
    }

    #[test]
    fn long_form_words_in_any_case_and_in_parts() {
        assert_eq!(
            expected_output_tokens(&ChatRequest::user("m", "PLEASE SUMMARIZE THIS")),
            1024
        );
        assert_eq!(expected_output_tokens(&ChatRequest::user("m", "Go Step By Step")), 1024);
        assert_eq!(expected_output_tokens(&ChatRequest::user("m", "What time is it?")), 256);
        // Only the last user message counts.
        let mut r = ChatRequest::user("m", "write an essay");
        r.messages.push(crate::types::Message::assistant("ok"));
        r.messages.push(crate::types::Message::user("thanks"));
        assert_eq!(expected_output_tokens(&r), 256);
        // Typed parts are read as one text, so a phrase may span two parts.
        let mut parts: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "please list"},
                {"type": "text", "text": " all the rivers"}
            ]}]
        }))
        .expect("a request");
        assert_eq!(expected_output_tokens(&parts), 1024);
        parts.messages[0].content = None;
        assert_eq!(expected_output_tokens(&parts), 256);
    }
}
