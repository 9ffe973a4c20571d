//! `${NAME}` and `${NAME:-default}` in configuration values.
//!
//! Substitution works on parsed values, not raw text, so comments never
//! matter, and a value that is exactly one `${…}` takes the type of what it
//! becomes (`rpm: ${RPM:-60}` is a number).

use serde_json::Value;

/// Replaces every `${…}` in the strings of `v`, using `lookup`; `$${` is a
/// literal `${`. The error names the path and the missing variable.
pub fn interpolate(v: &mut Value, path: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), (String, String)> {
    match v {
        Value::String(s) => {
            if !s.contains("${") {
                return Ok(());
            }
            let whole = is_single_reference(s);
            let out = substitute(s, lookup).map_err(|reason| (path.to_string(), reason))?;
            *v = if whole { scalar(&out) } else { Value::String(out) };
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), lookup)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(item, &p, lookup)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn is_single_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..s.len() - 1].find(['{', '}']).is_none()
}

/// A substituted value that was a whole `${…}` reads as YAML would read it.
fn scalar(s: &str) -> Value {
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" | "" => Value::Null,
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = s.parse::<u64>() {
                Value::from(u)
            } else if let Ok(f) = s.parse::<f64>()
                && f.is_finite()
                && s.chars().any(|c| c.is_ascii_digit())
            {
                Value::from(f)
            } else {
                Value::String(s.to_string())
            }
        }
    }
}

fn substitute(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(esc) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = esc;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(format!("unclosed `${{` in {s:?}"));
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{body}}}` is not a valid variable reference"));
        }
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable {name} is not set (and has no `:-default`)"
                ));
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-test".into()),
            "RPM" => Some("120".into()),
            "ON" => Some("true".into()),
            _ => None,
        }
    }

    #[test]
    fn references_defaults_types_and_errors() {
        let mut v = json!({"a": "${KEY}", "b": "Bearer ${KEY}!", "c": "${RPM}", "d": "${MISSING:-7}",
                           "e": ["${ON}", "$${LITERAL}", "cost $5"], "f": "${MISSING:-}"});
        interpolate(&mut v, "", &env).unwrap();
        assert_eq!(
            v,
            json!({"a": "sk-test", "b": "Bearer sk-test!", "c": 120, "d": 7,
                             "e": [true, "${LITERAL}", "cost $5"], "f": null})
        );
        let mut v = json!({"providers": {"openai": {"api_key": "${NOPE}"}}});
        let (path, reason) = interpolate(&mut v, "", &env).unwrap_err();
        assert_eq!(path, "providers.openai.api_key");
        assert!(reason.contains("NOPE"), "{reason}");
        let mut v = json!({"x": "${bad name}"});
        assert!(interpolate(&mut v, "", &env).unwrap_err().1.contains("not a valid"));
        let mut v = json!({"x": "${OPEN"});
        assert!(interpolate(&mut v, "", &env).unwrap_err().1.contains("unclosed"));
    }
}
