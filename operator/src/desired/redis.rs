//! Embedded Redis: a one-replica StatefulSet of the official `redis` image whose `requirepass`
//! comes from the generated Secret (as a config include, never on the command line), a Service
//! and `redis-cli ping` probes authenticated through `REDISCLI_AUTH`. Redis serves TLS only
//! ([`TLS_ARGS`]): the operator-issued certificate of `<platform>-redis-tls`
//! ([`super::redis_tls`]), no plaintext port, passwords (not client certificates) authenticate.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};

use super::certs::{CA_CERT_KEY, KEY_FILE_MODE, SERVER_CERT_KEY, SERVER_KEY_KEY};
use super::data_store::{self, claim_template, stateful_set_spec};
use super::pod::{
    cluster_ip_service, container_port, exec_probe, mount, read_only_mount, secret_env,
    secret_volume, service_port,
};
use super::redis_tls::SERVER_TLS_DIR;
use super::security::scratch_volume;
use super::{child_meta, RedisObjects};
use crate::crd::{CacheProvider, DEFAULT_REDIS_IMAGE};
use crate::names::{
    Component, ANNOTATION_TLS_CHECKSUM, REDIS_AUTH_CONF_KEY, REDIS_PASSWORD_KEY, REDIS_PORT,
};
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

/// The TLS part of the Redis command line: no plaintext port (`port 0`), TLS on [`REDIS_PORT`]
/// with the server certificate and key of `<platform>-redis-tls`, TLS 1.2 or 1.3, and no client
/// certificates (`tls-auth-clients no`: clients authenticate with the password). `ca.crt` is
/// Redis's `tls-ca-cert-file` and the probes' `--cacert`. A `redis-server` started with these
/// arguments is what `operator/tests/redis_tls.rs` connects to.
pub fn tls_args(tls_dir: &str) -> Vec<String> {
    [
        "--port",
        "0",
        "--tls-port",
        &REDIS_PORT.to_string(),
        "--tls-cert-file",
        &format!("{tls_dir}/{SERVER_CERT_KEY}"),
        "--tls-key-file",
        &format!("{tls_dir}/{SERVER_KEY_KEY}"),
        "--tls-ca-cert-file",
        &format!("{tls_dir}/{CA_CERT_KEY}"),
        "--tls-auth-clients",
        "no",
        "--tls-protocols",
        "TLSv1.2 TLSv1.3",
    ]
    .map(String::from)
    .to_vec()
}

/// The probes' `redis-cli` command: TLS, the server certificate verified against the mounted CA.
pub fn cli(tls_dir: &str) -> String {
    format!("redis-cli --tls --cacert {tls_dir}/{CA_CERT_KEY} -h 127.0.0.1 -p {REDIS_PORT}")
}

fn ping_probe(initial_delay: i32, period: i32, failures: i32) -> Probe {
    exec_probe(
        format!("{} ping | grep -q PONG", cli(SERVER_TLS_DIR)),
        initial_delay,
        period,
        3,
        failures,
    )
}

