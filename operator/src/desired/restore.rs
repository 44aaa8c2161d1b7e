//! The one-off restore of `spec.database.bootstrap.fromBackup` into a new platform's database
//! (Embedded and External providers), the way CloudNativePG bootstraps a cluster:
//!
//! - One single-pod Job `<platform>-restore` runs `caduceus-backup restore <name> --if-empty`
//!   (a database that already has tables is left alone, so running it again is a no-op). The API
//!   Deployment is held at 0 replicas until the Job succeeded
//!   ([`ValidatedPlatform::restore_pending`]), so no migration runs on, and no API pod serves, a
//!   database that is still being restored.
//! - The pod is PSS "restricted" like the backup pods (uid 65532, read-only root filesystem, no
//!   capabilities, seccomp `RuntimeDefault`, no service-account token). A `claimName` source is
//!   mounted read-only into this one pod only: a ReadWriteOnce claim cannot be attached to pods
//!   on several nodes.
//! - Its own NetworkPolicies ([`network_policies`]): egress to DNS, the database and, for an S3
//!   source, the object store's port (the helpers of the backup pods); no ingress. With the
//!   embedded database, Postgres admits the restore pod.
//! - The apply stage creates the Job once the database is ready and never re-applies it (a Job's
//!   pod template is immutable; deleting a failed Job retries). The status stage reads
//!   [`progress`] and records a success in `status.restore`; from then on nothing here is built
//!   again, so the Job being deleted [`JOB_TTL_SECONDS`] after it finished changes nothing.

use caduceus_contract::settings;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::agent::{
    self, container_state, is_pod_of, result_line, s3_env, s3_url, success_message, true_condition,
    BACKUP_KEY_FILE, TERMINATION_LOG,
};
use super::backup;
use super::child_meta;
use super::deployment::database_url_env;
use super::network_policy::{database_egress, dns_egress, policy, postgres_admits};
use super::pod::{env, read_only_mount};
use crate::crd::{DatabaseProvider, FromBackup};
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// Name of the agent's container in the restore pod (status reads its termination message).
pub const CONTAINER: &str = "restore";
/// Where a `claimName` source is mounted (read-only).
pub const RESTORE_SOURCE_MOUNT: &str = "/var/lib/caduceus-restore";
/// Where the `fromBackup.secretRef` key Secret is mounted.
pub const RESTORE_KEY_MOUNT: &str = "/etc/caduceus/restore";
/// Pod retries before the Job fails (a wrong key, a missing backup or a full disk will not fix
/// itself; the restore is atomic, so a retry starts clean).
pub const BACKOFF_LIMIT: i32 = 2;
/// A restore that has not finished after a day has failed.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 24 * 3600;
/// The finished Job (and its pod, with the logs) is deleted a week after it finished;
/// `status.restore` keeps the result.
pub const JOB_TTL_SECONDS: i32 = backup::ON_DEMAND_JOB_TTL_SECONDS;

/// The backup to restore, while the restore is still to be done: `fromBackup` is set, not yet
/// recorded in `status.restore`, the platform is not stopped (its database is down) and the
/// provider is not CloudNativePG (which restores with its own recovery; refused by validation).
pub fn wanted(p: &ValidatedPlatform) -> Option<&FromBackup> {
    if !p.restore_pending
        || p.spec.stopped
        || p.spec.database.provider == DatabaseProvider::CloudNativePG
    {
        return None;
    }
    p.from_backup()
}

