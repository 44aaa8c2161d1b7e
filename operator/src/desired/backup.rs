//! Backups (Embedded and External databases): a CronJob running the `caduceus-backup` agent
//! (docs/contracts.md), its NetworkPolicies, the backup-key Secret (generated once, never
//! overwritten), the PVC of a `pvc` destination, and the Job of an on-demand backup
//! (`caduceus.io/backup-now: <token>`).
//!
//! - The pod is PSS "restricted": non-root uid 65532, read-only root, no capabilities, seccomp
//!   RuntimeDefault, no service-account token. `DATABASE_URL` and the S3 credentials come from
//!   `secretKeyRef`s; the key file is a read-only Secret volume.
//! - The agent writes its result line to `/dev/termination-log`; [`super::backup_status`] reads it
//!   from the pods' `state.terminated.message`.
//! - After each successful backup the agent prunes with `retention.days` / `retention.minCount`.
//! - CloudNativePG platforms get no CronJob: backups are delegated to CloudNativePG
//!   ([`super::backup_cnpg`]).

use caduceus_contract::key_files::{self, BackupKeyFile};
use caduceus_contract::settings;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodTemplateSpec, Secret,
    Volume,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::agent::{self, s3_env, s3_url, BACKUP_KEY_FILE, TERMINATION_LOG};
use super::deployment::database_url_env;
use super::network_policy::{database_egress, policy, port, postgres_admits};
use super::pod::{claim_spec, env, mount};
use super::secrets::SecretData;
use super::{child_meta, ExistingSecrets, SecretGenerator};
use crate::crd::{DatabaseProvider, S3Destination};
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// Default repository of the backup agent image (`spec.backup.image.repository`); the default
/// tag is `<api version>-pg<database major>` so the image carries `pg_dump`/`pg_restore` of the
/// database's major version.
pub const BACKUP_IMAGE: &str = crate::crd::DEFAULT_BACKUP_IMAGE;
/// Where the key Secret is mounted.
pub const BACKUP_KEY_MOUNT: &str = "/etc/caduceus/backup";
/// Where a `pvc` destination is mounted.
pub const BACKUP_PVC_MOUNT: &str = "/var/lib/caduceus-backup";
/// Name of the agent's container (status reads its termination message).
pub const CONTAINER: &str = "backup";
/// Platform annotation requesting an on-demand backup; each new value runs one Job.
pub const ANNOTATION_BACKUP_NOW: &str = "caduceus.io/backup-now";
/// Label on Jobs created for `caduceus.io/backup-now` (value: hash of the token).
pub const LABEL_BACKUP_TRIGGER: &str = "caduceus.io/backup-trigger";
/// An on-demand Job (and its pod, with the result line) is deleted this long after it finished;
/// `status.backup` keeps what it recorded from it.
pub const ON_DEMAND_JOB_TTL_SECONDS: i32 = 7 * 24 * 3600;
/// Finished scheduled Jobs the CronJob keeps, per outcome (older ones are deleted by the CronJob
/// controller; `status.backup` keeps what it recorded from them).
pub const JOBS_HISTORY_LIMIT: i32 = 3;

/// Whether this platform's backups run as our CronJob (not delegated, not disabled).
pub fn agent_backups(p: &ValidatedPlatform) -> bool {
    p.spec.backup.enabled && p.spec.database.provider != DatabaseProvider::CloudNativePG
}

/// The Secret holding the backup key: the user's `encryptionKeySecretRef` or `<platform>-backup-key`.
pub fn key_secret_name(p: &ValidatedPlatform) -> String {
    p.spec
        .backup
        .encryption_key_secret_ref
        .clone()
        .unwrap_or_else(|| p.names.backup_key())
}

/// `s3://bucket/prefix` or the mounted PVC as `file://`.
pub fn destination_url(p: &ValidatedPlatform) -> String {
    match &p.spec.backup.destination.s3 {
        Some(s3) => s3_url(s3),
        None => format!("file://{BACKUP_PVC_MOUNT}"),
    }
}

