//! Cache keys: a versioned blake3 hash of exactly the request fields that
//! change the answer, scoped per tenant and per namespace generation.
//!
//! Two steps, because they serve different purposes:
//! 1. [`Fingerprint::of`] hashes the *content*: the resolved model alias and
//!    the generation-relevant request fields. It is what an idempotency
//!    record compares ("same body?") and never changes when the cache is
//!    invalidated.
//! 2. [`CacheKey::derive`] folds the fingerprint with the scope (tenant, or
//!    shared) and the namespace generations (global, per alias, per tenant),
//!    so bumping a generation invalidates everything under it without a
//!    scan.
//!
//! # What is hashed
//! The model alias; every message (role, content with all its parts, name,
//! tool calls, tool call id, refusal, unknown message fields); tools (order
//! kept: it is part of the prompt), tool choice, parallel tool calls,
//! response format (`text` counts as absent, its default), temperature,
//! top_p, presence and frequency penalties (quantised to 1e-6), seed, the
//! effective token cap (`max_completion_tokens`, else `max_tokens`), stop
//! sequences (one string = a one-element list; order ignored), `n` (absent
//! = 1), and every unknown top-level field (`logit_bias`, `logprobs`,
//! `reasoning_effort`, …)
//! except [`IGNORED_EXTRA_FIELDS`].
//!
//! Not hashed: `stream`, `stream_options` (stream and non-stream requests
//! share entries), `user`, and the ignored extra fields (request ids,
//! metadata, storage and routing hints). JSON object key order never matters:
//! objects are hashed with sorted keys at every depth (tool schemas, response
//! schemas, `extra`).

use super::canon::{Canon, tag};
use crate::types::{ChatRequest, Content, Message, ResponseFormat, Stop, Tool, ToolChoice};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Bumped whenever the canonical form changes, so entries written by an
/// older gateway are never read as if they meant the same thing.
pub const KEY_VERSION: u8 = 1;

/// Unknown top-level request fields that do not change the answer, so they
/// are left out of the key: identities and correlation ids, metadata kept
/// for the caller, storage and routing hints.
pub const IGNORED_EXTRA_FIELDS: &[&str] = &[
    "metadata",
    "store",
    "request_id",
    "user_id",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
];

/// The hash of a request's content (model alias + answer-changing fields).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Hashes `req` as sent to `model_alias` (the alias after resolution;
    /// `req.model` itself is not read, so the caller decides what it means).
    pub fn of(model_alias: &str, req: &ChatRequest) -> Self {
        let mut c = Canon::new("breakwater.cache.fingerprint");
        c.u64(u64::from(KEY_VERSION));
        c.field(1);
        c.str(model_alias);
        c.field(2);
        c.len_prefix(req.messages.len());
        for m in &req.messages {
            message(&mut c, m);
        }
        c.field(3);
        match &req.tools {
            Some(tools) if !tools.is_empty() => {
                c.len_prefix(tools.len());
                for t in tools {
                    tool(&mut c, t);
                }
            }
            _ => c.tag(tag::NONE),
        }
        c.field(4);
        match &req.tool_choice {
            None => c.tag(tag::NONE),
            Some(ToolChoice::None) => c.str("none"),
            Some(ToolChoice::Auto) => c.str("auto"),
            Some(ToolChoice::Required) => c.str("required"),
            Some(ToolChoice::Function(name)) => {
                c.str("function");
                c.str(name);
            }
            Some(ToolChoice::Other(v)) => c.opt_value(Some(v)),
        }
        c.field(5);
        c.opt_bool(req.parallel_tool_calls);
        c.field(6);
        match &req.response_format {
            None | Some(ResponseFormat::Text) => c.tag(tag::NONE),
            Some(ResponseFormat::JsonObject) => c.str("json_object"),
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                c.str("json_schema");
                c.str(&json_schema.name);
                c.opt_str(json_schema.description.as_deref());
                c.opt_value(json_schema.schema.as_ref());
                c.opt_bool(json_schema.strict);
            }
        }
        c.field(7);
        c.opt_param(req.temperature);
        c.field(8);
        c.opt_param(req.top_p);
        c.field(9);
        match req.seed {
            Some(s) => c.i64(s),
            None => c.tag(tag::NONE),
        }
        c.field(10);
        match req.max_output_tokens() {
            Some(n) => c.u64(u64::from(n)),
            None => c.tag(tag::NONE),
        }
        c.field(11);
        match &req.stop {
            None => c.tag(tag::NONE),
            Some(Stop::One(s)) => {
                c.len_prefix(1);
                c.str(s);
            }
            Some(Stop::Many(v)) => {
                let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
                v.sort_unstable();
                v.dedup();
                c.len_prefix(v.len());
                for s in v {
                    c.str(s);
                }
            }
        }
        c.field(12);
        c.u64(u64::from(req.n.unwrap_or(1)));
        c.field(13);
        c.opt_param(req.presence_penalty);
        c.field(14);
        c.opt_param(req.frequency_penalty);
        c.field(15);
        c.object(&req.extra, |k| !IGNORED_EXTRA_FIELDS.contains(&k));
        Fingerprint(c.finish())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

