//! The simulator's decisions: for each request, which fault (if any), how
//! long to wait, and what to answer. Deterministic: the n-th request with a
//! given seed always gets the same decision, and the reply text depends only
//! on the seed and the prompt.

use super::config::{Fault, Latency, SimulatorConfig};
use crate::types::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A scripted answer for the next request, overriding the random draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// Inject this fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Answer with this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Answer with this tool call `{name, arguments}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<Value>,
    /// Override the latency of this request, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The `Retry-After` of a scripted 429, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// What the simulator will do for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The fault to inject, if any.
    pub fault: Option<Fault>,
    /// Delay before the first token (or the whole answer).
    pub first_token_delay: Duration,
    /// Delay between streamed tokens.
    pub token_interval: Duration,
    /// The answer, when there is no fault (also used up to a cut).
    pub response: ChatResponse,
    /// Generated text pieces, one per streamed chunk.
    pub tokens: Vec<String>,
    /// `Retry-After` of a 429.
    pub retry_after: Duration,
    /// Chunks before a cut or stall.
    pub cut_after: usize,
    /// The request number (from 0).
    pub seq: u64,
}

impl Plan {
    /// The chunks of the streamed answer: a role chunk, one chunk per token,
    /// the tool calls, the finish, and a usage chunk.
    pub fn chunks(&self) -> Vec<ChatChunk> {
        (0..self.chunk_count()).filter_map(|i| self.chunk(i)).collect()
    }

    /// How many chunks [`Plan::chunks`] has.
    pub fn chunk_count(&self) -> usize {
        self.tokens.len() + self.response.tool_calls().len() + 3
    }

    /// Chunk `i` of [`Plan::chunks`], made when asked for, so that a held
    /// stream does not keep all of its chunks in memory from the start.
    pub fn chunk(&self, i: usize) -> Option<ChatChunk> {
        let r = &self.response;
        let mk = |delta: Delta, finish: Option<FinishReason>| {
            let mut c = ChatChunk::new(r.id.clone(), r.model.clone(), r.created);
            c.choices.push(ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            });
            c
        };
        let calls = r.tool_calls();
        let tokens = self.tokens.len();
        Some(match i {
            0 => mk(
                Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                },
                None,
            ),
            i if i <= tokens => mk(
                Delta {
                    content: Some(self.tokens[i - 1].clone()),
                    ..Default::default()
                },
                None,
            ),
            i if i <= tokens + calls.len() => {
                let k = i - tokens - 1;
                let call = &calls[k];
                mk(
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: k as u32,
                            id: Some(call.id.clone()),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta {
                                name: Some(call.function.name.clone()),
                                arguments: Some(call.function.arguments.clone()),
                            }),
                        }]),
                        ..Default::default()
                    },
                    None,
                )
            }
            i if i == tokens + calls.len() + 1 => mk(Delta::default(), r.finish_reason().cloned()),
            i if i == tokens + calls.len() + 2 => {
                let mut usage = ChatChunk::new(r.id.clone(), r.model.clone(), r.created);
                usage.usage.clone_from(&r.usage);
                usage
            }
            _ => return None,
        })
    }
}

/// Counters the simulator keeps, so tests can assert how many upstream
/// calls were made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests received (chat and embeddings).
    pub requests: u64,
    /// Requests by route.
    pub by_route: BTreeMap<String, u64>,
    /// Requests by outcome (`ok` or a fault name).
    pub by_outcome: BTreeMap<String, u64>,
    /// Streams started.
    pub streams_started: u64,
    /// Streams that sent their last event.
    pub streams_completed: u64,
    /// Streams the client abandoned before the end.
    pub streams_cancelled: u64,
    /// Requests being served now.
    pub in_flight: u64,
    /// Tokens generated (streams count what was sent).
    pub completion_tokens: u64,
}