/// The agent container running `args` (`backup`, `restore`, ...).
pub fn agent_container(p: &ValidatedPlatform, name: &str, args: Vec<String>) -> Container {
    let mut env_vars = vec![
        database_url_env(p),
        env(settings::BACKUP_DESTINATION, destination_url(p)),
        env(
            settings::BACKUP_KEY_FILE,
            format!("{BACKUP_KEY_MOUNT}/{BACKUP_KEY_FILE}"),
        ),
    ];
    let mut mounts = agent::mounts(p, "backup-key", BACKUP_KEY_MOUNT);
    match &p.spec.backup.destination.s3 {
        Some(s3) => env_vars.extend(s3_env(s3)),
        None => mounts.push(mount("backups", BACKUP_PVC_MOUNT)),
    }
    agent::container(p, name, args, env_vars, mounts)
}

/// Volumes of the agent pod: key Secret (0400), /tmp, and the PVC of a `pvc` destination.
pub fn agent_volumes(p: &ValidatedPlatform) -> Vec<Volume> {
    let mut volumes = agent::volumes(p, "backup-key", key_secret_name(p));
    if p.spec.backup.destination.s3.is_none() {
        volumes.push(Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: p.names.backup_pvc(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
    }
    volumes
}

fn pod_template(p: &ValidatedPlatform, container: Container) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(p.names.labels(Component::Backup, &p.api_version)),
            ..Default::default()
        }),
        spec: Some(agent::pod_spec(p, container, agent_volumes(p))),
    }
}

fn backup_args(p: &ValidatedPlatform) -> Vec<String> {
    let r = &p.spec.backup.retention;
    vec![
        "backup".into(),
        "--termination-log".into(),
        TERMINATION_LOG.into(),
        "--retention-days".into(),
        r.days.to_string(),
        "--min-count".into(),
        r.min_count.to_string(),
    ]
}

fn job_spec(p: &ValidatedPlatform) -> JobSpec {
    JobSpec {
        backoff_limit: Some(2),
        // A stuck dump must not block the next schedule forever (concurrencyPolicy Forbid).
        active_deadline_seconds: Some(6 * 3600),
        template: pod_template(p, agent_container(p, CONTAINER, backup_args(p))),
        ..Default::default()
    }
}

/// The backup CronJob, or `None` when backups are disabled or delegated to CloudNativePG.
pub fn cron_job(p: &ValidatedPlatform) -> Option<CronJob> {
    if !agent_backups(p) {
        return None;
    }
    let b = &p.spec.backup;
    Some(CronJob {
        metadata: child_meta(p, p.names.backup_cron_job(), Component::Backup),
        spec: Some(CronJobSpec {
            schedule: b.schedule.clone(),
            time_zone: Some("Etc/UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(600),
            successful_jobs_history_limit: Some(JOBS_HISTORY_LIMIT),
            failed_jobs_history_limit: Some(JOBS_HISTORY_LIMIT),
            // A stopped platform has no database to dump.
            suspend: Some(p.spec.stopped),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(p.names.labels(Component::Backup, &p.api_version)),
                    ..Default::default()
                }),
                spec: Some(job_spec(p)),
            },
        }),
        status: None,
    })
}

/// Short, label-safe digest of an on-demand token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Job of an on-demand backup for the platform's `caduceus.io/backup-now` token: the CronJob's
/// job template under a name derived from the token, so each token runs exactly once (applying
/// the same token again is a no-op), deleted [`ON_DEMAND_JOB_TTL_SECONDS`] after it finished so
/// they do not pile up. `None` without a token or without agent backups.
pub fn on_demand_job(p: &ValidatedPlatform, token: Option<&str>) -> Option<Job> {
    let token = token.map(str::trim).filter(|t| !t.is_empty())?;
    if !agent_backups(p) || p.spec.stopped {
        return None;
    }
    let hash = token_hash(token);
    let mut metadata = child_meta(p, p.names.backup_now_job(&hash), Component::Backup);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(LABEL_BACKUP_TRIGGER.into(), hash);
    }
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            ttl_seconds_after_finished: Some(ON_DEMAND_JOB_TTL_SECONDS),
            ..job_spec(p)
        }),
        status: None,
    })
}

