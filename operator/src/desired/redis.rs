//! Embedded Redis: a one-replica StatefulSet of the official `redis` image whose `requirepass`
//! comes from the generated Secret (as a config include, never on the command line), a Service
//! and `redis-cli ping` probes authenticated through `REDISCLI_AUTH`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::security::{
    container_security_context, pod_security_context, resources, scratch_volume, DATA_UID,
};
use super::{child_meta, component_version, RedisObjects};
use crate::crd::{CacheProvider, DEFAULT_REDIS_IMAGE};
use crate::names::{Component, REDIS_AUTH_CONF_KEY, REDIS_PASSWORD_KEY, REDIS_PORT};
use crate::validate::ValidatedPlatform;

/// Image of the embedded cache: `cache.imageRepository` (default [`DEFAULT_REDIS_IMAGE`]) tagged
/// `cache.version`.
pub fn image(p: &ValidatedPlatform) -> String {
    let cache = &p.spec.cache;
    let repository = cache
        .image_repository
        .as_deref()
        .unwrap_or(DEFAULT_REDIS_IMAGE);
    format!("{repository}:{}", cache.version)
}

const AUTH_DIR: &str = "/etc/redis/auth";

fn ping_probe(initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("redis-cli -h 127.0.0.1 -p {REDIS_PORT} ping | grep -q PONG"),
            ]),
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The StatefulSet and Service, or `None` unless the cache provider is `Embedded`.
pub fn build(p: &ValidatedPlatform) -> Option<RedisObjects> {
    let cache = &p.spec.cache;
    if cache.provider != CacheProvider::Embedded {
        return None;
    }
    let names = &p.names;
    let selector = names.selector(Component::Cache);
    let labels = names.labels(Component::Cache, &component_version(p, Component::Cache));
    let persistent = cache.persistence.enabled;

    let args = vec![
        "redis-server".to_string(),
        format!("{AUTH_DIR}/{REDIS_AUTH_CONF_KEY}"),
        "--port".into(),
        REDIS_PORT.to_string(),
        "--dir".into(),
        "/data".into(),
        "--appendonly".into(),
        if persistent { "yes" } else { "no" }.into(),
        "--save".into(),
        String::new(),
        "--protected-mode".into(),
        "yes".into(),
        "--bind".into(),
        "0.0.0.0".into(),
    ];

    let container = Container {
        name: "redis".into(),
        image: Some(image(p)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(args),
        env: Some(vec![EnvVar {
            name: "REDISCLI_AUTH".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.redis_credentials(),
                    key: REDIS_PASSWORD_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(&cache.resources)),
        security_context: Some(container_security_context(DATA_UID)),
        liveness_probe: Some(ping_probe(10, 10, 6)),
        readiness_probe: Some(ping_probe(2, 5, 3)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: names.data_volume().into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "auth".into(),
                mount_path: AUTH_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };

    let mut volumes = vec![
        Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.redis_credentials()),
                items: Some(vec![KeyToPath {
                    key: REDIS_AUTH_CONF_KEY.into(),
                    path: REDIS_AUTH_CONF_KEY.into(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Default::default()
        },
        scratch_volume("tmp", "64Mi", false),
    ];
    let claims = if persistent {
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(names.data_volume().into()),
                // Never the version: claim templates are immutable (an upgrade would fail).
                labels: Some(names.claim_labels(Component::Cache)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: cache.persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        cache.persistence.size.clone(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }])
    } else {
        volumes.push(scratch_volume(names.data_volume(), "512Mi", false));
        None
    };

    let stateful_set = StatefulSet {
        metadata: child_meta(p, names.redis(), Component::Cache),
        spec: Some(StatefulSetSpec {
            replicas: Some(if p.spec.stopped { 0 } else { 1 }),
            service_name: Some(names.redis()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security_context(DATA_UID)),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        }),
        status: None,
    };

    let service = Service {
        metadata: child_meta(p, names.redis(), Component::Cache),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String("redis".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Some(RedisObjects {
        stateful_set,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::security::container_violations;
    use crate::desired::test_support::platform;

    #[test]
    fn redis_requires_password_from_secret_without_argv_leak() {
        let p = platform(|_| {});
        let objs = build(&p).unwrap();
        let pod = objs.stateful_set.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert!(
            container_violations(c).is_empty(),
            "{:?}",
            container_violations(c)
        );
        let cmd = c.command.clone().unwrap();
        assert_eq!(cmd[1], "/etc/redis/auth/auth.conf");
        assert!(!cmd.iter().any(|a| a.contains("requirepass")));
        let auth = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "auth")
            .unwrap();
        assert_eq!(
            auth.secret.unwrap().secret_name.as_deref(),
            Some("demo-redis-credentials")
        );
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        assert_eq!(objs.service.spec.unwrap().ports.unwrap()[0].port, 6379);
    }

    #[test]
    fn persistence_uses_a_claim_template() {
        let p = platform(|s| s.cache.persistence.enabled = true);
        let sts = build(&p).unwrap().stateful_set.spec.unwrap();
        assert_eq!(sts.volume_claim_templates.unwrap().len(), 1);
        let p = platform(|_| {});
        let sts = build(&p).unwrap().stateful_set.spec.unwrap();
        assert!(sts.volume_claim_templates.is_none());
        assert!(sts
            .template
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some()));
    }

    #[test]
    fn claim_template_does_not_change_with_the_redis_version() {
        let claims = |version: &str| {
            let p = platform(|s| {
                s.cache.persistence.enabled = true;
                s.cache.version = version.into();
            });
            build(&p)
                .unwrap()
                .stateful_set
                .spec
                .unwrap()
                .volume_claim_templates
                .unwrap()
        };
        let old = claims("7.4.2");
        assert_eq!(old, claims("7.4.3"), "volumeClaimTemplates are immutable");
        let labels = old[0].metadata.labels.clone().unwrap();
        assert!(!labels.contains_key(crate::names::LABEL_VERSION));
        assert_eq!(labels[crate::names::LABEL_COMPONENT], "cache");
    }

    #[test]
    fn runs_as_a_high_uid_with_a_writable_volume() {
        use crate::desired::security::MIN_HIGH_UID;
        let p = platform(|s| s.cache.persistence.enabled = true);
        let pod = build(&p)
            .unwrap()
            .stateful_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let sc = pod.security_context.unwrap();
        assert!(sc.run_as_user.unwrap() >= MIN_HIGH_UID, "{sc:?}");
        assert_eq!(sc.fs_group, sc.run_as_group, "the AOF volume is writable");
        let c = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(c.run_as_user, sc.run_as_user);
    }

    #[test]
    fn image_is_the_official_redis_unless_the_spec_names_a_mirror() {
        let image = |p: &ValidatedPlatform| {
            let pod = build(p).unwrap().stateful_set.spec.unwrap().template.spec;
            pod.unwrap().containers[0].image.clone().unwrap()
        };
        assert_eq!(
            image(&platform(|_| {})),
            "docker.io/library/redis:7.4.2",
            "default unchanged"
        );
        let p = platform(|s| {
            s.cache.image_repository = Some("registry.clinic.example:5000/mirror/redis".into());
            s.cache.version = "7.4.3".into();
        });
        assert_eq!(image(&p), "registry.clinic.example:5000/mirror/redis:7.4.3");
    }

    #[test]
    fn only_embedded_provider_builds_redis() {
        let p = platform(|s| s.cache.provider = CacheProvider::Disabled);
        assert!(build(&p).is_none());
        let p = platform(|s| {
            s.cache.provider = CacheProvider::External;
            s.cache.secret_ref = Some(crate::crd::SecretKeyRef {
                name: "r".into(),
                key: "url".into(),
            });
        });
        assert!(build(&p).is_none());
    }
}
