//! Streams, canonical chunks ⇄ Anthropic events.

use super::convert::{
    anthropic_id, finish_from_stop_reason, stop_reason_from_finish, usage_from_anthropic, usage_to_anthropic,
};
use super::types::*;
use crate::error::{Error, Result, classify_stream_error};
use crate::types::*;
use serde_json::{Value, json};

/// Turns Anthropic stream events into canonical chunks (the adapter's
/// direction). Feed it each event's data in order.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// Anthropic block index → canonical tool-call index.
    tool_of_block: Vec<(u32, u32)>,
    next_tool: u32,
    done: bool,
}

impl StreamDecoder {
    /// A decoder for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `message_stop` has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self) -> ChatChunk {
        ChatChunk::new(self.id.clone(), self.model.clone(), self.created)
    }

    fn delta_chunk(&self, delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = self.chunk();
        c.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            logprobs: None,
        });
        c
    }

    /// Decodes one event's data into zero or more chunks; an `error` event
    /// becomes the classified error.
    pub fn push(&mut self, data: &str) -> Result<Vec<ChatChunk>> {
        let ev = StreamEvent::parse(data).map_err(|e| Error::unparseable(data.as_bytes(), &e))?;
        let mut out = Vec::new();
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.created = unix_now();
                self.usage = message.usage;
                out.push(self.delta_chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Default::default()
                    },
                    None,
                ));
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block.kind.as_str() {
                "text" => {
                    if let Some(t) = content_block.text.filter(|t| !t.is_empty()) {
                        out.push(self.delta_chunk(
                            Delta {
                                content: Some(t),
                                ..Default::default()
                            },
                            None,
                        ));
                    }
                }
                "tool_use" => {
                    let ti = self.next_tool;
                    self.next_tool += 1;
                    self.tool_of_block.push((index, ti));
                    out.push(self.delta_chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: ti,
                                id: content_block.id,
                                kind: Some("function".into()),
                                function: Some(FunctionCallDelta {
                                    name: content_block.name,
                                    arguments: Some(String::new()),
                                }),
                            }]),
                            ..Default::default()
                        },
                        None,
                    ));
                }
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta.kind.as_str() {
                "text_delta" => out.push(self.delta_chunk(
                    Delta {
                        content: delta.text,
                        ..Default::default()
                    },
                    None,
                )),
                "input_json_delta" => {
                    if let Some(&(_, ti)) = self.tool_of_block.iter().find(|(b, _)| *b == index) {
                        out.push(self.delta_chunk(
                            Delta {
                                tool_calls: Some(vec![ToolCallDelta {
                                    index: ti,
                                    function: Some(FunctionCallDelta {
                                        name: None,
                                        arguments: delta.partial_json,
                                    }),
                                    ..Default::default()
                                }]),
                                ..Default::default()
                            },
                            None,
                        ));
                    }
                }
                "thinking_delta" => {
                    let mut d = Delta::default();
                    d.extra.insert(
                        "reasoning_content".into(),
                        Value::String(delta.thinking.unwrap_or_default()),
                    );
                    out.push(self.delta_chunk(d, None));
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                    if u.cache_read_input_tokens.is_some() {
                        self.usage.cache_read_input_tokens = u.cache_read_input_tokens;
                    }
                    if u.cache_creation_input_tokens.is_some() {
                        self.usage.cache_creation_input_tokens = u.cache_creation_input_tokens;
                    }
                }
                if let Some(r) = delta.stop_reason {
                    out.push(self.delta_chunk(Delta::default(), Some(finish_from_stop_reason(&r))));
                }
            }
            StreamEvent::MessageStop => {
                self.done = true;
                let mut c = self.chunk();
                c.usage = Some(usage_from_anthropic(&self.usage));
                out.push(c);
            }
            StreamEvent::Error { .. } => return Err(classify_stream_error(data.as_bytes())),
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Unknown(_) => {}
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OpenBlock {
    None,
    Text(u32),
    Tool { block: u32, tool: u32 },
}

