//! Requests and complete responses, canonical ⇄ Anthropic.

use super::types::*;
use crate::error::{Error, ErrorKind, Result};
use crate::types::*;
use serde_json::{Value, json};

/// `max_tokens` when the caller gave none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Extra fields of a canonical request that mean the same to Anthropic and
/// are passed on. Other OpenAI-only extras are dropped: Anthropic rejects
/// fields it does not know.
const PASSED_EXTRAS: &[&str] = &["top_k", "thinking", "metadata", "service_tier"];

/// The instruction used when JSON output is asked of a model without native
/// schema enforcement.
pub fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => {
            Some("Respond with a single JSON object and nothing else: no prose, no code fences.".into())
        }
        ResponseFormat::JsonSchema { json_schema } => Some(format!(
            "Respond with a single JSON value that conforms to this JSON Schema, and nothing else (no prose, no code fences).\nSchema ({}): {}",
            json_schema.name,
            json_schema
                .schema
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".into())
        )),
    }
}

/// Splits a `data:` URL into media type and base64 payload.
pub(crate) fn parse_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media.to_string(), data.to_string()))
}

fn image_block(url: &str) -> Block {
    let source = match parse_data_url(url) {
        Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
        None => json!({"type": "url", "url": url}),
    };
    Block {
        kind: "image".into(),
        source: Some(source),
        ..Default::default()
    }
}

fn content_blocks(content: &Content, param: &str) -> Result<Vec<Block>> {
    match content {
        Content::Text(t) => Ok(if t.is_empty() {
            vec![]
        } else {
            vec![Block::text(t.clone())]
        }),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .filter(|(_, p)| !(p.kind == "text" && p.text.as_deref().unwrap_or("").is_empty()))
            .map(|(j, p)| match p.kind.as_str() {
                "text" => Ok(Block::text(p.text.clone().unwrap_or_default())),
                "image_url" => match &p.image_url {
                    Some(img) => Ok(image_block(&img.url)),
                    None => Err(Error::invalid_param(
                        format!("{param}[{j}].image_url"),
                        "image_url part without a url",
                    )),
                },
                other => Err(Error::invalid_param(
                    format!("{param}[{j}].type"),
                    format!("content parts of type `{other}` cannot be sent to an Anthropic model"),
                )),
            })
            .collect(),
    }
}

fn push_turn(out: &mut Vec<AnthropicMessage>, role: &str, blocks: Vec<Block>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.role == role
    {
        // Anthropic wants alternating turns: merge consecutive ones.
        let prev = std::mem::replace(&mut last.content, AnthropicContent::Blocks(vec![]));
        let mut merged = prev.into_blocks();
        merged.extend(blocks);
        last.content = AnthropicContent::Blocks(merged);
        return;
    }
    out.push(AnthropicMessage {
        role: role.into(),
        content: AnthropicContent::Blocks(blocks),
    });
}

