//! `caduceus-operator render`: every child of the platforms in a YAML file, as multi-document
//! YAML, from the same builders the controller uses. No cluster: generated Secret values are
//! placeholders (annotated `caduceus.io/placeholder-values: "true"`), and ownerReferences are
//! left out (the platform has no UID yet; a fake one would get the children garbage-collected).
//!
//! The output is what the operator applies on a cluster that serves the Prometheus Operator
//! CRDs: with `monitoring.enabled` it includes the ServiceMonitors, the PrometheusRule and the
//! dashboard ConfigMap. [`RenderOptions::prometheus_operator`] `false` (`render
//! --without-prometheus-operator`) shows a cluster without those CRDs, where the operator applies
//! none of them (condition `MonitoringReady=False`, `PrometheusOperatorNotInstalled`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::Value;

use crate::crd::HealthcarePlatform;
use crate::desired::{build_children, ChildObject, Children, ExistingSecrets, SecretGenerator};
use crate::names::ANNOTATION_PLACEHOLDER;
use crate::validate::{validate, ValidationError};

/// Why a file could not be rendered. Messages name the document and the field.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {doc}: not YAML: {message}")]
    Yaml { doc: usize, message: String },
    #[error("document {doc}: expected apiVersion caduceus.io/v1alpha1 and kind HealthcarePlatform, got {api_version} {kind}")]
    WrongKind {
        doc: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {doc}: {field}: {message}")]
    Field {
        doc: usize,
        field: String,
        message: String,
    },
    #[error("document {doc} ({name}): invalid: {source}")]
    Invalid {
        doc: usize,
        name: String,
        #[source]
        source: ValidationError,
    },
    #[error("no HealthcarePlatform found in the input")]
    Empty,
    #[error("cannot serialise the output: {0}")]
    Output(String),
}

/// Parses every `HealthcarePlatform` document of a YAML stream (field errors name the path).
pub fn parse_platforms(yaml: &str) -> Result<Vec<HealthcarePlatform>, RenderError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let n = i + 1;
        let value = Value::deserialize(doc).map_err(|e| RenderError::Yaml {
            doc: n,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_string();
        if api_version != "caduceus.io/v1alpha1" || kind != "HealthcarePlatform" {
            return Err(RenderError::WrongKind {
                doc: n,
                api_version,
                kind,
            });
        }
        let hp: HealthcarePlatform =
            serde_path_to_error::deserialize(value).map_err(|e| RenderError::Field {
                doc: n,
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        out.push(hp);
    }
    if out.is_empty() {
        return Err(RenderError::Empty);
    }
    Ok(out)
}

/// A Secret as JSON; placeholder Secrets (offline render) show their values as readable
/// `stringData` so the placeholders are obvious.
fn secret_value(secret: &Secret) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(secret)?;
    let placeholder = secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PLACEHOLDER));
    if let (true, Some(data), Some(obj)) = (placeholder, &secret.data, value.as_object_mut()) {
        let strings: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        obj.remove("data");
        obj.insert("stringData".into(), serde_json::to_value(strings)?);
    }
    Ok(value)
}

/// What `render` assumes about the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// The Prometheus Operator CRDs (`monitoring.coreos.com` ServiceMonitor and PrometheusRule)
    /// are served, so the monitoring objects are applied (default `true`).
    pub prometheus_operator: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            prometheus_operator: true,
        }
    }
}

/// Every child as JSON values, in apply order, as applied on a cluster that serves the
/// Prometheus Operator CRDs.
pub fn children_to_values(children: &Children) -> Result<Vec<Value>, serde_json::Error> {
    children_to_values_with(children, RenderOptions::default())
}

/// Every child as JSON values, in apply order; the monitoring objects only when
/// `options.prometheus_operator` (the apply stage applies them only then).
pub fn children_to_values_with(
    children: &Children,
    options: RenderOptions,
) -> Result<Vec<Value>, serde_json::Error> {
    children
        .objects()
        .into_iter()
        .filter(|d| d.applies(true, options.prometheus_operator))
        .map(|d| match d.object {
            ChildObject::Secret(s) => secret_value(s),
            other => other.to_value(),
        })
        .collect()
}

/// Renders every platform of a YAML stream to multi-document YAML, as applied on a cluster that
/// serves the Prometheus Operator CRDs.
pub fn render(yaml: &str, default_namespace: &str) -> Result<String, RenderError> {
    render_with(yaml, default_namespace, RenderOptions::default())
}

/// [`render`] with explicit assumptions about the cluster.
pub fn render_with(
    yaml: &str,
    default_namespace: &str,
    options: RenderOptions,
) -> Result<String, RenderError> {
    let platforms = parse_platforms(yaml)?;
    let mut docs = Vec::new();
    for (i, hp) in platforms.iter().enumerate() {
        let p = validate(hp, default_namespace).map_err(|source| RenderError::Invalid {
            doc: i + 1,
            name: hp.metadata.name.clone().unwrap_or_default(),
            source,
        })?;
        let children = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        let values = children_to_values_with(&children, options)
            .map_err(|e| RenderError::Output(e.to_string()))?;
        for v in values {
            let text =
                crate::yaml::to_string(&v).map_err(|e| RenderError::Output(e.to_string()))?;
            docs.push(text);
        }
    }
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&quote_yaml11_booleans(&d));
        if !d.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Strings that YAML 1.1 parsers (kubectl, PyYAML) read as booleans but the YAML 1.2 emitter
