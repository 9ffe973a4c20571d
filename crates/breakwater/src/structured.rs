//! Structured output: ask for JSON matching a schema, parse it (tolerating
//! code fences and surrounding prose), validate it, send one repair request
//! with the violations when it is wrong, and otherwise fail with an error
//! that shows the raw text and what was wrong with it.
//!
//! [`run`] drives the loop over any `call` function, so it works with a bare
//! provider or the assembled client (`Client::structured`).

use crate::error::{Error, ErrorKind};
use crate::types::{ChatRequest, ChatResponse, JsonSchemaFormat, Message, ResponseFormat};
use serde_json::Value;
use std::fmt;
use std::future::Future;

/// How many candidate starts of a JSON value are tried in a reply.
const MAX_CANDIDATES: usize = 32;

/// One way the output breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer to the offending value (`""` for the whole value).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path, self.message)
        }
    }
}

/// What a structured call gets back: a response, possibly with metadata
/// around it (which target answered, how many attempts).
pub trait Reply {
    /// The response.
    fn response(&self) -> &ChatResponse;
}

impl Reply for ChatResponse {
    fn response(&self) -> &ChatResponse {
        self
    }
}

/// Why structured output failed.
#[derive(Debug, Clone)]
pub enum StructuredError<R = ChatResponse> {
    /// The schema itself is invalid.
    Schema(String),
    /// A call failed (after the client's retries and failover).
    Call(Error),
    /// The answer was still invalid after the repair attempt.
    Invalid {
        /// The last raw answer.
        raw: String,
        /// What is wrong with it.
        violations: Vec<Violation>,
        /// Calls made.
        calls: u32,
        /// The last reply, when there was one.
        last: Option<Box<R>>,
    },
}

impl<R> fmt::Display for StructuredError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StructuredError::Schema(m) => write!(f, "invalid JSON Schema: {m}"),
            StructuredError::Call(e) => write!(f, "{e}"),
            StructuredError::Invalid {
                raw, violations, calls, ..
            } => {
                write!(f, "the model's answer is not valid after {calls} calls: ")?;
                for (i, v) in violations.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{v}")?;
                }
                let shown: String = raw.chars().take(300).collect();
                write!(f, " — raw answer: {shown:?}")
            }
        }
    }
}

impl<R: fmt::Debug> std::error::Error for StructuredError<R> {}

impl<R> From<StructuredError<R>> for Error {
    fn from(e: StructuredError<R>) -> Error {
        match e {
            StructuredError::Call(e) => e,
            StructuredError::Schema(m) => Error::invalid_param("response_format.json_schema.schema", m),
            other @ StructuredError::Invalid { .. } => Error::new(ErrorKind::UpstreamUnparseable, other.to_string()),
        }
    }
}

/// A validated answer.
#[derive(Debug, Clone)]
pub struct StructuredOutcome<R = ChatResponse> {
    /// The value, valid against the schema.
    pub value: Value,
    /// The raw text it came from.
    pub raw: String,
    /// The reply that carried it.
    pub response: R,
    /// Whether a repair request was needed.
    pub repaired: bool,
    /// Calls made (1 or 2).
    pub calls: u32,
}

/// A compiled schema.
pub struct Schema {
    name: String,
    schema: Value,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("name", &self.name).finish()
    }
}

impl Schema {
    /// Compiles `schema` (draft detected from `$schema`, else 2020-12).
    pub fn new(name: impl Into<String>, schema: Value) -> Result<Schema, StructuredError> {
        let validator = jsonschema::validator_for(&schema).map_err(|e| StructuredError::Schema(e.to_string()))?;
        Ok(Schema {
            name: name.into(),
            schema,
            validator,
        })
    }

    /// The schema document.
    pub fn document(&self) -> &Value {
        &self.schema
    }

    /// The violations of `value` (empty when valid).
    pub fn violations(&self, value: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(value)
            .take(20)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect()
    }

    /// The `response_format` asking for this schema.
    pub fn response_format(&self) -> ResponseFormat {
        ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: self.name.clone(),
                description: None,
                schema: Some(self.schema.clone()),
                strict: Some(true),
            },
        }
    }
}

/// Finds the JSON value in a model's reply: the whole text, the inside of a
/// code fence, or the first parseable object or array in it.
pub fn extract_json(text: &str) -> Result<Value, Violation> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return Ok(v);
    }
    if let Some(inner) = fenced(t)
        && let Ok(v) = serde_json::from_str::<Value>(inner.trim())
    {
        return Ok(v);
    }
    for (i, _) in t.match_indices(['{', '[']).take(MAX_CANDIDATES) {
        let mut it = serde_json::Deserializer::from_str(&t[i..]).into_iter::<Value>();
        if let Some(Ok(v)) = it.next() {
            return Ok(v);
        }
    }
    let why = match serde_json::from_str::<Value>(t) {
        Err(e) => e.to_string(),
        Ok(_) => "no JSON value".into(),
    };
    Err(Violation {
        path: String::new(),
        message: format!("the answer is not JSON ({why})"),
    })
}

