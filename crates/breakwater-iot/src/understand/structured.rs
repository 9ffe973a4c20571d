//! Structured output for commands: the library's loop
//! ([`breakwater::structured::run_with`]: ask with `response_format:
//! json_schema`, parse, validate, one repair, explain) with the registry
//! as the domain check the schema cannot express (value steps, device
//! capabilities), and replies that keep their routing metadata.

use super::llm::{LlmBackend, LlmReply};
use breakwater::structured::{self, Reply, Schema, Violation};
use breakwater::types::{ChatRequest, ChatResponse};
use serde_json::Value;

impl Reply for LlmReply {
    fn response(&self) -> &ChatResponse {
        &self.response
    }
}

/// What the repair request adds to the violations.
const REPAIR_HINT: &str = "Use only device ids and actions from the list in the instructions.";

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

/// Asks `backend` for JSON matching `schema`, repairing once. `domain`
/// returns problems in words the model can act on.
pub async fn complete_structured(
    backend: &dyn LlmBackend,
    req: ChatRequest,
    schema: &Schema,
    domain: impl Fn(&Value) -> Vec<String> + Sync,
) -> Result<Structured, StructuredError> {
    let domain = |v: &Value| -> Vec<Violation> {
        domain(v)
            .into_iter()
            .map(|message| Violation {
                path: String::new(),
                message,
            })
            .collect()
    };
    match structured::run_with(req, schema, |r| backend.complete(r), &domain, REPAIR_HINT).await {
        Ok(o) => Ok(Structured {
            value: o.value,
            reply: o.response,
            calls: o.calls,
        }),
        Err(structured::StructuredError::Call(e)) => Err(StructuredError::Backend(e)),
        Err(structured::StructuredError::Schema(m)) => Err(StructuredError::Invalid {
            problems: vec![format!("the command schema is invalid: {m}")],
            raw: String::new(),
        }),
        Err(structured::StructuredError::Invalid { raw, violations, .. }) => Err(StructuredError::Invalid {
            problems: violations.iter().map(ToString::to_string).collect(),
            raw,
        }),
    }
}
