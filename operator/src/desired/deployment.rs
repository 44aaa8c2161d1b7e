//! Deployment of the Caduceus API.
//!
//! - Secrets only through Secret refs: `DATABASE_URL`/`REDIS_URL` via `secretKeyRef`, the JWT key
//!   and PHI key ring as a read-only Secret volume at `/etc/caduceus/secrets`.
//! - Schema migrations and the runtime role: an init container runs `caduceus-api db-setup` with
//!   the owner's credentials in every new pod (Embedded, CloudNativePG), so the schema is migrated
//!   and the runtime role's grants are current before a pod of the new version can become ready;
//!   the rolling update (`maxUnavailable: 0`) keeps old pods serving until then. The API itself
//!   connects as the runtime role (`<platform>-postgres-app`), neither superuser nor owner. With
//!   an External database the user runs `db-setup` and `database.secretRef` names the runtime
//!   role's URL: no init container.
//! - HTTPS on both ports with the operator-issued `<platform>-api-internal-tls` ([`super::api_tls`]);
//!   probes `/health/live` and `/health/ready` over HTTPS; topology spread across zones and nodes.
//! - `database.bootstrap.fromBackup`: the restore runs in its own Job ([`super::restore`]), never
//!   in the API pods; until it succeeded the Deployment is held at 0 replicas
//!   ([`ValidatedPlatform::api_held`]).

use caduceus_contract::settings;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, EnvFromSource, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::certs::CA_CERT_KEY;
use super::pod::{
    container_port, env, mount, pull_secrets, read_only_mount, secret_env, secret_volume,
};
use super::redis_tls::{self, API_REDIS_CA_DIR};
use super::security::{
    container_security_context, pod_security_context, resources, scratch_volume, API_UID,
};
use super::{agent, api_tls, child_meta, component_version, config_map};
use crate::crd::{CacheProvider, DatabaseProvider};
use crate::names::{
    Component, ANNOTATION_API_TLS_CHECKSUM, ANNOTATION_CONFIG_HASH, ANNOTATION_REDIS_CA_CHECKSUM,
    API_HTTP_PORT, API_METRICS_PORT, API_SECRETS_MOUNT, CNPG_URI_KEY, DATABASE_APP_USER, JWT_KEY,
    PG_PASSWORD_KEY, PG_URL_KEY, PHI_KEYS, REDIS_URL_KEY,
};
use crate::validate::ValidatedPlatform;

/// Path of the API binary in its image (docs/contracts.md).
pub const API_BINARY: &str = "/usr/local/bin/caduceus-api";

/// `DATABASE_URL` of the owner (migrations, backups, restores), from the Secret of the
/// configured provider (External: the one URL the user gives).
pub fn database_url_env(p: &ValidatedPlatform) -> EnvVar {
    let db = &p.spec.database;
    let (secret, key) = match (&db.provider, &db.secret_ref) {
        (DatabaseProvider::External, Some(r)) => (r.name.clone(), r.key.clone()),
        (DatabaseProvider::CloudNativePG, _) => (p.names.cnpg_app_secret(), CNPG_URI_KEY.into()),
        // Validation guarantees External has a secretRef; Embedded is the remaining case.
        _ => (p.names.postgres_credentials(), PG_URL_KEY.into()),
    };
    secret_env("DATABASE_URL", secret, key)
}

/// `DATABASE_URL` of the API server: its runtime role (External: the URL the user gives).
pub fn api_database_url_env(p: &ValidatedPlatform) -> EnvVar {
    match p.spec.database.provider {
        DatabaseProvider::External => database_url_env(p),
        _ => secret_env("DATABASE_URL", p.names.postgres_app(), PG_URL_KEY),
    }
}

/// `REDIS_URL`, from a Secret; empty (not secret) when the cache is disabled.
pub fn redis_url_env(p: &ValidatedPlatform) -> EnvVar {
    let cache = &p.spec.cache;
    match (&cache.provider, &cache.secret_ref) {
        (CacheProvider::Disabled, _) => env("REDIS_URL", String::new()),
        (CacheProvider::External, Some(r)) => secret_env("REDIS_URL", &r.name, &r.key),
        _ => secret_env("REDIS_URL", p.names.redis_credentials(), REDIS_URL_KEY),
    }
}

