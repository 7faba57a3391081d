//! Checks a tool call's arguments against the tool's JSON Schema before anything runs: the
//! subset of JSON Schema the tools use (`type`, `properties`, `required`, `enum`, `minimum`,
//! `maximum`, `minLength`, `maxLength`, `items`, `additionalProperties: false`). Keywords outside
//! it are ignored, as JSON Schema says of unknown ones. The LLM tier is held to the schema by
//! its grammar; this holds every tier (and external tools' declared schemas) to it, so a call
//! with an out-of-range value is refused with a reason instead of acted on.

use serde_json::Value;

/// Checks `args` against `schema`.
///
/// # Errors
/// What is wrong, for the user: the argument's path and the rule it breaks.
pub fn validate(schema: &Value, args: &Value) -> Result<(), String> {
    if !args.is_object() {
        return Err("the arguments must be a JSON object".into());
    }
    check(schema, args, "")
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        // 3.0 is an integer in JSON Schema; 3.5 is not.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return Ok(()); // `true`, or no schema: anything goes
    };
    let what = if path.is_empty() {
        "the arguments".to_string()
    } else {
        format!("`{path}`")
    };
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            return Err(format!("{what} must be of type {t}"));
        }
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)) => {
            return Err(format!("{what} has the wrong type"));
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = s.get("enum") {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("{what} must be one of {}", list.join(", ")));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if x < min {
                return Err(format!("{what} must be at least {min}, not {v}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if x > max {
                return Err(format!("{what} must be at most {max}, not {v}"));
            }
        }
    }
    if let Some(t) = v.as_str() {
        let n = t.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if n < min {
                return Err(format!("{what} must be at least {min} characters long"));
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if n > max {
                return Err(format!("{what} must be at most {max} characters long"));
            }
        }
    }
    if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"))?;
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for key in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(key) {
                return Err(format!("the argument `{}` is required", join(path, key)));
            }
        }
        for (key, val) in obj {
            match props.and_then(|p| p.get(key)) {
                Some(sub) => check(sub, val, &join(path, key))?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!(
                        "`{}` is not an argument of this tool",
                        join(path, key)
                    ));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_ranges_enums_and_required_keys_are_checked() {
        let s = json!({
            "type": "object",
            "properties": {
                "seconds": {"type": "integer", "minimum": 1, "maximum": 100},
                "label": {"type": "string", "maxLength": 5},
                "what": {"enum": ["time", "date"]},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["seconds"]
        });
        assert_eq!(validate(&s, &json!({"seconds": 5, "label": "tea"})), Ok(()));
        assert_eq!(validate(&s, &json!({"seconds": 5.0})), Ok(()));
        let err = |a: Value| validate(&s, &a).unwrap_err();
        assert!(err(json!({"seconds": 0})).contains("at least 1"));
        assert!(err(json!({"seconds": 1_000_000_000_000_000u64})).contains("at most 100"));
        assert!(err(json!({"seconds": 2.5})).contains("type integer"));
        assert!(err(json!({"seconds": "5"})).contains("type integer"));
        assert!(err(json!({"label": "tea"})).contains("`seconds` is required"));
        assert!(err(json!({"seconds": 5, "label": "biscuits"})).contains("at most 5 characters"));
        assert!(err(json!({"seconds": 5, "what": "weather"})).contains("one of"));
        assert!(err(json!({"seconds": 5, "tags": ["a", 1]})).contains("`tags[1]`"));
        assert!(err(json!([1])).contains("JSON object"));
        // Unknown keys pass unless the schema closes the object.
        assert_eq!(validate(&s, &json!({"seconds": 5, "extra": 1})), Ok(()));
        let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert!(validate(&closed, &json!({"x": 1}))
            .unwrap_err()
            .contains("not an argument"));
    }

    #[test]
    fn every_built_in_tool_schema_accepts_what_the_fast_path_produces() {
        for text in [
            "set a timer for seven minutes",
            "take a note: buy oat milk",
            "what time is it in Tokyo",
            "add lunch with Sam tomorrow at noon",
            "remember that I prefer tea",
            "when am I free tomorrow for an hour",
        ] {
            let i = crate::intent::understand(text).expect(text);
            let (_, _, schema) = crate::tools::schemas()
                .iter()
                .find(|(n, _, _)| *n == i.tool)
                .expect("a schema");
            assert_eq!(validate(schema, &i.args), Ok(()), "{text}: {}", i.args);
        }
    }
}
