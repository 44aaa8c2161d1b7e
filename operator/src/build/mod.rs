//! Build stage: pure functions from a [`ValidatedPlatform`] (plus the data of Secrets that
//! already exist) to Kubernetes objects. No client, no clock, no randomness except through the
//! injected [`SecretGenerator`].
//!
//! One file per child kind. To add a kind: write `build/<kind>.rs`, add one field to
//! [`Children`] and fill it in [`build_children`]; `apply` destructures `Children` without `..`,
//! so the compiler points at the one place that must apply the new field.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::DynamicObject;
use kube::Resource;

use crate::crd::HealthcarePlatform;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

pub mod backup;
pub mod backup_cnpg;
pub mod backup_status;
pub mod cnpg;
pub mod config_map;
pub mod deployment;
pub mod hpa;
pub mod ingress;
pub mod monitoring;
pub mod monitoring_dashboard;
pub mod network_policy;
pub mod pdb;
pub mod postgres;
pub mod postgres_tls;
pub mod redis;
pub mod secrets;
pub mod security;
pub mod service;
pub mod service_account;

pub use secrets::{ExistingSecrets, SecretGenerator};

/// The embedded database: StatefulSet plus its two Services.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresObjects {
    pub stateful_set: StatefulSet,
    pub headless_service: Service,
    pub service: Service,
}

/// The embedded cache: StatefulSet plus its Service.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisObjects {
    pub stateful_set: StatefulSet,
    pub service: Service,
}

/// Every child of a platform. `None` / empty means "must not exist" (apply deletes it).
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Generated database credentials (Embedded database only).
    pub postgres_credentials: Option<Secret>,
    /// Operator-issued CA, server certificate and key of the embedded database.
    pub postgres_tls: Option<Secret>,
    /// Generated Redis password and URL (Embedded cache only).
    pub redis_credentials: Option<Secret>,
    /// JWT key and PHI key ring of the API.
    pub api_secrets: Secret,
    pub postgres: Option<PostgresObjects>,
    /// `postgresql.cnpg.io/v1` Cluster (CloudNativePG provider only).
    pub cnpg_cluster: Option<DynamicObject>,
    pub redis: Option<RedisObjects>,
    pub api_service_account: ServiceAccount,
    pub api_config: ConfigMap,
    pub api_deployment: Deployment,
    pub api_service: Service,
    pub api_hpa: Option<HorizontalPodAutoscaler>,
    pub api_pdb: Option<PodDisruptionBudget>,
    pub api_ingress: Option<Ingress>,
    /// Empty when `networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
    /// ServiceMonitors, PrometheusRule and dashboard (`monitoring.enabled`; applied only when the
    /// Prometheus Operator CRDs are served).
    pub monitoring: Option<monitoring::MonitoringObjects>,
}

/// Builds every child of a platform.
pub fn build_children(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Children {
    let config = config_map::build(p);
    let postgres_tls = secrets::postgres_tls(p, existing, generator);
    let tls_checksum = postgres_tls.as_ref().and_then(secrets::tls_checksum);
    Children {
        postgres_credentials: secrets::postgres_credentials(p, existing, generator),
        postgres_tls,
        redis_credentials: secrets::redis_credentials(p, existing, generator),
        api_secrets: secrets::api_secrets(p, existing, generator),
        postgres: postgres::build(p, tls_checksum.as_deref()),
        cnpg_cluster: cnpg::build(p),
        redis: redis::build(p),
        api_service_account: service_account::build(p),
        api_deployment: deployment::build(p, &config),
        api_config: config,
        api_service: service::build(p),
        api_hpa: hpa::build(p),
        api_pdb: pdb::build(p),
        api_ingress: ingress::build(p),
        network_policies: network_policy::build(p),
        monitoring: monitoring::build(p),
    }
}

/// Owner reference to the platform (controller, blocks owner deletion). `None` offline.
pub fn owner_reference(p: &ValidatedPlatform) -> Option<OwnerReference> {
    let uid = p.uid.clone()?;
    Some(OwnerReference {
        api_version: <HealthcarePlatform as Resource>::api_version(&()).into_owned(),
        kind: <HealthcarePlatform as Resource>::kind(&()).into_owned(),
        name: p.name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Metadata of a child: name, namespace, recommended labels, owner reference.
pub fn child_meta(p: &ValidatedPlatform, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(p.namespace.clone()),
        labels: Some(p.names.labels(component, &component_version(p, component))),
        owner_references: owner_reference(p).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The `app.kubernetes.io/version` of a component.
pub fn component_version(p: &ValidatedPlatform, component: Component) -> String {
    match component {
        Component::ApiServer | Component::Platform | Component::Backup => p.api_version.clone(),
        Component::Database => p.spec.database.version.clone(),
        Component::Cache => p.spec.cache.version.clone(),
    }
}

pub(crate) fn string_map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub(crate) fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::crd::{HealthcarePlatform, HealthcarePlatformSpec};
    use crate::validate::{validate, ValidatedPlatform};

    /// A validated platform named `demo` in namespace `clinic` with a UID.
    pub fn platform(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> ValidatedPlatform {
        let mut spec = HealthcarePlatformSpec::default();
        f(&mut spec);
        let mut hp = HealthcarePlatform::new("demo", spec);
        hp.metadata.namespace = Some("clinic".into());
        hp.metadata.uid = Some("0b6c3f3e-1111-4222-8333-444455556666".into());
        hp.metadata.generation = Some(1);
        validate(&hp, "default").expect("test platform is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::platform;
    use super::*;

    #[test]
    fn every_child_has_owner_and_labels() {
        let p = platform(|s| {
            s.api_server.autoscaling.enabled = true;
            s.api_server.ingress.enabled = true;
            s.api_server.ingress.host = Some("api.example.org".into());
        });
        let children = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random(),
        );
        let metas: Vec<ObjectMeta> = crate::apply::all_metas(&children);
        assert!(metas.len() >= 14, "{}", metas.len());
        for m in metas {
            let name = m.name.clone().unwrap();
            let owners = m.owner_references.expect("owner refs");
            assert_eq!(owners.len(), 1, "{name}");
            assert_eq!(owners[0].kind, "HealthcarePlatform");
            assert_eq!(owners[0].controller, Some(true));
            let labels = m.labels.expect("labels");
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/version",
            ] {
                assert!(labels.contains_key(key), "{name} lacks {key}");
            }
            assert_eq!(m.namespace.as_deref(), Some("clinic"));
        }
    }

    #[test]
    fn offline_render_has_no_owner_references() {
        let mut p = platform(|_| {});
        p.uid = None;
        let children = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        for m in crate::apply::all_metas(&children) {
            assert!(m.owner_references.is_none());
        }
    }
}