/// Canonical request → Anthropic request (the adapter's direction).
///
/// System and developer messages become `system`; tool results become
/// `tool_result` blocks in a user turn; consecutive turns of one role are
/// merged. Temperature is clamped to Anthropic's 0–1. JSON output is asked
/// for by instruction (Anthropic does not enforce schemas itself).
pub fn to_anthropic_request(req: &ChatRequest) -> Result<MessagesRequest> {
    if req.n.unwrap_or(1) > 1 {
        return Err(Error::invalid_param(
            "n",
            "Anthropic models return one choice; n must be 1",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<AnthropicMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}].content");
        match m.role {
            Role::System | Role::Developer => {
                let t = m.text();
                if !t.is_empty() {
                    system.push(t);
                }
            }
            Role::User => {
                let blocks = match &m.content {
                    Some(c) => content_blocks(c, &param)?,
                    None => vec![],
                };
                push_turn(&mut messages, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = match &m.content {
                    Some(c) => content_blocks(c, &param)?,
                    None => vec![],
                };
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    let input: Value = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            Error::invalid_param(
                                format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                format!("arguments are not valid JSON: {e}"),
                            )
                        })?
                    };
                    blocks.push(Block::tool_use(call.id.clone(), call.function.name.clone(), input));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool | Role::Function => {
                let id = m.tool_call_id.clone().or_else(|| m.name.clone()).ok_or_else(|| {
                    Error::invalid_param(
                        format!("messages[{i}].tool_call_id"),
                        "a tool message needs tool_call_id",
                    )
                })?;
                let block = Block {
                    kind: "tool_result".into(),
                    tool_use_id: Some(id),
                    content: Some(AnthropicContent::Text(m.text())),
                    ..Default::default()
                };
                push_turn(&mut messages, "user", vec![block]);
            }
        }
    }
    if let Some(instr) = req.response_format.as_ref().and_then(json_instruction) {
        system.push(instr);
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| AnthropicTool {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                input_schema: t.function.parameters.clone().unwrap_or_else(empty_object_schema),
                extra: Extra::new(),
            })
            .collect::<Vec<_>>()
    });
    let mut tool_choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
        Some(ToolChoice::Other(v)) => {
            return Err(Error::invalid_param(
                "tool_choice",
                format!("unsupported tool_choice {v}"),
            ));
        }
    };
    if req.parallel_tool_calls == Some(false) && tools.is_some() {
        let mut tc = tool_choice.unwrap_or_else(|| json!({"type": "auto"}));
        if let Some(o) = tc.as_object_mut()
            && o.get("type").and_then(Value::as_str) != Some("none")
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
        tool_choice = Some(tc);
    }
    let mut extra = Extra::new();
    for k in PASSED_EXTRAS {
        if let Some(v) = req.extra.get(*k) {
            extra.insert((*k).to_string(), v.clone());
        }
    }
    let top_k = extra.remove("top_k").and_then(|v| v.as_u64()).map(|k| k as u32);
    let mut metadata = extra.remove("metadata").filter(|v| v.get("user_id").is_some());
    if metadata.is_none()
        && let Some(u) = &req.user
    {
        metadata = Some(json!({"user_id": u}));
    }
    Ok(MessagesRequest {
        model: req.model.clone(),
        messages,
        max_tokens: req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        system: (!system.is_empty()).then(|| AnthropicContent::Text(system.join("\n\n"))),
        stop_sequences: req.stop.as_ref().map(Stop::to_vec),
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        top_k,
        stream: None,
        tools,
        tool_choice,
        metadata,
        extra,
    })
}