/// The StatefulSet and Service, or `None` unless the cache provider is `Embedded`.
/// `tls_checksum` (of the server certificate and key) goes on the pod template, so a renewed
/// certificate restarts Redis (it reads the certificate at start).
pub fn build(p: &ValidatedPlatform, tls_checksum: Option<&str>) -> Option<RedisObjects> {
    let cache = &p.spec.cache;
    if cache.provider != CacheProvider::Embedded {
        return None;
    }
    let names = &p.names;
    let persistent = cache.persistence.enabled;

    let mut args = vec![
        "redis-server".to_string(),
        format!("{AUTH_DIR}/{REDIS_AUTH_CONF_KEY}"),
    ];
    args.extend(tls_args(SERVER_TLS_DIR));
    args.extend([
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
    ]);

    let container = Container {
        command: Some(args),
        env: Some(vec![secret_env(
            "REDISCLI_AUTH",
            names.redis_credentials(),
            REDIS_PASSWORD_KEY,
        )]),
        ports: Some(vec![container_port("redis", REDIS_PORT)]),
        liveness_probe: Some(ping_probe(10, 10, 6)),
        readiness_probe: Some(ping_probe(2, 5, 3)),
        volume_mounts: Some(vec![
            mount(names.data_volume(), "/data"),
            read_only_mount("auth", AUTH_DIR),
            read_only_mount("tls", SERVER_TLS_DIR),
            mount("tmp", "/tmp"),
        ]),
        ..data_store::container("redis", image(p), &cache.resources)
    };

    let mut volumes = vec![
        secret_volume(
            "auth",
            names.redis_credentials(),
            &[REDIS_AUTH_CONF_KEY],
            None,
            0o440,
        ),
        // Root-owned, group fsGroup (0640). Never the CA's key.
        secret_volume(
            "tls",
            names.redis_tls(),
            &[SERVER_CERT_KEY, SERVER_KEY_KEY, CA_CERT_KEY],
            None,
            KEY_FILE_MODE,
        ),
        scratch_volume("tmp", "64Mi", false),
    ];
    let claims = if persistent {
        Some(vec![claim_template(
            p,
            Component::Cache,
            cache.persistence.storage_class_name.clone(),
            cache.persistence.size.clone(),
        )])
    } else {
        volumes.push(scratch_volume(names.data_volume(), "512Mi", false));
        None
    };

    let stateful_set = StatefulSet {
        metadata: child_meta(p, names.redis(), Component::Cache),
        spec: Some(stateful_set_spec(
            p,
            Component::Cache,
            names.redis(),
            tls_checksum
                .map(|c| BTreeMap::from([(ANNOTATION_TLS_CHECKSUM.to_string(), c.to_string())])),
            PodSpec {
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            },
            claims,
        )),
        status: None,
    };

    let service = cluster_ip_service(
        p,
        names.redis(),
        Component::Cache,
        vec![service_port("redis", REDIS_PORT)],
    );
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
        let objs = build(&p, None).unwrap();
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

    /// TLS only, with the operator-issued certificate; the CA's key never reaches Redis; the
    /// probes verify the certificate; a renewed certificate restarts Redis.
    #[test]
    fn redis_serves_tls_only_with_the_issued_certificate() {
        let p = platform(|_| {});
        let sts = build(&p, Some("abc")).unwrap().stateful_set.spec.unwrap();
        let annotations = sts.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[ANNOTATION_TLS_CHECKSUM], "abc");
        let pod = sts.template.spec.unwrap();
        let c = &pod.containers[0];
        let cmd = c.command.clone().unwrap();
        for pair in [
            ["--port", "0"],
            ["--tls-port", "6379"],
            ["--tls-auth-clients", "no"],
            ["--tls-cert-file", "/etc/redis/tls/tls.crt"],
            ["--tls-key-file", "/etc/redis/tls/tls.key"],
        ] {
            assert!(cmd.windows(2).any(|w| w == pair), "{pair:?} in {cmd:?}");
        }
        let tls = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(tls.secret_name.as_deref(), Some("demo-redis-tls"));
        let keys: Vec<String> = tls.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["tls.crt", "tls.key", "ca.crt"], "never ca.key");
        for probe in [&c.readiness_probe, &c.liveness_probe] {
            let script = probe
                .clone()
                .unwrap()
                .exec
                .unwrap()
                .command
                .unwrap()
                .join(" ");
            assert!(
                script.contains("redis-cli --tls --cacert /etc/redis/tls/ca.crt"),
                "{script}"
            );
        }
    }

    #[test]
    fn persistence_uses_a_claim_template() {
        let p = platform(|s| s.cache.persistence.enabled = true);
        let sts = build(&p, None).unwrap().stateful_set.spec.unwrap();
        assert_eq!(sts.volume_claim_templates.unwrap().len(), 1);
        let p = platform(|_| {});
        let sts = build(&p, None).unwrap().stateful_set.spec.unwrap();
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
            build(&p, None)
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
        let pod = build(&p, None)
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
            let pod = build(p, None)
                .unwrap()
                .stateful_set
                .spec
                .unwrap()
                .template
                .spec;
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
        assert!(build(&p, None).is_none());
        let p = platform(|s| {
            s.cache.provider = CacheProvider::External;
            s.cache.secret_ref = Some(crate::crd::SecretKeyRef {
                name: "r".into(),
                key: "url".into(),
            });
        });
        assert!(build(&p, None).is_none());
    }
}
