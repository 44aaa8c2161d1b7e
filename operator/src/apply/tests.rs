use super::*;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;

#[test]
fn quoted_values_are_redacted() {
    assert_eq!(
        redact_quoted(r#"env[0].value: Invalid value: "hunter2": bad"#),
        r#"env[0].value: Invalid value: "…": bad"#
    );
    assert_eq!(redact_quoted("no quotes"), "no quotes");
}

#[test]
fn network_policy_specs_compare_by_meaning() {
    use k8s_openapi::api::networking::v1::NetworkPolicySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;
    let spec = |labels: &[(&str, &str)], ingress: Option<Vec<_>>| NetworkPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            match_expressions: None,
        }),
        policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
        ingress,
        egress: None,
    };
    let want = spec(&[("app", "demo")], None);
    assert!(same_network_policy_spec(
        Some(&want),
        Some(&spec(&[("app", "demo")], Some(vec![])))
    ));
    assert!(!same_network_policy_spec(
        Some(&want),
        Some(&spec(&[("app", "demo"), ("nothing", "here")], None))
    ));
    assert!(!same_network_policy_spec(Some(&want), None));
}

#[test]
fn a_futile_replacement_is_skipped_only_for_the_same_desired_state_and_object_version() {
    let t = DriftTracker::default();
    let key = "Deployment/clinic/demo-api";
    assert!(!t.replacement_futile(key, "d1", "3"));
    t.futile().insert(key.into(), ("d1".into(), "3".into()));
    assert!(t.replacement_futile(key, "d1", "3"));
    assert!(
        !t.replacement_futile(key, "d2", "3"),
        "desired state changed"
    );
    assert!(!t.replacement_futile(key, "d1", "4"), "object edited since");
    t.forget("clinic", "demo");
    assert!(!t.replacement_futile(key, "d1", "3"));
}

#[test]
fn an_apply_is_skipped_only_while_the_watch_shows_what_it_returned() {
    use kube::runtime::watcher::Event;
    let t = DriftTracker::default();
    let key = "ConfigMap/clinic/demo-config";
    let cm = |uid: &str, rv: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some("demo-config".into()),
            namespace: Some("clinic".into()),
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    let seen = |c: ConfigMap| {
        t.watched.record(
            "ConfigMap",
            &Event::Apply(c),
            crate::watch_cache::versions_only,
        )
    };
    let applied = |desired: &str, at: Instant| Fingerprint {
        desired: desired.into(),
        uid: "u1".into(),
        marker: String::new(),
        version: "10".into(),
        at,
    };
    assert_eq!(t.unchanged(key, "d1"), None, "never applied");
    t.record(key.into(), applied("d1", Instant::now()));
    assert_eq!(t.unchanged(key, "d1"), None, "not seen by the watch yet");
    seen(cm("u1", "10"));
    assert_eq!(t.unchanged(key, "d1"), Some(("u1".into(), "10".into())));
    assert_eq!(t.unchanged(key, "d2"), None, "desired state changed");
    seen(cm("u1", "11"));
    assert_eq!(t.unchanged(key, "d1"), None, "written since (by anyone)");
    seen(cm("u2", "10"));
    assert_eq!(t.unchanged(key, "d1"), None, "deleted and created again");
    t.watched.record(
        "ConfigMap",
        &Event::Delete(cm("u2", "10")),
        crate::watch_cache::versions_only,
    );
    assert_eq!(t.unchanged(key, "d1"), None, "deleted");
    seen(cm("u1", "10"));
    if let Some(long_ago) = Instant::now().checked_sub(REVERIFY_AFTER) {
        t.record(key.into(), applied("d1", long_ago));
        assert_eq!(t.unchanged(key, "d1"), None, "applied too long ago");
    }
    t.record(key.into(), applied("d1", Instant::now()));
    t.forget_key(key);
    assert_eq!(t.unchanged(key, "d1"), None, "forgotten");
}

