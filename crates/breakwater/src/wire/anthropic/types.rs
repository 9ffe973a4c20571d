//! Anthropic Messages API wire types.

use crate::types::Extra;
use crate::types::de::deserialize_with_extra;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `POST /v1/messages` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesRequest {
    /// Model name.
    pub model: String,
    /// The conversation (user and assistant turns).
    pub messages: Vec<AnthropicMessage>,
    /// Required cap on generated tokens.
    pub max_tokens: u32,
    /// System prompt: a string or text blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<AnthropicContent>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Sampling temperature, 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Stream the answer as events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnthropicTool>>,
    /// Tool choice: `{type: auto|any|tool|none, name?, disable_parallel_tool_use?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `{user_id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Everything else (`thinking`, `service_tier`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(MessagesRequest {
    model: "model" => required,
    messages: "messages" => required,
    max_tokens: "max_tokens" => required,
    system: "system" => default,
    stop_sequences: "stop_sequences" => default,
    temperature: "temperature" => default,
    top_p: "top_p" => default,
    top_k: "top_k" => default,
    stream: "stream" => default,
    tools: "tools" => default,
    tool_choice: "tool_choice" => default,
    metadata: "metadata" => default,
});

/// One turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnthropicMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Text or blocks.
    pub content: AnthropicContent,
}

/// A string or a list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnthropicContent {
    /// Plain text.
    Text(String),
    /// Content blocks.
    Blocks(Vec<Block>),
}

impl<'de> Deserialize<'de> for AnthropicContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::types::de::string_or_seq(
            d,
            "a string or a list of content blocks",
            AnthropicContent::Text,
            AnthropicContent::Blocks,
        )
    }
}

impl AnthropicContent {
    /// The blocks (a string becomes one text block).
    pub fn into_blocks(self) -> Vec<Block> {
        match self {
            AnthropicContent::Text(t) => vec![Block::text(t)],
            AnthropicContent::Blocks(b) => b,
        }
    }

    /// The text blocks joined.
    pub fn text(&self) -> String {
        match self {
            AnthropicContent::Text(t) => t.clone(),
            AnthropicContent::Blocks(b) => b
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// A content block: `text`, `image`, `tool_use`, `tool_result`, `thinking`, …
/// One struct for every type, so unknown types survive.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Block {
    /// The block type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `text` blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `tool_use` id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `tool_use` name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tool_use` input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `tool_result`: the call answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// `tool_result` content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<AnthropicContent>,
    /// `tool_result` failure flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `image` source: `{type: base64, media_type, data}` or `{type: url, url}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    /// `thinking` text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Everything else (`cache_control`, `signature`, `citations`…).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(Block {
    kind: "type" => required,
    text: "text" => default,
    id: "id" => default,
    name: "name" => default,
    input: "input" => default,
    tool_use_id: "tool_use_id" => default,
    content: "content" => default,
    is_error: "is_error" => default,
    source: "source" => default,
    thinking: "thinking" => default,
});

impl Block {
    /// A text block.
    pub fn text(t: impl Into<String>) -> Self {
        Block {
            kind: "text".into(),
            text: Some(t.into()),
            ..Default::default()
        }
    }

    /// A tool-use block.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        Block {
            kind: "tool_use".into(),
            id: Some(id.into()),
            name: Some(name.into()),
            input: Some(input),
            ..Default::default()
        }
    }
}

/// A tool definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnthropicTool {
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the input.
    pub input_schema: Value,
    /// Everything else (`type` of server tools, `cache_control`).
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(AnthropicTool {
    name: "name" => required,
    description: "description" => default,
    input_schema: "input_schema" => empty_object_schema,
});