/// A probe of the API's public port; HTTPS, like everything the API serves (the kubelet does not
/// verify the certificate).
fn https_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn spread(key: &str, selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..Default::default()
        }),
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        ..Default::default()
    }
}

/// The embedded Redis's CA for the API: volume `redis-ca` with only `ca.crt` of
/// `<platform>-redis-tls`, and `CADUCEUS_REDIS_CA_FILE` naming it (`None` unless the cache is
/// embedded).
fn redis_ca(p: &ValidatedPlatform) -> Option<(Volume, VolumeMount, EnvVar)> {
    (p.spec.cache.provider == CacheProvider::Embedded).then(|| {
        (
            secret_volume("redis-ca", p.names.redis_tls(), &[CA_CERT_KEY], None, 0o444),
            read_only_mount("redis-ca", API_REDIS_CA_DIR),
            env(settings::REDIS_CA_FILE, redis_tls::api_ca_file()),
        )
    })
}

/// Builds the Deployment; `config` is the API ConfigMap (its hash rolls the pods),
/// `redis_ca_checksum` the hash of the embedded Redis's `ca.crt` (rolls the pods when a new CA is
/// published: the API reads the bundle at start) and `api_tls_checksum` the hash of the API's own
/// certificate and key (rolls the pods onto a renewed certificate).
pub fn build(
    p: &ValidatedPlatform,
    config: &ConfigMap,
    redis_ca_checksum: Option<&str>,
    api_tls_checksum: Option<&str>,
) -> Deployment {
    let names = &p.names;
    let api = &p.spec.api_server;
    let selector = names.selector(Component::ApiServer);
    let labels = names.labels(
        Component::ApiServer,
        &component_version(p, Component::ApiServer),
    );
    let image = p.api_image();
    let pull_policy = api.image.pull_policy.as_str().to_string();

    // The CA of the embedded Postgres, for `sslmode=verify-full` (only `ca.crt` is mounted).
    let db_ca_mount = agent::db_ca_mount(p);
    let db_ca_volume = agent::db_ca_volume(p);
    let tmp_mount = mount("tmp", "/tmp");
    let (redis_ca_volume, redis_ca_mount, redis_ca_env) = match redis_ca(p) {
        Some((v, m, e)) => (Some(v), Some(m), Some(e)),
        None => (None, None, None),
    };
    let db_setup = (p.spec.database.provider != DatabaseProvider::External).then(|| Container {
        name: "db-setup".into(),
        image: Some(image.clone()),
        image_pull_policy: Some(pull_policy.clone()),
        command: Some(vec![API_BINARY.into()]),
        args: Some(vec!["db-setup".into()]),
        env: Some(vec![
            database_url_env(p),
            env(settings::APP_DB_USER, DATABASE_APP_USER),
            secret_env(
                settings::APP_DB_PASSWORD,
                p.names.postgres_app(),
                PG_PASSWORD_KEY,
            ),
            env(settings::LOG_LEVEL, api.log_level.clone()),
        ]),
        resources: Some(resources(&api.resources)),
        security_context: Some(container_security_context(API_UID)),
        volume_mounts: Some(
            [tmp_mount.clone()]
                .into_iter()
                .chain(db_ca_mount.clone())
                .collect(),
        ),
        ..Default::default()
    });

    let mut env_vars = vec![
        api_database_url_env(p),
        redis_url_env(p),
        env(
            settings::JWT_KEY_FILE,
            format!("{API_SECRETS_MOUNT}/{JWT_KEY}"),
        ),
        env(
            settings::PHI_KEYS_FILE,
            format!("{API_SECRETS_MOUNT}/{PHI_KEYS}"),
        ),
    ];
    env_vars.extend(redis_ca_env);
    env_vars.extend(api_tls::env_vars());
    env_vars.extend(api.env.iter().cloned());

    let server = Container {
        name: "api".into(),
        image: Some(image),
        image_pull_policy: Some(pull_policy),
        command: Some(vec![API_BINARY.into()]),
        args: Some(vec!["serve".into()]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.api_config(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(env_vars),
        ports: Some(vec![
            container_port("http", API_HTTP_PORT),
            container_port("metrics", API_METRICS_PORT),
        ]),
        resources: Some(resources(&api.resources)),
        security_context: Some(container_security_context(API_UID)),
        startup_probe: Some(https_probe("/health/live", 2, 30)),
        liveness_probe: Some(https_probe("/health/live", 10, 3)),
        readiness_probe: Some(https_probe("/health/ready", 5, 3)),
        volume_mounts: Some(
            vec![
                read_only_mount("secrets", API_SECRETS_MOUNT),
                api_tls::mount(),
                tmp_mount,
            ]
            .into_iter()
            .chain(db_ca_mount)
            .chain(redis_ca_mount)
            .collect(),
        ),
        ..Default::default()
    };

    let mut annotations =
        BTreeMap::from([(ANNOTATION_CONFIG_HASH.to_string(), config_map::hash(config))]);
    if let Some(c) = redis_ca_checksum {
        annotations.insert(ANNOTATION_REDIS_CA_CHECKSUM.to_string(), c.to_string());
    }
    if let Some(c) = api_tls_checksum {
        annotations.insert(ANNOTATION_API_TLS_CHECKSUM.to_string(), c.to_string());
    }

    Deployment {
        metadata: child_meta(p, names.api(), Component::ApiServer),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns `replicas`; leaving it out of the applied object
            // keeps the two from fighting. Stopped or restoring: 0 (and no HPA).
            replicas: (!p.autoscaling()).then(|| p.api_replicas()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            progress_deadline_seconds: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names.api()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(API_UID)),
                    termination_grace_period_seconds: Some(30),
                    image_pull_secrets: pull_secrets(p),
                    init_containers: db_setup.map(|c| vec![c]),
                    containers: vec![server],
                    volumes: Some(
                        vec![
                            secret_volume("secrets", names.api_secrets(), &[], None, 0o440),
                            api_tls::volume(p),
                            scratch_volume("tmp", "64Mi", false),
                        ]
                        .into_iter()
                        .chain(db_ca_volume)
                        .chain(redis_ca_volume)
                        .collect(),
                    ),
                    topology_spread_constraints: Some(vec![
                        spread("topology.kubernetes.io/zone", &selector),
                        spread("kubernetes.io/hostname", &selector),
                    ]),
                    node_selector: (!api.node_selector.is_empty())
                        .then(|| api.node_selector.clone()),
                    tolerations: (!api.tolerations.is_empty()).then(|| api.tolerations.clone()),
                    affinity: api.affinity.clone(),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::desired::security::container_violations;
    use crate::desired::test_support::platform;

    fn pod(d: &Deployment) -> PodSpec {
        d.spec.clone().unwrap().template.spec.unwrap()
    }

    fn env<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .unwrap()
    }

    fn build_default(f: impl FnOnce(&mut crate::crd::HealthcarePlatformSpec)) -> Deployment {
        let p = platform(f);
        build(&p, &config_map::build(&p), None, None)
    }

    #[test]
    fn containers_are_hardened_and_probed() {
        let d = build_default(|_| {});
        let pod = pod(&d);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("demo-api"));
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            assert!(
                container_violations(c).is_empty(),
                "{}: {:?}",
                c.name,
                container_violations(c)
            );
        }
        let api = &pod.containers[0];
        let path = |p: &Option<Probe>| p.clone().unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(&api.liveness_probe), "/health/live");
        assert_eq!(path(&api.readiness_probe), "/health/ready");
        assert_eq!(
            api.image.as_deref(),
            Some(
                format!(
                    "ghcr.io/caduceus-health/caduceus-api:{}",
                    env!("CARGO_PKG_VERSION")
                )
                .as_str()
            )
        );
    }

    #[test]
    fn secrets_only_through_secret_refs() {
        let d = build_default(|_| {});
        let pod = pod(&d);
        let api = &pod.containers[0];
        let db = env(api, "DATABASE_URL");
        assert!(db.value.is_none());
        let r = db.value_from.clone().unwrap().secret_key_ref.unwrap();
        // The runtime role, never the owner.
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("demo-postgres-app", "database-url")
        );
        let redis = env(api, "REDIS_URL")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(redis.name, "demo-redis-credentials");
        assert_eq!(
            env(api, "CADUCEUS_JWT_KEY_FILE").value.as_deref(),
            Some("/etc/caduceus/secrets/jwt.key")
        );
        assert_eq!(
            env(api, "CADUCEUS_PHI_KEYS_FILE").value.as_deref(),
            Some("/etc/caduceus/secrets/phi-keys.json")
        );
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "secrets")
            .unwrap();
        assert_eq!(
            vol.secret.unwrap().secret_name.as_deref(),
            Some("demo-api-secrets")
        );
        let mount = api
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "secrets")
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.mount_path, "/etc/caduceus/secrets");
    }

    /// The embedded Redis's CA (only `ca.crt`) and `CADUCEUS_REDIS_CA_FILE` for the server; a
    /// changed bundle rolls the pods. Nothing of it with another cache provider.
    #[test]
    fn the_embedded_redis_ca_is_mounted_and_named() {
        let p = platform(|_| {});
        let d = build(&p, &config_map::build(&p), Some("ca-hash"), None);
        let annotations = d
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations;
        assert_eq!(
            annotations.unwrap()[ANNOTATION_REDIS_CA_CHECKSUM],
            "ca-hash"
        );
        let pod = pod(&d);
        let api = &pod.containers[0];
        assert_eq!(
            env(api, "CADUCEUS_REDIS_CA_FILE").value.as_deref(),
            Some("/etc/caduceus/redis-ca/ca.crt")
        );
        assert!(api
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "redis-ca" && m.mount_path == "/etc/caduceus/redis-ca"));
        let ca = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "redis-ca")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("demo-redis-tls"));
        let items = ca.items.unwrap();
        assert_eq!(items.len(), 1, "the server key never reaches the API");
        assert_eq!(items[0].key, "ca.crt");

        let d = build_default(|s| s.cache.provider = CacheProvider::Disabled);
        let without = super::tests::pod(&d);
        assert!(!without
            .volumes
            .unwrap()
            .iter()
            .any(|v| v.name == "redis-ca"));
        assert!(without.containers[0]
            .env
            .iter()
            .flatten()
            .all(|e| e.name != "CADUCEUS_REDIS_CA_FILE"));
    }

    #[test]
    fn migrations_run_before_the_server() {
        let d = build_default(|_| {});
        let pod = pod(&d);
        let init = &pod.init_containers.unwrap()[0];
        assert_eq!(init.args.clone().unwrap(), ["db-setup"]);
        assert_eq!(init.image, pod.containers[0].image);
        // As the owner, setting up the runtime role the server connects as.
        let owner = env(init, "DATABASE_URL").value_from.clone().unwrap();
        assert_eq!(
            owner.secret_key_ref.unwrap().name,
            "demo-postgres-credentials"
        );
        assert_eq!(
            env(init, "CADUCEUS_APP_DB_USER").value.as_deref(),
            Some("caduceus_app")
        );
        let password = env(init, "CADUCEUS_APP_DB_PASSWORD")
            .value_from
            .clone()
            .unwrap();
        let password = password.secret_key_ref.unwrap();
        assert_eq!(
            (password.name.as_str(), password.key.as_str()),
            ("demo-postgres-app", "password")
        );
        let strategy = d.spec.unwrap().strategy.unwrap().rolling_update.unwrap();
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn provider_picks_database_secret() {
        let d = build_default(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        let r = env(&pod(&d).containers[0], "DATABASE_URL")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("demo-postgres-app", "database-url")
        );
        let d = build_default(|s| {
            s.database.provider = DatabaseProvider::External;
            s.database.secret_ref = Some(SecretKeyRef {
                name: "ext".into(),
                key: "conn".into(),
            });
            s.cache.provider = CacheProvider::Disabled;
        });
        let c = &pod(&d).containers[0];
        let r = env(c, "DATABASE_URL")
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("ext", "conn"));
        assert_eq!(env(c, "REDIS_URL").value.as_deref(), Some(""));
        // External: the user runs db-setup; no init container with owner credentials.
        assert!(pod(&d).init_containers.is_none());
    }

    #[test]
    fn replicas_follow_autoscaling_and_stopped() {
        assert_eq!(build_default(|_| {}).spec.unwrap().replicas, Some(2));
        assert_eq!(
            build_default(|s| s.api_server.autoscaling.enabled = true)
                .spec
                .unwrap()
                .replicas,
            None
        );
        assert_eq!(
            build_default(|s| s.stopped = true).spec.unwrap().replicas,
            Some(0)
        );
    }

    #[test]
    fn spread_over_zones_and_nodes_and_config_hash() {
        let d = build_default(|_| {});
        let pod_spec = pod(&d);
        let keys: Vec<String> = pod_spec
            .topology_spread_constraints
            .unwrap()
            .into_iter()
            .map(|t| t.topology_key)
            .collect();
        assert_eq!(
            keys,
            ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        );
        let a = d
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[ANNOTATION_CONFIG_HASH]
            .clone();
        let d2 = build_default(|s| s.security.access_token_ttl_minutes = 5);
        let b = d2
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[ANNOTATION_CONFIG_HASH]
            .clone();
        assert_ne!(a, b);
    }

    #[test]
    fn user_env_and_scheduling_are_passed_through() {
        let d = build_default(|s| {
            s.api_server.env.push(EnvVar {
                name: "FOO".into(),
                value: Some("bar".into()),
                ..Default::default()
            });
            s.api_server
                .node_selector
                .insert("pool".into(), "api".into());
        });
        let pod = pod(&d);
        assert_eq!(env(&pod.containers[0], "FOO").value.as_deref(), Some("bar"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "api");
    }

    #[test]
    fn from_backup_holds_the_api_at_zero_without_restoring_in_its_pods() {
        use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup, S3Destination};
        let from_backup = |s: &mut crate::crd::HealthcarePlatformSpec| {
            s.api_server.autoscaling.enabled = true;
            s.database.bootstrap = Some(DatabaseBootstrap {
                from_backup: Some(FromBackup {
                    name: "latest".into(),
                    source: BackupSource {
                        s3: Some(S3Destination {
                            endpoint: None,
                            bucket: "old".into(),
                            prefix: String::new(),
                            region: "eu-central-1".into(),
                            credentials_secret_ref: "s3".into(),
                            force_path_style: false,
                        }),
                        claim_name: None,
                    },
                    secret_ref: "old-key".into(),
                }),
            })
        };
        let pending = platform(from_backup);
        assert!(pending.restore_pending);
        let d = build(&pending, &config_map::build(&pending), None, None);
        // Held at 0 explicitly (the HPA is not built while restoring, see hpa.rs).
        assert_eq!(d.spec.clone().unwrap().replicas, Some(0));
        assert!(crate::desired::hpa::build(&pending).is_none());
        let held = pod(&d);
        let init: Vec<&str> = held
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, ["db-setup"], "no restore in the API pods");
        // No backup source reaches the API pods (no claim, no restore key, no S3 credentials).
        for v in held.volumes.iter().flatten() {
            assert!(v.persistent_volume_claim.is_none(), "{}", v.name);
            assert_ne!(
                v.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
                Some("old-key")
            );
        }
        assert!(held.containers[0]
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("AWS_")));

        // Restored: the HPA owns the replicas again.
        let mut restored = pending.clone();
        restored.restore_pending = false;
        let d = build(&restored, &config_map::build(&restored), None, None);
        assert_eq!(d.spec.unwrap().replicas, None);
        assert!(crate::desired::hpa::build(&restored).is_some());
        // Same pod template either way: lifting the hold rolls nothing.
        assert_eq!(
            pod(&build(&restored, &config_map::build(&restored), None, None)),
            pod(&build(&pending, &config_map::build(&pending), None, None))
        );
    }
}
