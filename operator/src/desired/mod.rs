//! Build stage: pure functions from a [`ValidatedPlatform`] (plus the data of Secrets that
//! already exist) to Kubernetes objects. No client, no clock, no randomness except through the
//! injected [`SecretGenerator`].
//!
//! One file per child kind. To add a child: write `desired/<kind>.rs` and add one line to the
//! `children!` invocation below (`field: Type = builder expression`, at its place in the apply
//! order): it declares the field of [`Children`], fills it in [`build_children`] and puts it in
//! [`Children::objects`], the ordered list render, apply, the sweep of unwanted objects and every
//! listing of the children derive from. A Kubernetes kind no child had before is one more line in
//! [`kinds::child_kinds!`] (how it is applied, kept or deleted when unwanted, and watched).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::DynamicObject;
use kube::Resource;

use crate::crd::HealthcarePlatform;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

pub mod agent;
pub mod api_tls;
pub mod backup;
pub mod backup_cnpg;
pub mod backup_status;
pub mod certs;
pub mod cnpg;
pub mod config_map;
pub mod data_store;
pub mod deployment;
pub mod hpa;
pub mod ingress;
pub mod kinds;
pub mod monitoring;
pub mod monitoring_dashboard;
pub mod network_policy;
pub mod objects;
pub mod pdb;
pub mod pod;
pub mod postgres;
pub mod postgres_tls;
pub mod redis;
pub mod redis_tls;
pub mod restore;
pub mod secrets;
pub mod security;
pub mod service;
pub mod service_account;

pub use objects::{ChildObject, Desired, Needs};
pub use secrets::{ExistingSecrets, SecretGenerator};

/// The embedded database: StatefulSet plus its two Services.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresObjects {
    /// `pg_hba.conf`: TCP only over TLS ([`postgres::PG_HBA`]).
    pub hba: ConfigMap,
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

/// Backup objects ([`backup`], [`backup_cnpg`]). Their NetworkPolicies are part of
/// [`Children::network_policies`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct BackupObjects {
    /// The scheduled backup (agent backups only; deleted when `None`).
    pub cron_job: Option<CronJob>,
    /// `<platform>-backup-key`, generated once (never deleted: it decrypts existing backups).
    pub key_secret: Option<Secret>,
    /// PVC of a `pvc` destination (never deleted by apply: it holds the backups; the
    /// finalizer applies `deletionPolicy` to it).
    pub pvc: Option<PersistentVolumeClaim>,
    /// Job of a `caduceus.io/backup-now` token not handled yet (created once, never deleted by
    /// apply; `ttlSecondsAfterFinished` removes it a week after it finished).
    pub on_demand_job: Option<Job>,
    /// CloudNativePG ScheduledBackup (delegated backups; deleted when `None`).
    pub scheduled_backup: Option<DynamicObject>,
}

