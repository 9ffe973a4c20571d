//! Requests, responses and embeddings, canonical ⇄ Gemini.

use super::types::*;
use crate::error::{Error, ErrorKind, Result};
use crate::types::*;
use crate::wire::anthropic::{json_instruction, parse_data_url};
use serde_json::{Value, json};

fn media_part(url: &str) -> Part {
    match parse_data_url(url) {
        Some((mime, data)) => Part {
            inline_data: Some(json!({"mimeType": mime, "data": data})),
            ..Default::default()
        },
        None => {
            let mime = if url.ends_with(".png") {
                "image/png"
            } else if url.ends_with(".webp") {
                "image/webp"
            } else if url.ends_with(".pdf") {
                "application/pdf"
            } else {
                "image/jpeg"
            };
            Part {
                file_data: Some(json!({"mimeType": mime, "fileUri": url})),
                ..Default::default()
            }
        }
    }
}

fn parts_of(content: &Content, param: &str) -> Result<Vec<Part>> {
    match content {
        Content::Text(t) => Ok(if t.is_empty() {
            vec![]
        } else {
            vec![Part::text(t.clone())]
        }),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.kind.as_str() {
                "text" => Ok(Part::text(p.text.clone().unwrap_or_default())),
                "image_url" => p.image_url.as_ref().map(|i| media_part(&i.url)).ok_or_else(|| {
                    Error::invalid_param(format!("{param}[{j}].image_url"), "image_url part without a url")
                }),
                other => Err(Error::invalid_param(
                    format!("{param}[{j}].type"),
                    format!("content parts of type `{other}` cannot be sent to a Gemini model"),
                )),
            })
            .collect(),
    }
}

fn push_turn(out: &mut Vec<GeminiContent>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.role.as_deref() == Some(role)
    {
        last.parts.extend(parts);
        return;
    }
    out.push(GeminiContent {
        role: Some(role.into()),
        parts,
    });
}

/// A tool result as the object Gemini wants: the JSON object itself when
/// the result is one, else `{"content": text}`.
fn response_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"content": text}),
    }
}

/// Canonical request → Gemini request (the adapter's direction). The
/// model goes in the URL, not the body.
pub fn to_gemini_request(req: &ChatRequest) -> Result<GenerateContentRequest> {
    let mut system = Vec::new();
    let mut contents: Vec<GeminiContent> = Vec::new();
    // Gemini answers tool results by function name; OpenAI by call id.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}].content");
        match m.role {
            Role::System | Role::Developer => {
                let t = m.text();
                if !t.is_empty() {
                    system.push(Part::text(t));
                }
            }
            Role::User => {
                let parts = match &m.content {
                    Some(c) => parts_of(c, &param)?,
                    None => vec![],
                };
                push_turn(&mut contents, "user", parts);
            }
            Role::Assistant => {
                let mut parts = match &m.content {
                    Some(c) => parts_of(c, &param)?,
                    None => vec![],
                };
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    let args: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            Error::invalid_param(
                                format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                format!("arguments are not valid JSON: {e}"),
                            )
                        })?
                    };
                    call_names.push((call.id.clone(), call.function.name.clone()));
                    parts.push(Part {
                        function_call: Some(FunctionCallPart {
                            id: Some(call.id.clone()),
                            name: call.function.name.clone(),
                            args,
                        }),
                        ..Default::default()
                    });
                }
                push_turn(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.clone();
                let name = id
                    .as_ref()
                    .and_then(|id| call_names.iter().find(|(c, _)| c == id).map(|(_, n)| n.clone()))
                    .or_else(|| m.name.clone())
                    .ok_or_else(|| {
                        Error::invalid_param(
                            format!("messages[{i}].tool_call_id"),
                            "a tool message must answer a tool call made earlier in the conversation",
                        )
                    })?;
                let part = Part {
                    function_response: Some(FunctionResponsePart {
                        id,
                        name,
                        response: response_object(&m.text()),
                    }),
                    ..Default::default()
                };
                push_turn(&mut contents, "user", vec![part]);
            }
        }
    }
    let mut gc = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").and_then(Value::as_u64).map(|k| k as u32),
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map(Stop::to_vec),
        candidate_count: req.n,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..Default::default()
    };
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            gc.response_mime_type = Some("application/json".into());
            match &json_schema.schema {
                Some(s) => gc.response_json_schema = Some(s.clone()),
                None => system.push(Part::text(
                    json_instruction(req.response_format.as_ref().unwrap_or(&ResponseFormat::JsonObject))
                        .unwrap_or_default(),
                )),
            }
        }
        Some(ResponseFormat::JsonObject) => gc.response_mime_type = Some("application/json".into()),
        _ => {}
    }
    let tools = req.tools.as_ref().map(|tools| {
        vec![GeminiTool {
            function_declarations: Some(
                tools
                    .iter()
                    .map(|t| FunctionDeclaration {
                        name: t.function.name.clone(),
                        description: t.function.description.clone(),
                        parameters: None,
                        parameters_json_schema: t.function.parameters.clone(),
                    })
                    .collect(),
            ),
            extra: Extra::new(),
        }]
    });
    let tool_config = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"functionCallingConfig": {"mode": "AUTO"}})),
        Some(ToolChoice::Required) => Some(json!({"functionCallingConfig": {"mode": "ANY"}})),
        Some(ToolChoice::None) => Some(json!({"functionCallingConfig": {"mode": "NONE"}})),
        Some(ToolChoice::Function(n)) => {
            Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [n]}}))
        }
        Some(ToolChoice::Other(v)) => {
            return Err(Error::invalid_param(
                "tool_choice",
                format!("unsupported tool_choice {v}"),
            ));
        }
    };
    let mut extra = Extra::new();
    for k in ["safetySettings", "cachedContent"] {
        if let Some(v) = req.extra.get(k) {
            extra.insert(k.into(), v.clone());
        }
    }
    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(GeminiContent {
            role: None,
            parts: system,
        }),
        generation_config: Some(gc),
        tools,
        tool_config,
        extra,
    })
}

