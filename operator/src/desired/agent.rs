//! The pods of the `caduceus-backup` agent (docs/contracts.md), shared by the backup CronJob and
//! Jobs ([`super::backup`]) and the restore Job ([`super::restore`]): image, S3 settings, the
//! key-file Secret, `/tmp`, the embedded database's CA, resources and the PSS "restricted" pod;
//! and reading the result line the agent leaves in its Jobs' pods.

use caduceus_contract::settings;
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, EnvVar, Pod, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::pod::{env, mount, pull_secrets, read_only_mount, secret_env, secret_volume};
use super::postgres_tls::{API_DB_CA_DIR, CA_CERT_KEY};
use super::security::{container_security_context, pod_security_context, scratch_volume};
use crate::crd::{DatabaseProvider, S3Destination};
use crate::validate::ValidatedPlatform;

/// Path of the agent in its image (docs/contracts.md).
pub const BACKUP_BINARY: &str = "/usr/local/bin/caduceus-backup";
/// uid/gid the agent runs as.
pub const BACKUP_UID: i64 = 65532;
/// Key of the key file in the backup-key Secret (docs/contracts.md).
pub const BACKUP_KEY_FILE: &str = "backup-key.json";
/// Kubernetes termination message path; the agent writes its result line there.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Keys of the S3 credentials Secret.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Name of the volume with the embedded database's CA (same as in the API Deployment).
pub const DB_CA_VOLUME: &str = "db-ca";

/// The agent image for this platform: `spec.backup.image`, the tag defaulting to
/// `<api version>-pg<database major>`.
pub fn image(p: &ValidatedPlatform) -> String {
    p.spec
        .backup
        .image
        .reference(&p.api_version, &p.spec.database.version)
}

/// `s3://bucket/prefix` of an S3 destination.
pub fn s3_url(s3: &S3Destination) -> String {
    let prefix = s3.prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("s3://{}", s3.bucket)
    } else {
        format!("s3://{}/{prefix}", s3.bucket)
    }
}

/// S3 settings as environment: endpoint, region, addressing style, credentials from the Secret.
pub fn s3_env(s3: &S3Destination) -> Vec<EnvVar> {
    let mut out = vec![
        env("AWS_REGION", s3.region.clone()),
        env(
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
            (!s3.force_path_style).to_string(),
        ),
        secret_env(
            AWS_ACCESS_KEY_ID,
            &s3.credentials_secret_ref,
            AWS_ACCESS_KEY_ID,
        ),
        secret_env(
            AWS_SECRET_ACCESS_KEY,
            &s3.credentials_secret_ref,
            AWS_SECRET_ACCESS_KEY,
        ),
    ];
    if let Some(endpoint) = &s3.endpoint {
        out.push(env(settings::BACKUP_S3_ENDPOINT, endpoint.clone()));
    }
    out
}

/// Mount of the embedded database's CA at the path the API uses, so `DATABASE_URL`'s
/// `sslmode=verify-full&sslrootcert=...` verifies the server. `None` for other providers.
pub fn db_ca_mount(p: &ValidatedPlatform) -> Option<VolumeMount> {
    (p.spec.database.provider == DatabaseProvider::Embedded)
        .then(|| read_only_mount(DB_CA_VOLUME, API_DB_CA_DIR))
}

/// The volume with only `ca.crt` of `<platform>-postgres-tls` (Embedded database only).
pub fn db_ca_volume(p: &ValidatedPlatform) -> Option<Volume> {
    (p.spec.database.provider == DatabaseProvider::Embedded).then(|| {
        secret_volume(
            DB_CA_VOLUME,
            p.names.postgres_tls(),
            &[CA_CERT_KEY],
            None,
            0o444,
        )
    })
}

/// Requests and limits of an agent container (backup and restore).
pub fn agent_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("1".into())),
            ("memory".to_string(), Quantity("512Mi".into())),
        ])),
        ..Default::default()
    }
}

/// Mounts every agent container has: the key Secret's volume `key_volume` read-only at
/// `key_dir`, `/tmp`, and the database CA ([`db_ca_mount`]).
pub fn mounts(p: &ValidatedPlatform, key_volume: &str, key_dir: &str) -> Vec<VolumeMount> {
    let mut mounts = vec![read_only_mount(key_volume, key_dir), mount("tmp", "/tmp")];
    mounts.extend(db_ca_mount(p));
    mounts
}

/// Volumes of [`mounts`]: the key file of Secret `key_secret` (0400) as `key_volume`, `/tmp`
/// and the database CA ([`db_ca_volume`]).
pub fn volumes(p: &ValidatedPlatform, key_volume: &str, key_secret: String) -> Vec<Volume> {
    let mut volumes = vec![
        secret_volume(
            key_volume,
            key_secret,
            &[BACKUP_KEY_FILE],
            Some(0o400),
            0o400,
        ),
        scratch_volume("tmp", "64Mi", false),
    ];
    volumes.extend(db_ca_volume(p));
    volumes
}

/// The agent container `name` running `args` with `env` and `mounts`; it writes its result line
/// to [`TERMINATION_LOG`].
pub fn container(
    p: &ValidatedPlatform,
    name: &str,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image(p)),
        image_pull_policy: Some(p.spec.api_server.image.pull_policy.as_str().to_string()),
        command: Some(vec![BACKUP_BINARY.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context(BACKUP_UID)),
        resources: Some(agent_resources()),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    }
}

/// The pod running `container` once (`restartPolicy: Never`) as [`BACKUP_UID`], without a
/// service-account token, with the API image's pull secrets.
pub fn pod_spec(p: &ValidatedPlatform, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context(BACKUP_UID)),
        image_pull_secrets: pull_secrets(p),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the agent's Jobs (status of backups and of the restore)

/// Labels Kubernetes puts on a Job's pods.
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

/// Whether `pod` carries the label of Job `job_name`.
pub fn is_pod_of(pod: &Pod, job_name: &str) -> bool {
    pod.metadata.labels.as_ref().is_some_and(|l| {
        JOB_NAME_LABELS
            .iter()
            .any(|k| l.get(*k).map(String::as_str) == Some(job_name))
    })
}

/// The state of container `container` of `pod`, if reported.
pub fn container_state<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()
}

/// The termination message of container `container` of `pod`, if it exited with 0.
pub fn success_message<'a>(pod: &'a Pod, container: &str) -> Option<&'a str> {
    let terminated = container_state(pod, container)?.terminated.as_ref()?;
    if terminated.exit_code != 0 {
        return None;
    }
    terminated.message.as_deref()
}

/// The agent's result line: the last non-blank line of a termination message, as JSON.
pub fn result_line(message: &str) -> Option<serde_json::Value> {
    let line = message.lines().rev().find(|l| !l.trim().is_empty())?;
    serde_json::from_str(line.trim()).ok()
}

/// The Job's condition `type_`, if it is `True`.
pub fn true_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}