/// Anthropic stop reason → canonical finish reason.
pub fn finish_from_stop_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// Canonical finish reason → Anthropic stop reason.
pub fn stop_reason_from_finish(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Other(_) | FinishReason::Error => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Anthropic usage → canonical usage (cached input counts as prompt).
pub fn usage_from_anthropic(u: &AnthropicUsage) -> Usage {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cached + u.cache_creation_input_tokens.unwrap_or(0);
    let mut usage = Usage::new(prompt, u.output_tokens);
    if cached > 0 {
        usage.prompt_tokens_details = Some(json!({"cached_tokens": cached}));
    }
    usage
}

/// Canonical usage → Anthropic usage.
pub fn usage_to_anthropic(u: &Usage) -> AnthropicUsage {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    AnthropicUsage {
        input_tokens: u.prompt_tokens.saturating_sub(cached),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: None,
        cache_read_input_tokens: (cached > 0).then_some(cached),
        extra: Extra::new(),
    }
}

/// Anthropic response → canonical response (the adapter's direction).
pub fn from_anthropic_response(resp: MessagesResponse) -> ChatResponse {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for b in &resp.content {
        match b.kind.as_str() {
            "text" => text.push_str(b.text.as_deref().unwrap_or("")),
            "thinking" => thinking.push_str(b.thinking.as_deref().unwrap_or("")),
            "tool_use" => calls.push(ToolCall::function(
                b.id.clone().unwrap_or_default(),
                b.name.clone().unwrap_or_default(),
                b.input.as_ref().map(Value::to_string).unwrap_or_else(|| "{}".into()),
            )),
            _ => {}
        }
    }
    let mut message = Message::assistant(text);
    if message.text().is_empty() && !calls.is_empty() {
        message.content = None;
    }
    if !calls.is_empty() {
        message.tool_calls = Some(calls);
    }
    if !thinking.is_empty() {
        message
            .extra
            .insert("reasoning_content".into(), Value::String(thinking));
    }
    ChatResponse {
        id: resp.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(
                resp.stop_reason
                    .as_deref()
                    .map(finish_from_stop_reason)
                    .unwrap_or(FinishReason::Stop),
            ),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(usage_from_anthropic(&resp.usage)),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

fn blocks_to_parts(blocks: Vec<Block>, param: &str) -> Result<Vec<ContentPart>> {
    blocks
        .into_iter()
        .enumerate()
        .map(|(j, b)| match b.kind.as_str() {
            "text" => Ok(ContentPart::text(b.text.unwrap_or_default())),
            "image" => {
                let src = b.source.unwrap_or(Value::Null);
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_string(),
                    _ => {
                        return Err(Error::invalid_param(
                            format!("{param}[{j}].source"),
                            "unsupported image source",
                        ));
                    }
                };
                Ok(ContentPart {
                    kind: "image_url".into(),
                    text: None,
                    image_url: Some(ImageUrl { url, detail: None }),
                    extra: Extra::new(),
                })
            }
            other => Err(Error::invalid_param(
                format!("{param}[{j}].type"),
                format!("content blocks of type `{other}` are not supported here"),
            )),
        })
        .collect()
}

fn parts_or_text(parts: Vec<ContentPart>) -> Option<Content> {
    if parts.is_empty() {
        return None;
    }
    if parts.iter().all(|p| p.kind == "text") {
        return Some(Content::Text(parts.into_iter().filter_map(|p| p.text).collect()));
    }
    Some(Content::Parts(parts))
}

/// Anthropic request → canonical request (the gateway's `/v1/messages` and
/// the simulator's direction).
pub fn from_anthropic_request(req: MessagesRequest) -> Result<ChatRequest> {
    let mut messages = Vec::new();
    if let Some(sys) = &req.system {
        let t = sys.text();
        if !t.is_empty() {
            messages.push(Message::system(t));
        }
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        let param = format!("messages[{i}].content");
        let blocks = m.content.into_blocks();
        match m.role.as_str() {
            "user" => {
                let mut rest = Vec::new();
                for b in blocks {
                    if b.kind == "tool_result" {
                        let text = b.content.as_ref().map(AnthropicContent::text).unwrap_or_default();
                        let mut tm = Message::tool(b.tool_use_id.clone().unwrap_or_default(), text);
                        if b.is_error == Some(true) {
                            tm.extra.insert("is_error".into(), Value::Bool(true));
                        }
                        messages.push(tm);
                    } else {
                        rest.push(b);
                    }
                }
                if let Some(content) = parts_or_text(blocks_to_parts(rest, &param)?) {
                    let mut um = Message::user("");
                    um.content = Some(content);
                    messages.push(um);
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in blocks {
                    match b.kind.as_str() {
                        "text" => text.push_str(b.text.as_deref().unwrap_or("")),
                        "tool_use" => calls.push(ToolCall::function(
                            b.id.unwrap_or_default(),
                            b.name.unwrap_or_default(),
                            b.input.map(|v| v.to_string()).unwrap_or_else(|| "{}".into()),
                        )),
                        _ => {}
                    }
                }
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
                    format!("messages[{i}].role"),
                    format!("role must be user or assistant, not `{other}`"),
                ));
            }
        }
    }
    let tools = req.tools.map(|tools| {
        tools
            .into_iter()
            .map(|t| Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: Some(t.input_schema),
                    strict: None,
                    extra: Extra::new(),
                },
                extra: Extra::new(),
            })
            .collect()
    });
    let mut parallel_tool_calls = None;
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(tc) => {
            if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                parallel_tool_calls = Some(false);
            }
            Some(match tc.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Function(tc.get("name").and_then(Value::as_str).unwrap_or("").to_string()),
                _ => {
                    return Err(Error::invalid_param(
                        "tool_choice.type",
                        "must be auto, any, tool or none",
                    ));
                }
            })
        }
    };
    let mut extra = req.extra;
    if let Some(k) = req.top_k {
        extra.insert("top_k".into(), Value::from(k));
    }
    let user = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ChatRequest {
        model: req.model,
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        stop: req.stop_sequences.map(Stop::Many),
        max_tokens: Some(req.max_tokens),
        user,
        tools,
        tool_choice,
        parallel_tool_calls,
        extra,
        ..Default::default()
    })
}

/// Canonical response → Anthropic response.
pub fn to_anthropic_response(resp: &ChatResponse) -> MessagesResponse {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    let mut stop_reason = "end_turn";
    if let Some(c) = choice {
        let t = c.message.text();
        if !t.is_empty() {
            content.push(Block::text(t));
        }
        for call in c.message.tool_calls.iter().flatten() {
            let input = serde_json::from_str::<Value>(&call.function.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(Block::tool_use(call.id.clone(), call.function.name.clone(), input));
        }
        if let Some(f) = &c.finish_reason {
            stop_reason = stop_reason_from_finish(f);
        }
    }
    MessagesResponse {
        id: anthropic_id(&resp.id),
        kind: "message".into(),
        role: "assistant".into(),
        content,
        model: resp.model.clone(),
        stop_reason: Some(stop_reason.into()),
        stop_sequence: None,
        usage: resp.usage.as_ref().map(usage_to_anthropic).unwrap_or_default(),
        extra: Extra::new(),
    }
}

/// A message id in Anthropic's form.
pub fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's error `type` for a kind.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited | ErrorKind::BudgetExceeded | ErrorKind::QuotaExceeded => "rate_limit_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentFiltered => {
            "invalid_request_error"
        }
        ErrorKind::Overloaded | ErrorKind::CircuitOpen => "overloaded_error",
        _ => "api_error",
    }
}