/// Gemini finish reason → canonical. `STOP` after function calls is a tool call.
pub fn finish_from_gemini(s: &str, has_calls: bool) -> FinishReason {
    match s {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" | "FINISH_REASON_UNSPECIFIED" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// Canonical finish reason → Gemini.
pub fn gemini_finish(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Error => "OTHER",
        _ => "STOP",
    }
}

/// Gemini usage → canonical.
pub fn usage_from_gemini(u: &UsageMetadata) -> Usage {
    let completion = u.candidates_token_count + u.thoughts_token_count.unwrap_or(0);
    let mut usage = Usage::new(u.prompt_token_count, completion);
    if let Some(t) = u.thoughts_token_count.filter(|t| *t > 0) {
        usage.completion_tokens_details = Some(json!({"reasoning_tokens": t}));
    }
    if let Some(c) = u.cached_content_token_count.filter(|c| *c > 0) {
        usage.prompt_tokens_details = Some(json!({"cached_tokens": c}));
    }
    usage
}

/// Canonical usage → Gemini.
pub fn usage_to_gemini(u: &Usage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: u.prompt_tokens,
        candidates_token_count: u.completion_tokens,
        total_token_count: u.total_tokens,
        thoughts_token_count: None,
        cached_content_token_count: None,
    }
}

/// The error a blocked prompt gives (no candidates, a `blockReason`).
pub(crate) fn blocked_prompt(resp: &GenerateContentResponse) -> Option<Error> {
    if !resp.candidates.is_empty() {
        return None;
    }
    let reason = resp.prompt_feedback.as_ref()?.get("blockReason")?.as_str()?;
    Some(Error::new(ErrorKind::ContentFiltered, format!("the prompt was blocked ({reason})")).with_code(reason))
}

/// Parts → (text, reasoning, tool calls), numbering calls from `first_call`.
pub(crate) fn split_parts(parts: &[Part], first_call: usize) -> (String, String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if let Some(t) = &p.text {
            if p.thought == Some(true) {
                thinking.push_str(t);
            } else {
                text.push_str(t);
            }
        }
        if let Some(fc) = &p.function_call {
            let id = fc
                .id
                .clone()
                .unwrap_or_else(|| format!("call_{}", first_call + calls.len()));
            calls.push(ToolCall::function(id, fc.name.clone(), fc.args.to_string()));
        }
    }
    (text, thinking, calls)
}

