//! Streams, canonical chunks ⇄ Gemini `streamGenerateContent?alt=sse` pieces.
//!
//! A Gemini stream is a sequence of partial `GenerateContentResponse`s with no
//! end marker: it is complete when a candidate reported a finish reason.

use super::convert::{
    blocked_prompt, finish_from_gemini, gemini_finish, split_parts, usage_from_gemini, usage_to_gemini,
};
use super::types::*;
use crate::error::{Error, Result, TransportCause};
use crate::types::*;
use serde_json::{Value, json};

/// Turns Gemini stream pieces into canonical chunks.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    calls: usize,
    usage: Option<Usage>,
    finished: bool,
}

impl StreamDecoder {
    /// A decoder; `model` is used when the pieces name none.
    pub fn new(model: &str) -> Self {
        StreamDecoder {
            model: model.to_string(),
            ..Default::default()
        }
    }

    /// Whether a finish reason has been seen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Decodes one piece.
    pub fn push(&mut self, resp: GenerateContentResponse) -> Result<Vec<ChatChunk>> {
        if let Some(e) = blocked_prompt(&resp) {
            return Err(e);
        }
        if let Some(err) = resp.extra.get("error") {
            return Err(crate::error::classify_stream_error(
                json!({"error": err}).to_string().as_bytes(),
            ));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.id = resp
                .response_id
                .clone()
                .unwrap_or_else(|| format!("gemini-{}", unix_now()));
            if let Some(m) = &resp.model_version {
                self.model.clone_from(m);
            }
            self.created = unix_now();
            let mut c = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
            c.choices.push(ChunkChoice {
                delta: Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Default::default()
                },
                ..Default::default()
            });
            out.push(c);
        }
        if let Some(u) = &resp.usage_metadata {
            self.usage = Some(usage_from_gemini(u));
        }
        for (i, cand) in resp.candidates.iter().enumerate() {
            let index = cand.index.unwrap_or(i as u32);
            let parts = cand.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or(&[]);
            let (text, thinking, calls) = split_parts(parts, self.calls);
            let first_call = self.calls;
            self.calls += calls.len();
            let mut delta = Delta::default();
            if !text.is_empty() {
                delta.content = Some(text);
            }
            if !thinking.is_empty() {
                delta.extra.insert("reasoning_content".into(), Value::String(thinking));
            }
            if !calls.is_empty() {
                delta.tool_calls = Some(
                    calls
                        .into_iter()
                        .enumerate()
                        .map(|(j, c)| ToolCallDelta {
                            index: (first_call + j) as u32,
                            id: Some(c.id),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta {
                                name: Some(c.function.name),
                                arguments: Some(c.function.arguments),
                            }),
                        })
                        .collect(),
                );
            }
            let finish = cand
                .finish_reason
                .as_deref()
                .map(|f| finish_from_gemini(f, self.calls > 0));
            if finish.is_some() {
                self.finished = true;
            }
            if delta != Delta::default() || finish.is_some() {
                let mut c = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
                c.choices.push(ChunkChoice {
                    index,
                    delta,
                    finish_reason: finish,
                    logprobs: None,
                });
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Ends the stream: a usage chunk when it finished, else a truncation error.
    pub fn end(&mut self) -> Result<Option<ChatChunk>> {
        if !self.finished {
            return Err(Error::network(
                TransportCause::Truncated,
                "the Gemini stream ended before a finish reason",
            ));
        }
        Ok(self.usage.take().map(|u| {
            let mut c = ChatChunk::new(self.id.clone(), self.model.clone(), self.created);
            c.usage = Some(u);
            c
        }))
    }
}

/// Turns canonical chunks into Gemini stream pieces. Tool calls are sent
/// whole (Gemini streams function calls complete), so their fragments are
/// collected until the choice finishes.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    id: String,
    model: String,
    pending_calls: Vec<ToolCall>,
    held_finish: Option<GenerateContentResponse>,
    ended: bool,
}

impl StreamEncoder {
    /// An encoder.
    pub fn new() -> Self {
        Self::default()
    }

