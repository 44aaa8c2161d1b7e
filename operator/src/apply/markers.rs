//! Pure helpers of the apply stage: where pod specs are, what counts as the same spec, and the
//! hashes and markers that tell drift from unchanged objects.

use super::*;

/// Whether the database accepts the restore: the embedded Postgres has a ready pod (the Job
/// would otherwise use up its retries while Postgres starts); an External database is assumed
/// up (it is the user's). Pure.
pub fn restore_database_ready(p: &ValidatedPlatform, postgres: Option<&StatefulSet>) -> bool {
    match p.spec.database.provider {
        DatabaseProvider::Embedded => {
            postgres
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                > 0
        }
        DatabaseProvider::External => true,
        // CloudNativePG restores with its own recovery (fromBackup is refused).
        DatabaseProvider::CloudNativePG => false,
    }
}

/// Where a Deployment's or StatefulSet's pod spec is.
pub(super) const POD_SPEC: &str = "/spec/template/spec";

/// The part of a kind applied with [`crate::desired::kinds::ApplyMode::Exact`]: where it is and
/// when the live one is the same as the desired one.
pub(super) trait ExactPart: Sized {
    const PATH: &'static str;
    fn same(live: &Self, want: &Self) -> bool;
}

impl ExactPart for NetworkPolicy {
    const PATH: &'static str = "/spec";
    fn same(live: &Self, want: &Self) -> bool {
        same_network_policy_spec(live.spec.as_ref(), want.spec.as_ref())
    }
}

impl ExactPart for Deployment {
    const PATH: &'static str = POD_SPEC;
    fn same(live: &Self, want: &Self) -> bool {
        same_pod_spec(deployment_pod(live), deployment_pod(want))
    }
}

impl ExactPart for StatefulSet {
    const PATH: &'static str = POD_SPEC;
    fn same(live: &Self, want: &Self) -> bool {
        same_pod_spec(stateful_set_pod(live), stateful_set_pod(want))
    }
}

impl ExactPart for CronJob {
    const PATH: &'static str = "/spec/jobTemplate/spec/template/spec";
    fn same(live: &Self, want: &Self) -> bool {
        same_pod_spec(cron_job_pod(live), cron_job_pod(want))
    }
}

/// The component (database or cache) of an embedded StatefulSet, from its labels.
pub(super) fn stateful_set_component(meta: &ObjectMeta) -> Option<Component> {
    let label = meta.labels.as_ref()?.get(crate::names::LABEL_COMPONENT)?;
    [Component::Database, Component::Cache]
        .into_iter()
        .find(|c| c.as_str() == label)
}

pub(super) fn deployment_pod(d: &Deployment) -> Option<&PodSpec> {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref())
}

pub(super) fn stateful_set_pod(s: &StatefulSet) -> Option<&PodSpec> {
    s.spec.as_ref().and_then(|s| s.template.spec.as_ref())
}

pub(super) fn cron_job_pod(c: &CronJob) -> Option<&PodSpec> {
    c.spec
        .as_ref()
        .and_then(|s| s.job_template.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
}

/// Whether two NetworkPolicy specs mean the same (an empty list or map equals an absent one,
/// as the API server may drop empty fields).
pub fn same_network_policy_spec(
    a: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>,
    b: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>,
) -> bool {
    let norm = |s: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>| {
        s.and_then(|s| serde_json::to_value(s).ok()).and_then(prune)
    };
    norm(a) == norm(b)
}

/// Which field shows that someone else changed an object: `generation` where the kind has one,
/// otherwise a hash of the object without `metadata` and `status` (controllers keep writing
/// the status of generation-less kinds, e.g. the HPA controller, which is not a change).
pub(super) fn change_marker<K: Resource + Serialize>(
    kind: &str,
    live_obj: &K,
    desired: &K,
) -> String {
    let live = live_obj.meta();
    // With autoscaling the HPA changes `replicas` (and so `generation`); the revision annotation
    // changes only when the pod template does.
    if kind == "Deployment" {
        let autoscaled = serde_json::to_value(desired)
            .ok()
            .is_some_and(|v| v.pointer("/spec/replicas").is_none());
        if autoscaled {
            return live
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .cloned()
                .unwrap_or_default();
        }
    }
    match live.generation {
        Some(g) if g > 0 => g.to_string(),
        _ => content_hash(kind, live_obj),
    }
}

/// Hash of an object without `metadata` and `status`; for a claim also without the volume the
/// PV binder fills in.
pub(super) fn content_hash<K: Serialize>(kind: &str, obj: &K) -> String {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    if kind == "PersistentVolumeClaim" {
        if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.remove("volumeName");
        }
    }
    desired_hash(&v)
}

/// `generation` where the kind has one, otherwise `resourceVersion`.
pub(super) fn object_version(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(g) if g > 0 => g.to_string(),
        _ => meta.resource_version.clone().unwrap_or_default(),
    }
}

pub(super) fn desired_hash<T: Serialize>(obj: &T) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    let digest = Sha256::digest(bytes);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
