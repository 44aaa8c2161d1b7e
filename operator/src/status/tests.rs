use super::*;
use crate::crd::HealthcarePlatformSpec;
use crate::desired::{build_children, ExistingSecrets, SecretGenerator};
use crate::validate::validate;
use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
use k8s_openapi::jiff::Timestamp;

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn hp(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> HealthcarePlatform {
    let mut spec = HealthcarePlatformSpec::default();
    f(&mut spec);
    crate::desired::test_support::complete(&mut spec);
    let mut hp = HealthcarePlatform::new("demo", spec);
    hp.metadata.namespace = Some("clinic".into());
    hp.metadata.generation = Some(3);
    hp.metadata.uid = Some("u".into());
    hp
}

/// Observed state with every workload at `ready` ready pods.
fn observed(p: &ValidatedPlatform, ready: i32) -> Observed {
    let children = build_children(
        p,
        &ExistingSecrets::default(),
        &mut SecretGenerator::Placeholder,
    );
    let mut d = children.api_deployment.clone();
    d.metadata.generation = Some(1);
    let want = d.spec.as_ref().unwrap().replicas.unwrap_or(2);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(want),
        ready_replicas: Some(ready.min(want)),
        updated_replicas: Some(want),
        ..Default::default()
    });
    let sts = |s: &StatefulSet| {
        let mut s = s.clone();
        s.metadata.generation = Some(1);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas: 1,
            ready_replicas: Some(ready.min(1)),
            updated_replicas: Some(1),
            ..Default::default()
        });
        s
    };
    Observed {
        deployment: Some(d),
        postgres: children.postgres.as_ref().map(|p| sts(&p.stateful_set)),
        redis: children.redis.as_ref().map(|r| sts(&r.stateful_set)),
        cnpg_cluster: None,
        network_policies: children.network_policies.len(),
        cnpg_installed: true,
        drift_corrected: vec![],
        monitoring: crate::apply::MonitoringState::Disabled,
        backup_jobs: vec![],
        backup_pods: vec![],
        on_demand_job: None,
        restore: Progress::NotRequested,
        self_report: None,
        database: children
            .postgres_tls
            .as_ref()
            .and_then(crate::desired::secrets::database_status),
    }
}

fn condition<'a>(s: &'a HealthcarePlatformStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn ready_only_when_pods_are_ready() {
    let obj = hp(|_| {});
    let p = validate(&obj, "d").unwrap();
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(100));
    assert_eq!(s.phase, Phase::Provisioning);
    assert_eq!(condition(&s, READY).status, "False");
    assert_eq!(condition(&s, PROGRESSING).status, "True");
    assert_eq!(s.observed_generation, Some(3));
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(100));
    assert_eq!(s.phase, Phase::Ready);
    for c in [
        READY,
        DATABASE_READY,
        CACHE_READY,
        API_SERVER_READY,
        NETWORK_POLICY_READY,
    ] {
        assert_eq!(condition(&s, c).status, "True", "{c}");
    }
    assert_eq!(condition(&s, DEGRADED).status, "False");
    let api = s.api_server.clone().unwrap();
    assert_eq!(api.ready, "2/2");
    assert_eq!(api.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        s.endpoint.unwrap().internal,
        "https://demo-api.clinic.svc:8080"
    );
}

#[test]
fn transition_time_changes_only_with_status() {
    let mut obj = hp(|_| {});
    let p = validate(&obj, "d").unwrap();
    let first = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(100));
    obj.status = Some(first.clone());
    let second = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(200));
    assert_eq!(
        first, second,
        "an unchanged platform yields an identical status"
    );
    obj.status = Some(second);
    let third = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(300));
    assert_eq!(condition(&third, READY).last_transition_time, t(300));
    assert_eq!(
        condition(&third, NETWORK_POLICY_READY).last_transition_time,
        t(100)
    );
    // Was ready for this generation, now pods are down: Degraded, not Provisioning.
    assert_eq!(third.phase, Phase::Degraded);
}