/// Gemini response → canonical (the adapter's direction).
pub fn from_gemini_response(resp: GenerateContentResponse, model: &str) -> Result<ChatResponse> {
    if let Some(e) = blocked_prompt(&resp) {
        return Err(e);
    }
    if resp.candidates.is_empty() {
        return Err(Error::new(
            ErrorKind::UpstreamUnparseable,
            "the Gemini answer has no candidates",
        ));
    }
    let choices = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let parts = c.content.as_ref().map(|c| c.parts.as_slice()).unwrap_or(&[]);
            let (text, thinking, calls) = split_parts(parts, 0);
            let mut message = Message::assistant(text);
            let has_calls = !calls.is_empty();
            if has_calls {
                if message.text().is_empty() {
                    message.content = None;
                }
                message.tool_calls = Some(calls);
            }
            if !thinking.is_empty() {
                message
                    .extra
                    .insert("reasoning_content".into(), Value::String(thinking));
            }
            Choice {
                index: c.index.unwrap_or(i as u32),
                message,
                finish_reason: Some(
                    c.finish_reason
                        .as_deref()
                        .map(|f| finish_from_gemini(f, has_calls))
                        .unwrap_or(FinishReason::Stop),
                ),
                logprobs: None,
                extra: Extra::new(),
            }
        })
        .collect();
    Ok(ChatResponse {
        id: resp
            .response_id
            .clone()
            .unwrap_or_else(|| format!("gemini-{}", unix_now())),
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model_version.clone().unwrap_or_else(|| model.to_string()),
        choices,
        usage: resp.usage_metadata.as_ref().map(usage_from_gemini),
        system_fingerprint: None,
        extra: Extra::new(),
    })
}

fn content_from_parts(parts: Vec<Part>) -> Option<Content> {
    let mut out = Vec::new();
    for p in parts {
        if let Some(t) = p.text {
            out.push(ContentPart::text(t));
        } else if let Some(d) = p.inline_data {
            let url = format!(
                "data:{};base64,{}",
                d.get("mimeType")
                    .and_then(Value::as_str)
                    .unwrap_or("application/octet-stream"),
                d.get("data").and_then(Value::as_str).unwrap_or("")
            );
            out.push(ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(ImageUrl { url, detail: None }),
                extra: Extra::new(),
            });
        } else if let Some(f) = p.file_data {
            let url = f.get("fileUri").and_then(Value::as_str).unwrap_or("").to_string();
            out.push(ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(ImageUrl { url, detail: None }),
                extra: Extra::new(),
            });
        }
    }
    if out.is_empty() {
        None
    } else if out.iter().all(|p| p.kind == "text") {
        Some(Content::Text(out.into_iter().filter_map(|p| p.text).collect()))
    } else {
        Some(Content::Parts(out))
    }
}

/// Gemini request → canonical (the simulator's direction); `model` comes
/// from the URL.
pub fn from_gemini_request(model: &str, req: GenerateContentRequest) -> Result<ChatRequest> {
    let mut messages = Vec::new();
    if let Some(sys) = req.system_instruction {
        let t: String = sys.parts.iter().filter_map(|p| p.text.as_deref()).collect();
        if !t.is_empty() {
            messages.push(Message::system(t));
        }
    }
    let mut n_calls = 0usize;
    for (i, c) in req.contents.into_iter().enumerate() {
        match c.role.as_deref().unwrap_or("user") {
            "user" => {
                let (responses, rest): (Vec<Part>, Vec<Part>) =
                    c.parts.into_iter().partition(|p| p.function_response.is_some());
                for p in responses {
                    if let Some(fr) = p.function_response {
                        let content = match fr.response.get("content").and_then(Value::as_str) {
                            Some(s) if fr.response.as_object().is_some_and(|o| o.len() == 1) => s.to_string(),
                            _ => fr.response.to_string(),
                        };
                        let mut tm = Message::tool(fr.id.unwrap_or_else(|| fr.name.clone()), content);
                        tm.name = Some(fr.name);
                        messages.push(tm);
                    }
                }
                if let Some(content) = content_from_parts(rest) {
                    let mut um = Message::user("");
                    um.content = Some(content);
                    messages.push(um);
                }
            }
            "model" => {
                let (text, _thinking, calls) = split_parts(&c.parts, n_calls);
                n_calls += calls.len();
                let mut am = Message::assistant(text);
                if !calls.is_empty() {
                    if am.text().is_empty() {
                        am.content = None;
                    }
                    am.tool_calls = Some(calls);
                }
                messages.push(am);
            }
            other => {
                return Err(Error::invalid_param(
                    format!("contents[{i}].role"),
                    format!("role must be user or model, not `{other}`"),
                ));
            }
        }
    }
    let gc = req.generation_config.unwrap_or_default();
    let response_format = match (&gc.response_mime_type, &gc.response_json_schema, &gc.response_schema) {
        (Some(m), Some(s), _) | (Some(m), None, Some(s)) if m == "application/json" => {
            Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: "response".into(),
                    description: None,
                    schema: Some(s.clone()),
                    strict: None,
                },
            })
        }
        (Some(m), None, None) if m == "application/json" => Some(ResponseFormat::JsonObject),
        _ => None,
    };
    let tools: Option<Vec<Tool>> = req.tools.map(|ts| {
        ts.into_iter()
            .flat_map(|t| t.function_declarations.unwrap_or_default())
            .map(|f| Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: f.name,
                    description: f.description,
                    parameters: f.parameters_json_schema.or(f.parameters),
                    strict: None,
                    extra: Extra::new(),
                },
                extra: Extra::new(),
            })
            .collect()
    });
    let tool_choice = req.tool_config.as_ref().and_then(|tc| {
        let fcc = tc.get("functionCallingConfig")?;
        Some(match fcc.get("mode").and_then(Value::as_str)? {
            "NONE" => ToolChoice::None,
            "ANY" => match fcc
                .get("allowedFunctionNames")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                Some([one]) => ToolChoice::Function(one.as_str().unwrap_or("").to_string()),
                _ => ToolChoice::Required,
            },
            _ => ToolChoice::Auto,
        })
    });
    let mut extra = req.extra;
    if let Some(k) = gc.top_k {
        extra.insert("top_k".into(), Value::from(k));
    }
    Ok(ChatRequest {
        model: model.to_string(),
        messages,
        temperature: gc.temperature,
        top_p: gc.top_p,
        n: gc.candidate_count,
        stop: gc.stop_sequences.map(Stop::Many),
        max_tokens: gc.max_output_tokens,
        presence_penalty: gc.presence_penalty,
        frequency_penalty: gc.frequency_penalty,
        seed: gc.seed,
        tools,
        tool_choice,
        response_format,
        extra,
        ..Default::default()
    })
}