fn message(c: &mut Canon, m: &Message) {
    c.str(m.role.as_str());
    match &m.content {
        None => c.tag(tag::NONE),
        Some(Content::Text(s)) => c.str(s),
        Some(Content::Parts(parts)) => {
            c.tag(tag::ARRAY);
            c.len_prefix(parts.len());
            for p in parts {
                c.str(&p.kind);
                c.opt_str(p.text.as_deref());
                match &p.image_url {
                    Some(img) => {
                        c.str(&img.url);
                        c.opt_str(img.detail.as_deref());
                    }
                    None => c.tag(tag::NONE),
                }
                c.object(&p.extra, |_| true);
            }
        }
    }
    c.opt_str(m.name.as_deref());
    match &m.tool_calls {
        Some(calls) if !calls.is_empty() => {
            c.len_prefix(calls.len());
            for call in calls {
                c.str(&call.id);
                c.str(&call.kind);
                c.str(&call.function.name);
                c.str(&call.function.arguments);
            }
        }
        _ => c.tag(tag::NONE),
    }
    c.opt_str(m.tool_call_id.as_deref());
    c.opt_str(m.refusal.as_deref());
    c.object(&m.extra, |_| true);
}

fn tool(c: &mut Canon, t: &Tool) {
    c.str(&t.kind);
    c.str(&t.function.name);
    c.opt_str(t.function.description.as_deref());
    c.opt_value(t.function.parameters.as_ref());
    c.opt_bool(t.function.strict);
    c.object(&t.function.extra, |_| true);
    c.object(&t.extra, |_| true);
}

/// Whose entries a key may read (`cache.scope` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Each tenant (virtual key) has its own entries: one customer can never
    /// read another's cached answer.
    #[default]
    Tenant,
    /// All tenants share entries (opt-in, for a single-owner deployment).
    Shared,
}

/// The namespace generations folded into a key; bumping one invalidates
/// everything under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Generations {
    /// Bumped by a flush of the whole cache.
    pub global: u64,
    /// Bumped by invalidating the model alias.
    pub alias: u64,
    /// Bumped by invalidating the tenant (unused with a shared scope).
    pub tenant: u64,
}