/// `{"type": "object", "properties": {}}`.
pub fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// A complete Messages response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesResponse {
    /// `msg_…`.
    pub id: String,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `assistant`.
    pub role: String,
    /// The answer's blocks.
    pub content: Vec<Block>,
    /// Model that answered.
    pub model: String,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`.
    pub stop_reason: Option<String>,
    /// The stop sequence that matched.
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: AnthropicUsage,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(MessagesResponse {
    id: "id" => required,
    kind: "type" => message_type,
    role: "role" => assistant_role,
    content: "content" => default,
    model: "model" => default,
    stop_reason: "stop_reason" => default,
    stop_sequence: "stop_sequence" => default,
    usage: "usage" => default,
});

fn message_type() -> String {
    "message".into()
}

fn assistant_role() -> String {
    "assistant".into()
}

/// Token usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnthropicUsage {
    /// Uncached input tokens.
    pub input_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Input tokens written to the prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u32>,
    /// Input tokens read from the prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(AnthropicUsage {
    input_tokens: "input_tokens" => default,
    output_tokens: "output_tokens" => default,
    cache_creation_input_tokens: "cache_creation_input_tokens" => default,
    cache_read_input_tokens: "cache_read_input_tokens" => default,
});

/// A streamed event's data. Unknown event types deserialize as `Unknown`,
/// so new event types never break a stream.
///
/// Deserialized without serde's internally tagged derive: that buffers
/// every event whole (each key and value into an intermediate tree) before
/// reading it again. Anthropic sends `type` first, so the variant is known
/// at once and its fields are read in place; an event with `type` later
/// is still read, through a `Value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message with empty content and initial usage.
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A block begins.
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// The block, with empty text or input.
        content_block: Block,
    },
    /// More of a block.
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// The addition.
        delta: BlockDelta,
    },
    /// A block ends.
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// Stop reason and final usage.
    MessageDelta {
        /// `{stop_reason, stop_sequence}`.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        usage: Option<AnthropicUsage>,
    },
    /// The end.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// An error mid-stream.
    Error {
        /// `{type, message}`.
        error: Value,
    },
    /// A type this code does not know.
    #[serde(skip)]
    Unknown(String),
}

/// The fields of each event type, read after its `type`.
mod event_fields {
    use super::{AnthropicUsage, Block, BlockDelta, MessageDeltaBody, MessagesResponse};
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct MessageStart {
        pub message: MessagesResponse,
    }
    #[derive(Deserialize)]
    pub struct ContentBlockStart {
        pub index: u32,
        pub content_block: Block,
    }
    #[derive(Deserialize)]
    pub struct ContentBlockDelta {
        pub index: u32,
        pub delta: BlockDelta,
    }
    #[derive(Deserialize)]
    pub struct ContentBlockStop {
        pub index: u32,
    }
    #[derive(Deserialize)]
    pub struct MessageDelta {
        pub delta: MessageDeltaBody,
        #[serde(default)]
        pub usage: Option<AnthropicUsage>,
    }
    #[derive(Deserialize)]
    pub struct Error {
        pub error: Value,
    }
}

impl StreamEvent {
    /// The event of type `kind` whose other fields `fields` holds.
    fn from_fields<'de, D: Deserializer<'de>>(kind: &str, fields: D) -> Result<StreamEvent, D::Error> {
        use event_fields as f;
        Ok(match kind {
            "message_start" => {
                let e = f::MessageStart::deserialize(fields)?;
                StreamEvent::MessageStart { message: e.message }
            }
            "content_block_start" => {
                let e = f::ContentBlockStart::deserialize(fields)?;
                StreamEvent::ContentBlockStart {
                    index: e.index,
                    content_block: e.content_block,
                }
            }
            "content_block_delta" => {
                let e = f::ContentBlockDelta::deserialize(fields)?;
                StreamEvent::ContentBlockDelta {
                    index: e.index,
                    delta: e.delta,
                }
            }
            "content_block_stop" => StreamEvent::ContentBlockStop {
                index: f::ContentBlockStop::deserialize(fields)?.index,
            },
            "message_delta" => {
                let e = f::MessageDelta::deserialize(fields)?;
                StreamEvent::MessageDelta {
                    delta: e.delta,
                    usage: e.usage,
                }
            }
            "error" => StreamEvent::Error {
                error: f::Error::deserialize(fields)?.error,
            },
            other => {
                serde::de::IgnoredAny::deserialize(fields)?;
                match other {
                    "message_stop" => StreamEvent::MessageStop,
                    "ping" => StreamEvent::Ping,
                    _ => StreamEvent::Unknown(other.to_string()),
                }
            }
        })
    }
}

