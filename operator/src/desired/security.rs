//! Pod Security Standards "restricted" settings shared by every pod the operator creates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::ResourcesSpec;

/// uid/gid of the `caduceus-api` image (docs/contracts.md).
pub const API_UID: i64 = 65532;
/// uid/gid (and fsGroup) of the embedded Postgres and Redis pods. Not the images' own `postgres` /
/// `redis` user (999): hardening benchmarks (checkov CKV_K8S_40) ask for a uid of at least 10000
/// so a container uid never collides with a host user. Both official images run as any uid
/// (Postgres through nss_wrapper in its entrypoint); fsGroup makes the volumes writable.
pub const DATA_UID: i64 = 10999;
/// Least uid [`DATA_UID`] may be (CKV_K8S_40).
pub const MIN_HIGH_UID: i64 = 10000;

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Pod-level security context: non-root with an explicit uid/gid, fsGroup, seccomp.
pub fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// Container-level security context: read-only root, no escalation, no capabilities.
pub fn container_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// Requests and limits from the spec.
pub fn resources(r: &ResourcesSpec) -> ResourceRequirements {
    let pair = |cpu: &Quantity, memory: &Quantity| -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            ("cpu".to_string(), cpu.clone()),
            ("memory".to_string(), memory.clone()),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(&r.requests.cpu, &r.requests.memory)),
        limits: Some(pair(&r.limits.cpu, &r.limits.memory)),
        ..Default::default()
    }
}

/// A size-limited emptyDir scratch volume (the root filesystem is read-only).
pub fn scratch_volume(name: &str, size_limit: &str, memory: bool) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            size_limit: Some(Quantity(size_limit.into())),
        }),
        ..Default::default()
    }
}

/// Checks one container against the "restricted" profile and the hardening baseline.
/// Returns the list of violations (empty when compliant). Used by builder tests.
pub fn container_violations(c: &Container) -> Vec<String> {
    let mut v = Vec::new();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.run_as_non_root != Some(true) {
        v.push("runAsNonRoot".to_string());
    }
    if sc.run_as_user.unwrap_or(0) == 0 {
        v.push("runAsUser".to_string());
    }
    if sc.allow_privilege_escalation != Some(false) {
        v.push("allowPrivilegeEscalation".to_string());
    }
    if sc.read_only_root_filesystem != Some(true) {
        v.push("readOnlyRootFilesystem".to_string());
    }
    let drops_all = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"));
    if !drops_all {
        v.push("capabilities.drop ALL".to_string());
    }
    if sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) != Some("RuntimeDefault") {
        v.push("seccompProfile".to_string());
    }
    let res = c.resources.clone().unwrap_or_default();
    for key in ["cpu", "memory"] {
        if !res.requests.as_ref().is_some_and(|r| r.contains_key(key)) {
            v.push(format!("requests.{key}"));
        }
        if !res.limits.as_ref().is_some_and(|r| r.contains_key(key)) {
            v.push(format!("limits.{key}"));
        }
    }
    match c.image.as_deref() {
        Some(image) => {
            let tag = image.rsplit_once(':').map(|(_, t)| t);
            if tag.is_none_or(|t| t == "latest" || t.contains('/')) {
                v.push(format!("image tag of {image}"));
            }
        }
        None => v.push("image".to_string()),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_missing_hardening() {
        let c = Container {
            name: "x".into(),
            image: Some("busybox:latest".into()),
            ..Default::default()
        };
        let v = container_violations(&c);
        assert!(v.contains(&"runAsNonRoot".to_string()));
        assert!(v.contains(&"limits.memory".to_string()));
        assert!(v.iter().any(|s| s.starts_with("image tag")));
    }

    #[test]
    fn data_pods_run_with_a_high_uid() {
        const { assert!(DATA_UID >= MIN_HIGH_UID && API_UID >= MIN_HIGH_UID) };
        let pod = pod_security_context(DATA_UID);
        assert_eq!(pod.run_as_user, Some(DATA_UID));
        assert_eq!(pod.run_as_group, Some(DATA_UID));
        assert_eq!(
            pod.fs_group,
            Some(DATA_UID),
            "volumes writable by the data uid"
        );
        assert_eq!(
            container_security_context(DATA_UID).run_as_user,
            Some(DATA_UID)
        );
    }

    #[test]
    fn hardened_container_passes() {
        let c = Container {
            name: "x".into(),
            image: Some("registry:5000/app:1.0".into()),
            security_context: Some(container_security_context(1000)),
            resources: Some(resources(&ResourcesSpec::new("1", "1Mi", "1", "1Mi"))),
            ..Default::default()
        };
        assert!(
            container_violations(&c).is_empty(),
            "{:?}",
            container_violations(&c)
        );
    }
}
