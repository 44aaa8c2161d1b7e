//! Embedded PostgreSQL: a one-replica StatefulSet of the official `postgres` image, a headless
//! governing Service, a client Service, a PVC template and `pg_isready` probes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, Probe, Service, ServiceSpec, Volume,
};

use super::data_store::{self, claim_template, stateful_set_spec};
use super::pod::{
    cluster_ip_service, container_port, env, exec_probe, mount, read_only_mount, secret_env,
    secret_volume, service_port,
};
use super::postgres_tls::{KEY_FILE_MODE, SERVER_CERT_KEY, SERVER_KEY_KEY, SERVER_TLS_DIR};
use super::security::scratch_volume;
use super::{child_meta, PostgresObjects};
use crate::crd::{DatabaseProvider, DEFAULT_POSTGRES_IMAGE};
use crate::names::{
    Component, ANNOTATION_TLS_CHECKSUM, PG_DATABASE_KEY, PG_PASSWORD_KEY, PG_USERNAME_KEY,
    POSTGRES_PORT,
};
use crate::validate::ValidatedPlatform;

/// Image of the embedded database: `database.imageRepository` (default
/// [`DEFAULT_POSTGRES_IMAGE`]) tagged `database.version`.
pub fn image(p: &ValidatedPlatform) -> String {
    let db = &p.spec.database;
    let repository = db
        .image_repository
        .as_deref()
        .unwrap_or(DEFAULT_POSTGRES_IMAGE);
    format!("{repository}:{}", db.version)
}

const DATA_DIR: &str = "/var/lib/postgresql/data";
/// `PGDATA`: a directory on the volume (not its root, which may hold `lost+found`).
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Name of the init container that hands the data directory over to
/// [`DATA_UID`](super::security::DATA_UID).
pub const DATA_OWNER_CONTAINER: &str = "data-owner";

/// Hands a data directory written by another uid (999, the image's `postgres` user, which earlier
/// operator versions ran as) over to the pod's uid. Postgres refuses to start on a data directory
/// it does not own, and a restricted pod cannot `chown`; the pod's fsGroup gave the group
/// read/write access to every file, so the directory is copied (the copy belongs to the pod's
/// uid) and swapped in. The swap survives an interruption at any point (a marker file says the
/// copy is complete), and the original is removed only after the copy took its place. Needs free
/// space for one copy; nothing happens on a fresh volume or once the directory is ours.
const DATA_OWNER_SCRIPT: &str = r#"set -eu
d="$PGDATA"; new="$d.caduceus-copy"; old="$d.caduceus-old"; done_mark=".caduceus-copy-complete"
me="$(id -u)"
if [ ! -e "$d" ]; then
  if [ -f "$new/$done_mark" ]; then mv "$new" "$d"
  elif [ -e "$old" ]; then mv "$old" "$d"
  fi
fi
[ -e "$d" ] || exit 0
rm -f "$d/$done_mark" 2>/dev/null || true
owner="$(stat -c %u "$d")"
if [ "$owner" = "$me" ]; then
  if [ -e "$old" ]; then rm -rf "$old" || echo "could not remove $old; delete it by hand" >&2; fi
  exit 0
fi
echo "the data directory belongs to uid $owner, Postgres runs as uid $me: copying it (needs as much free space as it uses)"
rm -rf "$new"
if ! cp -a "$d" "$new"; then
  rm -rf "$new"
  echo "copying the data directory failed: raise spec.database.storage.size if the volume is full, or use a StorageClass whose volumes apply the pod's fsGroup" >&2
  exit 1
fi
chmod -R g-w,o-rwx "$new"
chmod 0700 "$new"
touch "$new/$done_mark"
mv "$d" "$old"
mv "$new" "$d"
rm -f "$d/$done_mark"
rm -rf "$old" || echo "could not remove $old; delete it by hand" >&2
echo "the data directory now belongs to uid $me"
"#;

