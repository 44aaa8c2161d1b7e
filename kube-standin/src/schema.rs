//! Custom resource admission against the CRD's structural schema: defaulting, pruning of
//! unknown fields, OpenAPI value validation and CEL `x-kubernetes-validations` rules (through
//! `kube-cel`, the CEL engine kube-rs uses for client-side validation).

use serde_json::{Map, Value};

/// One field error, shaped like the API server's `StatusCause`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, reason: &'static str, message: String) -> Self {
        Self {
            field: field.to_string(),
            reason,
            message,
        }
    }
}

/// Applies schema defaults, prunes unknown fields, then validates. Returns the admitted object.
pub fn admit(
    validator: &kube_cel::Validator,
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Value, Vec<FieldError>> {
    let mut obj = kube_cel::apply_defaults(schema, obj);
    prune(schema, &mut obj, true);
    let mut errs = Vec::new();
    validate_value(schema, &obj, "", &mut errs, true);
    if errs.is_empty() {
        if let Err(cel_errs) = validator.validate(schema, &obj, old) {
            for e in cel_errs.iter() {
                let field = if e.field_path.is_empty() {
                    "<root>".to_string()
                } else {
                    e.field_path.trim_start_matches('.').to_string()
                };
                errs.push(FieldError::new(
                    &field,
                    "FieldValueInvalid",
                    format!("Invalid value: \"object\": {}", e.message),
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(obj)
    } else {
        Err(errs)
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drops fields the schema does not declare, as the API server does for structural schemas.
fn prune(schema: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown = preserves_unknown(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let child_schema = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(s) => {
                        if let Some(child) = map.get_mut(&k) {
                            prune(s, child, false);
                        }
                    }
                    None => {
                        let additional_true = additional.and_then(Value::as_bool) == Some(true);
                        if !keep_unknown && !additional_true {
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn validate_value(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>, root: bool) {
    let field = if path.is_empty() { "<root>" } else { path };
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
            errs.push(FieldError::new(
                field,
                "FieldValueTypeInvalid",
                "Invalid value: \"null\": must not be null".into(),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let got = type_name(v);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (int_or_string && (got == "integer" || got == "string"));
        if !ok {
            errs.push(FieldError::new(
                field,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"{got}\": {field} in body must be of type {want}: \"{got}\""
                ),
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            let allowed: Vec<String> = options.iter().map(show).collect();
            errs.push(FieldError::new(
                field,
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    allowed.join(", ")
                ),
            ));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            let exclusive_min =
                schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let exclusive_max =
                schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if x < min || (exclusive_min && x == min) {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!("Invalid value: {n}: {field} in body should be greater than or equal to {min}"),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if x > max || (exclusive_max && x == max) {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!("Invalid value: {n}: {field} in body should be less than or equal to {max}"),
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!("Invalid value: \"{s}\": {field} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueTooLong",
                        format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!("Invalid value: \"{s}\": {field} in body should match '{pattern}'"),
                    )),
                    Ok(_) => {}
                    Err(_) => errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!("the schema pattern '{pattern}' does not compile"),
                    )),
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if n < min {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {n}: {field} in body should have at least {min} items"
                        ),
                    ));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if n > max {
                    errs.push(FieldError::new(
                        field,
                        "FieldValueTooMany",
                        format!("Too many: {n}: must have at most {max} items"),
                    ));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_value(item_schema, item, &format!("{path}[{i}]"), errs, false);
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, path, errs, root),
        _ => {}
    }
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    root: bool,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errs.push(FieldError::new(
                    &child(path, r),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, val) in map {
        if root && k == "metadata" {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
            validate_value(s, val, &child(path, k), errs, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                        "min": {"type": "integer", "minimum": 1, "default": 1},
                        "max": {"type": "integer", "default": 3},
                    },
                    "x-kubernetes-validations": [{"rule": "self.max >= self.min", "message": "max must be >= min"}]
                }
            }
        })
    }

    #[test]
    fn defaults_and_prunes() {
        let v = kube_cel::Validator::new();
        let out = admit(
            &v,
            &schema(),
            &json!({"metadata": {"name": "x"}, "spec": {"name": "abc", "junk": 1}}),
            None,
        )
        .unwrap();
        assert_eq!(
            out["spec"],
            json!({"name": "abc", "mode": "A", "min": 1, "max": 3})
        );
    }

    #[test]
    fn rejects_structural_and_cel_violations() {
        let v = kube_cel::Validator::new();
        let errs = admit(
            &v,
            &schema(),
            &json!({"spec": {"name": "ABC", "mode": "C", "min": 0}}),
            None,
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.min", "spec.mode", "spec.name"]);
        let errs = admit(
            &v,
            &schema(),
            &json!({"spec": {"name": "abc", "min": 5, "max": 2}}),
            None,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("max must be >= min"), "{errs:?}");
        assert_eq!(errs[0].field, "spec");
    }
}
