//! Prometheus Operator objects of a platform: a ServiceMonitor for the API (HTTPS, verified
//! against the CA of `<platform>-api-internal-tls`), a ServiceMonitor
//! for this platform's compliance series on the operator, and a PrometheusRule with a few
//! symptom-based alerts, each linking its runbook in `docs/runbooks/`. The Grafana dashboard
//! ConfigMap is in [`super::monitoring_dashboard`].
//!
//! Built when `monitoring.enabled`; applied only when the `monitoring.coreos.com` CRDs are
//! served (otherwise condition `MonitoringReady=False`, reason `PrometheusOperatorNotInstalled`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Value};

use super::certs::CA_CERT_KEY;
use super::{api_tls, child_meta, monitoring_dashboard};
use crate::names::{Component, LABEL_NAME, OPERATOR_APP_NAME, OPERATOR_METRICS_PORT_NAME};
use crate::validate::ValidatedPlatform;

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";
pub const SERVICE_MONITOR_KIND: &str = "ServiceMonitor";
pub const PROMETHEUS_RULE_KIND: &str = "PrometheusRule";

/// `ServiceMonitor` API resource.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, SERVICE_MONITOR_KIND),
        "servicemonitors",
    )
}

/// `PrometheusRule` API resource.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, PROMETHEUS_RULE_KIND),
        "prometheusrules",
    )
}

/// Every monitoring object of a platform.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitoringObjects {
    pub api_service_monitor: DynamicObject,
    pub operator_service_monitor: DynamicObject,
    pub prometheus_rule: DynamicObject,
    /// Grafana dashboard (label `grafana_dashboard: "1"`).
    pub dashboard: ConfigMap,
}

/// The alerts, in the order they appear in the PrometheusRule. Each has `docs/runbooks/<name>.md`.
pub const ALERTS: [&str; 11] = [
    "CaduceusApiDown",
    "CaduceusApiHighErrorRate",
    "CaduceusApiHighLatency",
    "PHIAccessViolation",
    "CaduceusBreakGlassSurge",
    "AuditLogFailure",
    "BackupMissed",
    "CaduceusComplianceViolation",
    "CaduceusDatabaseDown",
    "CaduceusCacheDown",
    "CaduceusHPAMaxedOut",
];

fn dynamic(p: &ValidatedPlatform, ar: &ApiResource, name: String, spec: Value) -> DynamicObject {
    let mut meta = child_meta(p, name, Component::Platform);
    if let Some(labels) = meta.labels.as_mut() {
        labels.extend(p.spec.monitoring.labels.clone());
    }
    let mut obj = DynamicObject::new("", ar).data(json!({ "spec": spec }));
    obj.metadata = meta;
    obj
}

/// The objects, or `None` when `monitoring.enabled` is false.
pub fn build(p: &ValidatedPlatform) -> Option<MonitoringObjects> {
    if !p.spec.monitoring.enabled {
        return None;
    }
    let names = &p.names;
    // The admin port speaks HTTPS: Prometheus trusts the CA of the API's certificate (only
    // `ca.crt` of the Secret is referenced) for the Service name.
    let api_sm = json!({
        "selector": {"matchLabels": names.selector(Component::ApiServer)},
        "namespaceSelector": {"matchNames": [p.namespace]},
        "endpoints": [{
            "port": "metrics",
            "path": "/metrics",
            "scheme": "https",
            "tlsConfig": {
                "ca": {"secret": {"name": names.api_internal_tls(), "key": CA_CERT_KEY}},
                "serverName": api_tls::server_name(p),
            },
            "interval": "30s",
            "scrapeTimeout": "10s",
        }],
    });
    let operator_sm = json!({
        "selector": {"matchLabels": {LABEL_NAME: OPERATOR_APP_NAME}},
        "namespaceSelector": {"matchNames": [p.spec.network_policy.operator_namespace]},
        "endpoints": [{
            "port": OPERATOR_METRICS_PORT_NAME,
            "path": "/metrics",
            "interval": "60s",
            // Only this platform's compliance series: several platforms never scrape the same
            // series twice (operator-wide metrics come from the chart's own ServiceMonitor).
            "metricRelabelings": [{
                "sourceLabels": ["__name__", "platform"],
                "regex": format!("caduceus_compliance_.+;{}", regex_escape(&platform_label(p))),
                "action": "keep",
            }],
        }],
    });
    Some(MonitoringObjects {
        api_service_monitor: dynamic(
            p,
            &service_monitor_resource(),
            names.api_service_monitor(),
            api_sm,
        ),
        operator_service_monitor: dynamic(
            p,
            &service_monitor_resource(),
            names.operator_service_monitor(),
            operator_sm,
        ),
        prometheus_rule: dynamic(
            p,
            &prometheus_rule_resource(),
            names.prometheus_rule(),
            json!({ "groups": rule_groups(p) }),
        ),
        dashboard: monitoring_dashboard::build(p),
    })
}