#[test]
fn invalid_spec_is_degraded_with_reason() {
    let obj = hp(|s| {
        s.api_server.autoscaling.min_replicas = 5;
        s.api_server.autoscaling.max_replicas = 2;
    });
    let err = validate(&obj, "d").unwrap_err();
    let s = compute(&obj, Outcome::Invalid(&err), t(1));
    assert_eq!(s.phase, Phase::Failed);
    let d = condition(&s, DEGRADED);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(d.message.contains("spec.apiServer.autoscaling.maxReplicas"));
}

#[test]
fn cnpg_missing_is_reported_not_crashed() {
    let obj = hp(|s| s.database.provider = DatabaseProvider::CloudNativePG);
    let p = validate(&obj, "d").unwrap();
    let mut obs = observed(&p, 2);
    obs.cnpg_installed = false;
    let s = compute(&obj, Outcome::Observed(&p, &obs), t(1));
    let c = condition(&s, DATABASE_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", REASON_CNPG_NOT_INSTALLED)
    );
    assert!(c.message.contains("clusters.postgresql.cnpg.io"));
    assert_eq!(s.phase, Phase::Degraded);
}

#[test]
fn paused_and_stopped_phases() {
    let obj = hp(|s| s.paused = true);
    let p = validate(&obj, "d").unwrap();
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(1));
    assert_eq!(s.phase, Phase::Paused);
    assert_eq!(condition(&s, RECONCILIATION_PAUSED).status, "True");
    let obj = hp(|s| s.stopped = true);
    let p = validate(&obj, "d").unwrap();
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 0)), t(1));
    assert_eq!(s.phase, Phase::Stopped);
    assert_eq!(condition(&s, STOPPED).status, "True");
    assert_eq!(condition(&s, READY).reason, "Stopped");
}

#[test]
fn disabled_network_policy_is_visible() {
    let obj = hp(|s| s.network_policy.enabled = false);
    let p = validate(&obj, "d").unwrap();
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), t(1));
    let c = condition(&s, NETWORK_POLICY_READY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Disabled")
    );
}

#[test]
fn backup_healthy_follows_status_backup() {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    let obj = hp(|_| {});
    let p = validate(&obj, "d").unwrap();
    let now = t(1_800_000_000);
    let s = compute(&obj, Outcome::Observed(&p, &observed(&p, 2)), now.clone());
    let c = condition(&s, BACKUP_HEALTHY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "NoBackupYet")
    );
    assert_eq!(
        s.phase,
        Phase::Ready,
        "backup health does not change the phase"
    );
    assert!(s.backup.unwrap().next_scheduled_time.is_some());

    // A Job completed 10 minutes ago, recorded together with the on-demand Job.
    let mut obs = observed(&p, 2);
    obs.backup_jobs = vec![k8s_openapi::api::batch::v1::Job {
        metadata: kube::api::ObjectMeta {
            name: Some("demo-backup-1".into()),
            ..Default::default()
        },
        status: Some(JobStatus {
            succeeded: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                last_transition_time: Some(t(1_800_000_000 - 600)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        spec: None,
    }];
    obs.on_demand_job = Some("demo-backup-now-abc".into());
    let s = compute(&obj, Outcome::Observed(&p, &obs), now.clone());
    let b = s.backup.clone().unwrap();
    assert_eq!(b.last_successful_time, Some(t(1_800_000_000 - 600)));
    assert_eq!(b.last_on_demand_job.as_deref(), Some("demo-backup-now-abc"));
    assert_eq!(condition(&s, BACKUP_HEALTHY).reason, "BackupWithinRpo");
    // Two hours later with nothing new: RpoExceeded.
    let mut later = obj.clone();
    later.status = Some(s);
    let s = compute(
        &later,
        Outcome::Observed(&p, &observed(&p, 2)),
        t(1_800_000_000 + 7200),
    );
    let c = condition(&s, BACKUP_HEALTHY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "RpoExceeded")
    );
    assert_eq!(
        s.backup.unwrap().last_on_demand_job.as_deref(),
        Some("demo-backup-now-abc"),
        "kept"
    );

    // CloudNativePG with a pvc destination cannot delegate.
    let cnpg = hp(|s| s.database.provider = DatabaseProvider::CloudNativePG);
    let p = validate(&cnpg, "d").unwrap();
    let s = compute(&cnpg, Outcome::Observed(&p, &observed(&p, 2)), now);
    let c = condition(&s, BACKUP_HEALTHY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "DestinationUnsupported")
    );
}

