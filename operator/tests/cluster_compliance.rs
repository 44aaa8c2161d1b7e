//! Continuous compliance and monitoring end to end through the real controller
//! (`run_controller` with all its watches) against the real control plane (`scripts/cluster.sh`): `status.compliance`, the
//! `Compliant` and `MonitoringReady` conditions, the Events, the compliance metrics in the
//! controller's registry, Enforce/Audit modes, exceptions, drift correction of NetworkPolicies
//! and of workload pod specs (fields added by another field manager, which server-side apply
//! leaves in place; server defaults are not drift), and the Prometheus Operator objects with and
//! without the `monitoring.coreos.com` CRDs.
//!
//! The Prometheus Operator CRDs are the real ones (its Go module's YAML). KWOK runs no
//! containers and the test process cannot resolve in-cluster names, so the API's self-report
//! cannot be read: the rules that need it must be reported `NotEvaluated` (never `Pass`). No fixed
//! sleeps: every wait polls.

mod support;

use std::time::Duration;

use caduceus_operator::{crd::Phase, names::Names};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::CronJob,
    networking::v1::NetworkPolicy,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::cluster::{install_crd, uninstall_crd, Env, Setup};

const WAIT: Duration = Duration::from_secs(120);

/// Rules that need the API's self-report (or backup status) and so cannot pass in the stand-in.
const NEED_A_RUNNING_API: &[&str] = &[
    "field-encryption-active",
    "audit-chain-intact",
    "audit-write-failures",
    "backup-rpo",
];

/// `Env::start` and `create_platform` of these tests (the platform `demo`).
impl Env {
    /// Waits of [`WAIT`]; the API host names do not resolve here, so the self-report fails fast.
    async fn start() -> Self {
        Env::start_with(Setup::default().wait(WAIT).controller(|c| {
            c.self_report_timeout = Duration::from_millis(500);
            c.crd_recheck_interval = Duration::from_millis(200);
        }))
        .await
    }

    /// Creates `demo` from the raw manifest (as kubectl would send it).
    async fn create_platform(&self, spec: Value) {
        self.try_create_platform("demo", spec)
            .await
            .expect("platform admitted by the CRD schema");
    }
}

/// The Prometheus Operator's CRDs as its Go module publishes them (their schemas validate our
/// objects), mirrored into the test's view of the namespace.
async fn install_prometheus_operator_crds(env: &mut Env) {
    for (file, kind) in [
        (
            "monitoring.coreos.com_servicemonitors.yaml",
            "ServiceMonitor",
        ),
        (
            "monitoring.coreos.com_prometheusrules.yaml",
            "PrometheusRule",
        ),
    ] {
        install_crd(&env.admin, env.cluster.third_party_crd(file)).await;
        env.mirror_kind("monitoring.coreos.com/v1", kind).await;
    }
}

const PROMETHEUS_OPERATOR_CRDS: [&str; 2] = [
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

async fn uninstall_prometheus_operator_crds(env: &Env) {
    for crd in PROMETHEUS_OPERATOR_CRDS {
        uninstall_crd(&env.admin, crd).await;
    }
}

/// The smallest platform (`examples/minimal.yaml`'s spec: one API replica) plus `extra`.
fn spec(extra: Value) -> Value {
    let mut spec = json!({"apiServer": {"replicas": 1, "env": []}, "deletionPolicy": "Delete"});
    merge(&mut spec, &extra);
    spec
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = patch.clone(),
    }
}

fn find<'a>(list: &'a Value, rule: &str) -> Option<&'a Value> {
    list.as_array()
        .and_then(|l| l.iter().find(|v| v["rule"] == rule))
}

