//! The JSON Schema of an understanding, generated from the registry: each
//! action is one branch whose `device` enum lists exactly the devices that
//! offer it (with the same range), so a model constrained by the schema can
//! only name real devices, allowed actions and values in range.
//!
//! The shape is strict-mode friendly (every property required, nullable
//! where optional, no additional properties), which both OpenAI's
//! structured outputs and llama.cpp's grammar conversion accept.

use super::{Action, ParamSpec, Registry};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The most commands one utterance may produce.
pub const MAX_COMMANDS: usize = 32;

fn when_schema() -> Value {
    json!({"anyOf": [
        {"type": "null"},
        {"type": "object",
         "properties": {
            "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
            "day": {"type": "string", "enum": ["today", "tomorrow", "next"]}
         },
         "required": ["time", "day"], "additionalProperties": false},
        {"type": "object",
         "properties": {"in_minutes": {"type": "integer", "minimum": 1, "maximum": 10080}},
         "required": ["in_minutes"], "additionalProperties": false}
    ]})
}

fn is_integral(min: f64, max: f64, step: Option<f64>) -> bool {
    step.is_some_and(|s| s.fract() == 0.0) && min.fract() == 0.0 && max.fract() == 0.0
}

fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn branch(action: Action, devices: &[&str], value: Value, delta: Value) -> Value {
    json!({
        "type": "object",
        "properties": {
            "device": {"type": "string", "enum": devices},
            "action": {"type": "string", "enum": [action.as_str()]},
            "value": value,
            "delta": delta,
            "at": when_schema()
        },
        "required": ["device", "action", "value", "delta", "at"],
        "additionalProperties": false
    })
}

/// Groups devices by (action, parameter) so that devices sharing a range
/// share a branch; the key is a stable string for deterministic output.
fn groups(reg: &Registry) -> BTreeMap<(Action, String), (ParamSpec, Vec<&str>)> {
    let mut out: BTreeMap<(Action, String), (ParamSpec, Vec<&str>)> = BTreeMap::new();
    for d in reg.devices() {
        for (action, spec) in d.capabilities.actions() {
            let key = (action, format!("{spec:?}"));
            out.entry(key)
                .or_insert_with(|| (spec, Vec::new()))
                .1
                .push(d.id.as_str());
        }
    }
    out
}

/// The schema of `{"commands": [...], "question": string|null}`.
///
/// Key names are chosen so that alphabetical order (how the schema is
/// serialised, and so the order a grammar-constrained model writes them) is
/// a good order to think in: the commands before the question.
pub fn command_schema(reg: &Registry) -> Value {
    let null = json!({"type": "null"});
    let mut branches = Vec::new();
    for ((action, _), (spec, devices)) in groups(reg) {
        match spec {
            ParamSpec::None => branches.push(branch(action, &devices, null.clone(), null.clone())),
            ParamSpec::Choice(values) => {
                branches.push(branch(
                    action,
                    &devices,
                    json!({"type": "string", "enum": values}),
                    null.clone(),
                ));
            }
            ParamSpec::Number { min, max, step, .. } => {
                let ty = if is_integral(min, max, step) {
                    "integer"
                } else {
                    "number"
                };
                let span = max - min;
                branches.push(branch(
                    action,
                    &devices,
                    json!({"type": ty, "minimum": num(min), "maximum": num(max)}),
                    null.clone(),
                ));
                branches.push(branch(
                    action,
                    &devices,
                    null.clone(),
                    json!({"type": ty, "minimum": num(-span), "maximum": num(span)}),
                ));
            }
        }
    }
    json!({
        "type": "object",
        "properties": {
            "commands": {"type": "array", "items": {"anyOf": branches}, "maxItems": MAX_COMMANDS},
            "question": {"type": ["string", "null"], "maxLength": 200}
        },
        "required": ["commands", "question"],
        "additionalProperties": false
    })
}