/// Canonical message → Gemini parts.
pub(crate) fn message_parts(m: &Message) -> Vec<Part> {
    let mut parts = Vec::new();
    let t = m.text();
    if !t.is_empty() {
        parts.push(Part::text(t));
    }
    for call in m.tool_calls.iter().flatten() {
        parts.push(Part {
            function_call: Some(FunctionCallPart {
                id: Some(call.id.clone()),
                name: call.function.name.clone(),
                args: serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({})),
            }),
            ..Default::default()
        });
    }
    parts
}

/// Canonical response → Gemini response.
pub fn to_gemini_response(resp: &ChatResponse) -> GenerateContentResponse {
    GenerateContentResponse {
        candidates: resp
            .choices
            .iter()
            .map(|c| Candidate {
                content: Some(GeminiContent {
                    role: Some("model".into()),
                    parts: message_parts(&c.message),
                }),
                finish_reason: Some(gemini_finish(c.finish_reason.as_ref().unwrap_or(&FinishReason::Stop)).into()),
                index: Some(c.index),
                extra: Extra::new(),
            })
            .collect(),
        usage_metadata: resp.usage.as_ref().map(usage_to_gemini),
        model_version: Some(resp.model.clone()),
        response_id: Some(resp.id.clone()),
        prompt_feedback: None,
        extra: Extra::new(),
    }
}

/// Canonical embeddings request → Gemini `batchEmbedContents`.
pub fn to_gemini_embed(req: &EmbeddingRequest) -> Result<BatchEmbedRequest> {
    let texts = req
        .input
        .texts()
        .ok_or_else(|| Error::invalid_param("input", "Gemini embeds text, not token ids"))?;
    let model = format!("models/{}", req.model);
    Ok(BatchEmbedRequest {
        requests: texts
            .into_iter()
            .map(|t| EmbedContentRequest {
                model: model.clone(),
                content: GeminiContent {
                    role: None,
                    parts: vec![Part::text(t)],
                },
                output_dimensionality: req.dimensions,
            })
            .collect(),
    })
}

/// Gemini `batchEmbedContents` response → canonical. Gemini reports no
/// token usage for embeddings, so usage is estimated from the input size.
pub fn from_gemini_embed(resp: BatchEmbedResponse, req: &EmbeddingRequest) -> EmbeddingResponse {
    let est: u32 = req
        .input
        .texts()
        .map(|ts| ts.iter().map(|t| t.len().div_ceil(4) as u32).sum())
        .unwrap_or(0);
    EmbeddingResponse {
        object: "list".into(),
        data: resp
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| Embedding::new(i as u32, e.values))
            .collect(),
        model: req.model.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: est,
            total_tokens: est,
        },
        extra: Extra::new(),
    }
}

/// The gRPC-style status of a kind, as Gemini reports it: (HTTP, STATUS).
pub fn error_status(kind: ErrorKind) -> (u16, &'static str) {
    match kind {
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded | ErrorKind::BudgetExceeded => (429, "RESOURCE_EXHAUSTED"),
        ErrorKind::Authentication => (400, "INVALID_ARGUMENT"),
        ErrorKind::PermissionDenied => (403, "PERMISSION_DENIED"),
        ErrorKind::NotFound => (404, "NOT_FOUND"),
        ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentFiltered => {
            (400, "INVALID_ARGUMENT")
        }
        ErrorKind::Overloaded | ErrorKind::CircuitOpen => (503, "UNAVAILABLE"),
        ErrorKind::Timeout => (504, "DEADLINE_EXCEEDED"),
        _ => (500, "INTERNAL"),
    }
}