/// `pg_hba.conf` of the embedded database: TCP clients only over TLS (`hostssl`) and only with a
/// SCRAM password — a plaintext TCP connection is refused whatever its credentials. The Unix
/// socket (inside the container only: the image's init scripts, nothing else shares the pod)
/// keeps the image's rule.
pub const PG_HBA: &str = "\
# Caduceus (operator-managed): TCP only over TLS, SCRAM passwords.
local   all  all                trust
hostssl all  all  0.0.0.0/0     scram-sha-256
hostssl all  all  ::/0          scram-sha-256
";
/// Where [`PG_HBA`] is mounted.
pub const HBA_DIR: &str = "/etc/caduceus/pg-hba";
/// Its file name (the ConfigMap key).
pub const HBA_FILE: &str = "pg_hba.conf";

/// The ConfigMap holding [`PG_HBA`].
pub fn hba_config_map(p: &ValidatedPlatform) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(p, p.names.postgres_hba(), Component::Database),
        data: Some(BTreeMap::from([(HBA_FILE.to_string(), PG_HBA.to_string())])),
        ..Default::default()
    }
}

/// Postgres connections one API pod opens at most: its pool, its grouped-statement workers and
/// its audit writer
/// (`caduceus-api`: `state::POOL_SIZE` + `state::BATCH_KINDS` × `batch::WORKERS` +
/// `state::AUDIT_CONNECTIONS`; docs/contracts.md).
pub const API_CONNECTIONS_PER_POD: i32 =
    caduceus_contract::settings::API_CONNECTIONS_PER_POD as i32;
/// Connections beyond the API pods': backup and restore jobs, `migrate` init containers,
/// `rotate-keys`/`create-admin`, an operator's `psql`, and Postgres' own superuser reserve.
const OTHER_CONNECTIONS: i32 = 20;

/// `max_connections` for the platform's database: every API pod the Deployment can run at once
/// (the autoscaler's maximum, or the fixed replica count, plus the one surge pod of a rolling
/// update) at [`API_CONNECTIONS_PER_POD`], plus [`OTHER_CONNECTIONS`]; rounded up to a multiple
/// of 50 so small replica changes do not restart Postgres, never below Postgres' default 100.
pub fn max_connections(p: &ValidatedPlatform) -> i32 {
    let api = &p.spec.api_server;
    let pods = if api.autoscaling.enabled {
        api.autoscaling.max_replicas
    } else {
        api.replicas
    } + 1;
    let needed = pods * API_CONNECTIONS_PER_POD + OTHER_CONNECTIONS;
    ((needed + 49) / 50 * 50).max(100)
}

fn pg_isready_probe(initial_delay: i32, period: i32, failures: i32) -> Probe {
    exec_probe(
        format!(
            "exec pg_isready -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -h 127.0.0.1 -p {POSTGRES_PORT}"
        ),
        initial_delay,
        period,
        5,
        failures,
    )
}