/// The restore container and the volumes it mounts; `None` for a source with both or neither
/// of `s3` and `claimName` (refused by the CRD and by validation).
fn container_and_volumes(
    p: &ValidatedPlatform,
    from: &FromBackup,
) -> Option<(Container, Vec<Volume>)> {
    let mut env_vars = vec![
        database_url_env(p),
        env(
            settings::BACKUP_KEY_FILE,
            format!("{RESTORE_KEY_MOUNT}/{BACKUP_KEY_FILE}"),
        ),
    ];
    let mut mounts = agent::mounts(p, "restore-key", RESTORE_KEY_MOUNT);
    let mut volumes = agent::volumes(p, "restore-key", from.secret_ref.clone());
    match (&from.source.s3, &from.source.claim_name) {
        (Some(s3), None) => {
            env_vars.push(env(settings::BACKUP_DESTINATION, s3_url(s3)));
            env_vars.extend(s3_env(s3));
        }
        (None, Some(claim)) => {
            env_vars.push(env(
                settings::BACKUP_DESTINATION,
                format!("file://{RESTORE_SOURCE_MOUNT}"),
            ));
            mounts.push(read_only_mount("restore-source", RESTORE_SOURCE_MOUNT));
            volumes.push(Volume {
                name: "restore-source".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            });
        }
        _ => return None,
    }
    let args = vec![
        "restore".into(),
        from.name.clone(),
        "--if-empty".into(),
        "--termination-log".into(),
        TERMINATION_LOG.into(),
    ];
    let container = agent::container(p, CONTAINER, args, env_vars, mounts);
    Some((container, volumes))
}

