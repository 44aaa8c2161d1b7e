//! The monitoring artifacts under `monitoring/`: the PrometheusRule of the reference platform
//! rendered for promtool, `promtool test rules` cases that make every alert fire and not fire,
//! the Grafana dashboard (parses; every metric it queries is registered in the code), and
//! `promtool check metrics` on the operator's `/metrics` output.
//!
//! promtool is found through `PROMTOOL` or `PATH` (or `.tools/bin/promtool` from
//! `scripts/tools.sh`); the tests FAIL when it is absent. Regenerate the rendered files with
//! `UPDATE_MONITORING=1 cargo test -p caduceus-operator --test monitoring_artifacts`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use caduceus_operator::crd::{HealthcarePlatform, HealthcarePlatformSpec};
use caduceus_operator::desired::{monitoring, monitoring_dashboard};
use caduceus_operator::validate::{validate, ValidatedPlatform};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The reference platform: `clinic/demo`, embedded database and cache, autoscaling on (so every
/// alert exists).
fn reference() -> ValidatedPlatform {
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.autoscaling.enabled = true;
    let mut hp = HealthcarePlatform::new("demo", spec);
    hp.metadata.namespace = Some("clinic".into());
    validate(&hp, "clinic").expect("reference platform is valid")
}

pub fn promtool() -> PathBuf {
    if let Ok(p) = std::env::var("PROMTOOL") {
        return PathBuf::from(p);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let tools = repo().join(".tools/bin/promtool");
    assert!(
        tools.is_file(),
        "promtool not found: set PROMTOOL, put it on PATH, or run scripts/tools.sh"
    );
    tools
}

fn rules_yaml(p: &ValidatedPlatform) -> String {
    let doc = json!({ "groups": monitoring::rule_groups(p) });
    format!(
        "# Rendered by operator/tests/monitoring_artifacts.rs from operator/src/desired/monitoring.rs\n# for the reference platform clinic/demo. Do not edit; regenerate with UPDATE_MONITORING=1.\n{}",
        caduceus_operator::yaml::to_string(&doc).unwrap()
    )
}

struct Case {
    alert: &'static str,
    /// Series (promtool notation) that make the alert fire.
    firing: Vec<(String, &'static str)>,
    /// Series that must not make it fire.
    quiet: Vec<(String, &'static str)>,
    eval_time: &'static str,
    /// Labels the firing alert carries beyond the rule's own.
    extra_labels: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    let api = r#"job="demo-api",namespace="clinic""#;
    let s = |x: String| x;
    vec![
        Case {
            alert: "CaduceusApiDown",
            firing: vec![(s(format!(r#"up{{{api},pod="demo-api-0"}}"#)), "0x15")],
            quiet: vec![
                (s(format!(r#"up{{{api},pod="demo-api-0"}}"#)), "1x15"),
                (s(r#"up{job="other-api",namespace="clinic",pod="x"}"#.into()), "0x15"),
            ],
            eval_time: "10m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusApiHighErrorRate",
            firing: vec![
                (s(format!(r#"http_requests_total{{{api},method="GET",route="/api/v1/patients",status="500"}}"#)), "0+2x30"),
                (s(format!(r#"http_requests_total{{{api},method="GET",route="/api/v1/patients",status="200"}}"#)), "0+100x30"),
            ],
            quiet: vec![
                (s(format!(r#"http_requests_total{{{api},method="GET",route="/api/v1/patients",status="500"}}"#)), "0+1x30"),
                (s(format!(r#"http_requests_total{{{api},method="GET",route="/api/v1/patients",status="200"}}"#)), "0+1000x30"),
            ],
            eval_time: "20m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusApiHighLatency",
            firing: vec![
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="0.1"}}"#)), "0x30"),
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="0.25"}}"#)), "0+1x30"),
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="+Inf"}}"#)), "0+10x30"),
            ],
            quiet: vec![
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="0.1"}}"#)), "0+10x30"),
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="0.25"}}"#)), "0+10x30"),
                (s(format!(r#"http_request_duration_seconds_bucket{{{api},method="GET",route="/r",le="+Inf"}}"#)), "0+10x30"),
            ],
            eval_time: "20m",
            extra_labels: vec![],
        },
        Case {
            alert: "PHIAccessViolation",
            firing: vec![(s(format!("phi_access_denied_total{{{api}}}")), "0+5x20")],
            quiet: vec![(s(format!("phi_access_denied_total{{{api}}}")), "0+0.5x20")],
            eval_time: "15m",
            extra_labels: vec![],
        },
        // a refused opening fires at once; so does a surge of openings
        Case {
            alert: "CaduceusBreakGlassSurge",
            firing: vec![(s(format!(r#"break_glass_refused_total{{{api},role="physician"}}"#)), "0 0 0 1 1 1 1 1 1 1")],
            quiet: vec![
                (s(format!(r#"break_glass_refused_total{{{api},role="physician"}}"#)), "0x10"),
                (s(r#"break_glass_refused_total{job="other-api",namespace="clinic",role="physician"}"#.into()), "0 0 0 1 1 1 1 1 1 1"),
            ],
            eval_time: "5m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusBreakGlassSurge",
            firing: vec![(s(format!(r#"break_glass_access_total{{{api},role="physician"}}"#)), "0+1x90")],
            quiet: vec![(s(format!(r#"break_glass_access_total{{{api},role="physician"}}"#)), "0+0.2x90")],
            eval_time: "70m",
            extra_labels: vec![],
        },
        Case {
            alert: "AuditLogFailure",
            firing: vec![(s(format!("audit_write_failures_total{{{api}}}")), "0 0 0 0 0 1 1 1 1 1")],
            quiet: vec![(s(format!("audit_write_failures_total{{{api}}}")), "3x10")],
            eval_time: "7m",
            extra_labels: vec![],
        },
        Case {
            alert: "BackupMissed",
            firing: vec![(s(r#"caduceus_compliance_rule_status{platform="clinic/demo",rule="backup-rpo"}"#.into()), "0x10")],
            quiet: vec![
                (s(r#"caduceus_compliance_rule_status{platform="clinic/demo",rule="backup-rpo"}"#.into()), "-1x10"),
                (s(r#"caduceus_compliance_rule_status{platform="other/demo",rule="backup-rpo"}"#.into()), "0x10"),
            ],
            eval_time: "10m",
            extra_labels: vec![("rule", "backup-rpo")],
        },
        Case {
            alert: "CaduceusComplianceViolation",
            firing: vec![
                (s(r#"caduceus_compliance_violations{platform="clinic/demo",severity="high"}"#.into()), "1x20"),
                (s(r#"caduceus_compliance_violations{platform="clinic/demo",severity="low"}"#.into()), "0x20"),
            ],
            quiet: vec![
                (s(r#"caduceus_compliance_violations{platform="clinic/demo",severity="high"}"#.into()), "0x20"),
                (s(r#"caduceus_compliance_violations{platform="other/demo",severity="high"}"#.into()), "2x20"),
            ],
            eval_time: "20m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusDatabaseDown",
            firing: vec![(s(r#"kube_statefulset_status_replicas_ready{namespace="clinic",statefulset="demo-postgres"}"#.into()), "0x10")],
            quiet: vec![(s(r#"kube_statefulset_status_replicas_ready{namespace="clinic",statefulset="demo-postgres"}"#.into()), "1x10")],
            eval_time: "10m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusCacheDown",
            firing: vec![(s(r#"kube_statefulset_status_replicas_ready{namespace="clinic",statefulset="demo-redis"}"#.into()), "0x10")],
            quiet: vec![(s(r#"kube_statefulset_status_replicas_ready{namespace="clinic",statefulset="demo-redis"}"#.into()), "1x10")],
            eval_time: "10m",
            extra_labels: vec![],
        },
        Case {
            alert: "CaduceusHPAMaxedOut",
            firing: vec![
                (s(r#"kube_horizontalpodautoscaler_status_current_replicas{namespace="clinic",horizontalpodautoscaler="demo-api"}"#.into()), "10x20"),
                (s(r#"kube_horizontalpodautoscaler_spec_max_replicas{namespace="clinic",horizontalpodautoscaler="demo-api"}"#.into()), "10x20"),
            ],
            quiet: vec![
                (s(r#"kube_horizontalpodautoscaler_status_current_replicas{namespace="clinic",horizontalpodautoscaler="demo-api"}"#.into()), "4x20"),
                (s(r#"kube_horizontalpodautoscaler_spec_max_replicas{namespace="clinic",horizontalpodautoscaler="demo-api"}"#.into()), "10x20"),
            ],
            eval_time: "20m",
            extra_labels: vec![],
        },
    ]
}

fn tests_yaml(p: &ValidatedPlatform) -> String {
    let groups = monitoring::rule_groups(p);
    let rules = groups[0]["rules"].as_array().unwrap().clone();
    let series = |list: &[(String, &str)]| -> Vec<Value> {
        list.iter()
            .map(|(s, v)| json!({"series": s, "values": v}))
            .collect()
    };
    let mut tests = Vec::new();
    for c in cases() {
        let rule = rules
            .iter()
            .find(|r| r["alert"] == c.alert)
            .unwrap_or_else(|| panic!("{} not in the PrometheusRule", c.alert));
        let mut labels = rule["labels"].as_object().unwrap().clone();
        for (k, v) in &c.extra_labels {
            labels.insert((*k).into(), json!(v));
        }
        tests.push(json!({
            "interval": "1m",
            "input_series": series(&c.firing),
            "alert_rule_test": [{
                "eval_time": c.eval_time,
                "alertname": c.alert,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": rule["annotations"]}],
            }],
        }));
        tests.push(json!({
            "interval": "1m",
            "input_series": series(&c.quiet),
            "alert_rule_test": [{"eval_time": c.eval_time, "alertname": c.alert, "exp_alerts": []}],
        }));
    }
    let doc = json!({
        "rule_files": ["../rules/caduceus-demo.rules.yaml"],
        "evaluation_interval": "1m",
        "tests": tests,
    });
    format!(
        "# promtool test rules: every alert of the reference platform firing and not firing.\n# Generated by operator/tests/monitoring_artifacts.rs (input series and expectations are\n# written there); regenerate with UPDATE_MONITORING=1.\n{}",
        caduceus_operator::yaml::to_string(&doc).unwrap()
    )
}

fn dashboard_json(p: &ValidatedPlatform) -> String {
    let mut s = serde_json::to_string_pretty(&monitoring_dashboard::dashboard(p)).unwrap();
    s.push('\n');
    s
}

/// Compares a checked-in artifact with its rendering (or rewrites it with UPDATE_MONITORING=1).
fn check_artifact(rel: &str, rendered: &str) {
    let path = repo().join(rel);
    if std::env::var_os("UPDATE_MONITORING").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{rel}: {e} (run with UPDATE_MONITORING=1)"));
    assert_eq!(
        on_disk, rendered,
        "{rel} is stale: run with UPDATE_MONITORING=1"
    );
}

#[test]
fn rendered_artifacts_are_up_to_date() {
    let p = reference();
    check_artifact("monitoring/rules/caduceus-demo.rules.yaml", &rules_yaml(&p));
    check_artifact("monitoring/tests/caduceus-demo.test.yaml", &tests_yaml(&p));
    check_artifact(
        "monitoring/dashboards/caduceus-demo.json",
        &dashboard_json(&p),
    );
}

fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(promtool());
    cmd.args(args)
        .current_dir(repo().join("monitoring"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("promtool starts");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_check_rules_accepts_the_rendered_prometheus_rule() {
    let p = reference();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, rules_yaml(&p)).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", file.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("11 rules found"), "{out}");
}

#[test]
fn promtool_test_rules_every_alert_fires_and_stays_quiet() {
    let (ok, out) = run_promtool(&["test", "rules", "tests/caduceus-demo.test.yaml"], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has both a firing and a quiet case.
    let alerts: BTreeSet<&str> = cases().iter().map(|c| c.alert).collect();
    assert_eq!(alerts, monitoring::ALERTS.into_iter().collect());
}

#[test]
fn promtool_test_rules_detects_a_wrong_expectation() {
    // Guard against a test file that cannot fail: flip one expectation and promtool must refuse.
    let original =
        std::fs::read_to_string(repo().join("monitoring/tests/caduceus-demo.test.yaml")).unwrap();
    let broken = original.replacen("eval_time: 10m", "eval_time: 1m", 1);
    assert_ne!(original, broken);
    let dir = repo().join("monitoring/tests");
    let file = dir.join(".broken.test.yaml");
    std::fs::write(&file, broken).unwrap();
    let (ok, out) = run_promtool(&["test", "rules", "tests/.broken.test.yaml"], None);
    let _ = std::fs::remove_file(&file);
    assert!(!ok, "a wrong expectation must fail: {out}");
}

#[test]
fn every_alert_has_a_runbook() {
    for alert in monitoring::ALERTS {
        let path = repo().join(format!("docs/runbooks/{alert}.md"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
        assert!(text.starts_with(&format!("# {alert}")), "{alert}");
        for section in [
            "**Meaning.**",
            "**Impact.**",
            "**Diagnose.**",
            "**Mitigate.**",
        ] {
            assert!(text.contains(section), "{alert} lacks {section}");
        }
    }
}

/// Metric names registered in the source of a crate (string literals passed to the prometheus
/// constructors), plus histogram series suffixes.
fn registered_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = regex_lite_ident();
    for dir in ["api-server/src", "operator/src"] {
        for file in walk(&repo().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, _) in text.match_indices('"') {
                let rest = &text[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let lit = &rest[..end];
                if ident(lit) && lit.contains('_') {
                    names.insert(lit.to_string());
                }
            }
        }
    }
    names
}

fn regex_lite_ident() -> impl Fn(&str) -> bool {
    |s: &str| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_lowercase())
            && s.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Metric names a PromQL expression selects (identifiers followed by `{`).
fn queried_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    for (i, _) in expr.match_indices('{') {
        let mut start = i;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        if start < i {
            out.push(expr[start..i].to_string());
        }
    }
    out
}

#[test]
fn dashboard_parses_and_queries_only_metrics_the_code_registers() {
    let p = reference();
    let text = dashboard_json(&p);
    let dash: Value = serde_json::from_str(&text).unwrap();
    let registered = registered_metrics();
    assert!(
        registered.contains("http_requests_total"),
        "scan found the API metrics"
    );
    assert!(registered.contains("caduceus_compliance_rule_status"));
    let mut queried = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let metrics = queried_metrics(expr);
            assert!(!metrics.is_empty(), "{expr}");
            queried.extend(metrics);
        }
    }
    let missing: Vec<&String> = queried
        .iter()
        .filter(|m| {
            let base = m
                .strip_suffix("_bucket")
                .or_else(|| m.strip_suffix("_count"))
                .or_else(|| m.strip_suffix("_sum"))
                .unwrap_or(m);
            !registered.contains(base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard queries unregistered metrics: {missing:?}"
    );
    assert!(queried.len() >= 10, "{queried:?}");
}

#[test]
fn promtool_check_metrics_accepts_the_operator_metrics() {
    use caduceus_operator::compliance;
    let metrics = caduceus_operator::Metrics::new();
    let compliance_metrics = &metrics.compliance;
    let p = reference();
    let now: k8s_openapi::jiff::Timestamp = "2026-11-22T06:00:00Z".parse().unwrap();
    compliance_metrics.record("clinic/demo", &compliance::assess_static(&p, now));
    compliance_metrics.record_backup(
        "clinic/demo",
        Some(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
    );
    metrics.reconciles.with_label_values(&["success"]).inc();
    let text = metrics.render();
    assert!(text.contains("caduceus_compliance_rule_status{"), "{text}");
    let (ok, out) = run_promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics: {out}");
}