/// The StatefulSet and Services, or `None` unless the provider is `Embedded`. `tls_checksum`
/// (of the server certificate and key) goes on the pod template, so a renewed certificate
/// restarts Postgres (it reads the certificate at start).
pub fn build(p: &ValidatedPlatform, tls_checksum: Option<&str>) -> Option<PostgresObjects> {
    if p.spec.database.provider != DatabaseProvider::Embedded {
        return None;
    }
    let names = &p.names;
    let db = &p.spec.database;
    let credentials = names.postgres_credentials();

    let container = Container {
        // TLS with the operator-issued certificate (`<platform>-postgres-tls`).
        args: Some(
            [
                "postgres".to_string(),
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={SERVER_TLS_DIR}/{SERVER_CERT_KEY}"),
                "-c".into(),
                format!("ssl_key_file={SERVER_TLS_DIR}/{SERVER_KEY_KEY}"),
                "-c".into(),
                "ssl_min_protocol_version=TLSv1.2".into(),
                "-c".into(),
                format!("hba_file={HBA_DIR}/{HBA_FILE}"),
                "-c".into(),
                format!("max_connections={}", max_connections(p)),
            ]
            .to_vec(),
        ),
        env: Some(vec![
            secret_env("POSTGRES_USER", &credentials, PG_USERNAME_KEY),
            secret_env("POSTGRES_PASSWORD", &credentials, PG_PASSWORD_KEY),
            secret_env("POSTGRES_DB", &credentials, PG_DATABASE_KEY),
            env("PGDATA", PGDATA),
            env(
                "POSTGRES_INITDB_ARGS",
                "--auth-host=scram-sha-256 --data-checksums",
            ),
        ]),
        ports: Some(vec![container_port("postgres", POSTGRES_PORT)]),
        startup_probe: Some(pg_isready_probe(5, 5, 60)),
        liveness_probe: Some(pg_isready_probe(0, 10, 6)),
        readiness_probe: Some(pg_isready_probe(0, 5, 3)),
        volume_mounts: Some(vec![
            mount(names.data_volume(), DATA_DIR),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
            mount("shm", "/dev/shm"),
            read_only_mount("tls", SERVER_TLS_DIR),
            read_only_mount("hba", HBA_DIR),
        ]),
        ..data_store::container("postgres", image(p), &db.resources)
    };

    let data_owner = Container {
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            DATA_OWNER_SCRIPT.into(),
        ]),
        env: Some(vec![env("PGDATA", PGDATA)]),
        volume_mounts: Some(vec![mount(names.data_volume(), DATA_DIR)]),
        ..data_store::container(DATA_OWNER_CONTAINER, image(p), &db.resources)
    };

    let claim = claim_template(
        p,
        Component::Database,
        db.storage.storage_class_name.clone(),
        db.storage.size.clone(),
    );

    let pod = PodSpec {
        termination_grace_period_seconds: Some(60),
        init_containers: Some(vec![data_owner]),
        containers: vec![container],
        volumes: Some(vec![
            scratch_volume("run", "16Mi", false),
            scratch_volume("tmp", "256Mi", false),
            scratch_volume("shm", "256Mi", true),
            // Root-owned, group fsGroup: Postgres accepts 0640 keys. Never the CA's key.
            secret_volume(
                "tls",
                names.postgres_tls(),
                &[SERVER_CERT_KEY, SERVER_KEY_KEY],
                None,
                KEY_FILE_MODE,
            ),
            Volume {
                name: "hba".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names.postgres_hba(),
                    default_mode: Some(0o444),
                    optional: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let annotations = tls_checksum
        .map(|c| BTreeMap::from([(ANNOTATION_TLS_CHECKSUM.to_string(), c.to_string())]));
    let stateful_set = StatefulSet {
        metadata: child_meta(p, names.postgres(), Component::Database),
        spec: Some(StatefulSetSpec {
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..Default::default()
                }),
            }),
            ..stateful_set_spec(
                p,
                Component::Database,
                names.postgres_headless(),
                annotations,
                pod,
                Some(vec![claim]),
            )
        }),
        status: None,
    };

    let port = service_port("postgres", POSTGRES_PORT);
    let headless_service = Service {
        metadata: child_meta(p, names.postgres_headless(), Component::Database),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector(Component::Database)),
            ports: Some(vec![port.clone()]),
            ..Default::default()
        }),
        status: None,
    };
    let service = cluster_ip_service(p, names.postgres(), Component::Database, vec![port]);
    Some(PostgresObjects {
        hba: hba_config_map(p),
        stateful_set,
        headless_service,
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::security::container_violations;
    use crate::desired::test_support::platform;

    #[test]
    fn tcp_clients_only_over_tls_with_scram() {
        let rules: Vec<Vec<&str>> = PG_HBA
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        for rule in &rules {
            match rule[0] {
                "local" => {}
                "hostssl" => assert_eq!(rule.last(), Some(&"scram-sha-256"), "{rule:?}"),
                other => panic!("{other} admits TCP without TLS: {rule:?}"),
            }
        }
        assert!(rules
            .iter()
            .any(|r| r[0] == "hostssl" && r[3] == "0.0.0.0/0"));
        assert!(rules.iter().any(|r| r[0] == "hostssl" && r[3] == "::/0"));
        let p = platform(|_| {});
        let objects = build(&p, None).unwrap();
        assert_eq!(objects.hba.data.unwrap()[HBA_FILE], PG_HBA);
        let pod = objects.stateful_set.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert!(c
            .args
            .iter()
            .flatten()
            .any(|a| a == &format!("hba_file={HBA_DIR}/{HBA_FILE}")));
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "hba")
            .unwrap();
        assert_eq!((m.mount_path.as_str(), m.read_only), (HBA_DIR, Some(true)));
        let v = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "hba")
            .unwrap();
        assert_eq!(v.config_map.unwrap().name, "demo-postgres-hba");
    }

    #[test]
    fn max_connections_covers_every_api_pod_the_deployment_can_run() {
        // 2 replicas + 1 surge pod: 68 needed, Postgres' default 100 kept
        assert_eq!(max_connections(&platform(|_| {})), 100);
        // autoscaling to 10 + 1 surge: 11 × 16 + 20 = 196 -> 200
        let p = platform(|s| {
            s.api_server.autoscaling.enabled = true;
            s.api_server.autoscaling.max_replicas = 10;
        });
        assert_eq!(max_connections(&p), 200);
        // the autoscaler's maximum counts, not the fixed replica count
        let p = platform(|s| {
            s.api_server.replicas = 1;
            s.api_server.autoscaling.enabled = true;
            s.api_server.autoscaling.max_replicas = 100;
        });
        assert_eq!(max_connections(&p), 1650);
        // without autoscaling: 30 + 1 pods = 516 -> 550
        assert_eq!(
            max_connections(&platform(|s| s.api_server.replicas = 30)),
            550
        );
        // a small change does not move it (no Postgres restart)
        let a = platform(|s| s.api_server.replicas = 12);
        let b = platform(|s| s.api_server.replicas = 13);
        assert_eq!(max_connections(&a), max_connections(&b));
    }

    #[test]
    fn embedded_postgres_gets_max_connections() {
        let p = platform(|s| {
            s.api_server.autoscaling.enabled = true;
            s.api_server.autoscaling.max_replicas = 10;
        });
        let objs = build(&p, None).unwrap();
        let pod = objs.stateful_set.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        let i = args
            .iter()
            .position(|a| a == "max_connections=200")
            .expect("max_connections argument");
        assert_eq!(args[i - 1], "-c");
    }

    #[test]
    fn image_repository_overrides_the_official_postgres_image() {
        let images = |p: &ValidatedPlatform| {
            let pod = build(p, None)
                .unwrap()
                .stateful_set
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let init = pod.init_containers.unwrap();
            (
                pod.containers[0].image.clone().unwrap(),
                init[0].image.clone().unwrap(),
            )
        };
        let (main, owner) = images(&platform(|_| {}));
        assert_eq!(main, "docker.io/library/postgres:16.6", "default unchanged");
        assert_eq!(owner, main);
        let p = platform(|s| {
            s.database.image_repository =
                Some("registry.clinic.example:5000/mirror/postgres".into());
        });
        let (main, owner) = images(&p);
        assert_eq!(main, "registry.clinic.example:5000/mirror/postgres:16.6");
        assert_eq!(
            owner, main,
            "the data-owner init container runs the same image"
        );
    }

    #[test]
    fn embedded_postgres_is_hardened_and_probed() {
        let p = platform(|s| s.database.version = "16.6".into());
        let objs = build(&p, None).unwrap();
        let sts = objs.stateful_set.spec.unwrap();
        assert_eq!(sts.replicas, Some(1));
        assert_eq!(sts.service_name.as_deref(), Some("demo-postgres-headless"));
        let pod = sts.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("docker.io/library/postgres:16.6"));
        assert!(
            container_violations(c).is_empty(),
            "{:?}",
            container_violations(c)
        );
        let probe = c.readiness_probe.as_ref().unwrap();
        assert!(probe.exec.as_ref().unwrap().command.as_ref().unwrap()[2].contains("pg_isready"));
        // The password comes from the Secret, never a literal.
        let env = c.env.as_ref().unwrap();
        let pw = env.iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        assert!(pw.value.is_none());
        assert_eq!(
            pw.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "demo-postgres-credentials"
        );
        let claim = &sts.volume_claim_templates.unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "10Gi"
        );
        assert_eq!(
            objs.headless_service.spec.unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(objs.service.metadata.name.as_deref(), Some("demo-postgres"));
    }

    #[test]
    fn claim_template_does_not_change_with_the_postgres_version() {
        let claims = |version: &str| {
            let p = platform(|s| s.database.version = version.into());
            build(&p, None)
                .unwrap()
                .stateful_set
                .spec
                .unwrap()
                .volume_claim_templates
                .unwrap()
        };
        let old = claims("16.6");
        assert_eq!(old, claims("16.7"), "volumeClaimTemplates are immutable");
        let labels = old[0].metadata.labels.clone().unwrap();
        assert!(!labels.contains_key(crate::names::LABEL_VERSION));
        assert_eq!(labels[crate::names::LABEL_COMPONENT], "database");
        assert_eq!(labels[crate::names::LABEL_INSTANCE], "demo");
    }

    #[test]
    fn runs_as_a_high_uid_and_hands_old_data_over_to_it() {
        use crate::desired::security::{DATA_UID, MIN_HIGH_UID};
        let sts = build(&platform(|_| {}), None).unwrap().stateful_set;
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let sc = pod.security_context.clone().unwrap();
        assert!(sc.run_as_user.unwrap() >= MIN_HIGH_UID, "{sc:?}");
        assert_eq!(sc.fs_group, sc.run_as_group, "the data volume is writable");
        assert_eq!(
            sc.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch"),
            "a recursive ownership change on every start would break Postgres' 0700 data directory"
        );
        let init = pod.init_containers.clone().unwrap();
        assert_eq!(init.len(), 1);
        let owner = &init[0];
        assert_eq!(owner.name, DATA_OWNER_CONTAINER);
        assert!(
            container_violations(owner).is_empty(),
            "{:?}",
            container_violations(owner)
        );
        assert_eq!(
            owner.security_context.as_ref().unwrap().run_as_user,
            Some(DATA_UID)
        );
        assert_eq!(owner.image, pod.containers[0].image);
        let mount = &owner.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            ("data", DATA_DIR)
        );
        let pgdata = |c: &Container| {
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == "PGDATA")
                .and_then(|e| e.value.clone())
        };
        assert_eq!(pgdata(owner), pgdata(&pod.containers[0]));
        let script = &owner.command.as_ref().unwrap()[2];
        assert!(script.contains("cp -a") && script.contains("stat -c %u"));
    }

    #[test]
    fn data_owner_script_is_valid_shell_and_leaves_fresh_and_owned_data_alone() {
        let dir = std::env::temp_dir().join(format!("caduceus-pgdata-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pgdata = dir.join("pgdata");
        let run = || {
            std::process::Command::new("/bin/sh")
                .args(["-c", DATA_OWNER_SCRIPT])
                .env("PGDATA", &pgdata)
                .output()
                .expect("sh runs")
        };
        // A fresh volume: nothing to do, nothing created.
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert!(!pgdata.exists());
        // The directory is ours already: untouched.
        std::fs::create_dir(&pgdata).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "16\n").unwrap();
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
            "16\n"
        );
        // Interrupted between the two renames: the complete copy is put in place.
        let copy = dir.join("pgdata.caduceus-copy");
        std::fs::rename(&pgdata, &copy).unwrap();
        std::fs::write(copy.join(".caduceus-copy-complete"), "").unwrap();
        std::fs::create_dir(dir.join("pgdata.caduceus-old")).unwrap();
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert!(pgdata.join("PG_VERSION").exists());
        assert!(!pgdata.join(".caduceus-copy-complete").exists());
        assert!(!copy.exists() && !dir.join("pgdata.caduceus-old").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn selector_matches_pod_labels() {
        let p = platform(|_| {});
        let sts = build(&p, None).unwrap().stateful_set.spec.unwrap();
        let sel = sts.selector.match_labels.unwrap();
        let labels = sts.template.metadata.unwrap().labels.unwrap();
        assert!(sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn stopped_scales_to_zero_other_providers_have_none() {
        let p = platform(|s| s.stopped = true);
        assert_eq!(
            build(&p, None).unwrap().stateful_set.spec.unwrap().replicas,
            Some(0)
        );
        let p = platform(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        assert!(build(&p, None).is_none());
    }
}
