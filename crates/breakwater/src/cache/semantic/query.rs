//! What a semantic lookup compares: which partition a request belongs to,
//! which text is embedded, and the lexical guards checked on a match.
//!
//! # What is embedded, and why
//!
//! Only the **last user message**, and only when *everything else* in the
//! request is byte-for-byte the same as for the cached entry. Everything else
//! (system and developer messages, earlier turns, tools, `response_format`,
//! sampling parameters, unknown fields) goes into a hash that is part of the
//! partition key, so a search never crosses it.
//!
//! Concatenating the user turns would ignore the assistant turns, which
//! condition the answer just as much ("and in Celsius?" means different
//! things after different replies). Requiring an identical context keeps the
//! one approximate step – "do these two questions mean the same thing?" –
//! where the embedding model is good, and makes tools, JSON schemas and
//! multi-turn chats safe without special cases: they hit only when the rest
//! is identical. Requests whose last user message holds anything other than
//! text (images, audio, files) are not eligible, since the embedding would
//! not see it.
//!
//! A wrong cached answer is worse than none, so two lexical guards back the
//! embedding up: a hit also needs the same numbers (`5 km` is not `50 km`,
//! embeddings barely tell them apart) and the same negation and polarity
//! words (`lock`/`unlock`, `on`/`off`, `not`). A guard can only turn a hit
//! into a miss.

use crate::types::{ChatRequest, Content, Role};
use std::fmt;
use std::sync::Arc;

/// The partition a query belongs to: lookups only ever compare within one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    /// The model alias the client asked for.
    pub model: Arc<str>,
    /// The tenant (virtual key name), or `""` when the cache is shared.
    pub tenant: Arc<str>,
    /// BLAKE3 of the request without its last user message's text.
    pub context: [u8; 32],
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.context[..6].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "PartitionKey({}/{}/{short})", self.model, self.tenant)
    }
}

/// Why a request cannot use the semantic cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// No messages, or the last one is not from the user.
    NoTrailingUserMessage,
    /// The last user message holds images, audio or other non-text parts.
    NonTextContent,
    /// The last user message has no text.
    EmptyText,
}

impl Ineligible {
    /// A snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Ineligible::NoTrailingUserMessage => "no_trailing_user_message",
            Ineligible::NonTextContent => "non_text_content",
            Ineligible::EmptyText => "empty_text",
        }
    }
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Features of a text that must be equal for a hit (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    /// Numbers, in order of appearance (digits, or English number words).
    numbers: Vec<Box<str>>,
    /// Negation and polarity words present, sorted and deduplicated.
    polarity: Vec<&'static str>,
}

/// Words whose presence flips or redirects a request's meaning while barely
/// moving its embedding. Checked as a set: paraphrases keep them.
const POLARITY: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "without", "cannot", "except", "on", "off",
    "up", "down", "open", "close", "closed", "lock", "unlock", "locked", "unlocked", "enable", "disable", "enabled",
    "disabled", "start", "stop", "increase", "decrease", "raise", "lower", "more", "less", "min", "max", "minimum",
    "maximum", "before", "after", "above", "below", "add", "remove", "allow", "deny", "buy", "sell",
];

/// English number words, kept as themselves ("five" and "5" differ, which
/// only costs a hit).
const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "half",
    "quarter",
    "double",
    "twice",
    "once",
    "dozen",
];

impl Guard {
    /// The guard features of `text`.
    pub fn of(text: &str) -> Guard {
        let mut numbers: Vec<Box<str>> = Vec::new();
        let mut polarity: Vec<&'static str> = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c.is_numeric() {
                // A number: digits with inner '.', ',' or ':' separators.
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    let inner = matches!(d, '.' | ',' | ':')
                        && text[i + d.len_utf8()..].chars().next().is_some_and(char::is_numeric);
                    if d.is_numeric() || inner {
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                numbers.push(text[start..end].into());
            } else if c.is_alphabetic() {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if d.is_alphabetic() || d == '\'' || d == '’' {
                        end = i + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = text[start..end].to_lowercase();
                if let Some(w) = NUMBER_WORDS.iter().find(|w| **w == word) {
                    numbers.push((*w).into());
                } else if word.ends_with("n't") || word.ends_with("n’t") {
                    polarity.push("not");
                } else if let Some(w) = POLARITY.iter().find(|w| **w == word) {
                    polarity.push(w);
                }
            }
        }
        polarity.sort_unstable();
        polarity.dedup();
        Guard { numbers, polarity }
    }
}

/// A prepared semantic-cache query: its partition, the text to embed and its
/// guard.
#[derive(Debug, Clone)]
pub struct SemanticQuery {
    pub(crate) partition: PartitionKey,
    pub(crate) text: String,
    pub(crate) guard: Guard,
}

