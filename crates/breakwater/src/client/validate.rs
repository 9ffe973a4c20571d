//! Request checks before anything is sent: a bad request gets a clear
//! error naming the field, and costs no upstream call.

use crate::error::{Error, Result};
use crate::types::{ChatRequest, EmbeddingRequest, Role};

/// Checks a chat request.
pub fn chat(req: &ChatRequest) -> Result<()> {
    if req.model.trim().is_empty() {
        return Err(Error::invalid_param("model", "`model` is required"));
    }
    if req.messages.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
            return Err(Error::invalid_param(
                format!("messages[{i}].tool_call_id"),
                "a tool message needs the id of the call it answers",
            ));
        }
        if m.content.is_none() && m.tool_calls.as_ref().is_none_or(Vec::is_empty) && m.role != Role::Assistant {
            return Err(Error::invalid_param(
                format!("messages[{i}].content"),
                "content is required",
            ));
        }
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Error::invalid_param(
            "temperature",
            format!("{t} is not between 0 and 2"),
        ));
    }
    if let Some(p) = req.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(Error::invalid_param("top_p", format!("{p} is not in (0, 1]")));
    }
    if let Some(n) = req.n
        && !(1..=128).contains(&n)
    {
        return Err(Error::invalid_param("n", format!("{n} is not between 1 and 128")));
    }
    for (name, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return Err(Error::invalid_param(name, "must be at least 1"));
        }
    }
    for (name, v) in [
        ("presence_penalty", req.presence_penalty),
        ("frequency_penalty", req.frequency_penalty),
    ] {
        if let Some(p) = v
            && !(-2.0..=2.0).contains(&p)
        {
            return Err(Error::invalid_param(name, format!("{p} is not between -2 and 2")));
        }
    }
    if let Some(tools) = &req.tools {
        for (i, t) in tools.iter().enumerate() {
            if t.function.name.is_empty() {
                return Err(Error::invalid_param(
                    format!("tools[{i}].function.name"),
                    "a tool needs a name",
                ));
            }
        }
    }
    Ok(())
}

/// Checks an embeddings request.
pub fn embeddings(req: &EmbeddingRequest) -> Result<()> {
    if req.model.trim().is_empty() {
        return Err(Error::invalid_param("model", "`model` is required"));
    }
    if req.input.is_empty() {
        return Err(Error::invalid_param("input", "`input` must not be empty"));
    }
    if let Some(texts) = req.input.texts()
        && let Some(i) = texts.iter().position(|t| t.is_empty())
    {
        return Err(Error::invalid_param(
            format!("input[{i}]"),
            "inputs must not be empty strings",
        ));
    }
    if req.input.len() > 2048 {
        return Err(Error::invalid_param("input", "at most 2048 inputs per request"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn names_the_field() {
        let mut r = ChatRequest::user("m", "hi");
        assert!(chat(&r).is_ok());
        r.temperature = Some(3.0);
        assert_eq!(chat(&r).unwrap_err().param.as_deref(), Some("temperature"));
        r.temperature = None;
        r.messages.push(Message {
            tool_call_id: None,
            ..Message::tool("x", "y")
        });
        assert_eq!(chat(&r).unwrap_err().param.as_deref(), Some("messages[1].tool_call_id"));
        let e = chat(&ChatRequest::user("", "x")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        let mut e = EmbeddingRequest::new("m", vec!["a".into(), "".into()]);
        assert_eq!(embeddings(&e).unwrap_err().param.as_deref(), Some("input[1]"));
        e.input = crate::types::EmbeddingInput::Many(vec![]);
        assert_eq!(embeddings(&e).unwrap_err().param.as_deref(), Some("input"));
    }
}