/// Turns canonical chunks into Anthropic events (the gateway's
/// `/v1/messages` and the simulator's direction). Only the first choice is
/// encoded (Anthropic has one).
#[derive(Debug)]
pub struct StreamEncoder {
    started: bool,
    ended: bool,
    open: OpenBlock,
    next_block: u32,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: String,
}

impl Default for StreamEncoder {
    fn default() -> Self {
        Self::new("")
    }
}

impl StreamEncoder {
    /// An encoder; `model` names the model in `message_start` when the
    /// chunks do not.
    pub fn new(model: impl Into<String>) -> Self {
        StreamEncoder {
            started: false,
            ended: false,
            open: OpenBlock::None,
            next_block: 0,
            finish: None,
            usage: None,
            model: model.into(),
        }
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        match self.open {
            OpenBlock::None => {}
            OpenBlock::Text(i) | OpenBlock::Tool { block: i, .. } => {
                out.push(StreamEvent::ContentBlockStop { index: i })
            }
        }
        self.open = OpenBlock::None;
    }

    fn open_block(&mut self, block: Block, out: &mut Vec<StreamEvent>) -> u32 {
        self.close(out);
        let i = self.next_block;
        self.next_block += 1;
        out.push(StreamEvent::ContentBlockStart {
            index: i,
            content_block: block,
        });
        i
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        self.close(out);
        let stop = self.finish.as_ref().map(stop_reason_from_finish).unwrap_or("end_turn");
        out.push(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop.into()),
                stop_sequence: None,
            },
            usage: Some(self.usage.as_ref().map(usage_to_anthropic).unwrap_or_default()),
        });
        out.push(StreamEvent::MessageStop);
        self.ended = true;
    }

    /// Encodes one chunk into zero or more events.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        if !self.started {
            self.started = true;
            let model = if chunk.model.is_empty() {
                self.model.clone()
            } else {
                chunk.model.clone()
            };
            out.push(StreamEvent::MessageStart {
                message: MessagesResponse {
                    id: anthropic_id(&chunk.id),
                    kind: "message".into(),
                    role: "assistant".into(),
                    content: vec![],
                    model,
                    stop_reason: None,
                    stop_sequence: None,
                    usage: AnthropicUsage::default(),
                    extra: Extra::new(),
                },
            });
        }
        if let Some(c) = chunk.choices.iter().find(|c| c.index == 0) {
            if let Some(t) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let idx = match self.open {
                    OpenBlock::Text(i) => i,
                    _ => {
                        let i = self.open_block(Block::text(""), &mut out);
                        self.open = OpenBlock::Text(i);
                        i
                    }
                };
                out.push(StreamEvent::ContentBlockDelta {
                    index: idx,
                    delta: BlockDelta {
                        kind: "text_delta".into(),
                        text: Some(t.to_string()),
                        ..Default::default()
                    },
                });
            }
            for d in c.delta.tool_calls.iter().flatten() {
                let same = matches!(self.open, OpenBlock::Tool { tool, .. } if tool == d.index);
                let idx = if same && d.id.is_none() {
                    match self.open {
                        OpenBlock::Tool { block, .. } => block,
                        _ => unreachable!("checked above"),
                    }
                } else {
                    let name = d.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
                    let block = Block::tool_use(d.id.clone().unwrap_or_default(), name, json!({}));
                    let i = self.open_block(block, &mut out);
                    self.open = OpenBlock::Tool {
                        block: i,
                        tool: d.index,
                    };
                    i
                };
                if let Some(args) = d
                    .function
                    .as_ref()
                    .and_then(|f| f.arguments.as_deref())
                    .filter(|a| !a.is_empty())
                {
                    out.push(StreamEvent::ContentBlockDelta {
                        index: idx,
                        delta: BlockDelta {
                            kind: "input_json_delta".into(),
                            partial_json: Some(args.to_string()),
                            ..Default::default()
                        },
                    });
                }
            }
            if let Some(f) = &c.finish_reason {
                self.finish = Some(f.clone());
                self.close(&mut out);
            }
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
            if self.finish.is_some() {
                self.end(&mut out);
            }
        }
        out
    }

    /// Ends the message (when the chunks carried no usage after the finish).
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.ended && self.started {
            self.end(&mut out);
        }
        out
    }

    /// Whether `message_stop` has been emitted.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The event reporting a mid-stream failure.
    pub fn error_event(e: &Error) -> StreamEvent {
        StreamEvent::Error {
            error: json!({"type": super::convert::error_type(e.kind), "message": e.message}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// The event sequence of Anthropic's streaming documentation, tool use included.
    const DOC_STREAM: &[&str] = &[
        r#"{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    fn decode(events: &[&str]) -> (StreamAssembler, Vec<ChatChunk>, bool) {
        let mut d = StreamDecoder::new();
        let mut a = StreamAssembler::new();
        let mut all = Vec::new();
        for e in events {
            for c in d.push(e).unwrap() {
                a.push(&c);
                all.push(c);
            }
        }
        (a, all, d.is_done())
    }

    #[test]
    fn documented_stream_decodes() {
        let (a, _, done) = decode(DOC_STREAM);
        assert!(done && a.is_complete());
        let r = a.finish();
        assert_eq!(r.id, "msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(r.text(), "Okay, let's check");
        assert_eq!(r.finish_reason(), Some(&FinishReason::ToolCalls));
        assert_eq!(r.tool_calls()[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(
            r.tool_calls()[0].function.arguments,
            r#"{"location": "San Francisco, CA"}"#
        );
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (472, 89));
    }

    #[test]
    fn error_event_and_unknown_events() {
        let mut d = StreamDecoder::new();
        assert!(d.push(r#"{"type":"some_future_event","x":1}"#).unwrap().is_empty());
        let e = d
            .push(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert_eq!(d.push("{nope").unwrap_err().kind, ErrorKind::UpstreamUnparseable);
        assert_eq!(
            d.push(r#"{"type":"content_block_delta","index":"x"}"#)
                .unwrap_err()
                .kind,
            ErrorKind::UpstreamUnparseable
        );
    }

    #[test]
    fn encode_then_decode_gives_back_the_response() {
        let (a, chunks, _) = decode(DOC_STREAM);
        let original = a.finish();
        let mut enc = StreamEncoder::new("m");
        let mut events = Vec::new();
        for c in &chunks {
            events.extend(enc.push(c));
        }
        events.extend(enc.finish());
        assert!(enc.is_ended());
        let names: Vec<&str> = events.iter().map(StreamEvent::name).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(&names[names.len() - 2..], &["message_delta", "message_stop"]);
        let datas: Vec<String> = events.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
        let refs: Vec<&str> = datas.iter().map(String::as_str).collect();
        let (b, _, done) = decode(&refs);
        assert!(done);
        let again = b.finish();
        assert_eq!(again.text(), original.text());
        assert_eq!(again.tool_calls(), original.tool_calls());
        assert_eq!(again.finish_reason(), original.finish_reason());
        assert_eq!(again.usage, original.usage);
    }

    #[test]
    fn encoder_finishes_without_usage() {
        let resp = ChatResponse {
            id: "x".into(),
            object: "chat.completion".into(),
            created: 0,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant("hello"),
                finish_reason: Some(FinishReason::Length),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let mut enc = StreamEncoder::new("m");
        let mut events = Vec::new();
        for c in response_to_chunks(&resp, 2, false) {
            events.extend(enc.push(&c));
        }
        assert!(!enc.is_ended());
        events.extend(enc.finish());
        match &events[events.len() - 2] {
            StreamEvent::MessageDelta { delta, .. } => assert_eq!(delta.stop_reason.as_deref(), Some("max_tokens")),
            other => panic!("expected message_delta, got {other:?}"),
        }
    }
}