/// A string borrowed from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Text<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> serde::de::Visitor<'de> for EventVisitor {
            type Value = StreamEvent;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object with a `type`")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StreamEvent, A::Error> {
                use serde::de::Error as _;
                use serde::de::value::MapAccessDeserializer;
                let Some(Text(first)) = map.next_key::<Text<'de>>()? else {
                    return Err(A::Error::missing_field("type"));
                };
                if first == "type" {
                    let Text(kind) = map.next_value()?;
                    return StreamEvent::from_fields(&kind, MapAccessDeserializer::new(map));
                }
                // `type` comes later: read the object whole first.
                let mut all = serde_json::Map::new();
                all.insert(first.into_owned(), map.next_value()?);
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    all.insert(k, v);
                }
                let Some(Value::String(kind)) = all.remove("type") else {
                    return Err(A::Error::missing_field("type"));
                };
                StreamEvent::from_fields(&kind, Value::Object(all)).map_err(A::Error::custom)
            }
        }
        d.deserialize_map(EventVisitor)
    }
}

impl StreamEvent {
    /// Parses an event's data; an unknown `type` gives `Unknown`.
    pub fn parse(data: &str) -> Result<StreamEvent, serde_json::Error> {
        serde_json::from_str(data)
    }

    /// The SSE `event:` name of this event.
    pub fn name(&self) -> &str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown(t) => t,
        }
    }
}

/// The addition of a `content_block_delta`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct BlockDelta {
    /// `text_delta`, `input_json_delta`, `thinking_delta`, `signature_delta`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `text_delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `input_json_delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_json: Option<String>,
    /// `thinking_delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

deserialize_with_extra!(BlockDelta {
    kind: "type" => required,
    text: "text" => default,
    partial_json: "partial_json" => default,
    thinking: "thinking" => default,
});

