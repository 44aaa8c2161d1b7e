//! Unit tests of the validate stage: the helpers every test uses, and the tests of [`validate`]'s
//! result ([`ValidatedPlatform`]: names, replicas, on-demand backup and restore state). The
//! per-section checks are tested in `api_server` (API server, network policy, security) and
//! `services` (database, cache, backup and restore bootstrap).

mod api_server;
mod services;

use super::*;
use crate::crd::HealthcarePlatform;

pub(super) fn platform(spec: HealthcarePlatformSpec) -> HealthcarePlatform {
    let mut p = HealthcarePlatform::new("demo", spec);
    p.metadata.namespace = Some("clinic".into());
    p
}

pub(super) fn fields(err: ValidationError) -> Vec<String> {
    err.errors.into_iter().map(|e| e.field).collect()
}

#[test]
fn default_spec_is_valid() {
    let v = validate(&platform(HealthcarePlatformSpec::default()), "default").unwrap();
    assert_eq!(v.namespace, "clinic");
    assert_eq!(v.api_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.api_replicas(), 2);
}

#[test]
fn bad_names_are_refused() {
    let mut p = platform(HealthcarePlatformSpec::default());
    p.metadata.name = Some("Demo_1".into());
    assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
    p.metadata.name = Some("a".repeat(41));
    assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
    p.metadata.name = None;
    assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
}

#[test]
fn stopped_scales_to_zero_and_disables_autoscaling() {
    let mut spec = HealthcarePlatformSpec {
        stopped: true,
        ..Default::default()
    };
    spec.api_server.autoscaling.enabled = true;
    let v = validate(&platform(spec), "default").unwrap();
    assert_eq!(v.api_replicas(), 0);
    assert!(!v.autoscaling());
    assert_eq!(v.api_min_replicas(), 0);
}

#[test]
fn backup_now_token_is_pending_until_status_records_its_job() {
    use crate::crd::{BackupStatus, HealthcarePlatformStatus};
    let mut hp = platform(HealthcarePlatformSpec::default());
    assert_eq!(validate(&hp, "d").unwrap().backup_now, None);
    hp.metadata.annotations = Some(
        [(ANNOTATION_BACKUP_NOW.to_string(), "  ".to_string())]
            .into_iter()
            .collect(),
    );
    assert_eq!(validate(&hp, "d").unwrap().backup_now, None, "blank token");
    hp.metadata.annotations = Some(
        [(ANNOTATION_BACKUP_NOW.to_string(), " tok1 ".to_string())]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        validate(&hp, "d").unwrap().backup_now.as_deref(),
        Some("tok1")
    );
    // Handled: its Job is recorded in status.backup.
    let job = Names::new("demo").backup_now_job(&token_hash("tok1"));
    hp.status = Some(HealthcarePlatformStatus {
        backup: Some(BackupStatus {
            last_on_demand_job: Some(job),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(validate(&hp, "d").unwrap().backup_now, None);
    // Another token is pending again.
    hp.metadata.annotations = Some(
        [(ANNOTATION_BACKUP_NOW.to_string(), "tok2".to_string())]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        validate(&hp, "d").unwrap().backup_now.as_deref(),
        Some("tok2")
    );
}

#[test]
fn restore_is_pending_until_recorded_and_holds_the_api_at_zero() {
    use crate::crd::{
        ApiServerStatus, BackupSource, DatabaseBootstrap, FromBackup, HealthcarePlatformStatus,
        RestoreStatus,
    };
    let mut spec = HealthcarePlatformSpec::default();
    spec.api_server.autoscaling.enabled = true;
    spec.api_server.autoscaling.min_replicas = 3;
    let plain = validate(&platform(spec.clone()), "d").unwrap();
    assert!(!plain.restore_pending && plain.from_backup().is_none());
    assert!(plain.autoscaling());

    spec.database.bootstrap = Some(DatabaseBootstrap {
        from_backup: Some(FromBackup {
            name: "latest".into(),
            source: BackupSource {
                s3: None,
                claim_name: Some("old-backups".into()),
            },
            secret_ref: "old-key".into(),
        }),
    });
    let mut hp = platform(spec);
    let v = validate(&hp, "d").unwrap();
    assert!(v.restore_pending);
    assert!(v.api_held());
    assert_eq!(v.api_replicas(), 0);
    assert!(
        !v.autoscaling(),
        "no HPA may scale the API up while restoring"
    );
    assert_eq!(
        v.api_min_replicas(),
        3,
        "the intended availability is unchanged"
    );

    // Recorded in status.restore: never pending again (even once its Job is gone).
    hp.status = Some(HealthcarePlatformStatus {
        restore: Some(RestoreStatus {
            backup_name: "latest".into(),
            restored_backup: Some("backup-20261122T030000.000Z".into()),
            skipped: false,
            completion_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-22T06:00:00Z".parse().unwrap(),
            ),
            job: "demo-restore".into(),
        }),
        ..Default::default()
    });
    let v = validate(&hp, "d").unwrap();
    assert!(!v.restore_pending && v.autoscaling());
    // A platform whose API has run already (e.g. restored by an older operator) is
    // bootstrapped: its API is not scaled down to restore again.
    hp.status = Some(HealthcarePlatformStatus {
        api_server: Some(ApiServerStatus {
            version: Some("0.1.0".into()),
            ready_replicas: 2,
            desired_replicas: 2,
            ready: "2/2".into(),
        }),
        ..Default::default()
    });
    assert!(!validate(&hp, "d").unwrap().restore_pending);
}