/// PVC of a `pvc` destination (kept on platform deletion unless `deletionPolicy: Delete`).
pub fn pvc(p: &ValidatedPlatform) -> Option<PersistentVolumeClaim> {
    if !agent_backups(p) {
        return None;
    }
    let dest = p.spec.backup.destination.pvc.as_ref()?;
    if p.spec.backup.destination.s3.is_some() {
        return None;
    }
    Some(PersistentVolumeClaim {
        metadata: child_meta(p, p.names.backup_pvc(), Component::Backup),
        spec: Some(claim_spec(
            dest.storage_class_name.clone(),
            dest.size.clone(),
        )),
        status: None,
    })
}

/// `backup-key.json` in the contracts format from fresh random bytes.
fn new_key_file(generator: &SecretGenerator) -> String {
    let file = match generator {
        SecretGenerator::Random { .. } => {
            let mut key = [0u8; key_files::KEY_LEN];
            let mut id = [0u8; 6];
            rand::rng().fill_bytes(&mut key);
            rand::rng().fill_bytes(&mut id);
            let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            BackupKeyFile {
                version: key_files::VERSION,
                key_id: format!("bk-{id}"),
                key: key_files::encode_key(&key),
            }
        }
        SecretGenerator::Placeholder => BackupKeyFile {
            version: key_files::VERSION,
            key_id: "bk-000000000000".into(),
            key: super::secrets::PLACEHOLDER.into(),
        },
    };
    // Serialising a struct of strings cannot fail.
    serde_json::to_string(&file).unwrap_or_default()
}

/// `<platform>-backup-key`, generated when absent and never overwritten (its data is read from
/// the cluster first). `None` when backups are off or the user supplies `encryptionKeySecretRef`.
pub fn key_secret(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &SecretGenerator,
) -> Option<Secret> {
    if !agent_backups(p) || p.spec.backup.encryption_key_secret_ref.is_some() {
        return None;
    }
    let mut data = SecretData::stored(existing, p.names.backup_key());
    data.keep_or(BACKUP_KEY_FILE, || {
        ByteString(new_key_file(generator).into_bytes())
    });
    Some(data.into_secret(p, Component::Backup, generator))
}

/// TCP port of the object store: the endpoint's explicit port, else 80 for `http://`, else 443.
pub fn object_store_port(s3: &S3Destination) -> i32 {
    let Some(endpoint) = &s3.endpoint else {
        return 443;
    };
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    // `[v6]:port` or `host:port`
    let port = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            port.parse::<i32>().ok()
        }
        _ => None,
    };
    port.filter(|p| (1..=65535).contains(p))
        .unwrap_or(if scheme == "http" { 80 } else { 443 })
}

/// Egress to an object store. Object stores have no stable addresses: any destination, only
/// the store's port ([`object_store_port`]). Shared by the backup and restore pods.
pub fn object_store_egress(s3: &S3Destination) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port(object_store_port(s3), "TCP")]),
    }
}

/// NetworkPolicies of the backup pods: egress to the database and the object store (DNS is
/// already open for every platform pod), and — for the embedded database — ingress to Postgres
/// from the backup pods. Empty when NetworkPolicies or agent backups are off.
pub fn network_policies(p: &ValidatedPlatform) -> Vec<NetworkPolicy> {
    if !p.spec.network_policy.enabled || !agent_backups(p) {
        return Vec::new();
    }
    let names = &p.names;
    let backup = names.selector(Component::Backup);
    let db = &p.spec.database;
    let mut egress = vec![database_egress(p)];
    egress.extend(
        p.spec
            .backup
            .destination
            .s3
            .as_ref()
            .map(object_store_egress),
    );
    let mut out = vec![policy(
        p,
        names.netpol_backup_egress(),
        Component::Backup,
        backup.clone(),
        None,
        Some(egress),
    )];
    if db.provider == DatabaseProvider::Embedded {
        out.push(postgres_admits(
            p,
            names.netpol_backup_to_postgres(),
            Component::Backup,
            backup,
        ));
    }
    out
}