fn from_backup(s: &mut HealthcarePlatformSpec) {
    use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup};
    s.database.bootstrap = Some(DatabaseBootstrap {
        from_backup: Some(FromBackup {
            name: "latest".into(),
            source: BackupSource {
                s3: None,
                claim_name: Some("old-backups".into()),
            },
            secret_ref: "old-key".into(),
        }),
    });
}

/// `observed` of a platform held for its restore: the Deployment at 0 replicas.
fn held(p: &ValidatedPlatform, restore: Progress) -> Observed {
    let mut obs = observed(p, 1);
    if let Some(d) = obs.deployment.as_mut() {
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
    }
    obs.restore = restore;
    obs
}

#[test]
fn the_api_waits_for_the_restore_and_a_failure_is_reported() {
    use crate::desired::restore::RestoreResult;
    let obj = hp(from_backup);
    let p = validate(&obj, "d").unwrap();
    assert!(p.restore_pending);

    // Running: Progressing/Restoring, the API held at 0 and not ready, no status.restore.
    let running = Progress::Running {
        waiting: None,
        failed_pods: 0,
    };
    let s = compute(&obj, Outcome::Observed(&p, &held(&p, running)), t(100));
    assert_eq!(s.phase, Phase::Provisioning);
    let c = condition(&s, PROGRESSING);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", REASON_RESTORING)
    );
    assert!(c.message.contains("demo-restore"), "{}", c.message);
    assert_eq!(condition(&s, READY).reason, REASON_RESTORING);
    let api = condition(&s, API_SERVER_READY);
    assert_eq!(
        (api.status.as_str(), api.reason.as_str()),
        ("False", REASON_WAITING_FOR_RESTORE)
    );
    assert_eq!(condition(&s, DEGRADED).status, "False");
    assert!(s.restore.is_none());

    // A pod that cannot start says why (a Kubernetes reason, nothing from the pod).
    let stuck = Progress::Running {
        waiting: Some("CreateContainerConfigError".into()),
        failed_pods: 0,
    };
    let s = compute(&obj, Outcome::Observed(&p, &held(&p, stuck)), t(100));
    assert!(condition(&s, PROGRESSING)
        .message
        .contains("CreateContainerConfigError"));

    // Failed: Degraded/RestoreFailed, Ready False, not progressing; still held.
    let failed = Progress::Failed {
        reason: "BackoffLimitExceeded".into(),
    };
    let s = compute(&obj, Outcome::Observed(&p, &held(&p, failed)), t(200));
    assert_eq!(s.phase, Phase::Degraded);
    for (type_, status) in [(DEGRADED, "True"), (READY, "False"), (PROGRESSING, "False")] {
        let c = condition(&s, type_);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (status, REASON_RESTORE_FAILED),
            "{type_}"
        );
    }
    let msg = &condition(&s, DEGRADED).message;
    assert!(
        msg.contains("BackoffLimitExceeded") && msg.contains("kubectl logs job/demo-restore"),
        "{msg}"
    );
    assert!(s.restore.is_none());

    // Succeeded: recorded once, with the backup and the completion time.
    let done = Progress::Succeeded {
        completion_time: Some(t(300)),
        result: RestoreResult {
            restored_backup: Some("backup-20261122T030000.000Z".into()),
            skipped: false,
        },
    };
    let s = compute(&obj, Outcome::Observed(&p, &held(&p, done)), t(310));
    let r = s.restore.clone().expect("status.restore");
    assert_eq!(r.backup_name, "latest");
    assert_eq!(
        r.restored_backup.as_deref(),
        Some("backup-20261122T030000.000Z")
    );
    assert_eq!(r.completion_time, t(300));
    assert_eq!(r.job, "demo-restore");

    // The next reconcile no longer restores: the API runs, even with the Job gone.
    let mut next = obj.clone();
    next.status = Some(s);
    let p2 = validate(&next, "d").unwrap();
    assert!(!p2.restore_pending && p2.api_replicas() == 2);
    let mut obs = observed(&p2, 2);
    obs.restore = Progress::NotRequested;
    let s = compute(&next, Outcome::Observed(&p2, &obs), t(400));
    assert_eq!(s.phase, Phase::Ready);
    assert_eq!(s.restore, Some(r.clone()), "kept as it was");
    // A later failed apply or invalid spec keeps it too.
    let mut after = next.clone();
    after.status = Some(s);
    let err = ApplyError::Discovery { detail: "x".into() };
    let s = compute(&after, Outcome::ApplyFailed(&err), t(500));
    assert_eq!(s.restore, Some(r));
}

