//! Grafana dashboard of a platform, as a ConfigMap labelled `grafana_dashboard: "1"` (picked up
//! by the Grafana sidecar of kube-prometheus-stack). Every metric it queries is registered by
//! the API server or the operator (checked by `tests/monitoring_artifacts.rs`).

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};

use super::{child_meta, string_map};
use crate::names::{Component, LABEL_GRAFANA_DASHBOARD};
use crate::validate::ValidatedPlatform;

/// Key of the dashboard JSON in the ConfigMap.
pub const DASHBOARD_KEY: &str = "caduceus.json";

fn panel(
    id: u32,
    title: &str,
    kind: &str,
    unit: &str,
    pos: (u32, u32, u32, u32),
    targets: &[(&str, String)],
) -> Value {
    let (x, y, w, h) = pos;
    json!({
        "id": id,
        "title": title,
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets.iter().enumerate().map(|(i, (legend, expr))| json!({
            "refId": ((b'A' + u8::try_from(i).unwrap_or(25)) as char).to_string(),
            "expr": expr,
            "legendFormat": legend,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
        })).collect::<Vec<_>>(),
    })
}

/// The dashboard JSON of a platform.
pub fn dashboard(p: &ValidatedPlatform) -> Value {
    let ns = &p.namespace;
    let api = format!(r#"job="{}",namespace="{ns}""#, p.names.api());
    let plat = format!(r#"platform="{ns}/{}""#, p.name);
    let login = format!(r#"{api},route=~".*/auth/login""#);
    let panels = vec![
        panel(1, "Request rate by route", "timeseries", "reqps", (0, 0, 12, 8), &[
            ("{{route}}", format!("sum by (route) (rate(http_requests_total{{{api}}}[5m]))")),
        ]),
        panel(2, "5xx error ratio", "timeseries", "percentunit", (12, 0, 6, 8), &[
            ("5xx", format!(r#"sum(rate(http_requests_total{{{api},status=~"5.."}}[5m])) / sum(rate(http_requests_total{{{api}}}[5m]))"#)),
        ]),
        panel(3, "Latency", "timeseries", "s", (18, 0, 6, 8), &[
            ("p50", format!("histogram_quantile(0.50, sum by (le) (rate(http_request_duration_seconds_bucket{{{api}}}[5m])))")),
            ("p95", format!("histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{api}}}[5m])))")),
            ("p99", format!("histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{api}}}[5m])))")),
        ]),
        panel(4, "PHI accesses by operation", "timeseries", "ops", (0, 8, 8, 8), &[
            ("{{op}}", format!("sum by (op) (rate(patient_operations_total{{{api}}}[5m]))")),
            ("denied", format!("sum(rate(phi_access_denied_total{{{api}}}[5m]))")),
        ]),
        panel(5, "Logins and lockouts (per hour)", "timeseries", "short", (8, 8, 8, 8), &[
            ("successful", format!(r#"sum(increase(http_requests_total{{{login},status="200"}}[1h]))"#)),
            ("failed", format!(r#"sum(increase(http_requests_total{{{login},status="401"}}[1h]))"#)),
            ("locked out", format!(r#"sum(increase(http_requests_total{{{login},status="423"}}[1h]))"#)),
            ("rate limited", format!("sum(increase(rate_limited_total{{{api}}}[1h]))")),
        ]),
        panel(6, "Break-glass accesses (24 h)", "stat", "short", (16, 8, 8, 8), &[
            ("break-glass", format!("sum(increase(break_glass_access_total{{{api}}}[24h]))")),
        ]),
        panel(7, "Compliance score", "gauge", "percentunit", (0, 16, 6, 8), &[
            ("score", format!("count(caduceus_compliance_rule_status{{{plat}}} == 1) / count(caduceus_compliance_rule_status{{{plat}}} == 1 or caduceus_compliance_rule_status{{{plat}}} == 0)")),
        ]),
        panel(8, "Compliance violations by severity", "timeseries", "short", (6, 16, 6, 8), &[
            ("{{severity}}", format!("sum by (severity) (caduceus_compliance_violations{{{plat}}})")),
        ]),
        panel(9, "Backup age", "stat", "s", (12, 16, 6, 8), &[
            ("age", format!("time() - max(caduceus_backup_last_success_timestamp_seconds{{{plat}}})")),
        ]),
        panel(10, "Database pool", "timeseries", "short", (18, 16, 6, 8), &[
            ("{{state}}", format!("sum by (state) (db_pool_connections{{{api}}})")),
        ]),
        panel(11, "Audit events", "timeseries", "ops", (0, 24, 12, 8), &[
            ("{{outcome}}", format!("sum by (outcome) (rate(audit_events_total{{{api}}}[5m]))")),
            ("write failures", format!("sum(rate(audit_write_failures_total{{{api}}}[5m]))")),
        ]),
        panel(12, "Active sessions", "timeseries", "short", (12, 24, 12, 8), &[
            ("sessions", format!("sum(active_sessions{{{api}}})")),
        ]),
    ];
    let uid: String = format!("caduceus-{ns}-{}", p.name)
        .chars()
        .take(40)
        .collect();
    json!({
        "uid": uid,
        "title": format!("Caduceus {ns}/{}", p.name),
        "tags": ["caduceus", "healthcare"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
        }]},
        "panels": panels,
    })
}

/// The dashboard ConfigMap.
pub fn build(p: &ValidatedPlatform) -> ConfigMap {
    let mut metadata = child_meta(p, p.names.dashboard(), Component::Platform);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(LABEL_GRAFANA_DASHBOARD.into(), "1".into());
    }
    // A `Value` always serialises.
    let text = serde_json::to_string_pretty(&dashboard(p)).unwrap_or_default();
    ConfigMap {
        metadata,
        data: Some(string_map([(DASHBOARD_KEY, text)])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn configmap_is_labelled_for_the_grafana_sidecar_and_parses() {
        let cm = build(&platform(|_| {}));
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-dashboard"));
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
            "1"
        );
        let json: Value = serde_json::from_str(&cm.data.unwrap()[DASHBOARD_KEY]).unwrap();
        assert_eq!(json["uid"], "caduceus-clinic-demo");
        let titles: Vec<&str> = json["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap())
            .collect();
        for want in [
            "Request rate by route",
            "5xx error ratio",
            "Latency",
            "PHI accesses by operation",
            "Logins and lockouts (per hour)",
            "Break-glass accesses (24 h)",
            "Compliance score",
            "Backup age",
            "Database pool",
        ] {
            assert!(titles.contains(&want), "{want} missing");
        }
    }
}