/// An error body in Anthropic's shape.
pub fn error_body(kind: ErrorKind, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(kind), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_req() -> ChatRequest {
        let mut asst = Message::assistant("");
        asst.content = None;
        asst.tool_calls = Some(vec![ToolCall::function(
            "toolu_1",
            "get_weather",
            r#"{"city":"Paris"}"#,
        )]);
        ChatRequest {
            model: "claude-x".into(),
            messages: vec![
                Message::system("be brief"),
                Message::user("weather in Paris?"),
                asst,
                Message::tool("toolu_1", "18C sunny"),
                Message::user("thanks"),
            ],
            temperature: Some(1.6),
            max_tokens: Some(100),
            stop: Some(Stop::One("END".into())),
            tools: Some(vec![Tool::function(
                "get_weather",
                "Weather by city",
                json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            )]),
            tool_choice: Some(ToolChoice::Function("get_weather".into())),
            parallel_tool_calls: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn request_to_anthropic() {
        let a = to_anthropic_request(&tool_req()).unwrap();
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["system"], "be brief");
        assert_eq!(v["max_tokens"], 100);
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(
            v["tool_choice"],
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
        );
        assert_eq!(v["tools"][0]["input_schema"]["required"], json!(["city"]));
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "tool result and next user turn merge: {msgs:?}");
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(msgs[2]["content"][1], json!({"type": "text", "text": "thanks"}));
    }

    #[test]
    fn request_round_trip_keeps_meaning() {
        let back = from_anthropic_request(to_anthropic_request(&tool_req()).unwrap()).unwrap();
        assert_eq!(back.messages[0], Message::system("be brief"));
        assert_eq!(
            back.messages[2].tool_calls.as_ref().unwrap()[0].function.name,
            "get_weather"
        );
        assert_eq!(back.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(back.messages[4].text(), "thanks");
        assert_eq!(back.tool_choice, Some(ToolChoice::Function("get_weather".into())));
        assert_eq!(back.parallel_tool_calls, Some(false));
    }

    #[test]
    fn images_and_bad_parts() {
        let mut m = Message::user("");
        m.content = Some(Content::Parts(vec![
            ContentPart::text("what is this"),
            ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(ImageUrl {
                    url: "data:image/png;base64,AAAA".into(),
                    detail: None,
                }),
                extra: Extra::new(),
            },
        ]));
        let req = ChatRequest {
            model: "c".into(),
            messages: vec![m.clone()],
            ..Default::default()
        };
        let v = serde_json::to_value(to_anthropic_request(&req).unwrap()).unwrap();
        assert_eq!(
            v["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        let back = from_anthropic_request(serde_json::from_value(v).unwrap()).unwrap();
        assert_eq!(back.messages[0], m);

        let mut bad = Message::user("");
        bad.content = Some(Content::Parts(vec![ContentPart {
            kind: "input_audio".into(),
            text: None,
            image_url: None,
            extra: Extra::new(),
        }]));
        let e = to_anthropic_request(&ChatRequest {
            model: "c".into(),
            messages: vec![bad],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let e = to_anthropic_request(&ChatRequest {
            n: Some(2),
            ..tool_req()
        })
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
    }

    #[test]
    fn documented_response_translates() {
        let body = r#"{
          "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
          "content": [{"type": "text", "text": "I'll check."},
                      {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}],
          "model": "claude-sonnet-4-5", "stop_reason": "tool_use", "stop_sequence": null,
          "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 5}
        }"#;
        let r = from_anthropic_response(serde_json::from_str(body).unwrap());
        assert_eq!(r.text(), "I'll check.");
        assert_eq!(r.finish_reason(), Some(&FinishReason::ToolCalls));
        assert_eq!(
            r.tool_calls()[0].function.arguments,
            r#"{"location":"San Francisco, CA"}"#
        );
        let u = r.usage.clone().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (2100, 503, 2603)
        );
        let back = to_anthropic_response(&r);
        assert_eq!(back.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(back.content.len(), 2);
        assert_eq!(back.usage.input_tokens, 2095);
        assert_eq!(back.usage.cache_read_input_tokens, Some(5));
    }
}
