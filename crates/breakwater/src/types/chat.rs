//! Chat-completions request and response, in OpenAI's shape.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Fields a type does not model, kept verbatim so a round trip loses nothing.
pub type Extra = Map<String, Value>;

/// A chat-completions request (`POST /v1/chat/completions`).
///
/// Every field OpenAI documents that changes routing, caching or translation
/// is modelled; anything else a client sends lands in [`ChatRequest::extra`]
/// and is passed upstream unchanged.
// Encoded by `ChatRequestAs` and decoded by `deserialize_with_extra!`
// below: a new field goes into both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The model alias (at the gateway) or upstream model name (at a provider).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling temperature, 0–2.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Number of choices to generate.
    pub n: Option<u32>,
    /// Whether the reply is streamed as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    pub stream_options: Option<StreamOptions>,
    /// Stop sequences.
    pub stop: Option<Stop>,
    /// Legacy cap on generated tokens.
    pub max_tokens: Option<u32>,
    /// Cap on generated tokens (newer name, includes reasoning tokens).
    pub max_completion_tokens: Option<u32>,
    /// Presence penalty, −2–2.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty, −2–2.
    pub frequency_penalty: Option<f64>,
    /// Seed for best-effort deterministic sampling.
    pub seed: Option<i64>,
    /// End-user identifier.
    pub user: Option<String>,
    /// Tools the model may call.
    pub tools: Option<Vec<Tool>>,
    /// How the model chooses tools.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// Output format: text, any JSON object, or JSON matching a schema.
    pub response_format: Option<ResponseFormat>,
    /// Everything else the client sent.
    pub extra: Extra,
}

deserialize_with_extra!(ChatRequest {
    model: "model" => required,
    messages: "messages" => required,
    temperature: "temperature" => default,
    top_p: "top_p" => default,
    n: "n" => default,
    stream: "stream" => default,
    stream_options: "stream_options" => default,
    stop: "stop" => default,
    max_tokens: "max_tokens" => default,
    max_completion_tokens: "max_completion_tokens" => default,
    presence_penalty: "presence_penalty" => default,
    frequency_penalty: "frequency_penalty" => default,
    seed: "seed" => default,
    user: "user" => default,
    tools: "tools" => default,
    tool_choice: "tool_choice" => default,
    parallel_tool_calls: "parallel_tool_calls" => default,
    response_format: "response_format" => default,
});

/// A [`ChatRequest`] as it is sent upstream: the request with its model and
/// stream fields replaced, serialized without copying it. A copy would be a
/// deep one (every message) on every attempt at every target, only to
/// change a name.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequestAs<'a> {
    /// Everything else comes from here.
    pub req: &'a ChatRequest,
    /// Sent as `model` (the upstream's model name).
    pub model: &'a str,
    /// Sent as `stream`.
    pub stream: Option<bool>,
    /// Sent as `stream_options`.
    pub stream_options: Option<&'a StreamOptions>,
}

impl Serialize for ChatRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ChatRequestAs {
            req: self,
            model: &self.model,
            stream: self.stream,
            stream_options: self.stream_options.as_ref(),
        }
        .serialize(s)
    }
}

impl Serialize for ChatRequestAs<'_> {
    // The fields in declaration order, absent options left out, then
    // `extra`'s entries: byte for byte what `#[derive(Serialize)]` with a
    // flattened `extra` wrote, so upstreams see the requests they saw.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.req;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("messages", &r.messages)?;
        macro_rules! present {
            ($($name:literal => $value:expr),* $(,)?) => {$(
                if let Some(v) = $value.as_ref() {
                    map.serialize_entry($name, v)?;
                }
            )*};
        }
        present!(
            "temperature" => r.temperature,
            "top_p" => r.top_p,
            "n" => r.n,
            "stream" => self.stream,
            "stream_options" => self.stream_options,
            "stop" => r.stop,
            "max_tokens" => r.max_tokens,
            "max_completion_tokens" => r.max_completion_tokens,
            "presence_penalty" => r.presence_penalty,
            "frequency_penalty" => r.frequency_penalty,
            "seed" => r.seed,
            "user" => r.user,
            "tools" => r.tools,
            "tool_choice" => r.tool_choice,
            "parallel_tool_calls" => r.parallel_tool_calls,
            "response_format" => r.response_format,
        );
        for (k, v) in &r.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl ChatRequest {
    /// A request with one user message.
    pub fn user(model: impl Into<String>, text: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            messages: vec![Message::user(text)],
            ..Default::default()
        }
    }

    /// Whether the caller asked for a streamed reply.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The effective cap on generated tokens, whichever field carries it.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the caller asked for usage in the final stream chunk.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// A rough count of prompt tokens (about four bytes a token), used to
    /// reserve rate-limit capacity before the real usage is known.
    pub fn estimate_prompt_tokens(&self) -> u32 {
        let mut bytes = 0usize;
        for m in &self.messages {
            bytes += 8; // role and framing
            if let Some(c) = &m.content {
                bytes += c.text_len();
            }
            if let Some(calls) = &m.tool_calls {
                for c in calls {
                    bytes += c.function.name.len() + c.function.arguments.len();
                }
            }
        }
        if let Some(tools) = &self.tools {
            for t in tools {
                bytes += t.function.name.len()
                    + t.function.description.as_deref().map_or(0, str::len)
                    + t.function.parameters.as_ref().map_or(0, |p| p.to_string().len());
            }
        }
        u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX)
    }
}