/// The key of one cache entry (and of one coalesced flight).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Folds a fingerprint with the scope and namespace generations.
    /// With [`CacheScope::Shared`] the tenant is left out (and so is its
    /// generation: shared entries belong to no tenant).
    pub fn derive(fp: &Fingerprint, scope: CacheScope, tenant: &str, gens: Generations) -> Self {
        let mut c = Canon::new("breakwater.cache.key");
        c.u64(u64::from(KEY_VERSION));
        c.raw(&fp.0);
        c.u64(gens.global);
        c.u64(gens.alias);
        match scope {
            CacheScope::Tenant => {
                c.str("tenant");
                c.str(tenant);
                c.u64(gens.tenant);
            }
            CacheScope::Shared => c.str("shared"),
        }
        CacheKey(c.finish())
    }

    /// Lower-case hex (the Redis key suffix, and the form admin routes use).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses [`CacheKey::to_hex`]'s output.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(CacheKey(out))
    }

    /// A shard number for sharded maps, from the (uniform) hash bytes.
    pub fn shard(&self, shards: usize) -> usize {
        self.0[0] as usize % shards.max(1)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.to_hex()[..16])
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentPart, Message, ResponseFormat, StreamOptions, Tool};
    use serde_json::json;

    fn base() -> ChatRequest {
        let mut r = ChatRequest::user("ignored", "hello");
        r.temperature = Some(0.0);
        r.tools = Some(vec![Tool::function(
            "get_weather",
            "weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}}),
        )]);
        r
    }

    fn fp(r: &ChatRequest) -> Fingerprint {
        Fingerprint::of("fast", r)
    }

    #[test]
    fn fields_that_matter_change_the_fingerprint() {
        let b = fp(&base());
        type Change = Box<dyn Fn(&mut ChatRequest)>;
        let changes: Vec<Change> = vec![
            Box::new(|r| r.temperature = Some(0.7)),
            Box::new(|r| r.top_p = Some(0.9)),
            Box::new(|r| r.seed = Some(1)),
            Box::new(|r| r.max_tokens = Some(10)),
            Box::new(|r| r.stop = Some(Stop::One("x".into()))),
            Box::new(|r| r.n = Some(2)),
            Box::new(|r| r.presence_penalty = Some(0.5)),
            Box::new(|r| r.frequency_penalty = Some(0.5)),
            Box::new(|r| r.tool_choice = Some(ToolChoice::Required)),
            Box::new(|r| r.parallel_tool_calls = Some(false)),
            Box::new(|r| r.response_format = Some(ResponseFormat::JsonObject)),
            Box::new(|r| {
                r.extra.insert("logit_bias".into(), json!({"50256": -100}));
            }),
            Box::new(|r| r.messages.push(Message::assistant("hi"))),
            Box::new(|r| r.messages[0].name = Some("bob".into())),
            Box::new(|r| {
                r.messages[0].content = Some(Content::Parts(vec![ContentPart::text("hello")]));
            }),
            Box::new(|r| {
                if let Some(t) = r.tools.as_mut() {
                    t[0].function.parameters = Some(json!({"type": "object"}));
                }
            }),
            Box::new(|r| {
                if let Some(t) = r.tools.as_mut() {
                    t[0].function.description = Some("other".into());
                }
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut r = base();
            change(&mut r);
            assert_ne!(fp(&r), b, "change {i} should change the fingerprint");
        }
        assert_ne!(Fingerprint::of("other-alias", &base()), b);
    }

    #[test]
    fn fields_that_do_not_matter_keep_the_fingerprint() {
        let b = fp(&base());
        let mut r = base();
        r.model = "something-else".into();
        r.stream = Some(true);
        r.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            ..Default::default()
        });
        r.user = Some("u-123".into());
        r.extra.insert("metadata".into(), json!({"trace": "abc"}));
        r.extra.insert("store".into(), json!(true));
        r.n = Some(1);
        r.response_format = Some(ResponseFormat::Text);
        assert_eq!(fp(&r), b);
    }

    #[test]
    fn normalisations() {
        let mut a = base();
        a.max_tokens = Some(50);
        let mut b = base();
        b.max_completion_tokens = Some(50);
        assert_eq!(fp(&a), fp(&b));
        a.stop = Some(Stop::One("x".into()));
        b.stop = Some(Stop::Many(vec!["x".into()]));
        assert_eq!(fp(&a), fp(&b));
        a.stop = Some(Stop::Many(vec!["x".into(), "y".into()]));
        b.stop = Some(Stop::Many(vec!["y".into(), "x".into()]));
        assert_eq!(fp(&a), fp(&b));
    }

    #[test]
    fn schema_key_order_does_not_matter() {
        let a: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}}}],
            "logit_bias":{"1":2,"3":4}}"#,
        )
        .unwrap();
        let b: ChatRequest = serde_json::from_str(
            r#"{"logit_bias":{"3":4,"1":2},"temperature":0.0,"model":"m",
            "tools":[{"function":{"parameters":{"properties":{"b":{"type":"integer"},"a":{"type":"string"}},"type":"object"},"name":"f"},"type":"function"}],
            "messages":[{"content":"hi","role":"user"}]}"#,
        )
        .unwrap();
        assert_eq!(fp(&a), fp(&b));
    }

    #[test]
    fn keys_are_scoped() {
        let f = fp(&base());
        let g = Generations::default();
        let a = CacheKey::derive(&f, CacheScope::Tenant, "team-a", g);
        let b = CacheKey::derive(&f, CacheScope::Tenant, "team-b", g);
        assert_ne!(a, b);
        let sa = CacheKey::derive(&f, CacheScope::Shared, "team-a", g);
        let sb = CacheKey::derive(&f, CacheScope::Shared, "team-b", g);
        assert_eq!(sa, sb);
        assert_ne!(sa, a);
        let bumped = Generations { alias: 1, ..g };
        assert_ne!(CacheKey::derive(&f, CacheScope::Tenant, "team-a", bumped), a);
        assert_eq!(CacheKey::from_hex(&a.to_hex()), Some(a));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }

    proptest::proptest! {
        #[test]
        fn stable_across_a_json_round_trip_and_distinct_per_prompt(
            a in ".{0,64}",
            b in ".{0,64}",
            temp in proptest::option::of(0.0f64..2.0),
            seed in proptest::option::of(proptest::num::i64::ANY),
            bias in proptest::collection::btree_map("[0-9]{1,5}", -100i64..100, 0..5),
        ) {
            let mut r = ChatRequest::user("m", a.clone());
            r.temperature = temp;
            r.seed = seed;
            r.extra.insert("logit_bias".into(), serde_json::to_value(&bias).unwrap());
            let text = serde_json::to_string(&r).unwrap();
            let back: ChatRequest = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(fp(&r), fp(&back));
            let mut other = r.clone();
            other.messages[0] = Message::user(b.clone());
            proptest::prop_assert_eq!(a == b, fp(&r) == fp(&other));
        }
    }
}