/// Every NetworkPolicy name this module may create (tests; unwanted ones are swept).
#[cfg(test)]
pub fn all_network_policy_names(p: &ValidatedPlatform) -> Vec<String> {
    vec![
        p.names.netpol_backup_egress(),
        p.names.netpol_backup_to_postgres(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PvcDestination, S3Destination};
    use crate::desired::agent::BACKUP_BINARY;
    use crate::desired::security::container_violations;
    use crate::desired::test_support::{env_of, platform};
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn s3(endpoint: Option<&str>) -> S3Destination {
        S3Destination {
            endpoint: endpoint.map(str::to_string),
            bucket: "phi-backups".into(),
            prefix: "/clinic/demo/".into(),
            region: "eu-central-1".into(),
            credentials_secret_ref: "s3-creds".into(),
            force_path_style: true,
        }
    }

    fn pod(c: &CronJob) -> PodSpec {
        c.spec
            .clone()
            .expect("spec")
            .job_template
            .spec
            .expect("job spec")
            .template
            .spec
            .expect("pod spec")
    }

    #[test]
    fn cron_job_runs_the_agent_on_schedule_with_termination_log() {
        let p = platform(|s| {
            s.backup.schedule = "15 */2 * * *".into();
            s.backup.retention.days = 14;
            s.backup.retention.min_count = 5;
        });
        let cj = cron_job(&p).expect("cron job");
        let spec = cj.spec.clone().expect("spec");
        assert_eq!(cj.metadata.name.as_deref(), Some("demo-backup"));
        assert_eq!(spec.schedule, "15 */2 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
        assert_eq!(spec.suspend, Some(false));
        let pod = pod(&cj);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.name, CONTAINER);
        assert_eq!(c.command.clone().unwrap(), [BACKUP_BINARY]);
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "backup",
                "--termination-log",
                TERMINATION_LOG,
                "--retention-days",
                "14",
                "--min-count",
                "5"
            ]
        );
        assert_eq!(c.termination_message_path.as_deref(), Some(TERMINATION_LOG));
        assert_eq!(
            c.image.as_deref(),
            Some(format!("{BACKUP_IMAGE}:{}-pg16", p.api_version).as_str())
        );
        // The repository and tag can be overridden (a mirror, a rebuilt image).
        let mirrored = platform(|s| {
            s.backup.image.repository = "registry.example.org/mirror/caduceus-backup".into();
            s.backup.image.tag = Some("0.1.0-pg16-r2".into());
        });
        let mirrored = self::pod(&cron_job(&mirrored).expect("cron job"));
        assert_eq!(
            mirrored.containers[0].image.as_deref(),
            Some("registry.example.org/mirror/caduceus-backup:0.1.0-pg16-r2")
        );
        // PVC destination by default: mounted and used as file://.
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_DESTINATION").and_then(|e| e.value.as_deref()),
            Some("file:///var/lib/caduceus-backup")
        );
        assert!(pod.volumes.clone().unwrap().iter().any(|v| v
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "demo-backups")));
        let claim = pvc(&p).expect("pvc");
        assert_eq!(claim.metadata.name.as_deref(), Some("demo-backups"));
    }

    #[test]
    fn pod_is_pss_restricted_and_secrets_come_from_refs() {
        let p = platform(|s| {
            s.backup.destination.s3 = Some(s3(Some("https://minio.storage:9000")));
            s.backup.destination.pvc = None;
        });
        let cj = cron_job(&p).expect("cron job");
        let pod = pod(&cj);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.clone().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.expect("seccomp").type_,
            "RuntimeDefault"
        );
        for c in &pod.containers {
            assert!(
                container_violations(c).is_empty(),
                "{:?}",
                container_violations(c)
            );
            for e in c.env.iter().flatten() {
                if let Some(v) = &e.value {
                    assert!(!v.contains("PLACEHOLDER"), "{}", e.name);
                }
            }
        }
        let c = &pod.containers[0];
        for (var, secret, key) in [
            ("DATABASE_URL", "demo-postgres-credentials", "database-url"),
            ("AWS_ACCESS_KEY_ID", "s3-creds", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "s3-creds", "AWS_SECRET_ACCESS_KEY"),
        ] {
            let r = env_of(c, var)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{var} must come from a secretKeyRef"));
            assert_eq!((r.name.as_str(), r.key.as_str()), (secret, key));
            assert!(env_of(c, var).unwrap().value.is_none());
        }
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_DESTINATION").and_then(|e| e.value.as_deref()),
            Some("s3://phi-backups/clinic/demo")
        );
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_S3_ENDPOINT").and_then(|e| e.value.as_deref()),
            Some("https://minio.storage:9000")
        );
        assert_eq!(
            env_of(c, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST").and_then(|e| e.value.as_deref()),
            Some("false")
        );
        // Key file: read-only Secret volume with mode 0400.
        let key_volume = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "backup-key")
            .expect("key volume");
        let secret = key_volume.secret.expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("demo-backup-key"));
        assert_eq!(secret.default_mode, Some(0o400));
        assert!(pvc(&p).is_none(), "no PVC for an S3 destination");
    }

    #[test]
    fn disabled_delegated_and_stopped() {
        assert!(cron_job(&platform(|s| s.backup.enabled = false)).is_none());
        let cnpg = platform(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        assert!(
            cron_job(&cnpg).is_none(),
            "CloudNativePG backups are delegated"
        );
        assert!(key_secret(
            &cnpg,
            &ExistingSecrets::default(),
            &SecretGenerator::Placeholder
        )
        .is_none());
        assert!(network_policies(&cnpg).is_empty());
        let stopped = platform(|s| s.stopped = true);
        assert_eq!(
            cron_job(&stopped).unwrap().spec.unwrap().suspend,
            Some(true)
        );
        assert!(on_demand_job(&stopped, Some("t1")).is_none());
    }

    #[test]
    fn key_secret_is_generated_once_and_never_overwritten() {
        let p = platform(|_| {});
        let gen = SecretGenerator::random();
        let first = key_secret(&p, &ExistingSecrets::default(), &gen).expect("secret");
        assert_eq!(first.metadata.name.as_deref(), Some("demo-backup-key"));
        let data = first.data.clone().expect("data");
        let json: serde_json::Value =
            serde_json::from_slice(&data[BACKUP_KEY_FILE].0).expect("key file JSON");
        assert_eq!(json["version"], 1);
        let id = json["key_id"].as_str().expect("key id");
        assert!(
            id.starts_with("bk-")
                && id.len() == 15
                && id[3..].chars().all(|c| c.is_ascii_hexdigit())
        );
        assert_eq!(
            STANDARD
                .decode(json["key"].as_str().expect("key"))
                .expect("b64")
                .len(),
            32
        );

        // A second reconcile with the Secret present keeps the exact bytes.
        let mut existing = ExistingSecrets::default();
        existing.insert("demo-backup-key", data.clone());
        let again = key_secret(&p, &existing, &gen).expect("secret");
        assert_eq!(again.data.expect("data"), data);
        // A fresh generation differs (random).
        let other = key_secret(&p, &ExistingSecrets::default(), &gen).expect("secret");
        assert_ne!(other.data.expect("data"), data);
        // A user-supplied key Secret is used as is and never generated.
        let own = platform(|s| s.backup.encryption_key_secret_ref = Some("my-key".into()));
        assert!(key_secret(&own, &ExistingSecrets::default(), &gen).is_none());
        let pod = pod(&cron_job(&own).expect("cron job"));
        assert!(pod.volumes.unwrap().iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("my-key"))));
    }

    #[test]
    fn on_demand_job_is_once_per_token() {
        let p = platform(|_| {});
        assert!(on_demand_job(&p, None).is_none());
        assert!(on_demand_job(&p, Some("  ")).is_none());
        let a = on_demand_job(&p, Some("2026-11-22T05:00")).expect("job");
        let a2 = on_demand_job(&p, Some("2026-11-22T05:00")).expect("job");
        let b = on_demand_job(&p, Some("another")).expect("job");
        assert_eq!(a, a2, "same token, same Job: applying again is a no-op");
        assert_ne!(a.metadata.name, b.metadata.name);
        let name = a.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("demo-backup-now-") && name.len() <= 63,
            "{name}"
        );
        assert_eq!(
            a.metadata.labels.as_ref().unwrap()[LABEL_BACKUP_TRIGGER],
            token_hash("2026-11-22T05:00")
        );
        // Same pod as the scheduled backups; removed a week after it finished.
        let cj = cron_job(&p).unwrap();
        let spec = a.spec.clone().unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(7 * 24 * 3600));
        let template = cj.spec.clone().unwrap().job_template.spec.unwrap();
        assert_eq!(
            JobSpec {
                ttl_seconds_after_finished: None,
                ..spec
            },
            template
        );
        // Scheduled Jobs are bounded by the CronJob's history limits instead.
        assert_eq!(template.ttl_seconds_after_finished, None);
        let cj_spec = cj.spec.unwrap();
        assert_eq!(cj_spec.successful_jobs_history_limit, Some(3));
        assert_eq!(cj_spec.failed_jobs_history_limit, Some(3));
    }

    #[test]
    fn network_policies_allow_database_object_store_only() {
        let p = platform(|s| {
            s.backup.destination.s3 = Some(s3(Some("http://minio.storage:9000")));
            s.backup.destination.pvc = None;
        });
        let nps = network_policies(&p);
        assert_eq!(nps.len(), 2);
        let egress = nps[0].spec.clone().unwrap();
        assert_eq!(egress.policy_types.clone().unwrap(), ["Egress"]);
        assert_eq!(
            egress.pod_selector.unwrap().match_labels.unwrap(),
            p.names.selector(Component::Backup)
        );
        let rules = egress.egress.unwrap();
        assert_eq!(rules.len(), 2);
        let db_peer = rules[0].to.clone().unwrap()[0]
            .pod_selector
            .clone()
            .unwrap();
        assert_eq!(
            db_peer.match_labels.unwrap(),
            p.names.selector(Component::Database)
        );
        assert_eq!(
            rules[0].ports.clone().unwrap()[0].port,
            Some(IntOrString::Int(5432))
        );
        assert!(rules[1].to.is_none());
        assert_eq!(
            rules[1].ports.clone().unwrap()[0].port,
            Some(IntOrString::Int(9000))
        );
        // Postgres accepts the backup pods.
        let ingress = nps[1].spec.clone().unwrap();
        assert_eq!(
            ingress.pod_selector.unwrap().match_labels.unwrap(),
            p.names.selector(Component::Database)
        );
        let from = ingress.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(
            from[0].pod_selector.clone().unwrap().match_labels.unwrap(),
            p.names.selector(Component::Backup)
        );
        // The backup pods carry the platform labels, so default-deny and DNS egress apply.
        let labels = p.names.labels(Component::Backup, "x");
        assert!(p
            .names
            .platform_selector()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v)));
        // PVC destination: no object-store egress at all.
        let pvc_only = network_policies(&platform(|_| {}));
        assert_eq!(pvc_only[0].spec.clone().unwrap().egress.unwrap().len(), 1);
        assert!(network_policies(&platform(|s| s.network_policy.enabled = false)).is_empty());
        for name in nps.iter().filter_map(|n| n.metadata.name.clone()) {
            assert!(all_network_policy_names(&p).contains(&name));
        }
    }

    #[test]
    fn object_store_ports() {
        assert_eq!(object_store_port(&s3(None)), 443);
        assert_eq!(object_store_port(&s3(Some("https://s3.example"))), 443);
        assert_eq!(object_store_port(&s3(Some("http://minio"))), 80);
        assert_eq!(object_store_port(&s3(Some("http://minio:9000/"))), 9000);
        assert_eq!(object_store_port(&s3(Some("https://[fd00::1]:8443"))), 8443);
        assert_eq!(object_store_port(&s3(Some("https://[fd00::1]"))), 443);
    }

    #[test]
    fn pvc_destination_settings() {
        let p = platform(|s| {
            s.backup.destination.pvc = Some(PvcDestination {
                size: Quantity("50Gi".into()),
                storage_class_name: Some("encrypted-ssd".into()),
            })
        });
        let claim = pvc(&p).expect("pvc").spec.expect("spec");
        assert_eq!(claim.storage_class_name.as_deref(), Some("encrypted-ssd"));
        assert_eq!(
            claim.resources.unwrap().requests.unwrap()["storage"],
            Quantity("50Gi".into())
        );
    }
}
