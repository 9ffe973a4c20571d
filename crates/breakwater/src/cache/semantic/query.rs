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

/// Features of a text that must agree for a hit (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Guard {
    /// Numbers and tokens holding digits, in order of appearance (digits,
    /// or English number words): `2^10` is not `10^2`.
    numbers: Vec<Box<str>>,
    /// Negation and polarity words present, sorted and deduplicated.
    polarity: Vec<&'static str>,
    /// (preposition, the word it governs) pairs, sorted: `from usd`, `to eur`.
    relations: Vec<(&'static str, Box<str>)>,
    /// Names (capitalised words inside a sentence), in order of first
    /// appearance: "did Alice call Bob" is not "did Bob call Alice" (0.99).
    names: Vec<Box<str>>,
}

/// Words whose presence flips or redirects a request's meaning while barely
/// moving its embedding (measured: "turn on/off the lights" 0.91, "buy/sell
/// 10 shares" 0.95, "is coffee good/bad" 0.95). Checked as a set:
/// paraphrases tend to keep them; when they do not, the cost is a miss.
const POLARITY: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nothing",
    "nobody",
    "neither",
    "nor",
    "without",
    "cannot",
    "except",
    "on",
    "off",
    "up",
    "down",
    "open",
    "close",
    "closed",
    "lock",
    "unlock",
    "locked",
    "unlocked",
    "enable",
    "disable",
    "enabled",
    "disabled",
    "start",
    "stop",
    "increase",
    "decrease",
    "raise",
    "lower",
    "more",
    "less",
    "min",
    "max",
    "minimum",
    "maximum",
    "before",
    "after",
    "above",
    "below",
    "add",
    "remove",
    "allow",
    "deny",
    "buy",
    "sell",
    "arm",
    "disarm",
    "good",
    "bad",
    "best",
    "worst",
    "better",
    "worse",
    "pros",
    "cons",
    "advantages",
    "disadvantages",
    "benefits",
    "drawbacks",
    "risks",
    "safe",
    "unsafe",
    "today",
    "yesterday",
    "tomorrow",
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

/// Prepositions that tie a request to a specific thing or direction. Mean
/// pooling is nearly blind to word order: "convert 5 km to miles" and
/// "convert 5 miles to km" score 0.99, "from USD to EUR" and "from EUR to
/// USD" 0.996. So the word each governs is recorded, and two texts that both
/// use a preposition must govern the same words with it.
const RELATIONS: &[&str] = &[
    "to", "from", "into", "in", "on", "by", "of", "than", "per", "for", "with", "at", "about", "vs", "versus",
];

/// Words skipped to find what a preposition governs.
const DETERMINERS: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this", "that", "these", "those", "some",
    "any",
];

/// A word of the text.
struct Token {
    /// Lower-cased.
    text: String,
    /// Written with a capital, not at the start of a sentence, not "I": a
    /// name, most likely.
    name: bool,
}

/// Word tokens: letters and digits, apostrophes inside words, and `.`, `,`,
/// `:` between digits (`1,000.50`, `10:30`).
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut sentence_start = true;
    while i < chars.len() {
        let first = chars[i];
        if !first.is_alphanumeric() {
            if matches!(first, '.' | '?' | '!' | '\n' | ':' | ';') {
                sentence_start = true;
            }
            i += 1;
            continue;
        }
        let mut tok = String::new();
        while let Some(&c) = chars.get(i) {
            let next_is = |f: fn(char) -> bool| chars.get(i + 1).is_some_and(|&n| f(n));
            if c.is_alphanumeric() {
                tok.extend(c.to_lowercase());
            } else if matches!(c, '\'' | '’') && next_is(char::is_alphabetic) {
                tok.push('\'');
            } else if matches!(c, '.' | ',' | ':')
                && tok.chars().last().is_some_and(char::is_numeric)
                && next_is(char::is_numeric)
            {
                tok.push(c);
            } else {
                break;
            }
            i += 1;
        }
        let name = first.is_uppercase() && !sentence_start && tok != "i";
        sentence_start = false;
        out.push(Token { text: tok, name });
    }
    out
}

/// The governed word, normalised so paraphrases agree: no possessive, no
/// plural `s` ("Hamlet's" = "hamlet", "miles" = "mile").
fn object(word: &str) -> Box<str> {
    let w = word.strip_suffix("'s").unwrap_or(word);
    let w = if w.len() > 3 {
        w.strip_suffix('s').unwrap_or(w)
    } else {
        w
    };
    w.into()
}

