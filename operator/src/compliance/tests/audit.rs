//! Tests of the audit rules: retention, hash chain and write failures.

use super::*;

#[test]
fn audit_retention_hipaa_only() {
    let short = |s: &mut HealthcarePlatformSpec| s.security.audit_retention_days = 365;
    assert_verdict(
        &run(&audit(short), no_change),
        RuleId::AuditRetention,
        Verdict::Fail,
    );
    let a = run(&enforce(short), no_change);
    assert_verdict(&a, RuleId::AuditRetention, Verdict::Pass);
    assert_eq!(a.overrides[0].to, "2190");
    let gdpr = platform(|s| {
        s.compliance.profiles = vec![ComplianceProfile::GDPR];
        short(s);
    });
    let a = run(&gdpr, no_change);
    assert!(!a
        .results
        .iter()
        .any(|r| r.rule.rule == RuleId::AuditRetention));
    assert!(a.overrides.is_empty(), "GDPR does not demand 6 years");
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.audit.retention_days = 30;
        }
    });
    assert_verdict(&a, RuleId::AuditRetention, Verdict::Fail);
}

#[test]
fn audit_chain_intact_detects_removal_and_rewrite() {
    let p = audit(|_| {});
    assert_verdict(&run(&p, no_change), RuleId::AuditChainIntact, Verdict::Pass);
    let prev = |id, hash: &str| {
        Some(AuditChainHead {
            id,
            hash: hash.into(),
        })
    };
    let a = run(&p, |_, ev| ev.previous_chain_head = prev(5, HASH_B));
    assert_verdict(&a, RuleId::AuditChainIntact, Verdict::Pass);
    assert_eq!(a.chain_head.as_ref().unwrap().id, 10);
    let a = run(&p, |_, ev| ev.previous_chain_head = prev(12, HASH_A));
    let m = assert_verdict(&a, RuleId::AuditChainIntact, Verdict::Fail);
    assert!(m.contains("removed"), "{m}");
    let a = run(&p, |_, ev| ev.previous_chain_head = prev(10, HASH_B));
    let m = assert_verdict(&a, RuleId::AuditChainIntact, Verdict::Fail);
    assert!(m.contains("rewritten"), "{m}");
    let a = run(&p, |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.audit.chain_head_hash = "zz".into();
        }
    });
    assert_verdict(&a, RuleId::AuditChainIntact, Verdict::Fail);
    assert_verdict(
        &assess_static(&p, now()),
        RuleId::AuditChainIntact,
        Verdict::NotEvaluated,
    );
}

#[test]
fn audit_write_failures() {
    let p = audit(|_| {});
    assert_verdict(
        &run(&p, no_change),
        RuleId::AuditWriteFailures,
        Verdict::Pass,
    );
    let a = run(&p, |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.audit.write_failures = 3;
        }
    });
    let m = assert_verdict(&a, RuleId::AuditWriteFailures, Verdict::Fail);
    assert!(m.contains('3'));
}