impl SemanticQuery {
    /// A query from parts, for callers that are not chat requests: `context`
    /// is everything besides `text` that must be identical for a hit (it is
    /// hashed, not stored).
    pub fn new(model: &str, tenant: &str, context: &[u8], text: &str) -> Self {
        let text = text.trim();
        SemanticQuery {
            partition: PartitionKey {
                model: model.into(),
                tenant: tenant.into(),
                context: *blake3::hash(context).as_bytes(),
            },
            text: text.to_owned(),
            guard: Guard::of(text),
        }
    }

    /// The query for a chat request to `model_alias` by `tenant` (`""` for a
    /// cache shared by all tenants), or why it cannot use the semantic cache.
    pub fn from_chat(model_alias: &str, tenant: &str, request: &ChatRequest) -> Result<Self, Ineligible> {
        let Some((last, earlier)) = request.messages.split_last() else {
            return Err(Ineligible::NoTrailingUserMessage);
        };
        if last.role != Role::User {
            return Err(Ineligible::NoTrailingUserMessage);
        }
        let text = match &last.content {
            None => return Err(Ineligible::EmptyText),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => {
                if parts.iter().any(|p| p.kind != "text" || p.image_url.is_some()) {
                    return Err(Ineligible::NonTextContent);
                }
                // Joined with newlines so parts do not glue words together.
                parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(Ineligible::EmptyText);
        }

        // The context: the request minus the last message's text, and minus
        // what does not change the answer's content (the model alias is in
        // the key itself; streaming is a delivery choice).
        let mut rest = ChatRequest {
            model: String::new(),
            messages: Vec::new(),
            stream: None,
            stream_options: None,
            ..clone_without_messages(request)
        };
        rest.extra.remove("stream");
        let mut last_shell = last.clone();
        last_shell.content = None;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"breakwater-semantic-v1\0");
        // serde_json into the hasher cannot fail for these types (no maps
        // with non-string keys); a failure would only make the hash differ,
        // never collide, so it is ignored rather than turned into a panic.
        let _ = serde_json::to_writer(&mut hasher, &rest);
        hasher.update(b"\0");
        let _ = serde_json::to_writer(&mut hasher, earlier);
        hasher.update(b"\0");
        let _ = serde_json::to_writer(&mut hasher, &last_shell);

        Ok(SemanticQuery {
            partition: PartitionKey {
                model: model_alias.into(),
                tenant: tenant.into(),
                context: *hasher.finalize().as_bytes(),
            },
            guard: Guard::of(text),
            text: text.to_owned(),
        })
    }

    /// The partition this query searches.
    pub fn partition(&self) -> &PartitionKey {
        &self.partition
    }