/// Streaming options.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(StreamOptions {
    include_usage: "include_usage" => default,
});

/// One stop sequence or several.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Up to four stop sequences.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::string_or_seq(d, "a stop sequence or a list of them", Stop::One, Stop::Many)
    }
}

impl Stop {
    /// The stop sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// The author of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// Instructions from the developer (newer name for system).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// Legacy function result.
    Function,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// A message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts; `None` for an assistant turn that only calls tools.
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `role: tool`, the call this message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A refusal by the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Message {
    role: "role" => required,
    content: "content" => default,
    name: "name" => default,
    tool_calls: "tool_calls" => default,
    tool_call_id: "tool_call_id" => default,
    refusal: "refusal" => default,
});

impl Message {
    /// A message with plain text content.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: Extra::new(),
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// An assistant message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// A tool result answering `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, text)
        }
    }

    /// The text of the message: the string, or its text parts joined.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (text, images, audio, …).
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::string_or_seq(d, "a string or a list of content parts", Content::Text, Content::Parts)
    }
}

impl Content {
    /// The text parts joined (images and other parts are skipped).
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    if let Some(t) = &p.text {
                        out.push_str(t);
                    }
                }
                out
            }
        }
    }

    /// Byte length of the text, without allocating.
    pub fn text_len(&self) -> usize {
        match self {
            Content::Text(s) => s.len(),
            Content::Parts(parts) => parts.iter().map(|p| p.text.as_deref().map_or(64, str::len)).sum(),
        }
    }
}

/// One part of a multi-part content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`, `refusal`…
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, for `type: text` (and `refusal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The image, for `type: image_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(ContentPart {
    kind: "type" => required,
    text: "text" => default,
    image_url: "image_url" => default,
});

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart {
            kind: "text".into(),
            text: Some(text.into()),
            image_url: None,
            extra: Extra::new(),
        }
    }
}

/// An image reference: an `https:` URL or a `data:` URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Tool {
    kind: "type" => function_type,
    function: "function" => required,
});

fn function_type() -> String {
    "function".to_string()
}

impl Tool {
    /// A function tool.
    pub fn function(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Tool {
            kind: function_type(),
            function: FunctionDef {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(FunctionDef {
    name: "name" => required,
    description: "description" => default,
    parameters: "parameters" => default,
    strict: "strict" => default,
});

/// How the model picks tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// The model must call some tool.
    Required,
    /// The model must call this function.
    Function(String),
    /// A form we do not model, passed through.
    Other(Value),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}}).serialize(s)
            }
            ToolChoice::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match &v {
            Value::String(s) if s == "none" => ToolChoice::None,
            Value::String(s) if s == "auto" => ToolChoice::Auto,
            Value::String(s) if s == "required" => ToolChoice::Required,
            Value::Object(o) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                Some(name) if o.get("type").and_then(Value::as_str) == Some("function") => {
                    ToolChoice::Function(name.to_string())
                }
                _ => ToolChoice::Other(v),
            },
            _ => ToolChoice::Other(v),
        })
    }
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Id the tool result refers to.
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
}