fn fenced(t: &str) -> Option<&str> {
    let start = t.find("```")?;
    let after = &t[start + 3..];
    // Skip a language tag such as `json`.
    let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
    let body = &after[body_start..];
    let end = body.find("```").unwrap_or(body.len());
    Some(&body[..end])
}

/// Parses and validates a reply: the value, or what is wrong.
pub fn check(schema: &Schema, text: &str) -> Result<Value, Vec<Violation>> {
    let v = extract_json(text).map_err(|e| vec![e])?;
    let problems = schema.violations(&v);
    if problems.is_empty() { Ok(v) } else { Err(problems) }
}

/// Checks a whole response: its text against the schema, then `domain`
/// (what a schema cannot express). A text cut off at the token limit says
/// so, so the repair asks for a shorter complete answer.
fn check_response(
    schema: &Schema,
    resp: &ChatResponse,
    domain: &(dyn Fn(&Value) -> Vec<Violation> + Sync),
) -> Result<Value, Vec<Violation>> {
    let text = resp.text();
    match check(schema, &text) {
        Ok(v) => {
            let p = domain(&v);
            if p.is_empty() { Ok(v) } else { Err(p) }
        }
        Err(_) if resp.finish_reason() == Some(&crate::types::FinishReason::Length) && extract_json(&text).is_err() => {
            Err(vec![Violation {
                path: String::new(),
                message: "the answer was cut off at the token limit; answer with a shorter, complete JSON value".into(),
            }])
        }
        Err(p) => Err(p),
    }
}

/// The follow-up request asking the model to fix its answer; `hint` adds
/// domain advice to the request.
pub fn repair_request(original: &ChatRequest, raw: &str, violations: &[Violation], hint: &str) -> ChatRequest {
    let mut req = original.clone();
    req.messages.push(Message::assistant(raw));
    let list: Vec<String> = violations.iter().map(|v| format!("- {v}")).collect();
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!(" {hint}")
    };
    req.messages.push(Message::user(format!(
        "Your answer does not match what is required:\n{}\nReply again with only the corrected JSON value, nothing else.{hint}",
        list.join("\n")
    )));
    req
}

/// Asks for JSON matching `schema` via `call`, validates, repairs once.
///
/// The request's `response_format` is set to the schema (providers without
/// native enforcement get an instruction from their adapter).
pub async fn run<F, Fut>(req: ChatRequest, schema: &Schema, call: F) -> Result<StructuredOutcome, StructuredError>
where
    F: FnMut(ChatRequest) -> Fut,
    Fut: Future<Output = Result<ChatResponse, Error>>,
{
    run_with(req, schema, call, &|_| Vec::new(), "").await
}

/// [`run`] with a `domain` check after the schema (its problems are sent in
/// the repair request like the schema's), a `hint` for the repair request,
/// and any reply type that carries a response (e.g. with routing metadata).
pub async fn run_with<R, F, Fut>(
    mut req: ChatRequest,
    schema: &Schema,
    mut call: F,
    domain: &(dyn Fn(&Value) -> Vec<Violation> + Sync),
    hint: &str,
) -> Result<StructuredOutcome<R>, StructuredError<R>>
where
    R: Reply,
    F: FnMut(ChatRequest) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
{
    req.response_format = Some(schema.response_format());
    req.stream = None;
    let first = call(req.clone()).await.map_err(StructuredError::Call)?;
    let raw = first.response().text();
    let violations = match check_response(schema, first.response(), domain) {
        Ok(value) => {
            return Ok(StructuredOutcome {
                value,
                raw,
                response: first,
                repaired: false,
                calls: 1,
            });
        }
        Err(v) => v,
    };
    let second = call(repair_request(&req, &raw, &violations, hint))
        .await
        .map_err(StructuredError::Call)?;
    let raw2 = second.response().text();
    match check_response(schema, second.response(), domain) {
        Ok(value) => Ok(StructuredOutcome {
            value,
            raw: raw2,
            response: second,
            repaired: true,
            calls: 2,
        }),
        Err(violations) => Err(StructuredError::Invalid {
            raw: raw2,
            violations,
            calls: 2,
            last: Some(Box::new(second)),
        }),
    }
}