/// Declares [`Children`] (one field per child, in apply order), [`build_children`] (each field
/// from its builder) and [`Children::objects`] (the ordered list apply, render, the sweep and
/// every listing derive from) from one line per child: `field: Type = builder expression`.
macro_rules! children {
    (
        prelude($p:ident, $existing:ident, $generator:ident) { $($prelude:stmt;)* }
        $( $(#[$doc:meta])* $field:ident : $ty:ty = $init:expr ),* $(,)?
    ) => {
        /// Every child of a platform, in apply order. `None` / empty means "not wanted": the
        /// sweep deletes an existing one unless its kind is kept when unwanted
        /// ([`kinds::WhenUnwanted`]).
        #[derive(Clone, Debug, PartialEq)]
        pub struct Children {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        /// Builds every child of a platform.
        pub fn build_children(
            $p: &ValidatedPlatform,
            $existing: &ExistingSecrets,
            $generator: &mut SecretGenerator,
        ) -> Children {
            $($prelude)*
            Children { $( $field: $init, )* }
        }

        impl Children {
            /// Every desired object, in apply order (the order of the fields).
            pub fn objects(&self) -> Vec<Desired<'_>> {
                let mut out = Vec::new();
                $( objects::IntoDesired::push_into(&self.$field, &mut out); )*
                out
            }
        }
    };
}

// The children, in apply order: NetworkPolicies first (no platform pod ever runs unprotected),
// Secrets and configuration, the database and cache, the API, backups, monitoring. Adding a
// child is its builder and one line here.
children! {
    prelude(p, existing, generator) {
        let config = config_map::build(p);
        let postgres_tls = secrets::postgres_tls(p, existing, generator);
        let tls_checksum = postgres_tls.as_ref().and_then(secrets::tls_checksum);
        let redis_tls = secrets::redis_tls(p, existing, generator);
        let redis_checksum = redis_tls.as_ref().and_then(secrets::tls_checksum);
        let redis_ca_checksum = redis_tls.as_ref().and_then(secrets::ca_checksum);
        let api_tls = api_tls::build(p, existing, generator);
        let api_tls_checksum = secrets::tls_checksum(&api_tls);
        let api_deployment = deployment::build(
            p,
            &config,
            redis_ca_checksum.as_deref(),
            api_tls_checksum.as_deref(),
        );
    }
    /// Empty when `networkPolicy.enabled` is false. Includes the backup pods' policies and,
    /// while a restore is pending, the restore pod's. (The restore Job itself is built by
    /// [`restore::job`] and applied by the apply stage before the API's Deployment.)
    network_policies: Vec<NetworkPolicy> = network_policy::build(p)
        .into_iter()
        .chain(backup::network_policies(p))
        .chain(restore::network_policies(p))
        .collect(),
    /// Generated database credentials (Embedded database only).
    postgres_credentials: Option<Secret> = secrets::postgres_credentials(p, existing, generator),
    /// The API's runtime database role (Embedded and CloudNativePG).
    postgres_app: Option<Secret> = secrets::postgres_app(p, existing, generator),
    /// Operator-issued CA, server certificate and key of the embedded database.
    postgres_tls: Option<Secret> = postgres_tls,
    /// Generated Redis password and URL (Embedded cache only).
    redis_credentials: Option<Secret> = secrets::redis_credentials(p, existing, generator),
    /// Operator-issued CA, server certificate and key of the embedded cache.
    redis_tls: Option<Secret> = redis_tls,
    /// JWT key and PHI key ring of the API.
    api_secrets: Secret = secrets::api_secrets(p, existing, generator),
    /// Operator-issued CA, serving certificate and key of the API's HTTPS listeners.
    api_tls: Secret = api_tls,
    api_service_account: ServiceAccount = service_account::build(p),
    api_config: ConfigMap = config,
    postgres: Option<PostgresObjects> = postgres::build(p, tls_checksum.as_deref()),
    /// `postgresql.cnpg.io/v1` Cluster (CloudNativePG provider only).
    cnpg_cluster: Option<DynamicObject> = cnpg::build(p).map(|c| backup_cnpg::with_backup(p, c)),
    redis: Option<RedisObjects> = redis::build(p, redis_checksum.as_deref()),
    api_deployment: Deployment = api_deployment,
    api_service: Service = service::build(p),
    api_hpa: Option<HorizontalPodAutoscaler> = hpa::build(p),
    api_pdb: Option<PodDisruptionBudget> = pdb::build(p),
    api_ingress: Option<Ingress> = ingress::build(p),
    backup: BackupObjects = BackupObjects {
        cron_job: backup::cron_job(p),
        key_secret: backup::key_secret(p, existing, generator),
        pvc: backup::pvc(p),
        on_demand_job: backup::on_demand_job(p, p.backup_now.as_deref()),
        scheduled_backup: backup_cnpg::scheduled_backup(p),
    },
    /// ServiceMonitors, PrometheusRule and dashboard (`monitoring.enabled`; applied only when the
    /// Prometheus Operator CRDs are served).
    monitoring: Option<monitoring::MonitoringObjects> = monitoring::build(p),
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
        Component::ApiServer | Component::Platform | Component::Backup | Component::Restore => {
            p.api_version.clone()
        }
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
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Container, EnvVar};
    use k8s_openapi::api::networking::v1::NetworkPolicyPort;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use crate::crd::{HealthcarePlatform, HealthcarePlatformSpec};
    use crate::validate::{validate, ValidatedPlatform};

    /// The env var `name` of container `c`.
    pub fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_ref()?.iter().find(|e| e.name == name)
    }

    /// The port numbers of a NetworkPolicy rule (`-1` for a named port).
    pub fn ports(rule_ports: &Option<Vec<NetworkPolicyPort>>) -> Vec<i32> {
        rule_ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => -1,
            })
            .collect()
    }

    /// The annotation `key` of a StatefulSet's pod template.
    pub fn template_annotation(sts: &StatefulSet, key: &str) -> String {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key))
            .unwrap_or_else(|| panic!("pod template annotation {key} missing"))
            .clone()
    }

    /// A validated platform named `demo` in namespace `clinic` with a UID. What validation
    /// requires of the setting under test is filled in when `f` leaves it out: the CIDRs of
    /// External providers and the trusted proxies of an enabled Ingress (the validation tests
    /// check those requirements themselves).
    pub fn platform(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> ValidatedPlatform {
        let mut spec = HealthcarePlatformSpec::default();
        f(&mut spec);
        complete(&mut spec);
        let mut hp = HealthcarePlatform::new("demo", spec);
        hp.metadata.namespace = Some("clinic".into());
        hp.metadata.uid = Some("0b6c3f3e-1111-4222-8333-444455556666".into());
        hp.metadata.generation = Some(1);
        validate(&hp, "default").expect("test platform is valid")
    }

    /// Fills in what validation requires and a test left out (see [`platform`]).
    pub fn complete(spec: &mut HealthcarePlatformSpec) {
        use crate::crd::{CacheProvider, DatabaseProvider};
        if spec.database.provider == DatabaseProvider::External
            && spec.database.external_cidrs.is_empty()
        {
            spec.database.external_cidrs = vec!["10.40.0.0/16".into()];
        }
        if spec.cache.provider == CacheProvider::External && spec.cache.external_cidrs.is_empty() {
            spec.cache.external_cidrs = vec!["10.41.0.0/16".into()];
        }
        if spec.api_server.ingress.enabled && spec.security.trusted_proxies.is_empty() {
            spec.security.trusted_proxies = vec!["10.42.0.0/16".into()];
        }
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

    /// Paths of empty lists in a serialized object.
    fn empty_lists(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Array(items) if items.is_empty() => out.push(path.to_string()),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    empty_lists(item, &format!("{path}[{i}]"), out);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, item) in map {
                    empty_lists(item, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }

    /// The API server stores an empty list of a built-in kind as absent, so an applied `[]`
    /// differs from the stored object on every apply: the object's generation moves on each
    /// reconcile, the watch triggers the next one (a hot loop), and drift is reported.
    #[test]
    fn no_child_sends_an_empty_list() {
        use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup, S3Destination};
        let restored_from_s3 = |s: &mut crate::crd::HealthcarePlatformSpec| {
            s.api_server.autoscaling.enabled = true;
            s.api_server.ingress.enabled = true;
            s.api_server.ingress.host = Some("api.example.org".into());
            s.database.bootstrap = Some(DatabaseBootstrap {
                from_backup: Some(FromBackup {
                    name: "latest".into(),
                    source: BackupSource {
                        s3: Some(S3Destination {
                            endpoint: Some("https://minio.storage:9000".into()),
                            bucket: "old-backups".into(),
                            prefix: String::new(),
                            region: "eu-central-1".into(),
                            credentials_secret_ref: "s3".into(),
                            force_path_style: true,
                        }),
                        claim_name: None,
                    },
                    secret_ref: "old-key".into(),
                }),
            });
        };
        for p in [platform(|_| {}), platform(restored_from_s3)] {
            let children = build_children(
                &p,
                &ExistingSecrets::default(),
                &mut SecretGenerator::random(),
            );
            let mut objects =
                crate::render::children_to_values(&children).expect("children serialize");
            objects.extend(
                crate::desired::restore::job(&p).map(|j| serde_json::to_value(j).expect("job")),
            );
            let mut found = Vec::new();
            for o in &objects {
                let name = format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"]
                );
                let mut paths = Vec::new();
                empty_lists(o, "", &mut paths);
                found.extend(paths.into_iter().map(|path| format!("{name}{path}")));
            }
            assert!(
                found.is_empty(),
                "empty lists sent to the API server: {found:?}"
            );
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

    #[test]
    fn a_pending_restore_adds_the_restore_pods_policies_only() {
        use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup};
        let mut p = platform(|s| {
            s.database.bootstrap = Some(DatabaseBootstrap {
                from_backup: Some(FromBackup {
                    name: "latest".into(),
                    source: BackupSource {
                        s3: None,
                        claim_name: Some("old-backups".into()),
                    },
                    secret_ref: "old-key".into(),
                }),
            })
        });
        let names = |p: &ValidatedPlatform| -> Vec<String> {
            build_children(
                p,
                &ExistingSecrets::default(),
                &mut SecretGenerator::Placeholder,
            )
            .network_policies
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect()
        };
        let pending = names(&p);
        for want in restore::all_network_policy_names(&p) {
            assert!(pending.contains(&want), "{want} among {pending:?}");
        }
        assert!(restore::job(&p).is_some());
        p.restore_pending = false;
        let done = names(&p);
        assert!(restore::all_network_policy_names(&p)
            .iter()
            .all(|n| !done.contains(n)));
        assert!(restore::job(&p).is_none());
    }

    #[test]
    fn backup_children_follow_the_spec() {
        use crate::crd::{DatabaseProvider, S3Destination};
        let p = platform(|_| {});
        let c = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert!(c.backup.cron_job.is_some());
        assert!(c.backup.key_secret.is_some());
        assert!(c.backup.pvc.is_some(), "default pvc destination");
        assert!(c.backup.on_demand_job.is_none(), "no token");
        assert!(c.backup.scheduled_backup.is_none());
        let names: Vec<String> = c
            .network_policies
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for want in backup::all_network_policy_names(&p) {
            assert!(names.contains(&want), "{want} among {names:?}");
        }

        let mut pending = p.clone();
        pending.backup_now = Some("tok1".into());
        let c = build_children(
            &pending,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(
            c.backup.on_demand_job.and_then(|j| j.metadata.name),
            Some(p.names.backup_now_job(&backup::token_hash("tok1")))
        );

        let off = platform(|s| s.backup.enabled = false);
        let c = build_children(
            &off,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(c.backup, BackupObjects::default());
        assert!(c
            .network_policies
            .iter()
            .all(|n| !backup::all_network_policy_names(&off)
                .contains(n.metadata.name.as_ref().unwrap())));

        // CloudNativePG with S3: delegated (ScheduledBackup + barmanObjectStore, no CronJob).
        let cnpg = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.backup.destination.pvc = None;
            s.backup.destination.s3 = Some(S3Destination {
                endpoint: None,
                bucket: "phi".into(),
                prefix: "demo".into(),
                region: "eu-central-1".into(),
                credentials_secret_ref: "s3".into(),
                force_path_style: false,
            });
        });
        let c = build_children(
            &cnpg,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert!(c.backup.cron_job.is_none() && c.backup.key_secret.is_none());
        assert!(c.backup.scheduled_backup.is_some());
        let cluster = c.cnpg_cluster.expect("cluster");
        assert_eq!(
            cluster.data["spec"]["backup"]["barmanObjectStore"]["destinationPath"],
            "s3://phi/demo/"
        );
    }
}