#[test]
fn drift_needs_same_desired_state_and_a_changed_object() {
    let t = DriftTracker::default();
    let fp = |desired: &str, uid: &str, marker: &str| Fingerprint {
        desired: desired.into(),
        uid: uid.into(),
        marker: marker.into(),
        version: "1".into(),
        at: Instant::now(),
    };
    assert!(
        !t.record("k".into(), fp("d1", "u1", "1")),
        "first apply is not drift"
    );
    assert!(!t.record("k".into(), fp("d1", "u1", "1")), "no-op apply");
    assert!(
        t.record("k".into(), fp("d1", "u1", "3")),
        "edited and restored"
    );
    assert!(
        t.record("k".into(), fp("d1", "u2", "1")),
        "deleted and recreated"
    );
    assert!(
        !t.record("k".into(), fp("d2", "u2", "2")),
        "our own spec change"
    );
    t.forget("ns", "demo");
    assert_eq!(t.len(), 1);
    // A marker a controller writes after creation (a Deployment's first revision) is not
    // someone else's change.
    assert!(!t.record("new".into(), fp("d1", "u3", "")));
    assert!(!t.record("new".into(), fp("d1", "u3", "1")));
    assert!(
        t.record("new".into(), fp("d1", "u3", "2")),
        "a later change is"
    );
}

#[test]
fn generation_less_kinds_change_only_when_more_than_their_status_does() {
    use k8s_openapi::api::autoscaling::v2::{
        HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
    };
    let hpa = |max: i32, current: Option<i32>, rv: &str| HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            max_replicas: max,
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: current.map(|c| HorizontalPodAutoscalerStatus {
            current_replicas: Some(c),
            ..HorizontalPodAutoscalerStatus::default()
        }),
    };
    let desired = hpa(4, None, "");
    let applied = change_marker("HorizontalPodAutoscaler", &hpa(4, None, "1"), &desired);
    // The HPA controller writes its status (a new resourceVersion): not drift.
    assert_eq!(
        change_marker("HorizontalPodAutoscaler", &hpa(4, Some(3), "2"), &desired),
        applied
    );
    // Someone edits the spec: drift.
    assert_ne!(
        change_marker("HorizontalPodAutoscaler", &hpa(9, Some(3), "3"), &desired),
        applied
    );
}

#[test]
fn the_restore_starts_once_the_embedded_database_has_a_ready_pod() {
    use crate::crd::SecretKeyRef;
    use crate::desired::test_support::platform;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    let p = platform(|_| {});
    let sts = |ready: i32| StatefulSet {
        status: Some(StatefulSetStatus {
            replicas: 1,
            ready_replicas: Some(ready),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(!restore_database_ready(&p, None));
    assert!(!restore_database_ready(&p, Some(&sts(0))));
    assert!(restore_database_ready(&p, Some(&sts(1))));
    let external = platform(|s| {
        s.database.provider = DatabaseProvider::External;
        s.database.secret_ref = Some(SecretKeyRef {
            name: "ext".into(),
            key: "url".into(),
        });
    });
    assert!(restore_database_ready(&external, None));
}

#[test]
fn volume_errors_are_status_reasons_with_a_clear_message() {
    use crate::crd::HealthcarePlatform;
    use crate::status::{compute, Outcome};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let decrease = ApplyError::StorageDecrease {
        name: "demo-postgres".into(),
        field: "spec.database.storage.size",
        claim: "data".into(),
        live: "20Gi".into(),
        desired: "10Gi".into(),
    };
    assert_eq!(decrease.reason(), "StorageDecreaseRefused");
    let expansion = ApplyError::VolumeExpansion {
        name: "data-demo-postgres-0".into(),
        from: "10Gi".into(),
        to: "20Gi".into(),
        detail: "403 Forbidden: only dynamically provisioned pvc can be resized".into(),
    };
    assert_eq!(expansion.reason(), "VolumeExpansionFailed");
    let hp = HealthcarePlatform::new("demo", Default::default());
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let status = compute(&hp, Outcome::ApplyFailed(&decrease), now);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "StorageDecreaseRefused")
    );
    for part in [
        "spec.database.storage.size",
        "10Gi",
        "20Gi",
        "cannot shrink",
    ] {
        assert!(ready.message.contains(part), "{}", ready.message);
    }
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(degraded.reason, "StorageDecreaseRefused");
}

#[test]
fn the_generated_backup_key_is_a_generated_secret() {
    use crate::desired::test_support::platform;
    let p = platform(|_| {});
    assert!(generated_secret_names(&p).contains(&p.names.backup_key()));
    let own = platform(|s| s.backup.encryption_key_secret_ref = Some("mine".into()));
    assert!(!generated_secret_names(&own).contains(&own.names.backup_key()));
    let off = platform(|s| s.backup.enabled = false);
    assert!(!generated_secret_names(&off).contains(&off.names.backup_key()));
}