/// The body of `message_delta`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// Why it stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The matched stop sequence.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_events_parse_in_place_or_with_type_later_and_round_trip() {
        let delta = StreamEvent::parse(
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi \"x\""}}"#,
        )
        .unwrap();
        let StreamEvent::ContentBlockDelta { index, delta } = &delta else {
            panic!("{delta:?}");
        };
        assert_eq!(*index, 2);
        assert_eq!(delta.kind, "text_delta");
        assert_eq!(delta.text.as_deref(), Some("Hi \"x\""));
        // `type` after the other fields, and escaped: the same event.
        let later = StreamEvent::parse(
            r#"{"index":2,"delta":{"type":"text_delta","text":"Hi \"x\""},"type":"content_block_\u0064elta"}"#,
        )
        .unwrap();
        assert_eq!(
            later,
            StreamEvent::parse(
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Hi \"x\""}}"#
            )
            .unwrap()
        );
        let stop = StreamEvent::parse(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#)
            .unwrap();
        let StreamEvent::MessageDelta { delta, usage } = &stop else {
            panic!("{stop:?}");
        };
        assert_eq!(delta.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(usage.as_ref().map(|u| u.output_tokens), Some(15));
        assert!(matches!(
            StreamEvent::parse(r#"{"type":"message_delta","delta":{"stop_reason":null}}"#).unwrap(),
            StreamEvent::MessageDelta { usage: None, .. }
        ));
        // Unknown fields are ignored; events without fields take none.
        assert_eq!(
            StreamEvent::parse(r#"{"type":"ping","extra":[1,{"a":2}]}"#).unwrap(),
            StreamEvent::Ping
        );
        assert_eq!(
            StreamEvent::parse(r#"{"type":"message_stop"}"#).unwrap(),
            StreamEvent::MessageStop
        );
        assert_eq!(
            StreamEvent::parse(r#"{"type":"content_block_stop","index":0,"more":true}"#).unwrap(),
            StreamEvent::ContentBlockStop { index: 0 }
        );
        // Types this code does not know, with any content, wherever `type` is.
        assert_eq!(
            StreamEvent::parse(r#"{"type":"thinking_summary","x":{"y":[1,2]}}"#).unwrap(),
            StreamEvent::Unknown("thinking_summary".into())
        );
        assert_eq!(
            StreamEvent::parse(r#"{"x":1,"type":"new_kind"}"#).unwrap(),
            StreamEvent::Unknown("new_kind".into())
        );
        // Known types with wrong fields, no type, or not an object: errors
        // that say what is wrong.
        let e = StreamEvent::parse(r#"{"type":"content_block_delta","index":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = StreamEvent::parse(r#"{"type":"content_block_start","index":0}"#).unwrap_err();
        assert!(e.to_string().contains("content_block"), "{e}");
        for bad in [r#"{"index":0}"#, "{}", r#"{"type":7}"#, "[1]", r#""ping""#] {
            assert!(StreamEvent::parse(bad).is_err(), "{bad}");
        }
        // What the encoder writes reads back the same.
        let events = [
            StreamEvent::ContentBlockStart {
                index: 0,
                content_block: serde_json::from_value(json!({"type": "text", "text": ""})).unwrap(),
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageDelta {
                delta: serde_json::from_value(json!({"stop_reason": "end_turn"})).unwrap(),
                usage: None,
            },
            StreamEvent::MessageStop,
            StreamEvent::Ping,
            StreamEvent::Error {
                error: json!({"type": "overloaded_error", "message": "Overloaded"}),
            },
        ];
        for e in events {
            let text = serde_json::to_string(&e).unwrap();
            assert!(text.starts_with(r#"{"type":""#), "{text}");
            assert_eq!(StreamEvent::parse(&text).unwrap(), e, "{text}");
        }
    }

    #[test]
    fn requests_parse_with_defaults_and_keep_unknown_fields() {
        let v = json!({
            "model": "claude", "max_tokens": 64, "metadata": {"user_id": "u"}, "service_tier": "auto",
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]}
            ],
            "tools": [{"name": "f"}]
        });
        let text = v.to_string();
        let r: MessagesRequest = serde_json::from_str(&text).expect("parses");
        assert_eq!(r.extra.get("service_tier"), Some(&json!("auto")));
        assert!(matches!(&r.messages[0].content, AnthropicContent::Text(t) if t == "hi"));
        assert!(matches!(&r.system, Some(AnthropicContent::Blocks(b)) if b[0].extra.contains_key("cache_control")));
        assert_eq!(r.tools.as_ref().expect("tools")[0].input_schema, empty_object_schema());
        // What came in goes out again (the tool gains its default schema).
        let mut back = serde_json::to_value(&r).expect("encodes");
        back["tools"][0].as_object_mut().expect("a tool").remove("input_schema");
        assert_eq!(back, v);
        let e = serde_json::from_str::<MessagesRequest>(r#"{"model":"m","messages":[]}"#).expect_err("no max_tokens");
        assert!(e.to_string().starts_with("missing field `max_tokens`"), "{e}");
        let e = serde_json::from_str::<MessagesRequest>(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":7}]}"#,
        )
        .expect_err("a number as content");
        assert!(e.to_string().contains("a string or a list of content blocks"), "{e}");
    }

    #[test]
    fn responses_fill_in_their_defaults() {
        let r: MessagesResponse = serde_json::from_str(
            r#"{"id":"msg_1","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":3,"output_tokens":1,"server_tool_use":{}}}"#,
        )
        .expect("parses");
        assert_eq!((r.kind.as_str(), r.role.as_str()), ("message", "assistant"));
        assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (3, 1));
        assert!(r.usage.extra.contains_key("server_tool_use"));
        assert_eq!(r.stop_reason, None);
        let d: BlockDelta = serde_json::from_str(r#"{"type":"text_delta","text":"x"}"#).expect("a delta");
        assert_eq!(d.text.as_deref(), Some("x"));
    }
}