/// The restore Job, while the restore is [`wanted`].
pub fn job(p: &ValidatedPlatform) -> Option<Job> {
    let from = wanted(p)?;
    let (container, volumes) = container_and_volumes(p, from)?;
    Some(Job {
        metadata: child_meta(p, p.names.restore_job(), Component::Restore),
        spec: Some(JobSpec {
            parallelism: Some(1),
            completions: Some(1),
            backoff_limit: Some(BACKOFF_LIMIT),
            active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(p.names.labels(Component::Restore, &p.api_version)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    enable_service_links: Some(false),
                    ..agent::pod_spec(p, container, volumes)
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// NetworkPolicies of the restore pod, while the restore is [`wanted`] and NetworkPolicies are
/// on: `<platform>-allow-restore-egress` (DNS, the database, the object store's port for an S3
/// source; no ingress rule, so nothing may connect to the pod) and, for the embedded database,
/// `<platform>-allow-restore-to-postgres` (Postgres admits the restore pod).
pub fn network_policies(p: &ValidatedPlatform) -> Vec<NetworkPolicy> {
    if !p.spec.network_policy.enabled {
        return Vec::new();
    }
    let Some(from) = wanted(p) else {
        return Vec::new();
    };
    let names = &p.names;
    let restore = names.selector(Component::Restore);
    let mut egress = vec![dns_egress(), database_egress(p)];
    egress.extend(from.source.s3.as_ref().map(backup::object_store_egress));
    // No ingress rules: `policyTypes` names Ingress, so it denies all ingress.
    let mut out = vec![policy(
        p,
        names.netpol_restore_egress(),
        Component::Restore,
        restore.clone(),
        Some(Vec::new()),
        Some(egress),
    )];
    if p.spec.database.provider == DatabaseProvider::Embedded {
        out.push(postgres_admits(
            p,
            names.netpol_restore_to_postgres(),
            Component::Restore,
            restore,
        ));
    }
    out
}

/// Every NetworkPolicy name this module may create (tests; unwanted ones are swept).
#[cfg(test)]
pub fn all_network_policy_names(p: &ValidatedPlatform) -> Vec<String> {
    vec![
        p.names.netpol_restore_egress(),
        p.names.netpol_restore_to_postgres(),
    ]
}

/// What the agent's result line says about a successful restore (docs/contracts.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreResult {
    /// The backup restored (`latest` resolved); `None` when skipped.
    pub restored_backup: Option<String>,
    /// The database already had tables: nothing was restored.
    pub skipped: bool,
}

/// Where the restore stands, as observed by the apply stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// No restore is wanted (no `fromBackup`, already recorded, stopped).
    #[default]
    NotRequested,
    /// The Job is not created yet: the database is not ready.
    WaitingForDatabase,
    /// The Job runs. `waiting`: why its container cannot start (a Kubernetes reason such as
    /// `CreateContainerConfigError` for a missing Secret, `ImagePullBackOff`); `failed_pods`:
    /// attempts that failed so far.
    Running {
        waiting: Option<String>,
        failed_pods: i32,
    },
    /// The Job succeeded (`completion_time`: when, if the Job says).
    Succeeded {
        completion_time: Option<Time>,
        result: RestoreResult,
    },
    /// The Job failed for good; `reason` is the Job's `Failed` condition reason
    /// (`BackoffLimitExceeded`, `DeadlineExceeded`, ...), never the agent's message (which could
    /// quote database content).
    Failed { reason: String },
}

/// Keeps only characters of a Kubernetes reason (`CamelCase`), so nothing else ever reaches the
/// status.
fn reason_word(raw: &str) -> String {
    raw.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}

/// The pods of this Job: its `job-name` label, and owned by this Job (not by a deleted Job of
/// the same name whose pods are still terminating) when the owner is known.
fn job_pods<'a>(job: &Job, pods: &'a [Pod]) -> impl Iterator<Item = &'a Pod> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone();
    pods.iter().filter(move |pod| {
        let named = is_pod_of(pod, &name);
        let owned = match (&uid, &pod.metadata.owner_references) {
            (Some(uid), Some(owners)) => owners.iter().any(|o| o.uid == *uid),
            _ => true,
        };
        named && owned
    })
}

/// Parses the agent's `restore` result line: `{"name":"..."|null,...,"skipped":bool}`.
pub fn parse_result(message: &str) -> Option<RestoreResult> {
    let v = result_line(message)?;
    let skipped = v.get("skipped")?.as_bool()?;
    Some(RestoreResult {
        restored_backup: v.get("name").and_then(|n| n.as_str()).map(str::to_string),
        skipped,
    })
}

/// The result line of the Job's successful restore container, if a pod still has it.
fn result(job: &Job, pods: &[Pod]) -> Option<RestoreResult> {
    job_pods(job, pods).find_map(|pod| parse_result(success_message(pod, CONTAINER)?))
}

/// Why the restore container of a running pod cannot start, if it is waiting.
fn waiting_reason(job: &Job, pods: &[Pod]) -> Option<String> {
    job_pods(job, pods).find_map(|pod| {
        let reason = container_state(pod, CONTAINER)?
            .waiting
            .as_ref()?
            .reason
            .as_deref()?;
        // `ContainerCreating` and `PodInitializing` are normal start-up, not a problem.
        (!matches!(reason, "ContainerCreating" | "PodInitializing")).then(|| reason_word(reason))
    })
}

/// Where the restore stands, from the live Job (`None`: not created) and its pods. Pure.
pub fn progress(job: Option<&Job>, pods: &[Pod]) -> Progress {
    let Some(job) = job else {
        return Progress::WaitingForDatabase;
    };
    let status = job.status.clone().unwrap_or_default();
    if let Some(c) = true_condition(job, "Complete") {
        return Progress::Succeeded {
            completion_time: c
                .last_transition_time
                .clone()
                .or_else(|| status.completion_time.clone()),
            result: result(job, pods).unwrap_or_default(),
        };
    }
    if status.succeeded.unwrap_or(0) > 0 && true_condition(job, "Failed").is_none() {
        return Progress::Succeeded {
            completion_time: status.completion_time.clone(),
            result: result(job, pods).unwrap_or_default(),
        };
    }
    if let Some(c) = true_condition(job, "Failed") {
        let reason = c.reason.as_deref().map(reason_word).unwrap_or_default();
        return Progress::Failed {
            reason: if reason.is_empty() {
                "Failed".into()
            } else {
                reason
            },
        };
    }
    Progress::Running {
        waiting: waiting_reason(job, pods),
        failed_pods: status.failed.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        BackupSource, DatabaseBootstrap, HealthcarePlatformSpec, S3Destination, SecretKeyRef,
    };
    use crate::desired::agent::{image, BACKUP_BINARY, BACKUP_UID};
    use crate::desired::security::container_violations;
    use crate::desired::test_support::{env_of, platform, ports};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    fn s3() -> S3Destination {
        S3Destination {
            endpoint: Some("https://minio.storage:9000".into()),
            bucket: "phi-backups".into(),
            prefix: "/clinic/old/".into(),
            region: "eu-central-1".into(),
            credentials_secret_ref: "s3-creds".into(),
            force_path_style: true,
        }
    }

    fn from(source: BackupSource) -> impl FnOnce(&mut HealthcarePlatformSpec) {
        move |s| {
            s.database.bootstrap = Some(DatabaseBootstrap {
                from_backup: Some(FromBackup {
                    name: "latest".into(),
                    source,
                    secret_ref: "old-platform-backup-key".into(),
                }),
            })
        }
    }

    fn from_s3() -> ValidatedPlatform {
        platform(from(BackupSource {
            s3: Some(s3()),
            claim_name: None,
        }))
    }

    fn from_claim() -> ValidatedPlatform {
        platform(from(BackupSource {
            s3: None,
            claim_name: Some("old-backups".into()),
        }))
    }

    fn pod_spec(job: &Job) -> PodSpec {
        job.spec
            .clone()
            .expect("spec")
            .template
            .spec
            .expect("pod spec")
    }

    #[test]
    fn one_single_pod_job_restores_if_empty() {
        let p = from_s3();
        let job = job(&p).expect("restore job");
        assert_eq!(job.metadata.name.as_deref(), Some("demo-restore"));
        let spec = job.spec.clone().expect("spec");
        assert_eq!(
            (spec.parallelism, spec.completions),
            (Some(1), Some(1)),
            "a single pod"
        );
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.ttl_seconds_after_finished, Some(7 * 24 * 3600));
        assert!(spec.active_deadline_seconds.is_some());
        let pod = pod_spec(&job);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers.len(), 1);
        assert!(pod.init_containers.is_none());
        let c = &pod.containers[0];
        assert_eq!(c.name, CONTAINER);
        assert_eq!(c.command.clone().unwrap(), [BACKUP_BINARY]);
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "restore",
                "latest",
                "--if-empty",
                "--termination-log",
                TERMINATION_LOG
            ]
        );
        assert_eq!(c.image, Some(image(&p)));
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_DESTINATION").and_then(|e| e.value.as_deref()),
            Some("s3://phi-backups/clinic/old")
        );
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_S3_ENDPOINT").and_then(|e| e.value.as_deref()),
            Some("https://minio.storage:9000")
        );
        // The restore pod is neither a backup pod nor an API pod.
        let labels = job
            .spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], "restore");
        assert!(p
            .names
            .selector(Component::Restore)
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(
            job.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn pod_is_hardened_like_the_backup_pods_and_secrets_come_from_refs() {
        let p = from_s3();
        let pod = pod_spec(&job(&p).expect("job"));
        let backup_pod = backup::cron_job(&p)
            .and_then(|cj| cj.spec)
            .and_then(|s| s.job_template.spec)
            .and_then(|s| s.template.spec)
            .expect("backup pod");
        assert_eq!(pod.security_context, backup_pod.security_context);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.clone().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(BACKUP_UID));
        let c = &pod.containers[0];
        assert!(
            container_violations(c).is_empty(),
            "{:?}",
            container_violations(c)
        );
        assert_eq!(
            c.security_context,
            backup_pod.containers[0].security_context
        );
        for (var, secret, key) in [
            ("DATABASE_URL", "demo-postgres-credentials", "database-url"),
            ("AWS_ACCESS_KEY_ID", "s3-creds", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "s3-creds", "AWS_SECRET_ACCESS_KEY"),
        ] {
            let e = env_of(c, var).unwrap_or_else(|| panic!("{var}"));
            assert!(e.value.is_none(), "{var} must not be literal");
            let r = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{var} from a secretKeyRef"));
            assert_eq!((r.name.as_str(), r.key.as_str()), (secret, key));
        }
        let key = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "restore-key")
            .and_then(|v| v.secret)
            .expect("key volume");
        assert_eq!(key.secret_name.as_deref(), Some("old-platform-backup-key"));
        assert_eq!(key.default_mode, Some(0o400));
        // Embedded database: the CA for sslmode=verify-full is mounted.
        assert!(c
            .volume_mounts
            .clone()
            .unwrap()
            .iter()
            .any(|m| m.name == "db-ca"));
        // Every mount has exactly one volume.
        let volumes: Vec<String> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        for m in c.volume_mounts.clone().unwrap() {
            assert_eq!(
                volumes.iter().filter(|v| **v == m.name).count(),
                1,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn a_claim_source_is_mounted_read_only_in_the_one_pod() {
        let p = from_claim();
        let pod = pod_spec(&job(&p).expect("job"));
        let c = &pod.containers[0];
        assert_eq!(
            env_of(c, "CADUCEUS_BACKUP_DESTINATION").and_then(|e| e.value.as_deref()),
            Some("file:///var/lib/caduceus-restore")
        );
        let claim = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .expect("claim volume");
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("old-backups", Some(true))
        );
        let mount = c
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "restore-source")
            .expect("mount");
        assert_eq!(mount.read_only, Some(true));
        assert!(env_of(c, "AWS_ACCESS_KEY_ID").is_none());
    }

    #[test]
    fn nothing_to_restore_builds_nothing() {
        assert!(job(&platform(|_| {})).is_none());
        assert!(network_policies(&platform(|_| {})).is_empty());
        // Recorded (or the API ran already): no Job, no policies.
        let mut done = from_s3();
        done.restore_pending = false;
        assert!(job(&done).is_none());
        assert!(network_policies(&done).is_empty());
        // Stopped: the database is down; the restore waits.
        let mut stopped = from_s3();
        stopped.spec.stopped = true;
        assert!(job(&stopped).is_none());
        // Both sources (refused by the CRD and validation): nothing is built.
        let mut both = from_s3();
        if let Some(f) = both
            .spec
            .database
            .bootstrap
            .as_mut()
            .and_then(|b| b.from_backup.as_mut())
        {
            f.source.claim_name = Some("x".into());
        }
        assert!(job(&both).is_none());
    }

    #[test]
    fn restore_pod_reaches_dns_database_and_object_store_only() {
        let p = from_s3();
        let nps = network_policies(&p);
        assert_eq!(nps.len(), 2);
        let own = nps[0].spec.clone().expect("spec");
        assert_eq!(
            nps[0].metadata.name.as_deref(),
            Some("demo-allow-restore-egress")
        );
        assert_eq!(
            own.pod_selector.unwrap().match_labels.unwrap(),
            p.names.selector(Component::Restore)
        );
        assert_eq!(own.policy_types.unwrap(), ["Ingress", "Egress"]);
        // policyTypes (above) names Ingress and there are no rules: nothing may connect to it.
        assert!(own.ingress.is_none(), "nothing may connect to it");
        let egress = own.egress.unwrap();
        assert_eq!(egress.len(), 3);
        assert_eq!(egress[0], dns_egress());
        assert_eq!(egress[1], database_egress(&p));
        assert_eq!(ports(&egress[1].ports), [5432]);
        assert!(egress[2].to.is_none());
        assert_eq!(ports(&egress[2].ports), [9000], "the endpoint's port");
        // The embedded Postgres admits the restore pod.
        let pg = nps[1].spec.clone().expect("spec");
        assert_eq!(
            nps[1].metadata.name.as_deref(),
            Some("demo-allow-restore-to-postgres")
        );
        assert_eq!(
            pg.pod_selector.unwrap().match_labels.unwrap(),
            p.names.selector(Component::Database)
        );
        let from = pg.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(
            from[0].pod_selector.clone().unwrap().match_labels.unwrap(),
            p.names.selector(Component::Restore)
        );
        // The API pods gain nothing: their egress policy has no object-store rule.
        let api_egress = crate::desired::network_policy::build(&p)
            .into_iter()
            .find(|n| n.metadata.name.as_deref() == Some("demo-allow-api-egress"))
            .and_then(|n| n.spec)
            .and_then(|s| s.egress)
            .expect("api egress");
        assert!(api_egress.iter().all(|r| ports(&r.ports) != [9000]));

        // A claim source: no object-store egress at all.
        let claim = network_policies(&from_claim());
        assert_eq!(claim[0].spec.clone().unwrap().egress.unwrap().len(), 2);
        // An External database: its port, and no Postgres ingress policy.
        let mut external = from_claim();
        external.spec.database.provider = DatabaseProvider::External;
        external.spec.database.external_port = 6432;
        external.spec.database.secret_ref = Some(SecretKeyRef {
            name: "ext".into(),
            key: "url".into(),
        });
        let ext = network_policies(&external);
        assert_eq!(ext.len(), 1);
        assert_eq!(
            ports(&ext[0].spec.clone().unwrap().egress.unwrap()[1].ports),
            [6432]
        );
        let mut off = from_s3();
        off.spec.network_policy.enabled = false;
        assert!(network_policies(&off).is_empty());
        for name in nps.iter().filter_map(|n| n.metadata.name.clone()) {
            assert!(all_network_policy_names(&p).contains(&name));
        }
    }

    fn job_with(status: JobStatus) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("demo-restore".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn pod_with(state: ContainerState) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some(
                    [(
                        "batch.kubernetes.io/job-name".to_string(),
                        "demo-restore".to_string(),
                    )]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn condition(type_: &str, reason: &str, at: i64) -> JobCondition {
        JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            last_transition_time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(at).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn progress_follows_the_job() {
        assert_eq!(progress(None, &[]), Progress::WaitingForDatabase);
        let running = job_with(JobStatus {
            active: Some(1),
            failed: Some(1),
            ..Default::default()
        });
        assert_eq!(
            progress(Some(&running), &[]),
            Progress::Running {
                waiting: None,
                failed_pods: 1
            }
        );
        // A missing key Secret keeps the container from starting: named by its reason.
        let stuck = pod_with(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CreateContainerConfigError".into()),
                message: Some("secret \"old-platform-backup-key\" not found".into()),
            }),
            ..Default::default()
        });
        assert_eq!(
            progress(Some(&running), &[stuck]),
            Progress::Running {
                waiting: Some("CreateContainerConfigError".into()),
                failed_pods: 1
            }
        );

        let done = job_with(JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![condition("Complete", "", 1_800_000_000)]),
            ..Default::default()
        });
        let finished = pod_with(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                message: Some(
                    r#"{"name":"backup-20261122T030000.000Z","database":"caduceus","previous_database":null,"schema_version":7,"skipped":false}"#
                        .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            progress(Some(&done), &[finished]),
            Progress::Succeeded {
                completion_time: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap()
                )),
                result: RestoreResult {
                    restored_backup: Some("backup-20261122T030000.000Z".into()),
                    skipped: false,
                },
            }
        );
        // A terminating pod of a deleted Job of the same name is not this Job's.
        let mut new_job = running.clone();
        new_job.metadata.uid = Some("new-uid".into());
        let mut old_pod = pod_with(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CreateContainerConfigError".into()),
                message: None,
            }),
            ..Default::default()
        });
        old_pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                uid: "old-uid".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(
            progress(Some(&new_job), &[old_pod]),
            Progress::Running {
                waiting: None,
                failed_pods: 1
            }
        );
        // The pod is gone already: still a success, without the name.
        assert!(matches!(
            progress(Some(&done), &[]),
            Progress::Succeeded { result, .. } if result == RestoreResult::default()
        ));

        let failed = job_with(JobStatus {
            failed: Some(3),
            conditions: Some(vec![condition(
                "Failed",
                "BackoffLimitExceeded",
                1_800_000_000,
            )]),
            ..Default::default()
        });
        assert_eq!(
            progress(Some(&failed), &[]),
            Progress::Failed {
                reason: "BackoffLimitExceeded".into()
            }
        );
    }

    #[test]
    fn result_line_parses_and_a_skip_has_no_name() {
        assert_eq!(
            parse_result(
                "starting\n{\"name\":null,\"database\":\"caduceus\",\"previous_database\":null,\"schema_version\":null,\"skipped\":true}\n"
            ),
            Some(RestoreResult {
                restored_backup: None,
                skipped: true
            })
        );
        assert_eq!(parse_result("error: no backup found"), None);
        assert_eq!(reason_word("Deadline Exceeded\"; x"), "DeadlineExceededx");
    }
}