/// leaves unquoted.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Quotes plain scalars such as `yes` or `on` so YAML 1.1 tools keep them strings. Lines inside
/// block scalars (`|`, `>`) are left alone.
pub fn quote_yaml11_booleans(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut block_indent: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(bi) = block_indent {
            if indent > bi || line.trim().is_empty() {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block_indent = None;
        }
        let trimmed = line.trim_end();
        let split = match trimmed.rfind(": ") {
            Some(pos) => Some(pos + 2),
            None => {
                let start = trimmed.len() - trimmed.trim_start().len();
                trimmed[start..].starts_with("- ").then_some(start + 2)
            }
        };
        match split {
            Some(at) if YAML11_BOOLEANS.contains(&&trimmed[at..]) => {
                out.push_str(&trimmed[..at]);
                out.push('\'');
                out.push_str(&trimmed[at..]);
                out.push('\'');
            }
            Some(at) => {
                if trimmed[at..].starts_with('|') || trimmed[at..].starts_with('>') {
                    block_indent = Some(indent);
                }
                out.push_str(line);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: caduceus.io/v1alpha1\nkind: HealthcarePlatform\nmetadata:\n  name: demo\nspec: {}\n";

    #[test]
    fn renders_every_child_with_placeholders() {
        let out = render(MINIMAL, "default").unwrap();
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        for k in [
            "NetworkPolicy",
            "Secret",
            "ServiceAccount",
            "ConfigMap",
            "StatefulSet",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
        }
        assert!(out.contains("caduceus.io/placeholder-values"));
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "default"));
        assert!(docs
            .iter()
            .all(|d| d["metadata"].get("ownerReferences").is_none()));
        // Deterministic.
        assert_eq!(out, render(MINIMAL, "default").unwrap());
    }

    fn kinds(out: &str) -> Vec<(String, String)> {
        serde_norway::Deserializer::from_str(out)
            .map(|d| Value::deserialize(d).unwrap())
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn monitoring_objects_are_rendered_as_applied_with_the_prometheus_operator() {
        // monitoring.enabled is the default.
        let with = kinds(&render(MINIMAL, "default").unwrap());
        for (kind, name) in [
            ("ServiceMonitor", "demo-api"),
            ("ServiceMonitor", "demo-operator"),
            ("PrometheusRule", "demo-alerts"),
            ("ConfigMap", "demo-dashboard"),
        ] {
            assert!(
                with.contains(&(kind.to_string(), name.to_string())),
                "{kind} {name} missing: {with:?}"
            );
        }
        let docs: Vec<Value> =
            serde_norway::Deserializer::from_str(&render(MINIMAL, "default").unwrap())
                .map(|d| Value::deserialize(d).unwrap())
                .collect();
        let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
        assert!(rule["spec"]["groups"]
            .as_array()
            .is_some_and(|g| !g.is_empty()));

        // Without the CRDs the operator applies none of them (and deletes the dashboard).
        let without = kinds(
            &render_with(
                MINIMAL,
                "default",
                RenderOptions {
                    prometheus_operator: false,
                },
            )
            .unwrap(),
        );
        assert!(without.iter().all(|(kind, name)| kind != "ServiceMonitor"
            && kind != "PrometheusRule"
            && name != "demo-dashboard"));
        assert_eq!(with.len(), without.len() + 4);

        // monitoring.enabled: false renders none.
        let off = MINIMAL.replace("spec: {}", "spec:\n  monitoring:\n    enabled: false\n");
        assert_eq!(kinds(&render(&off, "default").unwrap()), without);
    }

    #[test]
    fn yaml11_booleans_stay_strings() {
        let text = "a: no\nb:\n- yes\n- 'x'\nc: |-\n  on\n  off\nd: On\n";
        assert_eq!(
            quote_yaml11_booleans(text),
            "a: 'no'\nb:\n- 'yes'\n- 'x'\nc: |-\n  on\n  off\nd: 'On'\n"
        );
        // The quoted output still parses to the same strings.
        let v: Value = serde_norway::from_str(&quote_yaml11_booleans(text)).unwrap();
        assert_eq!(v["a"], "no");
        assert_eq!(v["c"], "on\noff");
    }

    #[test]
    fn type_errors_name_the_field() {
        let bad = MINIMAL.replace("spec: {}", "spec:\n  apiServer:\n    replicas: lots\n");
        let err = render(&bad, "default").unwrap_err().to_string();
        assert!(err.contains("spec.apiServer.replicas"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let bad = MINIMAL.replace("spec: {}", "spec:\n  database:\n    provider: External\n");
        let err = render(&bad, "default").unwrap_err().to_string();
        assert!(err.contains("spec.database.secretRef"), "{err}");
    }

    #[test]
    fn other_kinds_and_empty_input_are_refused() {
        let err = render("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", "d").unwrap_err();
        assert!(matches!(err, RenderError::WrongKind { .. }));
        assert!(matches!(render("", "d").unwrap_err(), RenderError::Empty));
        assert!(matches!(
            render("a: [", "d").unwrap_err(),
            RenderError::Yaml { .. }
        ));
    }
}