    fn piece(&self, parts: Vec<Part>, finish: Option<&FinishReason>) -> GenerateContentResponse {
        GenerateContentResponse {
            candidates: vec![Candidate {
                content: Some(GeminiContent {
                    role: Some("model".into()),
                    parts,
                }),
                finish_reason: finish.map(|f| gemini_finish(f).to_string()),
                index: Some(0),
                extra: Extra::new(),
            }],
            usage_metadata: None,
            model_version: Some(self.model.clone()),
            response_id: Some(self.id.clone()),
            prompt_feedback: None,
            extra: Extra::new(),
        }
    }

    /// Encodes one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<GenerateContentResponse> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
        }
        if let Some(c) = chunk.choices.iter().find(|c| c.index == 0) {
            if let Some(t) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                out.push(self.piece(vec![Part::text(t)], None));
            }
            for d in c.delta.tool_calls.iter().flatten() {
                let i = d.index as usize;
                while self.pending_calls.len() <= i {
                    self.pending_calls.push(ToolCall::function("", "", ""));
                }
                let call = &mut self.pending_calls[i];
                if let Some(id) = &d.id {
                    call.id.clone_from(id);
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
            if let Some(f) = &c.finish_reason {
                let parts = std::mem::take(&mut self.pending_calls)
                    .into_iter()
                    .map(|call| Part {
                        function_call: Some(FunctionCallPart {
                            id: Some(call.id),
                            name: call.function.name,
                            args: serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({})),
                        }),
                        ..Default::default()
                    })
                    .collect();
                self.held_finish = Some(self.piece(parts, Some(f)));
            }
        }
        if let Some(u) = &chunk.usage
            && let Some(mut last) = self.held_finish.take()
        {
            last.usage_metadata = Some(usage_to_gemini(u));
            out.push(last);
            self.ended = true;
        }
        out
    }

    /// Flushes the final piece if usage never came.
    pub fn finish(&mut self) -> Vec<GenerateContentResponse> {
        self.ended = true;
        self.held_finish.take().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const DOC_STREAM: &[&str] = &[
        r#"{"candidates":[{"content":{"parts":[{"text":"The"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":" sky is blue."}],"role":"model"},"index":0}],"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":5,"totalTokenCount":14},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#,
    ];

    fn decode(pieces: &[&str]) -> (StreamAssembler, Vec<ChatChunk>) {
        let mut d = StreamDecoder::new("m");
        let mut a = StreamAssembler::new();
        let mut all = Vec::new();
        for p in pieces {
            for c in d.push(serde_json::from_str(p).unwrap()).unwrap() {
                a.push(&c);
                all.push(c);
            }
        }
        if let Some(c) = d.end().unwrap() {
            a.push(&c);
            all.push(c);
        }
        (a, all)
    }

    #[test]
    fn documented_stream_decodes() {
        let (a, _) = decode(DOC_STREAM);
        assert!(a.is_complete());
        let r = a.finish();
        assert_eq!(r.text(), "The sky is blue.");
        assert_eq!(r.usage.unwrap().total_tokens, 14);
        assert_eq!(r.model, "gemini-2.5-flash");
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut d = StreamDecoder::new("m");
        d.push(serde_json::from_str(DOC_STREAM[0]).unwrap()).unwrap();
        let e = d.end().unwrap_err();
        assert_eq!((e.kind, e.cause), (ErrorKind::Network, Some(TransportCause::Truncated)));
    }

    #[test]
    fn encode_decode_round_trip_with_tool_call() {
        let mut m = Message::assistant("checking");
        m.tool_calls = Some(vec![ToolCall::function("call_0", "f", r#"{"a":1}"#)]);
        let resp = ChatResponse {
            id: "r".into(),
            object: "chat.completion".into(),
            created: 0,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: m,
                finish_reason: Some(FinishReason::ToolCalls),
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: Some(Usage::new(3, 4)),
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let mut enc = StreamEncoder::new();
        let mut pieces = Vec::new();
        for c in response_to_chunks(&resp, 3, true) {
            pieces.extend(enc.push(&c));
        }
        pieces.extend(enc.finish());
        let texts: Vec<String> = pieces.iter().map(|p| serde_json::to_string(p).unwrap()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (a, _) = decode(&refs);
        let back = a.finish();
        assert_eq!(back.text(), "checking");
        assert_eq!(back.tool_calls(), resp.tool_calls());
        assert_eq!(back.finish_reason(), Some(&FinishReason::ToolCalls));
        assert_eq!(back.usage, resp.usage);
    }
}
