//! Every rule passing and failing; enforce vs audit; exceptions and their expiry; status,
//! condition and events.
//!
//! This file holds the shared fixtures and the tests across rules (every rule passing,
//! exceptions, status, events, metrics); the tests of each rule family are beside it in
//! `tests/`, by the same concerns as `evaluate/`.

mod access;
mod audit;
mod encryption;
mod resilience;
mod secrets;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;

use super::self_report::{parse, SelfReport};
use super::*;
use crate::crd::{
    AuditChainHead, BackupStatus, CacheProvider, ComplianceException, ComplianceMode,
    ComplianceProfile, DatabaseProvider, HealthcarePlatformSpec, SecretKeyRef,
};
use crate::desired::test_support::platform;
use crate::desired::{build_children, Children, ExistingSecrets, SecretGenerator};
use crate::validate::ValidatedPlatform;

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn now() -> Timestamp {
    "2026-11-22T06:00:00Z".parse().unwrap()
}

fn report() -> SelfReport {
    parse(
        format!(
            r#"{{"version":"0.1.0","schema_version":7,
          "encryption":{{"active":true,"active_key_id":"k-1","key_ids":["k-0","k-1"]}},
          "audit":{{"chain_head_id":10,"chain_head_hash":"{HASH_A}","write_failures":0,"retention_days":2190}},
          "sessions":{{"idle_timeout_minutes":15,"access_token_ttl_minutes":15}},
          "rate_limit":{{"enabled":true,"backend":"redis","requests_per_minute":600,"login_attempts_per_minute":5}},
          "database_tls":true}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn audit(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> ValidatedPlatform {
    platform(|s| {
        s.compliance.mode = ComplianceMode::Audit;
        s.compliance.profiles = vec![
            ComplianceProfile::HIPAA,
            ComplianceProfile::GDPR,
            ComplianceProfile::SOC2,
        ];
        f(s)
    })
}

fn enforce(f: impl FnOnce(&mut HealthcarePlatformSpec)) -> ValidatedPlatform {
    platform(|s| {
        s.compliance.mode = ComplianceMode::Enforce;
        f(s)
    })
}

fn children_of(p: &ValidatedPlatform) -> Children {
    build_children(
        p,
        &ExistingSecrets::default(),
        &mut SecretGenerator::Random { now: now() },
    )
}

fn live(children: &Children) -> LiveEvidence {
    LiveEvidence {
        network_policies: children.network_policies.clone(),
        backup: Some(BackupStatus {
            last_successful_time: Some(Time(now() - SignedDuration::from_mins(10))),
            ..Default::default()
        }),
        backup_jobs: children.backup.on_demand_job.iter().cloned().collect(),
        self_report: Ok(report()),
        previous_chain_head: None,
    }
}

/// Prepare (enforce) → build → assess, with live evidence edited by `f`.
fn run(p: &ValidatedPlatform, f: impl FnOnce(&mut Children, &mut LiveEvidence)) -> Assessment {
    let (effective, overrides) = prepare(p, now());
    let mut children = children_of(&effective);
    let mut ev = live(&children);
    f(&mut children, &mut ev);
    assess(&effective, &children, Some(&ev), overrides, now())
}

fn verdict(a: &Assessment, rule: RuleId) -> (Verdict, String) {
    let r = a
        .results
        .iter()
        .find(|r| r.rule.rule == rule)
        .unwrap_or_else(|| panic!("{rule:?} not evaluated"));
    (r.verdict, r.message.clone())
}

fn assert_verdict(a: &Assessment, rule: RuleId, want: Verdict) -> String {
    let (v, m) = verdict(a, rule);
    assert_eq!(v, want, "{rule:?}: {m}");
    m
}

fn no_change(_: &mut Children, _: &mut LiveEvidence) {}

#[test]
fn default_platform_with_healthy_evidence_passes_every_rule() {
    let a = run(&audit(|_| {}), no_change);
    let failing: Vec<&str> = a.failures().map(|r| r.rule.id).collect();
    assert!(failing.is_empty(), "{:#?}", a.results);
    assert_eq!(a.compliant(), Some(true));
    assert_eq!(a.passed(), RULES.len());
}

/// Standard base64 of 32 zero bytes.
const KEY32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[test]
fn active_exception_accepts_and_stops_enforcement_expired_one_does_not() {
    let with_exception = |expires: Timestamp| {
        platform(move |s| {
            s.security.session_idle_timeout_minutes = 30;
            s.compliance.exceptions = vec![
                ComplianceException {
                    rule: "session-idle-timeout".into(),
                    justification: "night-shift kiosk pilot, approved by CISO".into(),
                    expires: Time(expires),
                },
                ComplianceException {
                    rule: "no-such-rule".into(),
                    justification: "typo".into(),
                    expires: Time(expires),
                },
            ];
        })
    };
    // Active: not enforced, reported as excepted, not a violation.
    let a = run(
        &with_exception(now() + SignedDuration::from_hours(24)),
        no_change,
    );
    let m = assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Excepted);
    assert!(m.contains("exception"), "{m}");
    assert!(a
        .overrides
        .iter()
        .all(|o| o.rule != RuleId::SessionIdleTimeout));
    let status = report::status(&a, None, &Time(now()));
    assert!(status
        .violations
        .iter()
        .all(|v| v.rule != "session-idle-timeout"));
    assert_eq!(status.exceptions[0].state, "Active");
    assert_eq!(status.exceptions[1].state, "UnknownRule");

    // Expired: enforced again (Enforce mode), and status says the exception expired.
    let a = run(
        &with_exception(now() - SignedDuration::from_hours(1)),
        no_change,
    );
    assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Pass);
    assert_eq!(a.overrides[0].rule, RuleId::SessionIdleTimeout);
    let status = report::status(&a, None, &Time(now()));
    assert_eq!(status.exceptions[0].state, "Expired");
    assert!(status.exceptions[0].message.contains("no longer applies"));

    // Expired in Audit mode: the violation is back, and its message names the expiry.
    let mut p = with_exception(now() - SignedDuration::from_hours(1));
    p.spec.compliance.mode = ComplianceMode::Audit;
    let m = assert_verdict(
        &run(&p, no_change),
        RuleId::SessionIdleTimeout,
        Verdict::Fail,
    );
    assert!(m.contains("expired"), "{m}");
}

#[test]
fn status_condition_and_events() {
    let first = run(
        &audit(|s| {
            s.api_server.replicas = 1;
            s.security.session_idle_timeout_minutes = 60;
        }),
        no_change,
    );
    let t0 = Time(now());
    let s0 = report::status(&first, None, &t0);
    assert_eq!(s0.compliant, Some(false));
    assert_eq!(s0.mode, Some(ComplianceMode::Audit));
    assert_eq!(s0.total, i32::try_from(RULES.len()).unwrap());
    assert_eq!(s0.passed, s0.total - 2);
    let ev = report::events(None, &s0);
    assert!(ev.iter().any(|e| e.warning
        && e.reason == "ComplianceViolation"
        && e.note.contains("api-availability")));
    let (status, reason, msg) = report::condition(&first);
    assert_eq!((status, reason), ("False", "ViolationsFound"));
    assert!(msg.contains("session-idle-timeout"));

    // A later evaluation keeps `since` of a persisting violation and announces the cleared one.
    let later = Time(now() + SignedDuration::from_mins(5));
    let second = run(&audit(|s| s.api_server.replicas = 1), no_change);
    let s1 = report::status(&second, Some(&s0), &later);
    let still = s1
        .violations
        .iter()
        .find(|v| v.rule == "api-availability")
        .unwrap();
    assert_eq!(still.since, Some(t0.clone()));
    let ev = report::events(Some(&s0), &s1);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].reason, "ComplianceViolationCleared");
    assert!(!ev[0].warning);
    assert!(report::events(Some(&s1), &s1).is_empty());

    // Re-evaluating an unchanged result right away writes nothing new (no reconcile loop);
    // a minute later lastEvaluated is refreshed.
    let again = report::status(
        &second,
        Some(&s1),
        &Time(now() + SignedDuration::from_secs(330)),
    );
    assert_eq!(again, s1);
    let refreshed = report::status(
        &second,
        Some(&s1),
        &Time(now() + SignedDuration::from_mins(7)),
    );
    assert_ne!(refreshed.last_evaluated, s1.last_evaluated);

    // Not everything evaluable and nothing failing: Unknown, never True.
    let only_static = audit(|_| {});
    let a = assess_static(&only_static, now());
    assert_eq!(a.compliant(), None);
    assert_eq!(report::condition(&a).0, "Unknown");
    // ... and True once every rule passes.
    let a = run(&only_static, no_change);
    assert_eq!(a.compliant(), Some(true), "{:#?}", a.results);
    assert_eq!(report::condition(&a).1, "AllRulesPassed");
}

#[test]
fn metrics_record_rule_status_and_violations() {
    let registry = prometheus::Registry::new();
    let m = metrics::ComplianceMetrics::register(&registry).unwrap();
    let a = run(
        &audit(|s| {
            s.api_server.replicas = 1;
            s.security.access_token_ttl_minutes = 30;
        }),
        no_change,
    );
    m.record("clinic/demo", &a);
    m.record_backup("clinic/demo", Some(&Time(now())));
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    assert!(
        text.contains(
            r#"caduceus_compliance_rule_status{platform="clinic/demo",rule="api-availability"} 0"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"caduceus_compliance_rule_status{platform="clinic/demo",rule="redis-auth"} 1"#
    ));
    assert!(text
        .contains(r#"caduceus_compliance_violations{platform="clinic/demo",severity="high"} 1"#));
    assert!(text
        .contains(r#"caduceus_compliance_violations{platform="clinic/demo",severity="medium"} 1"#));
    assert!(
        text.contains(
            "caduceus_backup_last_success_timestamp_seconds{platform=\"clinic/demo\"} 1795327200"
        ),
        "{text}"
    );
    m.forget_platform("clinic/demo");
    assert!(registry.gather().iter().all(|f| f.get_metric().is_empty()));
}