#[test]
fn external_cache_ready_only_when_the_self_report_says_reachable() {
    use crate::compliance::self_report::parse;
    use crate::crd::SecretKeyRef;
    let obj = hp(|s| {
        s.cache.provider = CacheProvider::External;
        s.cache.secret_ref = Some(SecretKeyRef {
            name: "redis".into(),
            key: "url".into(),
        });
    });
    let p = validate(&obj, "d").unwrap();
    let report = |cache: &str| {
        parse(
            format!(
                r#"{{"version":"0.2.0","schema_version":7,
                "encryption":{{"active":true,"active_key_id":"k-1","key_ids":["k-1"]}},
                "audit":{{"chain_head_id":1,"chain_head_hash":"ab","write_failures":0,"retention_days":2190}},
                "sessions":{{"idle_timeout_minutes":15,"access_token_ttl_minutes":15}},
                "rate_limit":{{"enabled":true,"backend":"redis","requests_per_minute":600,"login_attempts_per_minute":5}},
                "database_tls":true{cache}}}"#
            )
            .as_bytes(),
        )
        .expect("report")
    };
    let with = |self_report: Option<Result<SelfReport, String>>| {
        let mut obs = observed(&p, 2);
        obs.self_report = self_report;
        compute(&obj, Outcome::Observed(&p, &obs), t(1))
    };
    let cache_cond = |s: &HealthcarePlatformStatus| {
        let c = condition(s, CACHE_READY);
        (c.status.clone(), c.reason.clone())
    };

    // Every API pod ready, but no self-report yet: not verified (was: True).
    let s = with(None);
    assert_eq!(
        cache_cond(&s),
        ("False".into(), REASON_EXTERNAL_NOT_VERIFIED.into())
    );
    assert_eq!(condition(&s, API_SERVER_READY).status, "True");
    assert_ne!(s.phase, Phase::Ready);
    let s = with(Some(Err("no API pod is ready to answer".into())));
    assert_eq!(cache_cond(&s).1, REASON_EXTERNAL_NOT_VERIFIED);
    // An API that does not report the cache: not verified either.
    let s = with(Some(Ok(report(""))));
    assert_eq!(cache_cond(&s).1, REASON_EXTERNAL_NOT_VERIFIED);
    assert!(condition(&s, CACHE_READY).message.contains("0.2.0"));

    let s = with(Some(Ok(report(
        r#","cache":{"configured":true,"reachable":true}"#,
    ))));
    assert_eq!(
        cache_cond(&s),
        ("True".into(), REASON_EXTERNAL_REACHABLE.into())
    );
    assert_eq!(s.phase, Phase::Ready);

    let s = with(Some(Ok(report(
        r#","cache":{"configured":true,"reachable":false}"#,
    ))));
    assert_eq!(
        cache_cond(&s),
        ("False".into(), REASON_EXTERNAL_UNREACHABLE.into())
    );
    assert_eq!(s.phase, Phase::Degraded);
    assert_eq!(condition(&s, DEGRADED).reason, REASON_EXTERNAL_UNREACHABLE);
    assert_eq!(condition(&s, READY).status, "False");
}
