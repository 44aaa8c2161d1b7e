//! `caduceus-operator compliance-report -f platform.yaml [-o table|json]`: the static rules of
//! every platform in a file, evaluated without a cluster, as a GitOps pre-merge check. The spec
//! is judged as written (what `Enforce` mode would override is a violation of the file).

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{assess_static, report, Assessment};
use crate::render::{parse_platforms, RenderError};
use crate::validate::validate;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The report text and whether any platform has a violation.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub violations: bool,
}

/// Evaluates every platform of a YAML stream.
pub fn compliance_report(
    yaml: &str,
    default_namespace: &str,
    format: Format,
    now: Timestamp,
) -> Result<Report, RenderError> {
    let mut assessed: Vec<(String, Assessment)> = Vec::new();
    for (i, hp) in parse_platforms(yaml)?.iter().enumerate() {
        let ns = hp
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string());
        let mut hp = hp.clone();
        hp.metadata.uid = None;
        let p = validate(&hp, &ns).map_err(|source| RenderError::Invalid {
            doc: i + 1,
            name: hp.metadata.name.clone().unwrap_or_default(),
            source,
        })?;
        let name = format!("{}/{}", p.namespace, p.name);
        assessed.push((name, assess_static(&p, now)));
    }
    let violations = assessed.iter().any(|(_, a)| a.compliant() == Some(false));
    let text = match format {
        Format::Table => assessed
            .iter()
            .map(|(name, a)| format!("HealthcarePlatform {name}\n{}", report::table(a)))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Json => {
            let items: Vec<_> = assessed
                .iter()
                .map(|(name, a)| {
                    let mut v = report::json(a);
                    v["platform"] = json!(name);
                    v
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&json!({ "platforms": items }))
                .map_err(|e| RenderError::Output(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    Ok(Report { text, violations })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLIANT_BUT_TLS: &str = r#"
apiVersion: caduceus.io/v1alpha1
kind: HealthcarePlatform
metadata: {name: demo, namespace: clinic}
spec:
  compliance:
    exceptions:
      - rule: session-idle-timeout
        justification: kiosk pilot in change CHG-1
        expires: "2030-01-01T00:00:00Z"
  security: {sessionIdleTimeoutMinutes: 30}
"#;

    fn now() -> Timestamp {
        "2026-11-22T06:00:00Z".parse().unwrap()
    }

    #[test]
    fn lax_spec_is_a_violation_with_the_rule_named() {
        let yaml = r#"
apiVersion: caduceus.io/v1alpha1
kind: HealthcarePlatform
metadata: {name: lax}
spec:
  security: {sessionIdleTimeoutMinutes: 60}
"#;
        let r = compliance_report(yaml, "default", Format::Table, now()).unwrap();
        assert!(r.violations);
        assert!(
            r.text.contains("HealthcarePlatform default/lax"),
            "{}",
            r.text
        );
        let line = r
            .text
            .lines()
            .find(|l| l.starts_with("session-idle-timeout"))
            .unwrap();
        assert!(line.contains("Fail") && line.contains("60 min"), "{line}");
        assert!(r.text.contains("NOT COMPLIANT"));
    }

    #[test]
    fn excepted_tls_leaves_only_cluster_rules_unevaluated() {
        let r = compliance_report(COMPLIANT_BUT_TLS, "default", Format::Json, now()).unwrap();
        assert!(!r.violations, "{}", r.text);
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        let p = &v["platforms"][0];
        assert_eq!(p["platform"], "clinic/demo");
        assert_eq!(p["compliant"], serde_json::Value::Null);
        let result = |id: &str| {
            p["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == id)
                .unwrap()["result"]
                .clone()
        };
        assert_eq!(result("session-idle-timeout"), "Excepted");
        assert_eq!(result("database-tls"), "Pass");
        assert_eq!(result("field-encryption-active"), "NotEvaluated");
        assert_eq!(result("access-token-ttl"), "Pass");
    }

    #[test]
    fn expired_exception_makes_the_report_fail() {
        let yaml = COMPLIANT_BUT_TLS.replace("2030-01-01", "2020-01-01");
        let r = compliance_report(&yaml, "default", Format::Table, now()).unwrap();
        assert!(r.violations);
        assert!(r.text.contains("expired"), "{}", r.text);
    }

    #[test]
    fn invalid_input_is_an_error_not_a_pass() {
        assert!(compliance_report(
            "kind: Pod\napiVersion: v1\n",
            "default",
            Format::Table,
            now()
        )
        .is_err());
        let bad = COMPLIANT_BUT_TLS.replace("spec:\n", "spec:\n  apiServer: {replicas: 0}\n");
        assert!(compliance_report(&bad, "default", Format::Table, now()).is_err());
    }
}
