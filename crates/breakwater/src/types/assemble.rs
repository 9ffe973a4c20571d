//! Conversion between a stream of chunks and a complete response.

use super::chat::*;

/// Folds streamed chunks into the complete response they describe.
///
/// Used to store streamed answers in the cache, to give a non-streaming
/// caller an answer from a streaming upstream, and by tests to compare the two.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    id: String,
    model: String,
    created: u64,
    system_fingerprint: Option<String>,
    choices: Vec<PartialChoice>,
    usage: Option<Usage>,
    chunks: usize,
}

#[derive(Debug, Default)]
struct PartialChoice {
    index: u32,
    text: String,
    has_text: bool,
    refusal: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<FinishReason>,
}

impl StreamAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        self.chunks += 1;
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint.clone_from(&chunk.system_fingerprint);
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for c in &chunk.choices {
            let pos = match self.choices.iter().position(|p| p.index == c.index) {
                Some(p) => p,
                None => {
                    self.choices.push(PartialChoice {
                        index: c.index,
                        ..Default::default()
                    });
                    self.choices.len() - 1
                }
            };
            let p = &mut self.choices[pos];
            if let Some(t) = &c.delta.content {
                p.text.push_str(t);
                p.has_text = true;
            }
            if let Some(r) = &c.delta.refusal {
                p.refusal.get_or_insert_with(String::new).push_str(r);
            }
            if let Some(calls) = &c.delta.tool_calls {
                for d in calls {
                    let i = d.index as usize;
                    while p.tool_calls.len() <= i {
                        p.tool_calls.push(ToolCall::function("", "", ""));
                    }
                    let call = &mut p.tool_calls[i];
                    if let Some(id) = &d.id {
                        call.id.clone_from(id);
                    }
                    if let Some(k) = &d.kind {
                        call.kind.clone_from(k);
                    }
                    if let Some(f) = &d.function {
                        if let Some(n) = &f.name {
                            call.function.name.push_str(n);
                        }
                        if let Some(a) = &f.arguments {
                            call.function.arguments.push_str(a);
                        }
                    }
                }
            }
            if c.finish_reason.is_some() {
                p.finish_reason.clone_from(&c.finish_reason);
            }
        }
    }

    /// Number of chunks seen.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The text assembled so far for the first choice.
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |c| c.text.as_str())
    }

    /// Whether any tool call has been started.
    pub fn has_tool_calls(&self) -> bool {
        self.choices.iter().any(|c| !c.tool_calls.is_empty())
    }

    /// Whether every choice has finished (and there is at least one).
    pub fn is_complete(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|c| c.finish_reason.is_some())
    }

    /// The usage seen, if any.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The response described by the chunks so far.
    pub fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .map(|p| {
                let mut m = Message::new(Role::Assistant, p.text);
                if !p.has_text && !p.tool_calls.is_empty() {
                    m.content = None;
                }
                m.refusal = p.refusal;
                if !p.tool_calls.is_empty() {
                    m.tool_calls = Some(p.tool_calls);
                }
                Choice {
                    index: p.index,
                    message: m,
                    finish_reason: p.finish_reason,
                    logprobs: None,
                    extra: Extra::new(),
                }
            })
            .collect();
        ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            system_fingerprint: self.system_fingerprint,
            extra: Extra::new(),
        }
    }
}

/// Splits a complete response into the chunks a streaming upstream would
/// have sent: a role chunk, text pieces of about `piece_bytes` (cut at
/// character boundaries), tool calls, the finish chunk, and a usage chunk
/// when `include_usage`.
pub fn response_to_chunks(resp: &ChatResponse, piece_bytes: usize, include_usage: bool) -> Vec<ChatChunk> {
    let piece_bytes = piece_bytes.max(1);
    let mut out = Vec::new();
    let base = || {
        let mut c = ChatChunk::new(resp.id.clone(), resp.model.clone(), resp.created);
        c.system_fingerprint.clone_from(&resp.system_fingerprint);
        c
    };
    let one = |index: u32, delta: Delta, finish: Option<FinishReason>| {
        let mut c = base();
        c.choices.push(ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            logprobs: None,
        });
        c
    };
    for choice in &resp.choices {
        out.push(one(
            choice.index,
            Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..Default::default()
            },
            None,
        ));
        let text = choice.message.text();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut cut = piece_bytes.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let (head, tail) = rest.split_at(cut);
            out.push(one(
                choice.index,
                Delta {
                    content: Some(head.to_string()),
                    ..Default::default()
                },
                None,
            ));
            rest = tail;
        }
        if let Some(r) = &choice.message.refusal {
            out.push(one(
                choice.index,
                Delta {
                    refusal: Some(r.clone()),
                    ..Default::default()
                },
                None,
            ));
        }
        if let Some(calls) = &choice.message.tool_calls {
            for (i, call) in calls.iter().enumerate() {
                out.push(one(
                    choice.index,
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: i as u32,
                            id: Some(call.id.clone()),
                            kind: Some(call.kind.clone()),
                            function: Some(FunctionCallDelta {
                                name: Some(call.function.name.clone()),
                                arguments: Some(call.function.arguments.clone()),
                            }),
                        }]),
                        ..Default::default()
                    },
                    None,
                ));
            }
        }
        out.push(one(
            choice.index,
            Delta::default(),
            Some(choice.finish_reason.clone().unwrap_or(FinishReason::Stop)),
        ));
    }
    if include_usage && let Some(u) = &resp.usage {
        let mut c = base();
        c.usage = Some(u.clone());
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChatResponse {
        let mut m = Message::assistant("héllo wörld, this is a reply");
        m.tool_calls = Some(vec![ToolCall::function("call_1", "lookup", r#"{"q":"x"}"#)]);
        ChatResponse {
            id: "chatcmpl-1".into(),
            object: "chat.completion".into(),
            created: 7,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: m,
                finish_reason: Some(FinishReason::ToolCalls),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(Usage::new(3, 9)),
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    #[test]
    fn chunks_reassemble_to_the_response() {
        let resp = sample();
        for piece in [1, 3, 7, 100] {
            let chunks = response_to_chunks(&resp, piece, true);
            let mut a = StreamAssembler::new();
            for c in &chunks {
                a.push(c);
            }
            assert!(a.is_complete());
            assert_eq!(a.finish(), resp, "piece size {piece}");
        }
    }

    #[test]
    fn incomplete_stream_is_not_complete() {
        let chunks = response_to_chunks(&sample(), 4, false);
        let mut a = StreamAssembler::new();
        for c in &chunks[..chunks.len() - 1] {
            a.push(c);
        }
        assert!(!a.is_complete());
        assert_eq!(a.text(), "héllo wörld, this is a reply");
    }
}
