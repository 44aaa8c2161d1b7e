//! Backups delegated to CloudNativePG (database provider `CloudNativePG`): the Cluster gets a
//! `spec.backup.barmanObjectStore` (base backups plus continuous WAL archiving, so the recovery
//! point is at most `archive_timeout` old), a `ScheduledBackup` runs base backups on the platform's
//! schedule, and CloudNativePG's Cluster status is reflected in `status.backup`.
//!
//! CloudNativePG backups need an S3-compatible destination: a `pvc` destination is reported by
//! [`delegation_problem`]. Encryption is the object store's server-side AES-256 plus TLS in
//! transit (barman cannot use the agent's client-side key).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Value};

use super::agent::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY};
use super::backup_status::next_run;
use super::child_meta;
use super::cnpg::{GROUP, VERSION};
use crate::crd::{BackupStatus, DatabaseProvider};
use crate::names::Component;
use crate::validate::ValidatedPlatform;

pub const SCHEDULED_BACKUP_KIND: &str = "ScheduledBackup";
pub const SCHEDULED_BACKUP_PLURAL: &str = "scheduledbackups";

/// The API resource of a CloudNativePG ScheduledBackup.
pub fn scheduled_backup_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, SCHEDULED_BACKUP_KIND),
        SCHEDULED_BACKUP_PLURAL,
    )
}

/// Whether backups of this platform are delegated to CloudNativePG.
pub fn delegated(p: &ValidatedPlatform) -> bool {
    p.spec.backup.enabled && p.spec.database.provider == DatabaseProvider::CloudNativePG
}

/// Why delegation cannot work as specified (for the `BackupHealthy` condition), if it cannot.
pub fn delegation_problem(p: &ValidatedPlatform) -> Option<String> {
    (delegated(p) && p.spec.backup.destination.s3.is_none()).then(|| {
        "CloudNativePG backups need an S3-compatible destination (spec.backup.destination.s3); \
         a pvc destination is not supported with the CloudNativePG provider"
            .to_string()
    })
}

/// WAL segments are archived at least this often, bounding the recovery point.
pub fn archive_timeout_minutes(p: &ValidatedPlatform) -> i32 {
    p.spec.backup.rpo_minutes.clamp(1, 5)
}

/// `spec.backup` of the Cluster, or `None` when not delegated / no S3 destination.
pub fn cluster_backup(p: &ValidatedPlatform) -> Option<Value> {
    if !delegated(p) {
        return None;
    }
    let s3 = p.spec.backup.destination.s3.as_ref()?;
    let prefix = s3.prefix.trim_matches('/');
    let destination = if prefix.is_empty() {
        format!("s3://{}/", s3.bucket)
    } else {
        format!("s3://{}/{prefix}/", s3.bucket)
    };
    let mut store = json!({
        "destinationPath": destination,
        "s3Credentials": {
            "accessKeyId": {"name": s3.credentials_secret_ref, "key": AWS_ACCESS_KEY_ID},
            "secretAccessKey": {"name": s3.credentials_secret_ref, "key": AWS_SECRET_ACCESS_KEY},
        },
        "wal": {"compression": "gzip", "encryption": "AES256"},
        "data": {"compression": "gzip", "encryption": "AES256", "jobs": 2},
    });
    if let Some(endpoint) = &s3.endpoint {
        store["endpointURL"] = json!(endpoint);
    }
    Some(json!({
        "retentionPolicy": format!("{}d", p.spec.backup.retention.days),
        "barmanObjectStore": store,
    }))
}

/// Adds backup settings to the CloudNativePG Cluster built by [`super::cnpg`].
pub fn with_backup(p: &ValidatedPlatform, mut cluster: DynamicObject) -> DynamicObject {
    let Some(backup) = cluster_backup(p) else {
        return cluster;
    };
    if let Some(spec) = cluster.data.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("backup".into(), backup);
        let postgresql = spec
            .entry("postgresql")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(postgresql) = postgresql {
            let parameters = postgresql
                .entry("parameters")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(parameters) = parameters {
                parameters.insert(
                    "archive_timeout".into(),
                    json!(format!("{}min", archive_timeout_minutes(p))),
                );
            }
        }
    }
    cluster
}

/// The ScheduledBackup (CloudNativePG's cron has a leading seconds field).
pub fn scheduled_backup(p: &ValidatedPlatform) -> Option<DynamicObject> {
    cluster_backup(p)?;
    let mut obj = DynamicObject::new(
        &p.names.cnpg_scheduled_backup(),
        &scheduled_backup_resource(),
    );
    obj.metadata = child_meta(p, p.names.cnpg_scheduled_backup(), Component::Backup);
    obj.data = json!({
        "spec": {
            "schedule": format!("0 {}", p.spec.backup.schedule),
            "cluster": {"name": p.names.cnpg_cluster()},
            "method": "barmanObjectStore",
            "backupOwnerReference": "self",
            "immediate": true,
            "suspend": p.spec.stopped,
        }
    });
    Some(obj)
}