/// Value of the `platform` label of the operator's compliance metrics.
pub fn platform_label(p: &ValidatedPlatform) -> String {
    format!("{}/{}", p.namespace, p.name)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".+*?()[]{}|^$\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Break-glass openings per hour, platform-wide, above which `CaduceusBreakGlassSurge` fires (one
/// user's whole hourly allowance in the API).
const BREAK_GLASS_OPENINGS_PER_HOUR: u32 = 20;

fn alert(
    p: &ValidatedPlatform,
    name: &str,
    expr: String,
    for_: &str,
    severity: &str,
    summary: &str,
    description: &str,
) -> Value {
    let base = p.spec.monitoring.runbook_base_url.trim_end_matches('/');
    let mut labels = BTreeMap::from([
        ("severity".to_string(), severity.to_string()),
        ("platform".to_string(), platform_label(p)),
    ]);
    labels.insert("namespace".into(), p.namespace.clone());
    let mut a = json!({
        "alert": name,
        "expr": expr,
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": format!("{base}/{name}.md"),
        },
    });
    if for_ != "0m" {
        a["for"] = json!(for_);
    }
    a
}

/// The rule groups of the PrometheusRule (also rendered to `monitoring/rules/` for promtool).
pub fn rule_groups(p: &ValidatedPlatform) -> Vec<Value> {
    let names = &p.names;
    let ns = &p.namespace;
    let api = format!(r#"job="{}",namespace="{ns}""#, names.api());
    let plat = platform_label(p);
    let mut rules = vec![
        alert(
            p,
            "CaduceusApiDown",
            format!("absent(up{{{api}}} == 1)"),
            "5m",
            "critical",
            "No Caduceus API pod of the platform is scraped as up",
            "Prometheus has not reached any API pod for 5 minutes: clinical clients cannot use the platform.",
        ),
        alert(
            p,
            "CaduceusApiHighErrorRate",
            format!(
                r#"sum(rate(http_requests_total{{{api},status=~"5.."}}[5m])) / sum(rate(http_requests_total{{{api}}}[5m])) > 0.01"#
            ),
            "10m",
            "warning",
            "More than 1% of API requests fail with 5xx",
            "The ratio of 5xx responses has been above 1% for 10 minutes.",
        ),
        alert(
            p,
            "CaduceusApiHighLatency",
            format!(
                "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{api}}}[5m]))) > 0.2"
            ),
            "10m",
            "warning",
            "API p95 latency above 200 ms",
            "The 95th percentile of request latency has been above 200 ms for 10 minutes.",
        ),
        alert(
            p,
            "PHIAccessViolation",
            format!("sum(increase(phi_access_denied_total{{{api}}}[10m])) > 10"),
            "0m",
            "critical",
            "Spike of denied PHI accesses",
            "More than 10 requests for patient data were denied by the permission check in 10 minutes: possible misuse or a misconfigured client.",
        ),
        alert(
            p,
            "CaduceusBreakGlassSurge",
            format!(
                "sum(increase(break_glass_refused_total{{{api}}}[15m])) > 0 or sum(increase(break_glass_access_total{{{api}}}[1h])) > {BREAK_GLASS_OPENINGS_PER_HOUR}"
            ),
            "0m",
            "critical",
            "Unusual use of break-glass (emergency access)",
            "A user exhausted their hourly break-glass openings (refused in the last 15 minutes), or more than 20 records were opened through break-glass in the last hour: emergency access may be misused.",
        ),
        alert(
            p,
            "AuditLogFailure",
            format!("sum(increase(audit_write_failures_total{{{api}}}[5m])) > 0"),
            "0m",
            "critical",
            "Audit events could not be written",
            "The API failed to write audit events; it refuses PHI operations it cannot audit.",
        ),
        alert(
            p,
            "BackupMissed",
            format!(r#"caduceus_compliance_rule_status{{platform="{plat}",rule="backup-rpo"}} == 0"#),
            "5m",
            "critical",
            "Last successful backup is older than the RPO (or backups are disabled)",
            "The backup-rpo compliance rule fails: data written since the last backup could be lost.",
        ),
        alert(
            p,
            "CaduceusComplianceViolation",
            format!(r#"sum(caduceus_compliance_violations{{platform="{plat}"}}) > 0"#),
            "15m",
            "warning",
            "The platform violates compliance rules",
            "At least one compliance rule has failed for 15 minutes; see status.compliance.violations of the HealthcarePlatform.",
        ),
    ];
    use crate::crd::{CacheProvider, DatabaseProvider};
    // The expression of an embedded data store's "no ready pod" alert.
    let no_ready_replica = |statefulset: String| {
        format!(
            r#"max(kube_statefulset_status_replicas_ready{{namespace="{ns}",statefulset="{statefulset}"}}) < 1"#
        )
    };
    if p.spec.database.provider == DatabaseProvider::Embedded {
        rules.push(alert(
            p,
            "CaduceusDatabaseDown",
            no_ready_replica(names.postgres()),
            "5m",
            "critical",
            "The platform's Postgres has no ready pod",
            "The embedded database StatefulSet has had no ready replica for 5 minutes (needs kube-state-metrics).",
        ));
    }
    if p.spec.cache.provider == CacheProvider::Embedded {
        rules.push(alert(
            p,
            "CaduceusCacheDown",
            no_ready_replica(names.redis()),
            "5m",
            "warning",
            "The platform's Redis has no ready pod",
            "The embedded Redis has had no ready replica for 5 minutes; the API falls back to per-pod rate limits (needs kube-state-metrics).",
        ));
    }
    if p.autoscaling() {
        let hpa = format!(
            r#"namespace="{ns}",horizontalpodautoscaler="{}""#,
            names.api()
        );
        rules.push(alert(
            p,
            "CaduceusHPAMaxedOut",
            format!(
                "max(kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}) >= max(kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}})"
            ),
            "15m",
            "warning",
            "The API autoscaler is pinned at its maximum",
            "The HPA has run at maxReplicas for 15 minutes: the API may be saturated (needs kube-state-metrics).",
        ));
    }
    vec![json!({ "name": format!("caduceus.{}", p.name), "rules": rules })]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    fn alerts_of(p: &ValidatedPlatform) -> Vec<Value> {
        rule_groups(p)[0]["rules"].as_array().unwrap().clone()
    }

    #[test]
    fn disabled_monitoring_builds_nothing() {
        assert!(build(&platform(|s| s.monitoring.enabled = false)).is_none());
    }

    #[test]
    fn service_monitors_select_the_api_and_the_operator() {
        let p = platform(|s| {
            s.monitoring.labels = BTreeMap::from([("release".to_string(), "kps".to_string())]);
        });
        let m = build(&p).unwrap();
        let api = &m.api_service_monitor;
        assert_eq!(api.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(api.metadata.name.as_deref(), Some("demo-api"));
        assert_eq!(api.metadata.labels.as_ref().unwrap()["release"], "kps");
        assert!(api.metadata.owner_references.is_some());
        let spec = &api.data["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "api-server"
        );
        assert_eq!(spec["endpoints"][0]["port"], "metrics");
        // HTTPS, trusting only the CA of the API's certificate, for the Service name.
        let api_endpoint = &spec["endpoints"][0];
        assert_eq!(api_endpoint["scheme"], "https");
        assert_eq!(
            api_endpoint["tlsConfig"]["ca"]["secret"],
            json!({"name": "demo-api-internal-tls", "key": "ca.crt"})
        );
        assert_eq!(
            api_endpoint["tlsConfig"]["serverName"],
            "demo-api.clinic.svc"
        );
        assert!(api_endpoint["tlsConfig"]
            .get("insecureSkipVerify")
            .is_none());
        let op = &m.operator_service_monitor.data["spec"];
        assert_eq!(op["namespaceSelector"]["matchNames"][0], "caduceus-system");
        assert_eq!(op["endpoints"][0]["port"], "http-metrics");
        assert_eq!(
            op["endpoints"][0]["metricRelabelings"][0]["regex"],
            "caduceus_compliance_.+;clinic/demo"
        );
        assert_eq!(
            m.prometheus_rule.types.as_ref().unwrap().kind,
            "PrometheusRule"
        );
    }

    #[test]
    fn every_alert_has_runbook_severity_and_is_scoped_to_the_platform() {
        let p = platform(|s| s.api_server.autoscaling.enabled = true);
        let alerts = alerts_of(&p);
        let names: Vec<&str> = alerts
            .iter()
            .map(|a| a["alert"].as_str().unwrap())
            .collect();
        assert_eq!(names, ALERTS);
        for a in &alerts {
            let name = a["alert"].as_str().unwrap();
            assert_eq!(
                a["annotations"]["runbook_url"],
                format!(
                    "https://github.com/caduceus-health/caduceus/blob/main/docs/runbooks/{name}.md"
                )
            );
            assert!(["critical", "warning"].contains(&a["labels"]["severity"].as_str().unwrap()));
            let expr = a["expr"].as_str().unwrap();
            assert!(
                expr.contains(r#"namespace="clinic""#)
                    || expr.contains(r#"platform="clinic/demo""#),
                "{name}: {expr}"
            );
        }
    }

    #[test]
    fn alerts_follow_the_topology() {
        let external = platform(|s| {
            s.database.provider = crate::crd::DatabaseProvider::External;
            s.database.secret_ref = Some(crate::crd::SecretKeyRef {
                name: "db".into(),
                key: "url".into(),
            });
            s.cache.provider = crate::crd::CacheProvider::Disabled;
        });
        let names: Vec<String> = alerts_of(&external)
            .iter()
            .map(|a| a["alert"].as_str().unwrap().to_string())
            .collect();
        assert!(!names
            .iter()
            .any(|n| n == "CaduceusDatabaseDown" || n == "CaduceusCacheDown"));
        assert!(!names.iter().any(|n| n == "CaduceusHPAMaxedOut"));
        assert_eq!(names.len(), 8);
    }

    #[test]
    fn runbook_base_url_is_configurable() {
        let p = platform(|s| s.monitoring.runbook_base_url = "https://wiki.example.org/rb/".into());
        let a = &alerts_of(&p)[0];
        assert_eq!(
            a["annotations"]["runbook_url"],
            "https://wiki.example.org/rb/CaduceusApiDown.md"
        );
    }
}
