//! Tests of the availability and backup-RPO rules.

use super::*;

#[test]
fn availability_replicas_and_pdb() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::ApiAvailability,
        Verdict::Pass,
    );
    let single = |s: &mut HealthcarePlatformSpec| s.api_server.replicas = 1;
    assert_verdict(
        &run(&audit(single), no_change),
        RuleId::ApiAvailability,
        Verdict::Fail,
    );
    let p = enforce(single);
    let (effective, overrides) = prepare(&p, now());
    let children = children_of(&effective);
    assert_eq!(
        children.api_deployment.spec.as_ref().unwrap().replicas,
        Some(2)
    );
    assert!(children.api_pdb.is_some());
    let a = assess(
        &effective,
        &children,
        Some(&live(&children)),
        overrides,
        now(),
    );
    assert_verdict(&a, RuleId::ApiAvailability, Verdict::Pass);
    let a = run(&audit(|_| {}), |c, _| c.api_pdb = None);
    assert_verdict(&a, RuleId::ApiAvailability, Verdict::Fail);
    let stopped = audit(|s| {
        s.stopped = true;
        s.api_server.replicas = 1;
    });
    assert_verdict(
        &run(&stopped, no_change),
        RuleId::ApiAvailability,
        Verdict::Pass,
    );
}

#[test]
fn backup_rpo_never_passes_without_evidence() {
    let p = audit(|_| {});
    assert_verdict(&run(&p, no_change), RuleId::BackupRpo, Verdict::Pass);
    let a = run(&p, |_, ev| ev.backup = None);
    let m = assert_verdict(&a, RuleId::BackupRpo, Verdict::NotEvaluated);
    assert!(m.contains("backup"), "{m}");
    let a = run(&p, |_, ev| {
        ev.backup = Some(BackupStatus {
            last_successful_time: Some(Time(now() - SignedDuration::from_mins(90))),
            ..Default::default()
        })
    });
    let m = assert_verdict(&a, RuleId::BackupRpo, Verdict::Fail);
    assert!(m.contains("older than the RPO of 60 min"), "{m}");
    // Only failed backups recorded: no backup within any RPO.
    let a = run(&p, |_, ev| {
        ev.backup = Some(BackupStatus {
            last_failure_time: Some(Time(now() - SignedDuration::from_mins(5))),
            ..Default::default()
        })
    });
    let m = assert_verdict(&a, RuleId::BackupRpo, Verdict::Fail);
    assert!(m.contains("no backup has succeeded yet"), "{m}");
    // Neither: the first backup has not completed yet.
    let a = run(&p, |_, ev| ev.backup = Some(BackupStatus::default()));
    let m = assert_verdict(&a, RuleId::BackupRpo, Verdict::NotEvaluated);
    assert!(m.contains("no backup has completed yet"), "{m}");
    assert!(!m.contains("controller"), "{m}");
    let off = audit(|s| s.backup.enabled = false);
    assert_verdict(&run(&off, no_change), RuleId::BackupRpo, Verdict::Fail);
    // CloudNativePG with a pvc destination cannot back up: Fail, offline too.
    let cnpg_pvc = audit(|s| s.database.provider = DatabaseProvider::CloudNativePG);
    assert!(cnpg_pvc.spec.backup.destination.pvc.is_some());
    let m = assert_verdict(&run(&cnpg_pvc, no_change), RuleId::BackupRpo, Verdict::Fail);
    assert!(m.contains("backups cannot run"), "{m}");
    assert_verdict(
        &assess_static(&cnpg_pvc, now()),
        RuleId::BackupRpo,
        Verdict::Fail,
    );
    assert_verdict(
        &assess_static(&p, now()),
        RuleId::BackupRpo,
        Verdict::NotEvaluated,
    );
}