/// Like [`run`], then deserializes the value into `T`.
pub async fn run_typed<T, F, Fut>(
    req: ChatRequest,
    schema: &Schema,
    call: F,
) -> Result<(T, StructuredOutcome), StructuredError>
where
    T: serde::de::DeserializeOwned,
    F: FnMut(ChatRequest) -> Fut,
    Fut: Future<Output = Result<ChatResponse, Error>>,
{
    let out = run(req, schema, call).await?;
    match serde_json::from_value::<T>(out.value.clone()) {
        Ok(t) => Ok((t, out)),
        Err(e) => Err(StructuredError::Invalid {
            raw: out.raw,
            violations: vec![Violation {
                path: String::new(),
                message: format!("valid against the schema but not the expected type: {e}"),
            }],
            calls: out.calls,
            last: Some(Box::new(out.response)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{CallOptions, Provider};
    use crate::simulator::{ScriptStep, Simulator, SimulatorConfig};
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(
            "light",
            json!({"type": "object", "properties": {"device": {"type": "string"}, "level": {"type": "integer", "minimum": 0, "maximum": 100}},
                   "required": ["device", "level"], "additionalProperties": false}),
        )
        .unwrap()
    }

    #[test]
    fn extraction_tolerates_fences_and_prose() {
        for text in [
            r#"{"a": 1}"#,
            "```json\n{\"a\": 1}\n```",
            "```\n{\"a\": 1}\n```\nhope that helps",
            "Sure! Here it is: {\"a\": 1} — anything else?",
            "  \n{\"a\": 1}\n\n",
        ] {
            assert_eq!(extract_json(text).unwrap(), json!({"a": 1}), "{text:?}");
        }
        assert_eq!(extract_json("list: [1, 2] ok").unwrap(), json!([1, 2]));
        assert!(extract_json("no json here").unwrap_err().message.contains("not JSON"));
        assert!(extract_json("{broken").is_err());
        assert!(extract_json("").is_err());
    }

    #[test]
    fn violations_name_the_path() {
        let s = schema();
        let v = s.violations(&json!({"device": "lamp", "level": 300}));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].path, "/level");
        assert!(check(&s, r#"{"device": "lamp", "level": 30}"#).is_ok());
        assert!(!check(&s, r#"{"device": "lamp"}"#).unwrap_err().is_empty());
        assert!(matches!(
            Schema::new("x", json!({"type": 12})),
            Err(StructuredError::Schema(_))
        ));
    }

    fn reply(text: &str) -> ScriptStep {
        ScriptStep {
            fault: None,
            reply: Some(text.into()),
            tool_call: None,
            latency_ms: Some(0),
            retry_after_s: None,
        }
    }

    async fn drive(sim: &Simulator) -> Result<(serde_json::Value, StructuredOutcome), StructuredError> {
        run_typed::<serde_json::Value, _, _>(ChatRequest::user("m", "dim the lamp"), &schema(), |r| async move {
            sim.chat(&r, &CallOptions::default()).await
        })
        .await
    }

    #[tokio::test]
    async fn invalid_then_repaired_takes_two_calls() {
        let sim = Simulator::new("sim", SimulatorConfig::instant());
        sim.engine().push_script([
            reply("Here: {\"device\": \"lamp\"}"),
            reply("```json\n{\"device\": \"lamp\", \"level\": 30}\n```"),
        ]);
        let (v, out) = drive(&sim).await.unwrap();
        assert_eq!(v, json!({"device": "lamp", "level": 30}));
        assert!(out.repaired);
        assert_eq!(out.calls, 2);
        assert_eq!(sim.engine().stats().requests, 2);
    }

    #[tokio::test]
    async fn twice_invalid_explains_itself() {
        let sim = Simulator::new("sim", SimulatorConfig::instant());
        sim.engine()
            .push_script([reply("nope"), reply("{\"device\": 5, \"level\": -1}")]);
        let err = drive(&sim).await.unwrap_err();
        let text = err.to_string();
        match &err {
            StructuredError::Invalid {
                raw, violations, calls, ..
            } => {
                assert_eq!(*calls, 2);
                assert_eq!(raw, "{\"device\": 5, \"level\": -1}");
                assert!(violations.iter().any(|v| v.path == "/device"));
                assert!(violations.iter().any(|v| v.path == "/level"));
            }
            other => panic!("{other:?}"),
        }
        assert!(text.contains("raw answer"), "{text}");
        assert_eq!(Error::from(err).kind, ErrorKind::UpstreamUnparseable);
    }

    #[tokio::test]
    async fn valid_first_time_takes_one_call_and_schema_is_sent() {
        let sim = Simulator::new("sim", SimulatorConfig::instant());
        // Without a script the simulator fills the schema itself.
        let (v, out) = drive(&sim).await.unwrap();
        assert!(v["level"].as_i64().is_some());
        assert_eq!((out.calls, out.repaired), (1, false));
    }
}