/// The shared, thread-safe simulator state.
#[derive(Debug)]
pub struct SimEngine {
    config: RwLock<Arc<SimulatorConfig>>,
    seq: AtomicU64,
    stats: Mutex<SimStats>,
    script: Mutex<VecDeque<ScriptStep>>,
    in_flight: AtomicU64,
}

const WORDS: &[&str] = &[
    "the", "river", "stone", "light", "quiet", "harbor", "signal", "steady", "wave", "north", "garden", "bright",
    "careful", "answer", "simple", "window", "morning", "field", "clear", "path", "bridge", "gentle", "storm", "calm",
    "lantern", "open", "market", "silver", "forest", "measure", "small", "ready", "shore", "winter", "patient",
    "thread", "echo", "anchor", "summer", "honest", "orbit", "paper", "copper", "meadow", "candle", "swift", "compass",
    "harvest",
];

/// SplitMix64: a tiny, good-enough deterministic generator.
#[derive(Debug, Clone)]
pub(crate) struct Mix(u64);

impl Mix {
    pub(crate) fn new(seed: u64) -> Self {
        Mix(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn hash_str(seed: u64, s: &str) -> u64 {
    // FNV-1a folded with the seed: stable across runs and platforms.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Default for SimEngine {
    fn default() -> Self {
        Self::new(SimulatorConfig::default())
    }
}

impl SimEngine {
    /// An engine with `config`.
    pub fn new(config: SimulatorConfig) -> Self {
        SimEngine {
            config: RwLock::new(Arc::new(config)),
            seq: AtomicU64::new(0),
            stats: Mutex::new(SimStats::default()),
            script: Mutex::new(VecDeque::new()),
            in_flight: AtomicU64::new(0),
        }
    }

    /// The current settings.
    pub fn config(&self) -> Arc<SimulatorConfig> {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the settings (live; requests in progress keep their plan).
    pub fn set_config(&self, config: SimulatorConfig) -> Result<(), String> {
        config.validate()?;
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(config);
        }
        Ok(())
    }

    /// Queues scripted answers for the next requests.
    pub fn push_script(&self, steps: impl IntoIterator<Item = ScriptStep>) {
        if let Ok(mut s) = self.script.lock() {
            s.extend(steps);
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        let mut s = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        s.in_flight = self.in_flight.load(Ordering::Relaxed);
        s
    }

    /// Zeroes the counters and the script, and restarts the sequence.
    pub fn reset(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = SimStats::default();
        }
        if let Ok(mut s) = self.script.lock() {
            s.clear();
        }
        self.seq.store(0, Ordering::Relaxed);
    }

    fn bump(&self, f: impl FnOnce(&mut SimStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// Marks a request in flight until the guard drops.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Counts a stream start.
    pub fn stream_started(&self) {
        self.bump(|s| s.streams_started += 1);
    }

    /// Counts a stream end: completed, or abandoned by the client.
    pub fn stream_ended(&self, completed: bool, tokens_sent: u64) {
        self.bump(|s| {
            if completed {
                s.streams_completed += 1;
            } else {
                s.streams_cancelled += 1;
            }
            s.completion_tokens += tokens_sent;
        });
    }

    /// Counts an embeddings request and decides its fault.
    pub fn plan_embed(&self, route: &str) -> (Option<Fault>, Duration, Duration) {
        let cfg = self.config();
        let cfg = cfg.for_route(route);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rng = Mix::new(cfg.seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let step = self.script.lock().ok().and_then(|mut s| s.pop_front());
        let fault = match &step {
            Some(s) => s.fault,
            None => draw_fault(cfg, &mut rng),
        };
        let delay = step
            .as_ref()
            .and_then(|s| s.latency_ms)
            .map(Duration::from_millis)
            .unwrap_or_else(|| latency(cfg, &mut rng));
        let retry = Duration::from_secs(step.and_then(|s| s.retry_after_s).unwrap_or(cfg.retry_after_s));
        self.record(route, fault);
        (fault, delay, retry)
    }

    fn record(&self, route: &str, fault: Option<Fault>) {
        self.bump(|s| {
            s.requests += 1;
            *s.by_route.entry(route.to_string()).or_default() += 1;
            *s.by_outcome
                .entry(fault.map_or("ok", Fault::as_str).to_string())
                .or_default() += 1;
        });
    }

    /// Counts a chat request and decides everything about it.
    pub fn plan(&self, route: &str, req: &ChatRequest) -> Plan {
        let cfg_arc = self.config();
        let cfg = cfg_arc.for_route(route);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut rng = Mix::new(cfg.seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let step = self.script.lock().ok().and_then(|mut s| s.pop_front());
        let fault = match &step {
            Some(s) => s.fault,
            None => draw_fault(cfg, &mut rng),
        };
        let first_token_delay = step
            .as_ref()
            .and_then(|s| s.latency_ms)
            .map(Duration::from_millis)
            .unwrap_or_else(|| latency(cfg, &mut rng));
        let token_interval = if cfg.tokens_per_s > 0.0 {
            Duration::from_secs_f64(1.0 / cfg.tokens_per_s)
        } else {
            Duration::ZERO
        };
        let (response, tokens) = answer(cfg, req, step.as_ref(), seq);
        let retry_after = Duration::from_secs(step.as_ref().and_then(|s| s.retry_after_s).unwrap_or(cfg.retry_after_s));
        self.record(route, fault);
        Plan {
            fault,
            first_token_delay,
            token_interval,
            response,
            tokens,
            retry_after,
            cut_after: cfg.cut_after_chunks as usize,
            seq,
        }
    }
}

/// Decrements the in-flight counter when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<SimEngine>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn draw_fault(cfg: &SimulatorConfig, rng: &mut Mix) -> Option<Fault> {
    let u = rng.unit();
    let mut acc = 0.0;
    for (f, p) in cfg.faults.table() {
        acc += p;
        if u < acc {
            return Some(f);
        }
    }
    None
}

fn latency(cfg: &SimulatorConfig, rng: &mut Mix) -> Duration {
    let ms = match &cfg.latency {
        None => cfg.latency_ms as f64,
        Some(Latency::Fixed { ms }) => *ms as f64,
        Some(Latency::Uniform { min_ms, max_ms }) => *min_ms as f64 + rng.unit() * (*max_ms - *min_ms) as f64,
        Some(Latency::Lognormal { median_ms, sigma }) => {
            // Box–Muller for a standard normal draw.
            let u1 = rng.unit().max(f64::MIN_POSITIVE);
            let u2 = rng.unit();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            *median_ms as f64 * (sigma * z).exp()
        }
    };
    let ms = match &cfg.slow {
        Some(s) if rng.unit() < s.p => ms * s.factor,
        _ => ms,
    };
    Duration::from_secs_f64((ms.max(0.0) / 1000.0).min(86_400.0))
}

/// The text of the last user message, which seeds the reply.
fn last_user_text(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(Message::text)
        .unwrap_or_default()
}

/// Splits a text into stream pieces of about one word each.
fn split_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch == ' ' && !cur.is_empty() && cur != " " {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn answer(
    cfg: &SimulatorConfig,
    req: &ChatRequest,
    step: Option<&ScriptStep>,
    seq: u64,
) -> (ChatResponse, Vec<String>) {
    let prompt = last_user_text(req);
    let mut rng = Mix::new(hash_str(cfg.seed, &prompt));
    let cap = req.max_output_tokens().unwrap_or(u32::MAX).max(1);
    let mut finish = FinishReason::Stop;
    let mut calls = Vec::new();
    let text = if let Some(t) = step.and_then(|s| s.reply.clone()) {
        t
    } else if let Some(tc) = step.and_then(|s| s.tool_call.as_ref()) {
        let name = tc.get("name").and_then(Value::as_str).unwrap_or("tool").to_string();
        let args = match tc.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "{}".into(),
        };
        calls.push(ToolCall::function(format!("call_{seq}_0"), name, args));
        String::new()
    } else if let Some(tool) = pick_tool(req) {
        let args = tool
            .function
            .parameters
            .as_ref()
            .map(|s| example(s, &mut rng, 0))
            .unwrap_or_else(|| json!({}));
        calls.push(ToolCall::function(
            format!("call_{seq}_0"),
            tool.function.name.clone(),
            args.to_string(),
        ));
        String::new()
    } else if let Some(fmt) = req.response_format.as_ref().filter(|f| f.wants_json()) {
        match fmt.schema() {
            Some(schema) => example(schema, &mut rng, 0).to_string(),
            None => json!({"answer": words(&mut rng, 6)}).to_string(),
        }
    } else if let Some(fixed) = &cfg.reply {
        fixed.clone()
    } else {
        let n = cfg.reply_tokens.max(1);
        if n > cap {
            finish = FinishReason::Length;
        }
        words(&mut rng, n.min(cap) as usize)
    };
    let mut tokens = split_tokens(&text);
    if tokens.len() as u32 > cap && calls.is_empty() {
        tokens.truncate(cap as usize);
        finish = FinishReason::Length;
    }
    let text: String = tokens.concat();
    if !calls.is_empty() {
        finish = FinishReason::ToolCalls;
    }
    let mut message = Message::assistant(text);
    if !calls.is_empty() {
        message.content = None;
        message.tool_calls = Some(calls);
    }
    let completion = (tokens.len() as u32).max(1);
    let resp = ChatResponse {
        id: format!("chatcmpl-sim{seq:08x}"),
        object: "chat.completion".into(),
        created: unix_now(),
        model: req.model.clone(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(Usage::new(req.estimate_prompt_tokens().max(1), completion)),
        system_fingerprint: Some("breakwater-sim".into()),
        extra: Extra::new(),
    };
    (resp, tokens)
}

fn words(rng: &mut Mix, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(w);
        }
    }
    out.push('.');
    out
}

/// The tool the model "decides" to call: forced by `tool_choice`, or the
/// first tool when the conversation ends with a user turn (after a tool
/// result it answers in text, as a real model would).
fn pick_tool(req: &ChatRequest) -> Option<&Tool> {
    let tools = req.tools.as_ref()?;
    match &req.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Function(name)) => tools.iter().find(|t| &t.function.name == name),
        Some(ToolChoice::Required) => tools.first(),
        _ => match req.messages.last() {
            Some(m) if m.role == Role::User => tools.first(),
            _ => None,
        },
    }
}

/// A value that satisfies a (simple) JSON Schema: objects with all their
/// properties, enum values, numbers within bounds. `seed` picks among the
/// allowed values.
pub fn example_from_schema(schema: &Value, seed: u64) -> Value {
    example(schema, &mut Mix::new(seed), 0)
}

fn example(schema: &Value, rng: &mut Mix, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        return e[(rng.next_u64() % e.len() as u64) as usize].clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return example(first, rng, depth + 1);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut o = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    o.insert(k.clone(), example(v, rng, depth + 1));
                }
            }
            Value::Object(o)
        }
        "array" => {
            let item = schema.get("items").cloned().unwrap_or(json!({"type": "string"}));
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).clamp(1, 8);
            Value::Array((0..min).map(|_| example(&item, rng, depth + 1)).collect())
        }
        "integer" => {
            let lo = schema.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(lo.saturating_add(100))
                .max(lo);
            let span = (hi - lo).unsigned_abs().saturating_add(1);
            Value::from(lo.saturating_add((rng.next_u64() % span) as i64))
        }
        "number" => {
            let lo = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let hi = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(lo + 100.0)
                .max(lo);
            Value::from(((lo + rng.unit() * (hi - lo)) * 100.0).round() / 100.0)
        }
        "boolean" => Value::Bool(rng.next_u64() & 1 == 1),
        "null" => Value::Null,
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut s = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize].to_string();
            while s.len() < min {
                s.push('x');
            }
            Value::String(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_same_reply_and_streams_match() {
        let e = SimEngine::new(SimulatorConfig::default());
        let req = ChatRequest::user("m", "hello there");
        let a = e.plan("openai", &req);
        let b = e.plan("openai", &req);
        assert_eq!(a.response.text(), b.response.text());
        assert_ne!(a.response.id, b.response.id);
        let mut asm = StreamAssembler::new();
        for c in a.chunks() {
            asm.push(&c);
        }
        let streamed = asm.finish();
        assert_eq!(streamed.text(), a.response.text());
        assert_eq!(streamed.usage, a.response.usage);
        assert_eq!(e.stats().requests, 2);
    }

    #[test]
    fn max_tokens_truncates_with_length() {
        let e = SimEngine::new(SimulatorConfig::default());
        let mut req = ChatRequest::user("m", "hi");
        req.max_tokens = Some(3);
        let p = e.plan("openai", &req);
        assert_eq!(p.tokens.len(), 3);
        assert_eq!(p.response.finish_reason(), Some(&FinishReason::Length));
    }

    #[test]
    fn fault_rates_are_deterministic_and_close_to_config() {
        let cfg = SimulatorConfig {
            faults: crate::simulator::Faults {
                server_error: 0.3,
                rate_limited: 0.1,
                ..Default::default()
            },
            ..Default::default()
        };
        let run = || {
            let e = SimEngine::new(cfg.clone());
            (0..2000)
                .map(|_| e.plan("openai", &ChatRequest::user("m", "x")).fault)
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let errors = a.iter().filter(|f| **f == Some(Fault::ServerError)).count();
        let limited = a.iter().filter(|f| **f == Some(Fault::RateLimited)).count();
        assert!((520..=680).contains(&errors), "{errors}");
        assert!((150..=250).contains(&limited), "{limited}");
    }

    #[test]
    fn scripts_override_the_draw() {
        let e = SimEngine::new(SimulatorConfig::default());
        e.push_script([
            ScriptStep {
                fault: Some(Fault::RateLimited),
                reply: None,
                tool_call: None,
                latency_ms: None,
                retry_after_s: Some(2),
            },
            ScriptStep {
                fault: None,
                reply: Some("{\"a\": 1}".into()),
                tool_call: None,
                latency_ms: Some(0),
                retry_after_s: None,
            },
        ]);
        let p = e.plan("openai", &ChatRequest::user("m", "x"));
        assert_eq!(
            (p.fault, p.retry_after),
            (Some(Fault::RateLimited), Duration::from_secs(2))
        );
        let p = e.plan("openai", &ChatRequest::user("m", "x"));
        assert_eq!(p.response.text(), "{\"a\": 1}");
        assert_eq!(p.fault, None);
    }

    #[test]
    fn tools_and_schemas() {
        let e = SimEngine::new(SimulatorConfig::default());
        let mut req = ChatRequest::user("m", "set it");
        req.tools = Some(vec![Tool::function(
            "set_level",
            "d",
            json!({"type": "object", "properties": {"level": {"type": "integer", "minimum": 0, "maximum": 100}, "unit": {"enum": ["pct"]}}, "required": ["level"]}),
        )]);
        let p = e.plan("openai", &req);
        let call = &p.response.tool_calls()[0];
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
        let level = args["level"].as_i64().unwrap();
        assert!((0..=100).contains(&level));
        assert_eq!(args["unit"], "pct");
        assert_eq!(p.response.finish_reason(), Some(&FinishReason::ToolCalls));
        // After the tool result, a text answer.
        req.messages.push(Message::tool(call.id.clone(), "ok"));
        assert!(e.plan("openai", &req).response.tool_calls().is_empty());
    }

    #[test]
    fn invalid_config_is_rejected_with_the_field() {
        let mut c = SimulatorConfig::default();
        c.faults.hang = 1.5;
        assert!(c.validate().unwrap_err().contains("faults.hang"));
        c.faults.hang = 0.6;
        c.faults.reset = 0.6;
        assert!(c.validate().unwrap_err().contains("add up"));
    }
}