/// An error body in Gemini's shape (an invalid key carries the
/// `API_KEY_INVALID` reason, as Google sends it).
pub fn error_body(kind: ErrorKind, message: &str, retry_after_s: Option<u64>) -> Value {
    let (code, status) = error_status(kind);
    let mut details = Vec::new();
    if kind == ErrorKind::Authentication {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}));
    }
    if let Some(s) = retry_after_s {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{s}s")}));
    }
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::classify_http;

    fn tool_req() -> ChatRequest {
        let mut asst = Message::assistant("");
        asst.content = None;
        asst.tool_calls = Some(vec![ToolCall::function("call_9", "get_weather", r#"{"city":"Oslo"}"#)]);
        ChatRequest {
            model: "gemini-2.5-flash".into(),
            messages: vec![
                Message::system("be brief"),
                Message::user("weather in Oslo?"),
                asst,
                Message::tool("call_9", r#"{"temp": 3}"#),
            ],
            temperature: Some(0.2),
            max_completion_tokens: Some(64),
            tools: Some(vec![Tool::function(
                "get_weather",
                "Weather",
                json!({"type": "object"}),
            )]),
            tool_choice: Some(ToolChoice::Required),
            response_format: Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: "w".into(),
                    description: None,
                    schema: Some(json!({"type": "object"})),
                    strict: None,
                },
            }),
            ..Default::default()
        }
    }

    #[test]
    fn request_to_gemini() {
        let g = to_gemini_request(&tool_req()).unwrap();
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(v["contents"][1]["role"], "model");
        assert_eq!(
            v["contents"][1]["parts"][0]["functionCall"]["args"],
            json!({"city": "Oslo"})
        );
        assert_eq!(v["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");
        assert_eq!(
            v["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"temp": 3})
        );
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 64);
        assert_eq!(v["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert_eq!(
            v["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
            json!({"type": "object"})
        );
        let back = from_gemini_request("gemini-2.5-flash", g).unwrap();
        assert_eq!(back.messages.len(), 4);
        assert_eq!(back.messages[3].tool_call_id.as_deref(), Some("call_9"));
        assert_eq!(back.tool_choice, Some(ToolChoice::Required));
        assert_eq!(
            back.response_format.as_ref().and_then(|r| r.schema()),
            Some(&json!({"type": "object"}))
        );
    }

    #[test]
    fn orphan_tool_result_is_an_error_naming_the_field() {
        let req = ChatRequest {
            model: "g".into(),
            messages: vec![Message::tool("nope", "x")],
            ..Default::default()
        };
        assert_eq!(
            to_gemini_request(&req).unwrap_err().param.as_deref(),
            Some("messages[0].tool_call_id")
        );
    }

    #[test]
    fn documented_response_translates() {
        let body = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Oslo"}}}],"role":"model"},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":7,"totalTokenCount":37},"modelVersion":"gemini-2.5-flash","responseId":"abc"}"#;
        let r = from_gemini_response(serde_json::from_str(body).unwrap(), "x").unwrap();
        assert_eq!(r.finish_reason(), Some(&FinishReason::ToolCalls));
        assert_eq!(r.tool_calls()[0].id, "call_0");
        assert_eq!(r.usage.as_ref().unwrap().total_tokens, 37);
        let back = to_gemini_response(&r);
        assert_eq!(
            back.candidates[0].content.as_ref().unwrap().parts[0]
                .function_call
                .as_ref()
                .unwrap()
                .name,
            "get_weather"
        );
        let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
        let e = from_gemini_response(serde_json::from_str(blocked).unwrap(), "x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::ContentFiltered);
    }

    #[test]
    fn error_bodies_classify_back() {
        for kind in [
            ErrorKind::RateLimited,
            ErrorKind::Authentication,
            ErrorKind::PermissionDenied,
            ErrorKind::NotFound,
            ErrorKind::InvalidRequest,
            ErrorKind::Overloaded,
            ErrorKind::ServerError,
            ErrorKind::Timeout,
        ] {
            let (status, _) = error_status(kind);
            let body = error_body(kind, "boom", Some(3)).to_string();
            let e = classify_http(status, &http::HeaderMap::new(), body.as_bytes());
            assert_eq!(e.kind, kind, "{body}");
        }
    }
}