impl ToolCall {
    /// A function call with JSON arguments.
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        ToolCall {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// The function and its arguments (a JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON text, as the model produced it.
    #[serde(default)]
    pub arguments: String,
}

/// What the output must look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

impl ResponseFormat {
    /// The schema, when one is given.
    pub fn schema(&self) -> Option<&Value> {
        match self {
            ResponseFormat::JsonSchema { json_schema } => json_schema.schema.as_ref(),
            _ => None,
        }
    }

    /// Whether JSON output is required.
    pub fn wants_json(&self) -> bool {
        !matches!(self, ResponseFormat::Text)
    }
}

/// A named JSON Schema for `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// Schema name.
    pub name: String,
    /// What the output is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Strict adherence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// The token cap was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Output was withheld by a content filter.
    ContentFilter,
    /// Legacy function call.
    FunctionCall,
    /// The stream broke after it had started (breakwater's own value: the
    /// output is incomplete and an error event follows).
    Error,
    /// Any other value, kept as sent.
    Other(String),
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Error => "error",
            FinishReason::Other(s) => s,
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Self {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            "error" => FinishReason::Error,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(FinishReason::parse(&s))
    }
}

/// Token usage of one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
    /// Breakdown of prompt tokens (`cached_tokens`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Value>,
    /// Breakdown of completion tokens (`reasoning_tokens`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Usage {
    prompt_tokens: "prompt_tokens" => default,
    completion_tokens: "completion_tokens" => default,
    total_tokens: "total_tokens" => default,
    prompt_tokens_details: "prompt_tokens_details" => default,
    completion_tokens_details: "completion_tokens_details" => default,
});

impl Usage {
    /// Usage from prompt and completion counts.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Default::default()
        }
    }
}

/// A complete chat-completions response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(ChatResponse {
    id: "id" => required,
    object: "object" => object_completion,
    created: "created" => default,
    model: "model" => default,
    choices: "choices" => required,
    usage: "usage" => default,
    system_fingerprint: "system_fingerprint" => default,
});

fn object_completion() -> String {
    "chat.completion".to_string()
}

impl ChatResponse {
    /// The first choice's text.
    pub fn text(&self) -> String {
        self.choices.first().map(|c| c.message.text()).unwrap_or_default()
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.choices.first().and_then(|c| c.finish_reason.as_ref())
    }

    /// The first choice's tool calls.
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .and_then(|c| c.message.tool_calls.as_deref())
            .unwrap_or(&[])
    }
}

/// One choice of a response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why it stopped.
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Choice {
    index: "index" => default,
    message: "message" => required,
    finish_reason: "finish_reason" => default,
    logprobs: "logprobs" => default,
});

/// A streamed chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    /// Response id, the same in every chunk.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// Deltas per choice; empty in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Usage, in the last chunk when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(ChatChunk {
    id: "id" => required,
    object: "object" => object_chunk,
    created: "created" => default,
    model: "model" => default,
    choices: "choices" => default,
    usage: "usage" => default,
    system_fingerprint: "system_fingerprint" => default,
});

fn object_chunk() -> String {
    "chat.completion.chunk".to_string()
}

impl ChatChunk {
    /// An empty chunk with the given identity.
    pub fn new(id: impl Into<String>, model: impl Into<String>, created: u64) -> Self {
        ChatChunk {
            id: id.into(),
            object: object_chunk(),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    /// Whether the chunk carries output (text, a tool call, a refusal or a
    /// finish reason). Role-only and keep-alive chunks do not count: the
    /// first-token timer keeps running through them.
    pub fn has_output(&self) -> bool {
        self.choices.iter().any(|c| {
            c.finish_reason.is_some()
                || c.delta.content.as_deref().is_some_and(|s| !s.is_empty())
                || c.delta.refusal.as_deref().is_some_and(|s| !s.is_empty())
                || c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
        })
    }

    /// The text this chunk adds to the first choice.
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
            .unwrap_or("")
    }
}

/// A choice's delta in a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice.
    #[serde(default)]
    pub index: u32,
    /// What is added.
    #[serde(default)]
    pub delta: Delta,
    /// Set in the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// What a chunk adds to a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    /// Set in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// More of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Tool-call fragments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Everything else (e.g. `reasoning_content`).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Delta {
    role: "role" => default,
    content: "content" => default,
    refusal: "refusal" => default,
    tool_calls: "tool_calls" => default,
});

/// A fragment of a tool call in a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the message.
    pub index: u32,
    /// Set in the call's first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, in the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// Name (first fragment) and a piece of the arguments text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Function name, in the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the arguments text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
