//! Parts of pod specs that several builders share: environment variables, volume mounts, Secret
//! volumes, ports, exec probes, claim specs, pull secrets and the ClusterIP Services in front of
//! the workloads. Each is one Kubernetes object field written once, so every pod spells it alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, EnvVarSource, ExecAction, KeyToPath, LocalObjectReference,
    PersistentVolumeClaimSpec, Probe, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_meta;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// A literal environment variable.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An environment variable from key `key` of Secret `secret` (which must exist).
pub fn secret_env(name: &str, secret: impl Into<String>, key: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A writable mount of volume `name` at `path`.
pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// A read-only mount of volume `name` at `path`.
pub fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        read_only: Some(true),
        ..mount(name, path)
    }
}

/// Volume `name` with Secret `secret` (which must exist): only `keys` (each under its own name,
/// with file mode `key_mode`), or every key when `keys` is empty; files `default_mode`.
pub fn secret_volume(
    name: &str,
    secret: String,
    keys: &[&str],
    key_mode: Option<i32>,
    default_mode: i32,
) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items: (!keys.is_empty()).then(|| {
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).into(),
                        path: (*k).into(),
                        mode: key_mode,
                    })
                    .collect()
            }),
            default_mode: Some(default_mode),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// A named TCP container port.
pub fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// A TCP Service port forwarding to the container port of the same name.
pub fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// A ClusterIP Service `name` in front of the pods of `component`.
pub fn cluster_ip_service(
    p: &ValidatedPlatform,
    name: String,
    component: Component,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: child_meta(p, name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(p.names.selector(component)),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

/// A probe running `script` with `/bin/sh -c`.
pub fn exec_probe(
    script: String,
    initial_delay: i32,
    period: i32,
    timeout: i32,
    failures: i32,
) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// A ReadWriteOnce claim of `size` in `storage_class` (the cluster's default when `None`).
pub fn claim_spec(storage_class: Option<String>, size: Quantity) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: storage_class,
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([("storage".to_string(), size)])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `imagePullSecrets` of the pods running images of the API's registry: the API image's pull
/// secrets (`None` when there are none).
pub fn pull_secrets(p: &ValidatedPlatform) -> Option<Vec<LocalObjectReference>> {
    let secrets = &p.spec.api_server.image.pull_secrets;
    (!secrets.is_empty()).then(|| {
        secrets
            .iter()
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect()
    })
}