    /// The text that is embedded.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A copy of the request with no messages, without copying the (possibly
/// long) conversation first. Spelled out field by field so a field added to
/// [`ChatRequest`] breaks the build here instead of silently leaving the
/// partition hash.
fn clone_without_messages(r: &ChatRequest) -> ChatRequest {
    ChatRequest {
        model: r.model.clone(),
        messages: Vec::new(),
        temperature: r.temperature,
        top_p: r.top_p,
        n: r.n,
        stream: r.stream,
        stream_options: r.stream_options.clone(),
        stop: r.stop.clone(),
        max_tokens: r.max_tokens,
        max_completion_tokens: r.max_completion_tokens,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        seed: r.seed,
        user: r.user.clone(),
        tools: r.tools.clone(),
        tool_choice: r.tool_choice.clone(),
        parallel_tool_calls: r.parallel_tool_calls,
        response_format: r.response_format.clone(),
        extra: r.extra.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentPart, ImageUrl, Message, ResponseFormat, Tool};
    use serde_json::json;

    fn chat(system: Option<&str>, user: &str) -> ChatRequest {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message::system(s));
        }
        messages.push(Message::user(user));
        ChatRequest {
            model: "fast".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn same_context_same_partition_text_excluded() {
        let a = SemanticQuery::from_chat("fast", "t1", &chat(Some("be brief"), "What is Rust?")).unwrap();
        let b = SemanticQuery::from_chat("fast", "t1", &chat(Some("be brief"), "  Tell me about Rust ")).unwrap();
        assert_eq!(a.partition, b.partition);
        assert_eq!(b.text(), "Tell me about Rust");
        // Streaming does not change the partition.
        let mut s = chat(Some("be brief"), "x");
        s.stream = Some(true);
        assert_eq!(
            SemanticQuery::from_chat("fast", "t1", &s).unwrap().partition,
            a.partition
        );
    }

    #[test]
    fn partition_splits_on_model_tenant_system_history_tools_and_params() {
        let base = SemanticQuery::from_chat("fast", "t1", &chat(Some("be brief"), "q"))
            .unwrap()
            .partition;
        let other = |req: ChatRequest, model: &str, tenant: &str| {
            SemanticQuery::from_chat(model, tenant, &req).unwrap().partition
        };
        assert_ne!(base, other(chat(Some("be brief"), "q"), "smart", "t1"));
        assert_ne!(base, other(chat(Some("be brief"), "q"), "fast", "t2"));
        assert_ne!(base, other(chat(Some("be verbose"), "q"), "fast", "t1"));
        assert_ne!(base, other(chat(None, "q"), "fast", "t1"));
        let mut dev = chat(None, "q");
        dev.messages.insert(0, Message::new(Role::Developer, "be brief"));
        assert_ne!(base, other(dev, "fast", "t1"), "developer is not system");
        let mut hist = chat(Some("be brief"), "q");
        hist.messages.insert(1, Message::user("hi"));
        hist.messages.insert(2, Message::assistant("hello"));
        assert_ne!(base, other(hist, "fast", "t1"));
        let mut tools = chat(Some("be brief"), "q");
        tools.tools = Some(vec![Tool::function("f", "d", json!({"type": "object"}))]);
        assert_ne!(base, other(tools, "fast", "t1"));
        let mut fmt = chat(Some("be brief"), "q");
        fmt.response_format = Some(ResponseFormat::JsonObject);
        assert_ne!(base, other(fmt, "fast", "t1"));
        let mut temp = chat(Some("be brief"), "q");
        temp.temperature = Some(0.7);
        assert_ne!(base, other(temp, "fast", "t1"));
        let mut extra = chat(Some("be brief"), "q");
        extra.extra.insert("reasoning_effort".into(), json!("high"));
        assert_ne!(base, other(extra, "fast", "t1"));
        let mut named = chat(Some("be brief"), "q");
        if let Some(m) = named.messages.last_mut() {
            m.name = Some("alice".into());
        }
        assert_ne!(
            base,
            other(named, "fast", "t1"),
            "the last message's other fields count"
        );
    }

    #[test]
    fn ineligible_requests() {
        let empty = ChatRequest::default();
        assert_eq!(
            SemanticQuery::from_chat("m", "", &empty).unwrap_err(),
            Ineligible::NoTrailingUserMessage
        );
        let mut asst = chat(None, "q");
        asst.messages.push(Message::assistant("a"));
        assert_eq!(
            SemanticQuery::from_chat("m", "", &asst).unwrap_err(),
            Ineligible::NoTrailingUserMessage
        );
        assert_eq!(
            SemanticQuery::from_chat("m", "", &chat(None, "  \n ")).unwrap_err(),
            Ineligible::EmptyText
        );
        let mut none = chat(None, "q");
        none.messages[0].content = None;
        assert_eq!(
            SemanticQuery::from_chat("m", "", &none).unwrap_err(),
            Ineligible::EmptyText
        );
        let mut img = chat(None, "q");
        img.messages[0].content = Some(Content::Parts(vec![
            ContentPart::text("what is this?"),
            ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(ImageUrl {
                    url: "data:image/png;base64,AAAA".into(),
                    detail: None,
                }),
                extra: Default::default(),
            },
        ]));
        assert_eq!(
            SemanticQuery::from_chat("m", "", &img).unwrap_err(),
            Ineligible::NonTextContent
        );
        let mut parts = chat(None, "q");
        parts.messages[0].content = Some(Content::Parts(vec![ContentPart::text("a"), ContentPart::text("b")]));
        assert_eq!(SemanticQuery::from_chat("m", "", &parts).unwrap().text(), "a\nb");
        assert_eq!(Ineligible::NonTextContent.to_string(), "non_text_content");
    }

    #[test]
    fn guard_numbers_and_polarity() {
        assert_eq!(Guard::of("convert 5 km to miles"), Guard::of("How many miles is 5 km?"));
        assert_ne!(Guard::of("convert 5 km to miles"), Guard::of("convert 50 km to miles"));
        assert_ne!(Guard::of("set it to 21.5"), Guard::of("set it to 21"));
        assert_eq!(Guard::of("1,000.50 at 10:30").numbers.len(), 2);
        assert_ne!(Guard::of("lock the door"), Guard::of("unlock the door"));
        assert_ne!(Guard::of("turn on the light"), Guard::of("turn off the light"));
        assert_ne!(Guard::of("is it safe"), Guard::of("isn't it safe"));
        assert_ne!(Guard::of("is it safe"), Guard::of("is it not safe"));
        assert_ne!(Guard::of("two apples"), Guard::of("three apples"));
        assert_eq!(Guard::of("What is Rust?"), Guard::of("Tell me about Rust"));
        // No panics on odd input.
        for s in [
            "",
            "٣٤٥",
            "1.",
            ".5",
            "a'b’c",
            "n't",
            "🦀1🦀",
            "\u{0}\u{feff}",
            "1,",
            "12:",
        ] {
            let _ = Guard::of(s);
        }
        assert_eq!(Guard::of("٣٤٥").numbers.len(), 1);
    }

    #[test]
    fn query_new_trims_and_hashes_context() {
        let a = SemanticQuery::new("m", "t", b"ctx", "  hello ");
        let b = SemanticQuery::new("m", "t", b"ctx2", "hello");
        assert_eq!(a.text(), "hello");
        assert_ne!(a.partition, b.partition);
        assert!(format!("{:?}", a.partition()).starts_with("PartitionKey(m/t/"));
    }
}