impl Guard {
    /// The guard features of `text`.
    pub fn of(text: &str) -> Guard {
        let toks = tokens(text);
        let mut g = Guard::default();
        for (i, Token { text: tok, name }) in toks.iter().enumerate() {
            if *name && !g.names.iter().any(|n| **n == **tok) {
                g.names.push(tok.as_str().into());
            }
            if tok.chars().any(char::is_numeric) {
                g.numbers.push(tok.as_str().into());
            } else if let Some(w) = NUMBER_WORDS.iter().find(|w| **w == tok) {
                g.numbers.push((*w).into());
            } else if tok.ends_with("n't") {
                g.polarity.push("not");
            } else if let Some(w) = POLARITY.iter().find(|w| **w == tok) {
                g.polarity.push(w);
            }
            if let Some(prep) = RELATIONS.iter().find(|w| **w == tok)
                && let Some(obj) = toks[i + 1..].iter().find(|t| !DETERMINERS.contains(&t.text.as_str()))
            {
                g.relations.push((prep, object(&obj.text)));
            }
        }
        g.polarity.sort_unstable();
        g.polarity.dedup();
        g.relations.sort_unstable();
        g.relations.dedup();
        g
    }

    /// Whether a text with this guard may be answered by one with `other`:
    /// the same numbers in the same order, the same polarity words, and for
    /// every preposition both use, the same governed words, and the names
    /// both mention in the same order.
    pub fn compatible(&self, other: &Guard) -> bool {
        if self.numbers != other.numbers || self.polarity != other.polarity {
            return false;
        }
        let shared = |a: &Guard, b: &Guard| -> Vec<Box<str>> {
            a.names.iter().filter(|n| b.names.contains(n)).cloned().collect()
        };
        if shared(self, other) != shared(other, self) {
            return false;
        }
        let objects = |g: &Guard, prep: &str| -> Vec<Box<str>> {
            g.relations
                .iter()
                .filter(|r| r.0 == prep)
                .map(|r| r.1.clone())
                .collect()
        };
        self.relations.iter().all(|(prep, _)| {
            let theirs = objects(other, prep);
            theirs.is_empty() || theirs == objects(self, prep)
        })
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
    fn guard_numbers_polarity_and_relations() {
        let ok = |a: &str, b: &str| Guard::of(a).compatible(&Guard::of(b)) && Guard::of(b).compatible(&Guard::of(a));
        assert!(!ok("Convert 5 km to miles", "Convert 5 miles to km"));
        assert!(ok("Convert 5 km to miles", "How many miles is 5 km?"));
        assert!(!ok("exchange rate from USD to EUR", "exchange rate from EUR to USD"));
        assert!(!ok(
            "How many teaspoons are in a tablespoon?",
            "How many tablespoons are in a teaspoon?"
        ));
        assert!(!ok("convert a string to an integer", "convert an integer to a string"));
        assert!(ok(
            "Summarize the plot of Hamlet.",
            "Give me a summary of Hamlet's plot."
        ));
        assert!(ok("What is the capital of France?", "What's France's capital city?"));
        assert!(!ok("What is the capital of France?", "What is the capital of Germany?"));
        assert!(ok("a joke about cats", "a joke about the cat"));
        assert!(!ok("Is coffee good for you?", "Is coffee bad for you?"));
        let toks = tokens("It's 1,000.50 at 10:30, isn’t it? K2 and Bob.");
        let words: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            words,
            ["it's", "1,000.50", "at", "10:30", "isn't", "it", "k2", "and", "bob"]
        );
        let names: Vec<bool> = toks.iter().map(|t| t.name).collect();
        assert_eq!(names, [false, false, false, false, false, false, false, false, true]);
        assert!(!ok("Did Alice call Bob?", "Did Bob call Alice?"));
        assert!(ok("Did Alice call Bob?", "Has Alice called Bob?"));
        assert!(
            ok("Did Alice call Bob?", "did alice call bob"),
            "names need both sides capitalised"
        );
        assert!(ok("convert 5 km to miles", "How many miles is 5 km?"));
        assert!(!ok("convert 5 km to miles", "convert 50 km to miles"));
        assert!(!ok("set it to 21.5", "set it to 21"));
        assert_eq!(Guard::of("1,000.50 at 10:30").numbers.len(), 2);
        assert!(!ok("ipv4 address", "ipv6 address"));
        assert!(!ok("lock the door", "unlock the door"));
        assert!(!ok("turn on the light", "turn off the light"));
        assert!(!ok("is it safe", "isn't it safe"));
        assert!(!ok("is it safe", "is it not safe"));
        assert!(!ok("two apples", "three apples"));
        assert!(!ok("alarm at 7am", "alarm at 7pm"));
        assert!(ok("alarm at 7AM", "wake me at 7am"));
        assert!(!ok("2 to the power of 10", "10 to the power of 2"), "order counts");
        assert!(ok("What is Rust?", "Tell me about Rust"));
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