fn rules(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|v| v["rule"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Rules that need a running API are `NotEvaluated` everywhere (status, metric), never passed,
/// and the counts add up.
fn assert_unreachable_self_report_is_not_evaluated(env: &Env) {
    let c = env.compliance();
    let not_evaluated = rules(&c["notEvaluated"]);
    for rule in NEED_A_RUNNING_API {
        assert!(
            not_evaluated.iter().any(|r| r == rule),
            "{rule} must be NotEvaluated without a reachable API: {c:#}"
        );
        assert_eq!(env.rule_metric(rule), -1, "metric of {rule}");
        assert!(find(&c["violations"], rule).is_none(), "{rule}: {c:#}");
    }
    for rule in &NEED_A_RUNNING_API[..3] {
        let note = find(&c["notEvaluated"], rule).unwrap()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(note.contains("self-report"), "{rule}: {note}");
    }
    let passed = c["passed"].as_i64().unwrap();
    let total = c["total"].as_i64().unwrap();
    let failing = c["violations"].as_array().map_or(0, Vec::len) as i64;
    let excepted = c["exceptions"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|e| e["state"] == "Active").count())
        as i64;
    assert!(
        passed + failing + not_evaluated.len() as i64 + excepted >= total
            && passed <= total - not_evaluated.len() as i64 - failing,
        "passed {passed}, total {total}: {c:#}"
    );
}

#[tokio::test]
async fn enforce_mode_overrides_the_config_and_reports_what_it_changed() {
    let env = Env::start().await;
    env.create_platform(spec(json!({"security": {"sessionIdleTimeoutMinutes": 60}})))
        .await;
    env.wait_evaluated(1).await;
    let names = Names::new("demo");

    // The API really gets 15 minutes, and one replica became two (api-availability).
    assert_eq!(
        env.api_config("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES")
            .as_deref(),
        Some("15")
    );
    let replicas = env
        .stored("apps/v1", "Deployment", &names.api())
        .and_then(|d| d["spec"]["replicas"].as_i64());
    assert_eq!(replicas, Some(2));

    let c = env.compliance();
    assert_eq!(c["mode"], "Enforce");
    assert_eq!(c["profiles"], json!(["HIPAA"]));
    let idle = find(&c["enforced"], "session-idle-timeout").expect("override listed");
    assert_eq!(idle["field"], "spec.security.sessionIdleTimeoutMinutes");
    assert_eq!(
        (idle["from"].as_str(), idle["to"].as_str()),
        (Some("60"), Some("15"))
    );
    assert!(
        idle["message"]
            .as_str()
            .unwrap()
            .contains("164.312(a)(2)(iii)"),
        "{idle}"
    );
    let replicas = find(&c["enforced"], "api-availability").expect("replicas override listed");
    assert_eq!(replicas["field"], "spec.apiServer.replicas");
    // Enforced rules pass: nothing fails, but some rules need a running API.
    assert!(
        c["violations"].as_array().is_none_or(Vec::is_empty),
        "{c:#}"
    );
    assert!(c.get("compliant").is_none_or(Value::is_null), "{c:#}");
    assert_eq!(env.rule_metric("session-idle-timeout"), 1);
    assert_eq!(env.rule_metric("api-availability"), 1);
    assert_eq!(env.rule_metric("database-tls"), 1);
    assert_eq!(env.rule_metric("network-policy-default-deny"), 1);
    for severity in ["critical", "high", "medium"] {
        assert_eq!(env.violations_metric(severity), 0, "{severity}");
    }
    assert_unreachable_self_report_is_not_evaluated(&env);
    let compliant = env.condition("Compliant").unwrap();
    assert_eq!(compliant["status"], "Unknown");
    assert_eq!(compliant["reason"], "NotAllRulesEvaluated");
    assert!(
        compliant["message"]
            .as_str()
            .unwrap()
            .contains("overridden by Enforce mode"),
        "{compliant}"
    );
    env.wait_for("ComplianceEnforced Event", |e| {
        e.has_event(
            "ComplianceEnforced",
            "sessionIdleTimeoutMinutes overridden from 60 to 15",
        )
    })
    .await;
    assert!(
        !env.events().iter().any(|(r, _)| r == "ComplianceViolation"),
        "enforced values are no violation: {:?}",
        env.events()
    );

    // The Prometheus text exposition has the series too.
    let text = env.metrics.render();
    assert!(
        text.contains(&format!(
            r#"caduceus_compliance_rule_status{{platform="{}",rule="session-idle-timeout"}} 1"#,
            env.platform_label()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"caduceus_compliance_rule_status{{platform="{}",rule="field-encryption-active"}} -1"#,
            env.platform_label()
        )),
        "{text}"
    );
    env.stop().await;
}

#[tokio::test]
async fn audit_mode_changes_nothing_reports_the_violation_and_its_clearing() {
    let env = Env::start().await;
    env.create_platform(spec(json!({
        "apiServer": {"replicas": 2},
        "security": {"sessionIdleTimeoutMinutes": 60},
        "compliance": {"mode": "Audit"}
    })))
    .await;
    env.wait_evaluated(1).await;

    assert_eq!(
        env.api_config("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES")
            .as_deref(),
        Some("60"),
        "Audit mode must not change the configuration"
    );
    let c = env.compliance();
    assert_eq!(c["mode"], "Audit");
    assert_eq!(c["compliant"], false);
    assert!(c["enforced"].as_array().is_none_or(Vec::is_empty), "{c:#}");
    let v = find(&c["violations"], "session-idle-timeout").expect("violation listed");
    assert_eq!(v["severity"], "high");
    assert!(
        v["message"].as_str().unwrap().contains("60 min"),
        "message says what is wrong: {v}"
    );
    assert!(v["since"].is_string(), "{v}");
    assert_eq!(env.rule_metric("session-idle-timeout"), 0);
    assert_eq!(
        env.violations_metric("high"),
        c["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["severity"] == "high")
            .count() as i64
    );
    assert!(env.violations_metric("high") >= 1);
    let compliant = env.condition("Compliant").unwrap();
    assert_eq!(compliant["status"], "False");
    assert_eq!(compliant["reason"], "ViolationsFound");
    assert!(compliant["message"]
        .as_str()
        .unwrap()
        .contains("session-idle-timeout"));
    assert_unreachable_self_report_is_not_evaluated(&env);
    env.wait_for("ComplianceViolation Event", |e| {
        e.has_event(
            "ComplianceViolation",
            "rule session-idle-timeout (high) fails",
        )
    })
    .await;

    // `since` survives later evaluations of the same violation.
    let since = v["since"].clone();
    let generation = env
        .patch_spec(json!({"security": {"accessTokenTtlMinutes": 10}}))
        .await;
    env.wait_evaluated(generation).await;
    assert_eq!(
        find(&env.compliance()["violations"], "session-idle-timeout").unwrap()["since"],
        since
    );

    // Fixing the spec clears the violation.
    let generation = env
        .patch_spec(json!({"security": {"sessionIdleTimeoutMinutes": 15}}))
        .await;
    env.wait_evaluated(generation).await;
    assert!(find(&env.compliance()["violations"], "session-idle-timeout").is_none());
    assert_eq!(
        env.api_config("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES")
            .as_deref(),
        Some("15")
    );
    assert_eq!(env.rule_metric("session-idle-timeout"), 1);
    env.wait_for("ComplianceViolationCleared Event", |e| {
        e.has_event(
            "ComplianceViolationCleared",
            "rule session-idle-timeout no longer fails",
        )
    })
    .await;
    assert_eq!(env.condition("Compliant").unwrap()["status"], "Unknown");
    env.stop().await;
}

#[tokio::test]
async fn an_active_exception_suspends_the_rule_and_an_expired_one_does_not() {
    let env = Env::start().await;
    env.create_platform(spec(json!({
        "apiServer": {"replicas": 2},
        "security": {"sessionIdleTimeoutMinutes": 60, "accessTokenTtlMinutes": 60},
        "compliance": {"exceptions": [
            {"rule": "session-idle-timeout", "justification": "kiosk pilot (CHG-1234)",
             "expires": "2099-01-01T00:00:00Z"},
            {"rule": "access-token-ttl", "justification": "old pilot (CHG-1000)",
             "expires": "2020-01-01T00:00:00Z"},
            {"rule": "no-such-rule", "justification": "typo",
             "expires": "2099-01-01T00:00:00Z"}
        ]}
    })))
    .await;
    env.wait_evaluated(1).await;

    // Active exception: not enforced, not a violation, reported as excepted.
    assert_eq!(
        env.api_config("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES")
            .as_deref(),
        Some("60")
    );
    // Expired exception: enforced again.
    assert_eq!(
        env.api_config("CADUCEUS_ACCESS_TOKEN_TTL_MINUTES")
            .as_deref(),
        Some("15")
    );
    let c = env.compliance();
    assert!(
        find(&c["violations"], "session-idle-timeout").is_none(),
        "{c:#}"
    );
    assert!(
        find(&c["enforced"], "session-idle-timeout").is_none(),
        "{c:#}"
    );
    assert_eq!(env.rule_metric("session-idle-timeout"), 2, "excepted");
    let ttl = find(&c["enforced"], "access-token-ttl").expect("expired exception enforced");
    assert_eq!(
        (ttl["from"].as_str(), ttl["to"].as_str()),
        (Some("60"), Some("15"))
    );
    assert_eq!(env.rule_metric("access-token-ttl"), 1);

    let state = |rule: &str| find(&c["exceptions"], rule).unwrap()["state"].clone();
    assert_eq!(state("session-idle-timeout"), "Active");
    assert_eq!(state("access-token-ttl"), "Expired");
    assert_eq!(state("no-such-rule"), "UnknownRule");
    assert!(
        find(&c["exceptions"], "access-token-ttl").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("no longer applies")
    );

    // The exception expires (the user moves its date into the past): enforced from then on.
    let generation = env
        .patch_spec(json!({"compliance": {"exceptions": [
            {"rule": "session-idle-timeout", "justification": "kiosk pilot (CHG-1234)",
             "expires": "2021-01-01T00:00:00Z"}
        ]}}))
        .await;
    env.wait_evaluated(generation).await;
    assert_eq!(
        env.api_config("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES")
            .as_deref(),
        Some("15")
    );
    let c = env.compliance();
    assert_eq!(
        find(&c["exceptions"], "session-idle-timeout").unwrap()["state"],
        "Expired"
    );
    assert!(
        find(&c["enforced"], "session-idle-timeout").is_some(),
        "{c:#}"
    );
    assert_eq!(env.rule_metric("session-idle-timeout"), 1);
    env.stop().await;
}

#[tokio::test]
async fn a_hand_edited_network_policy_is_restored_and_the_rule_passes() {
    let env = Env::start().await;
    env.create_platform(spec(json!({}))).await;
    env.wait_evaluated(1).await;
    let names = Names::new("demo");
    let deny = names.netpol_default_deny();
    let desired = env
        .stored("networking.k8s.io/v1", "NetworkPolicy", &deny)
        .expect("default-deny policy")["spec"]
        .clone();
    assert_eq!(env.rule_metric("network-policy-default-deny"), 1);

    // Someone opens the namespace up: the default-deny now selects nothing and denies nothing.
    let policies: Api<NetworkPolicy> = Api::namespaced(env.admin.clone(), &env.ns);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    policies
        .patch(
            &deny,
            &edit,
            &Patch::Merge(json!({"spec": {
                "podSelector": {"matchLabels": {"nothing": "here"}},
                "policyTypes": ["Ingress"]
            }})),
        )
        .await
        .expect("hand edit");
    env.wait_for("the default-deny NetworkPolicy to be restored", |e| {
        e.stored("networking.k8s.io/v1", "NetworkPolicy", &deny)
            .is_some_and(|p| p["spec"] == desired)
    })
    .await;
    env.wait_for("DriftCorrected Event for the NetworkPolicy", |e| {
        e.has_event("DriftCorrected", &format!("NetworkPolicy {deny}"))
    })
    .await;
    env.wait_for("network-policy-default-deny passing", |e| {
        e.rule_metric("network-policy-default-deny") == 1
            && find(&e.compliance()["violations"], "network-policy-default-deny").is_none()
    })
    .await;
    env.stop().await;
}

/// A JSON patch by another field manager (`kubectl set env`, `kubectl patch --type json`): the
/// fields it adds are owned by that manager, so the operator's server-side apply leaves them.
async fn hand_patch<K>(env: &Env, name: &str, ops: Value)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(env.admin.clone(), &env.ns);
    let params = PatchParams {
        field_manager: Some("kubectl-patch".into()),
        ..PatchParams::default()
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("JSON patch");
    api.patch(name, &params, &Patch::Json::<()>(patch))
        .await
        .expect("hand edit");
}

fn pod_spec(env: &Env, kind: &str, name: &str) -> Value {
    env.stored("apps/v1", kind, name).expect("workload")["spec"]["template"]["spec"].clone()
}

fn drift_metric(env: &Env, kind: &str) -> u64 {
    env.metrics
        .drift_corrections
        .with_label_values(&[kind])
        .get()
}

#[tokio::test]
async fn workload_pod_specs_edited_by_another_manager_are_restored() {
    let env = Env::start().await;
    env.create_platform(spec(json!({}))).await;
    env.wait_evaluated(1).await;
    env.wait_quiet().await;
    let names = Names::new("demo");
    let (api, postgres) = (names.api(), names.postgres());
    let want_api = pod_spec(&env, "Deployment", &api);
    let want_postgres = pod_spec(&env, "StatefulSet", &postgres);
    let api_drift = drift_metric(&env, "Deployment");

    // `kubectl set env deployment/demo-api CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES=60`, and the
    // pod moved into the node's PID namespace.
    hand_patch::<Deployment>(
        &env,
        &api,
        json!([
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
             "value": {"name": "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES", "value": "60"}},
            {"op": "add", "path": "/spec/template/spec/hostPID", "value": true},
        ]),
    )
    .await;
    env.wait_for("the API pod spec to be restored", |e| {
        pod_spec(e, "Deployment", &api) == want_api
    })
    .await;
    env.wait_for("DriftCorrected Event for the Deployment", |e| {
        e.has_event("DriftCorrected", &format!("Deployment {api} "))
    })
    .await;
    assert!(drift_metric(&env, "Deployment") > api_drift);

    // A privileged database container on the host network (the API server refuses
    // `privileged` together with `allowPrivilegeEscalation: false`, so both are changed).
    hand_patch::<StatefulSet>(
        &env,
        &postgres,
        json!([
            {"op": "add", "path": "/spec/template/spec/containers/0/securityContext/privileged",
             "value": true},
            {"op": "replace",
             "path": "/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation",
             "value": true},
            {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
        ]),
    )
    .await;
    env.wait_for("the Postgres pod spec to be restored", |e| {
        pod_spec(e, "StatefulSet", &postgres) == want_postgres
    })
    .await;
    env.wait_for("DriftCorrected Event for the StatefulSet", |e| {
        e.has_event("DriftCorrected", &format!("StatefulSet {postgres} "))
    })
    .await;

    // The backup CronJob's job template: a root container sharing the node's IPC namespace.
    let cron = names.backup_cron_job();
    let job_pod = |e: &Env| {
        e.stored("batch/v1", "CronJob", &cron)
            .expect("backup CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            .clone()
    };
    let want_job_pod = job_pod(&env);
    hand_patch::<CronJob>(
        &env,
        &cron,
        json!([
            {"op": "add", "path": "/spec/jobTemplate/spec/template/spec/containers/0/securityContext/runAsUser",
             "value": 0},
            {"op": "add", "path": "/spec/jobTemplate/spec/template/spec/hostIPC", "value": true},
        ]),
    )
    .await;
    env.wait_for("the backup job template to be restored", |e| {
        job_pod(e) == want_job_pod
    })
    .await;
    env.wait_for("DriftCorrected Event for the CronJob", |e| {
        e.has_event("DriftCorrected", &format!("CronJob {cron} "))
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn server_defaults_on_workload_pod_specs_are_not_drift() {
    let env = Env::start().await;
    // Every apply compares the live pod spec, which the API server filled with its defaults,
    // with the desired one: from creation on, none of them may count as a difference.
    let calls_from_creation = env.calls();
    env.create_platform(spec(json!({}))).await;
    env.wait_evaluated(1).await;
    env.wait_quiet().await;
    let names = Names::new("demo");
    // What the real API server fills into a pod template the operator leaves unset (the
    // stand-in does no defaulting), written here by another manager.
    let defaults = json!([
        {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirst"},
        {"op": "add", "path": "/spec/template/spec/restartPolicy", "value": "Always"},
        {"op": "add", "path": "/spec/template/spec/schedulerName", "value": "default-scheduler"},
    ]);
    hand_patch::<Deployment>(&env, &names.api(), defaults.clone()).await;
    hand_patch::<StatefulSet>(&env, &names.postgres(), defaults.clone()).await;
    hand_patch::<StatefulSet>(&env, &names.redis(), defaults).await;
    hand_patch::<CronJob>(
        &env,
        &names.backup_cron_job(),
        json!([
            {"op": "add", "path": "/spec/jobTemplate/spec/template/spec/dnsPolicy", "value": "ClusterFirst"},
            {"op": "add", "path": "/spec/jobTemplate/spec/template/spec/schedulerName",
             "value": "default-scheduler"},
        ]),
    )
    .await;
    // The changed generation is reported once by the drift tracker; then the platform settles.
    env.wait_quiet().await;
    // The workloads were applied (and compared), and none of them had its pod spec replaced.
    let after_edits = env.calls().since(&calls_from_creation);
    for kind in ["Deployment", "StatefulSet", "CronJob"] {
        assert!(
            after_edits
                .0
                .get(&("apply".to_string(), kind.to_string()))
                .copied()
                > Some(0),
            "the {kind} was never applied: {after_edits:?}"
        );
    }
    for ((verb, kind), n) in &after_edits.0 {
        assert!(
            !(verb == "patch" && ["Deployment", "StatefulSet", "CronJob"].contains(&kind.as_str())),
            "{n} pod spec replacements because of server defaults: {after_edits:?}"
        );
    }
    let calls_before = env.calls();
    let drift_before: Vec<u64> = ["Deployment", "StatefulSet", "CronJob"]
        .iter()
        .map(|k| drift_metric(&env, k))
        .collect();
    let reconciles = || env.metrics.reconciles.with_label_values(&["success"]).get();
    let reconciles_before = reconciles();
    env.platforms()
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/touch": "1"}}})),
        )
        .await
        .expect("touch");
    env.wait_for("another reconcile", |_| reconciles() > reconciles_before)
        .await;
    env.wait_quiet().await;

    let calls = env.calls().since(&calls_before);
    for ((verb, kind), n) in &calls.0 {
        assert!(
            !(verb == "patch" && ["Deployment", "StatefulSet", "CronJob"].contains(&kind.as_str())),
            "{n} pod spec replacements in a steady-state reconcile: {calls:?}"
        );
    }
    let drift_after: Vec<u64> = ["Deployment", "StatefulSet", "CronJob"]
        .iter()
        .map(|k| drift_metric(&env, k))
        .collect();
    assert_eq!(drift_after, drift_before, "no drift reported");
    for (kind, name) in [
        ("Deployment", names.api()),
        ("StatefulSet", names.postgres()),
        ("StatefulSet", names.redis()),
    ] {
        assert_eq!(
            pod_spec(&env, kind, &name)["schedulerName"],
            "default-scheduler",
            "{kind} {name} kept its defaults"
        );
    }
    let cron = env
        .stored("batch/v1", "CronJob", &names.backup_cron_job())
        .expect("backup CronJob");
    assert_eq!(
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["schedulerName"],
        "default-scheduler"
    );
    env.stop().await;
}

fn monitoring_objects_present(env: &Env) -> bool {
    let names = Names::new("demo");
    env.stored(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        &names.api_service_monitor(),
    )
    .is_some()
        && env
            .stored(
                "monitoring.coreos.com/v1",
                "ServiceMonitor",
                &names.operator_service_monitor(),
            )
            .is_some()
        && env
            .stored(
                "monitoring.coreos.com/v1",
                "PrometheusRule",
                &names.prometheus_rule(),
            )
            .is_some()
        && env.stored("v1", "ConfigMap", &names.dashboard()).is_some()
}

fn assert_monitoring_objects(env: &Env) {
    let names = Names::new("demo");
    let label = |o: &Value, k: &str| o["metadata"]["labels"][k].as_str().map(str::to_string);
    let objects = [
        env.stored(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            &names.api_service_monitor(),
        ),
        env.stored(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            &names.operator_service_monitor(),
        ),
        env.stored(
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            &names.prometheus_rule(),
        ),
        env.stored("v1", "ConfigMap", &names.dashboard()),
    ];
    for (i, o) in objects.into_iter().enumerate() {
        let o = o.expect("monitoring object");
        let name = o["metadata"]["name"].clone();
        // The extra labels go on the Prometheus Operator objects (not the dashboard).
        if i < 3 {
            assert_eq!(
                label(&o, "release").as_deref(),
                Some("kube-prometheus-stack"),
                "{name}: spec.monitoring.labels"
            );
        }
        assert_eq!(
            label(&o, "app.kubernetes.io/managed-by").as_deref(),
            Some("caduceus-operator"),
            "{name}"
        );
        assert_eq!(
            label(&o, "app.kubernetes.io/instance").as_deref(),
            Some("demo"),
            "{name}"
        );
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["kind"], "HealthcarePlatform",
            "{name}"
        );
    }
    let dashboard = env.stored("v1", "ConfigMap", &names.dashboard()).unwrap();
    assert_eq!(label(&dashboard, "grafana_dashboard").as_deref(), Some("1"));
    let rule = env
        .stored(
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            &names.prometheus_rule(),
        )
        .unwrap();
    let alerts: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    for alert in [
        "CaduceusApiDown",
        "CaduceusComplianceViolation",
        "AuditLogFailure",
    ] {
        assert!(alerts.iter().any(|a| a == alert), "{alert} in {alerts:?}");
    }
    let monitor = env
        .stored(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            &names.api_service_monitor(),
        )
        .unwrap();
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
}

#[tokio::test]
async fn with_the_prometheus_operator_crds_the_monitoring_objects_are_applied() {
    let _crds = support::cluster::crds_exclusive().await;
    let mut env = Env::start().await;
    install_prometheus_operator_crds(&mut env).await;
    env.create_platform(spec(json!({
        "monitoring": {"labels": {"release": "kube-prometheus-stack"}}
    })))
    .await;
    env.wait_for("MonitoringReady=True", |e| {
        e.condition("MonitoringReady")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(
        env.condition("MonitoringReady").unwrap()["reason"],
        "Applied"
    );
    // The status can reach the test's watches before the objects it reports.
    env.wait_for("the monitoring objects", monitoring_objects_present)
        .await;
    assert_monitoring_objects(&env);
    env.wait_for("phase Ready", |e| e.status()["phase"] == "Ready")
        .await;
    // The controller stops first: a CR applied while its CRD terminates is refused (403).
    env.stop_controller().await;
    uninstall_prometheus_operator_crds(&env).await;
    env.stop().await;
}

#[tokio::test]
async fn without_the_crds_monitoring_is_reported_and_installing_them_later_creates_the_objects() {
    let _crds = support::cluster::crds_exclusive().await;
    let mut env = Env::start().await;
    uninstall_prometheus_operator_crds(&env).await;
    env.create_platform(spec(json!({
        "monitoring": {"labels": {"release": "kube-prometheus-stack"}}
    })))
    .await;
    env.wait_for("MonitoringReady=False and phase Ready", |e| {
        e.condition("MonitoringReady")
            .is_some_and(|c| c["status"] == "False")
            && e.status()["phase"] == format!("{:?}", Phase::Ready)
    })
    .await;
    let cond = env.condition("MonitoringReady").unwrap();
    assert_eq!(cond["reason"], "PrometheusOperatorNotInstalled");
    assert!(cond["message"]
        .as_str()
        .unwrap()
        .contains("monitoring.coreos.com"));
    // Everything else is ready.
    for c in ["Ready", "ApiServerReady", "DatabaseReady", "CacheReady"] {
        assert_eq!(env.condition(c).unwrap()["status"], "True", "{c}");
    }
    assert!(
        env.stored("v1", "ConfigMap", &Names::new("demo").dashboard())
            .is_none(),
        "no dashboard without the Prometheus Operator"
    );

    // Installing the Prometheus Operator is noticed without touching the platform (the
    // platform is Ready, so its periodic re-check is minutes away).
    env.wait_quiet().await;
    install_prometheus_operator_crds(&mut env).await;
    env.wait_for("the monitoring objects", monitoring_objects_present)
        .await;
    env.wait_for("MonitoringReady=True", |e| {
        e.condition("MonitoringReady")
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "Applied")
    })
    .await;
    assert_monitoring_objects(&env);
    assert_eq!(env.status()["phase"], "Ready");
    // The controller stops first: a CR applied while its CRD terminates is refused (403).
    env.stop_controller().await;
    uninstall_prometheus_operator_crds(&env).await;
    env.stop().await;
}

/// A platform whose database certificate is about to expire: the next reconcile re-issues it
/// from the same CA, restarts Postgres through the pod-template checksum, says so in an Event
/// and shows the new expiry in `status.database`.
#[tokio::test]
async fn a_database_certificate_about_to_expire_is_renewed_by_the_reconcile() {
    use caduceus_operator::desired::postgres_tls;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    let env = Env::start().await;
    let names = Names::new("demo");
    let now = Timestamp::now();
    let issued = now
        .checked_sub(SignedDuration::from_hours(
            24 * (postgres_tls::SERVER_VALIDITY_DAYS - 10),
        ))
        .unwrap();
    let ns = env.ns.clone();
    let hosts: Vec<String> = [names.postgres(), names.postgres_headless()]
        .iter()
        .flat_map(|svc| {
            [
                svc.clone(),
                format!("{svc}.{ns}"),
                format!("{svc}.{ns}.svc"),
                format!("{svc}.{ns}.svc.cluster.local"),
            ]
        })
        .chain([format!(
            "*.{}.{ns}.svc.cluster.local",
            names.postgres_headless()
        )])
        .collect();
    let old = postgres_tls::issue("demo", &hosts, issued).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.admin.clone(), &env.ns);
    secrets
        .create(
            &PostParams::default(),
            &k8s_openapi::api::core::v1::Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(names.postgres_tls()),
                    namespace: Some(env.ns.clone()),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("ca.crt", old.ca_cert.clone()),
                        ("ca.key", old.ca_key.clone().unwrap()),
                        ("tls.crt", old.server_cert.clone()),
                        ("tls.key", old.server_key.clone()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.into_bytes())))
                    .collect(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    env.create_platform(spec(json!({}))).await;
    env.wait_evaluated(1).await;
    let stored = secrets.get(&names.postgres_tls()).await.unwrap();
    let value = |k: &str| String::from_utf8(stored.data.as_ref().unwrap()[k].0.clone()).unwrap();
    assert_eq!(value("ca.crt"), old.ca_cert, "the CA is kept");
    assert_eq!(value("ca.key"), old.ca_key.clone().unwrap());
    assert_ne!(
        value("tls.crt"),
        old.server_cert,
        "the server certificate is new"
    );
    let (not_after, _) = postgres_tls::expiry(&value("ca.crt"), &value("tls.crt")).unwrap();
    assert!(
        not_after
            > now
                .checked_add(SignedDuration::from_hours(24 * 300))
                .unwrap()
    );
    let status = env.status();
    assert_eq!(
        status["database"]["tlsNotAfter"]
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok()),
        Some(not_after),
        "{status:#}"
    );
    assert!(status["database"]["caNotAfter"].is_string());
    let sts = env
        .stored("apps/v1", "StatefulSet", &names.postgres())
        .unwrap();
    assert_eq!(
        sts["spec"]["template"]["metadata"]["annotations"]["caduceus.io/tls-checksum"],
        postgres_tls::checksum(value("tls.crt").as_bytes(), value("tls.key").as_bytes()),
        "Postgres restarts with the new certificate"
    );
    env.wait_for("CertificateRenewed Event", |e| {
        e.has_event("CertificateRenewed", "about to expire")
    })
    .await;
    // The database-tls rule passes with the renewed certificate.
    assert_eq!(env.rule_metric("database-tls"), 1);
    env.stop().await;
}