fn time_at(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// `status.backup` from CloudNativePG's Cluster status (`lastSuccessfulBackup`,
/// `lastFailedBackup`) merged with the previous status; times never move backwards. The next run
/// comes from the schedule.
pub fn status_from_cluster(
    previous: Option<&BackupStatus>,
    cluster: Option<&DynamicObject>,
    p: &ValidatedPlatform,
    now: Timestamp,
) -> Option<BackupStatus> {
    let mut status = previous.cloned().unwrap_or_default();
    if let Some(c) = cluster {
        if let Some(t) = time_at(&c.data, "/status/lastSuccessfulBackup") {
            if status.last_successful_time.as_ref().is_none_or(|s| t > s.0) {
                status.last_successful_time = Some(Time(t));
                // CloudNativePG names backups itself and does not report sizes here.
                status.last_backup_name = None;
                status.size = None;
            }
        }
        if let Some(t) = time_at(&c.data, "/status/lastFailedBackup") {
            if status.last_failure_time.as_ref().is_none_or(|f| t > f.0) {
                status.last_failure_time = Some(Time(t));
            }
        }
    }
    status.next_scheduled_time = (delegated(p) && !p.spec.stopped)
        .then(|| next_run(&p.spec.backup.schedule, now))
        .flatten()
        .map(Time);
    (status != BackupStatus::default()).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::S3Destination;
    use crate::desired::test_support::platform;

    fn cnpg_s3() -> ValidatedPlatform {
        platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.backup.rpo_minutes = 15;
            s.backup.retention.days = 14;
            s.backup.schedule = "30 * * * *".into();
            s.backup.destination.pvc = None;
            s.backup.destination.s3 = Some(S3Destination {
                endpoint: Some("https://minio.storage:9000".into()),
                bucket: "phi".into(),
                prefix: "demo".into(),
                region: "us-east-1".into(),
                credentials_secret_ref: "s3-creds".into(),
                force_path_style: true,
            });
        })
    }

    #[test]
    fn cluster_gets_barman_object_store_and_wal_archiving() {
        let p = cnpg_s3();
        let cluster = with_backup(&p, super::super::cnpg::build(&p).expect("cluster"));
        let b = &cluster.data["spec"]["backup"];
        assert_eq!(b["retentionPolicy"], "14d");
        let store = &b["barmanObjectStore"];
        assert_eq!(store["destinationPath"], "s3://phi/demo/");
        assert_eq!(store["endpointURL"], "https://minio.storage:9000");
        assert_eq!(store["s3Credentials"]["accessKeyId"]["name"], "s3-creds");
        assert_eq!(
            store["s3Credentials"]["secretAccessKey"]["key"],
            "AWS_SECRET_ACCESS_KEY"
        );
        assert_eq!(store["wal"]["encryption"], "AES256");
        assert_eq!(store["data"]["encryption"], "AES256");
        assert_eq!(
            cluster.data["spec"]["postgresql"]["parameters"]["archive_timeout"],
            "5min"
        );
        // The rest of the Cluster is untouched.
        assert_eq!(cluster.data["spec"]["instances"], p.spec.database.instances);
    }

    #[test]
    fn scheduled_backup_follows_the_platform_schedule() {
        let p = cnpg_s3();
        let sb = scheduled_backup(&p).expect("scheduled backup");
        assert_eq!(sb.metadata.name.as_deref(), Some("demo-db-backup"));
        assert_eq!(
            sb.types.as_ref().map(|t| t.kind.as_str()),
            Some("ScheduledBackup")
        );
        assert_eq!(sb.data["spec"]["schedule"], "0 30 * * * *");
        assert_eq!(sb.data["spec"]["cluster"]["name"], "demo-db");
        assert_eq!(sb.data["spec"]["method"], "barmanObjectStore");
        assert!(sb.metadata.owner_references.is_some());
    }

    #[test]
    fn nothing_delegated_for_other_providers_or_pvc() {
        let embedded = platform(|_| {});
        assert!(scheduled_backup(&embedded).is_none());
        assert!(cluster_backup(&embedded).is_none());
        let pvc = platform(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        assert!(scheduled_backup(&pvc).is_none());
        assert!(delegation_problem(&pvc).expect("problem").contains("S3"));
        assert!(delegation_problem(&cnpg_s3()).is_none());
        let off = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.backup.enabled = false;
        });
        assert!(delegation_problem(&off).is_none());
    }

    #[test]
    fn status_reflects_cloudnativepg() {
        let p = cnpg_s3();
        let mut cluster = DynamicObject::new("demo-db", &super::super::cnpg::api_resource());
        cluster.data = json!({"status": {
            "lastSuccessfulBackup": "2026-11-22T04:30:02Z",
            "lastFailedBackup": "2026-11-21T04:30:00Z",
            "firstRecoverabilityPoint": "2026-11-01T00:00:00Z"
        }});
        let now: Timestamp = "2026-11-22T04:40:00Z".parse().unwrap();
        let s = status_from_cluster(None, Some(&cluster), &p, now).expect("status");
        assert_eq!(
            s.last_successful_time,
            Some(Time("2026-11-22T04:30:02Z".parse().unwrap()))
        );
        assert_eq!(
            s.last_failure_time,
            Some(Time("2026-11-21T04:30:00Z".parse().unwrap()))
        );
        assert_eq!(
            s.next_scheduled_time,
            Some(Time("2026-11-22T05:30:00Z".parse().unwrap()))
        );
        assert!(super::super::backup_status::rpo_satisfied(
            Some(&s),
            15,
            now
        ));
        // An older report never replaces a newer success.
        cluster.data["status"]["lastSuccessfulBackup"] = json!("2026-11-20T00:00:00Z");
        let again = status_from_cluster(Some(&s), Some(&cluster), &p, now).expect("status");
        assert_eq!(again.last_successful_time, s.last_successful_time);
    }
}
