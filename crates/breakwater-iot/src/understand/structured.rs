//! Structured output, the small local version: ask with
//! `response_format: json_schema`, parse the answer, validate it against the
//! schema and a domain check, ask once more with the errors when it fails,
//! and otherwise explain what was wrong.
//!
//! Kept apart from the IoT logic on purpose: it has the shape of the
//! library's `breakwater::structured` (parse → validate → one repair →
//! explainable error) and can be swapped for it when that lands.

use super::llm::{LlmBackend, LlmReply};
use breakwater::types::{ChatRequest, FinishReason, JsonSchemaFormat, Message, ResponseFormat};
use serde_json::Value;

/// A schema-valid, domain-valid answer and how it was obtained.
#[derive(Debug, Clone)]
pub struct Structured {
    /// The JSON value.
    pub value: Value,
    /// The last reply (target, attempts, degraded).
    pub reply: LlmReply,
    /// Model calls made: 1, or 2 when a repair was needed.
    pub calls: u32,
}

/// Why no valid answer came back.
#[derive(Debug, Clone)]
pub enum StructuredError {
    /// The backend failed (every provider down, budget, …).
    Backend(breakwater::Error),
    /// The model answered, twice, with something invalid.
    Invalid {
        /// What was wrong with the last answer.
        problems: Vec<String>,
        /// The last answer, for the audit log.
        raw: String,
        /// The last reply.
        reply: Box<LlmReply>,
    },
}

impl std::fmt::Display for StructuredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StructuredError::Backend(e) => write!(f, "the model could not be reached: {e}"),
            StructuredError::Invalid { problems, .. } => {
                write!(
                    f,
                    "the model's answer was invalid after one repair: {}",
                    problems.join("; ")
                )
            }
        }
    }
}

/// Extracts a JSON value from a model's text: the whole text, or the part
/// inside a code fence, or from the first `{` to the last `}`.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Ok(v);
    }
    let unfenced = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.trim_end().strip_suffix("```"));
    if let Some(inner) = unfenced
        && let Ok(v) = serde_json::from_str(inner.trim())
    {
        return Ok(v);
    }
    if let (Some(a), Some(b)) = (t.find('{'), t.rfind('}'))
        && a < b
        && let Ok(v) = serde_json::from_str(&t[a..=b])
    {
        return Ok(v);
    }
    let shown: String = t.chars().take(120).collect();
    Err(format!("the answer is not JSON: {shown:?}"))
}

/// Validation errors of `value` against a compiled schema, with the path.
pub fn schema_problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(8)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("at {path}: {e}")
            }
        })
        .collect()
}

/// Asks `backend` for JSON matching `schema`, repairing once.
///
/// `domain` checks what a schema cannot (here: the registry, again) and
/// returns problems in words the model can act on.
pub async fn complete_structured(
    backend: &dyn LlmBackend,
    mut req: ChatRequest,
    schema: &Value,
    validator: &jsonschema::Validator,
    domain: impl Fn(&Value) -> Vec<String>,
) -> Result<Structured, StructuredError> {
    req.response_format = Some(ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "home_commands".into(),
            description: Some("Commands for the devices of the home".into()),
            schema: Some(schema.clone()),
            strict: Some(true),
        },
    });
    let mut calls = 0;
    loop {
        calls += 1;
        let reply = backend.complete(req.clone()).await.map_err(StructuredError::Backend)?;
        let raw = reply.response.text();
        let cut = reply.response.finish_reason() == Some(&FinishReason::Length);
        let problems = match extract_json(&raw) {
            // say why it is not JSON: the repair then asks for a complete, shorter answer
            Err(_) if cut => {
                vec!["the answer was cut off at the token limit; answer with fewer, complete commands".to_string()]
            }
            Err(p) => vec![p],
            Ok(value) => {
                let mut p = schema_problems(validator, &value);
                if p.is_empty() {
                    p = domain(&value);
                }
                if p.is_empty() {
                    return Ok(Structured { value, reply, calls });
                }
                p
            }
        };
        if calls >= 2 {
            return Err(StructuredError::Invalid {
                problems,
                raw,
                reply: Box::new(reply),
            });
        }
        req.messages.push(Message::assistant(raw));
        req.messages.push(Message::user(format!(
            "That answer is invalid: {}. Answer again with only the JSON object, following the schema, \
             using only device ids and actions from the list.",
            problems.join("; ")
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_in_fences_and_prose() {
        assert_eq!(extract_json(r#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(extract_json("```json\n{\"a\":2}\n```").unwrap()["a"], 2);
        assert_eq!(extract_json("Sure! {\"a\":3} hope that helps").unwrap()["a"], 3);
        assert!(extract_json("no json here").unwrap_err().contains("not JSON"));
    }
}
