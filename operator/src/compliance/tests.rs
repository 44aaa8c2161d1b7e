//! Every rule passing and failing; enforce vs audit; exceptions and their expiry; status,
//! condition and events.

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
fn phi_key_valid_passes_fails_and_needs_the_cluster() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Pass);

    let p = audit(|_| {});
    let mut existing = ExistingSecrets::default();
    existing.insert(
        p.names.api_secrets(),
        BTreeMap::from([(
            crate::names::PHI_KEYS.to_string(),
            ByteString(format!(r#"{{"version":1,"active_key_id":"k-2","keys":{{"k-1":"{KEY32}"}},"blind_index_key":"{KEY32}"}}"#).into_bytes()),
        )]),
    );
    let children = build_children(&p, &existing, &mut SecretGenerator::random());
    let a = assess(&p, &children, Some(&live(&children)), vec![], now());
    let m = assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Fail);
    assert!(m.contains("active key id"), "{m}");

    // A key that is not 32 bytes (the API would refuse to start with it).
    existing.insert(
        p.names.api_secrets(),
        BTreeMap::from([(
            crate::names::PHI_KEYS.to_string(),
            ByteString(format!(r#"{{"version":1,"active_key_id":"k-1","keys":{{"k-1":"AAAA"}},"blind_index_key":"{KEY32}"}}"#).into_bytes()),
        )]),
    );
    let children = build_children(&p, &existing, &mut SecretGenerator::random());
    let a = assess(&p, &children, Some(&live(&children)), vec![], now());
    let m = assert_verdict(&a, RuleId::PhiKeyValid, Verdict::Fail);
    assert!(m.contains("k-1") && m.contains("32 bytes"), "{m}");

    let offline = assess_static(&p, now());
    assert_verdict(&offline, RuleId::PhiKeyValid, Verdict::NotEvaluated);
}

#[test]
fn field_encryption_from_the_self_report() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Pass);
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.encryption.active = false;
        }
    });
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Fail);
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.encryption.active_key_id = "k-9".into();
        }
    });
    assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::Fail);
    let a = run(&audit(|_| {}), |_, ev| {
        ev.self_report = Err("connection refused".into())
    });
    let m = assert_verdict(&a, RuleId::FieldEncryptionActive, Verdict::NotEvaluated);
    assert!(m.contains("connection refused"));
}

#[test]
fn ingress_tls() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::IngressTls,
        Verdict::Pass,
    );
    let with_ingress = audit(|s| {
        s.api_server.ingress.enabled = true;
        s.api_server.ingress.host = Some("api.example.org".into());
    });
    assert_verdict(
        &run(&with_ingress, no_change),
        RuleId::IngressTls,
        Verdict::Pass,
    );
    let a = run(&with_ingress, |c, _| {
        if let Some(spec) = c.api_ingress.as_mut().and_then(|i| i.spec.as_mut()) {
            spec.tls = None;
        }
    });
    let m = assert_verdict(&a, RuleId::IngressTls, Verdict::Fail);
    assert!(m.contains("api.example.org"));
}

#[test]
fn database_tls_embedded_external_and_reported() {
    // The embedded database: operator-issued certificate, ssl=on, API with verify-full.
    let m = assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::DatabaseTls,
        Verdict::Pass,
    );
    assert!(m.contains("verify-full"), "{m}");
    // A URL of the API's role without verification fails ...
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.postgres_app.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert(
                crate::names::PG_URL_KEY.into(),
                ByteString(b"postgres://u:p@h:5432/db?sslmode=prefer".to_vec()),
            );
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("verify-full"), "{m}");
    // ... and so does a server without ssl=on.
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(pg) = c.postgres.as_mut() {
            let spec = pg
                .stateful_set
                .spec
                .as_mut()
                .unwrap()
                .template
                .spec
                .as_mut()
                .unwrap();
            spec.containers[0].args = None;
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("ssl=on"), "{m}");
    // ... and so does an expired server certificate (renewal impossible) or none at all.
    let a = run(&audit(|_| {}), |c, _| {
        let old = crate::desired::postgres_tls::issue(
            "demo",
            &["demo-postgres.clinic.svc".to_string()],
            now() - SignedDuration::from_hours(24 * 400),
        )
        .unwrap();
        if let Some(data) = c.postgres_tls.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert("ca.crt".into(), ByteString(old.ca_cert.into_bytes()));
            data.insert("tls.crt".into(), ByteString(old.server_cert.into_bytes()));
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("expired at"), "{m}");
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.postgres_tls.as_mut().and_then(|s| s.data.as_mut()) {
            data.remove("tls.crt");
        }
    });
    let m = assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    assert!(m.contains("no valid CA and server certificate"), "{m}");

    let external = audit(|s| {
        s.database.provider = DatabaseProvider::External;
        s.database.secret_ref = Some(SecretKeyRef {
            name: "db".into(),
            key: "url".into(),
        });
    });
    assert_verdict(
        &run(&external, no_change),
        RuleId::DatabaseTls,
        Verdict::Pass,
    );
    let a = run(&external, |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.database_tls = false;
        }
    });
    assert_verdict(&a, RuleId::DatabaseTls, Verdict::Fail);
    let a = run(&external, |_, ev| ev.self_report = Err("timeout".into()));
    assert_verdict(&a, RuleId::DatabaseTls, Verdict::NotEvaluated);
}

#[test]
fn redis_auth() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::RedisAuth,
        Verdict::Pass,
    );
    let disabled = audit(|s| s.cache.provider = CacheProvider::Disabled);
    assert_verdict(&run(&disabled, no_change), RuleId::RedisAuth, Verdict::Pass);
    let external = audit(|s| {
        s.cache.provider = CacheProvider::External;
        s.cache.secret_ref = Some(SecretKeyRef {
            name: "redis".into(),
            key: "url".into(),
        });
    });
    assert_verdict(
        &run(&external, no_change),
        RuleId::RedisAuth,
        Verdict::NotEvaluated,
    );
    let a = run(&audit(|_| {}), |c, _| {
        if let Some(data) = c.redis_credentials.as_mut().and_then(|s| s.data.as_mut()) {
            data.insert(
                crate::names::REDIS_AUTH_CONF_KEY.into(),
                ByteString(b"# nothing\n".to_vec()),
            );
        }
    });
    assert_verdict(&a, RuleId::RedisAuth, Verdict::Fail);
}

#[test]
fn idle_timeout_and_token_ttl_audit_vs_enforce() {
    let lax = |s: &mut HealthcarePlatformSpec| {
        s.security.session_idle_timeout_minutes = 60;
        s.security.access_token_ttl_minutes = 30;
    };
    // Audit: nothing changes, violations are reported.
    let a = run(&audit(lax), no_change);
    let m = assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Fail);
    assert!(m.contains("60"));
    assert_verdict(&a, RuleId::AccessTokenTtl, Verdict::Fail);
    assert!(a.overrides.is_empty());

    // Enforce: values clamped in the children, status says which and why.
    let p = enforce(lax);
    let (effective, overrides) = prepare(&p, now());
    let children = children_of(&effective);
    assert_eq!(
        children.api_config.data.as_ref().unwrap()["CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES"],
        "15"
    );
    let a = assess(
        &effective,
        &children,
        Some(&live(&children)),
        overrides,
        now(),
    );
    assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Pass);
    assert_verdict(&a, RuleId::AccessTokenTtl, Verdict::Pass);
    let status = report::status(&a, None, &Time(now()));
    let fields: Vec<&str> = status.enforced.iter().map(|o| o.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.security.sessionIdleTimeoutMinutes",
            "spec.security.accessTokenTtlMinutes"
        ]
    );
    assert!(status.enforced[0].message.contains("from 60 to 15"));

    // An env override of the ConfigMap value is caught (audit) and removed (enforce).
    let env = |s: &mut HealthcarePlatformSpec| {
        s.api_server.env = vec![k8s_openapi::api::core::v1::EnvVar {
            name: "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES".into(),
            value: Some("240".into()),
            ..Default::default()
        }];
    };
    assert_verdict(
        &run(&audit(env), no_change),
        RuleId::SessionIdleTimeout,
        Verdict::Fail,
    );
    let a = run(&enforce(env), no_change);
    assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Pass);
    assert_eq!(
        a.overrides[0].field,
        "spec.apiServer.env[CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES]"
    );

    // The running API disagreeing with the config is a violation too.
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.sessions.idle_timeout_minutes = 60;
        }
    });
    let m = assert_verdict(&a, RuleId::SessionIdleTimeout, Verdict::Fail);
    assert!(m.contains("API reports"), "{m}");
}

#[test]
fn mfa_required_fails_when_disabled_or_optional_under_hipaa() {
    use crate::crd::{MfaPolicy, MfaRole};
    // default (HIPAA): required of admin and physician
    let m = assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::MfaRequired,
        Verdict::Pass,
    );
    assert!(
        m.contains("admin, physician") || m.contains("admin,physician"),
        "{m}"
    );
    // Disabled fails under any profile
    for profiles in [
        vec![ComplianceProfile::HIPAA],
        vec![ComplianceProfile::GDPR],
    ] {
        let p = audit(|s| {
            s.compliance.profiles = profiles.clone();
            s.security.mfa = Some(MfaPolicy::Disabled);
        });
        let m = assert_verdict(&run(&p, no_change), RuleId::MfaRequired, Verdict::Fail);
        assert!(m.contains("disabled"), "{m}");
    }
    // Optional fails under HIPAA only
    let optional = |s: &mut HealthcarePlatformSpec| s.security.mfa = Some(MfaPolicy::Optional);
    assert_verdict(
        &run(&audit(optional), no_change),
        RuleId::MfaRequired,
        Verdict::Fail,
    );
    let soc2 = audit(|s| {
        s.compliance.profiles = vec![ComplianceProfile::SOC2];
        s.security.mfa = Some(MfaPolicy::Optional);
    });
    assert_verdict(&run(&soc2, no_change), RuleId::MfaRequired, Verdict::Pass);
    // Required, but not of physicians, under HIPAA
    let p = audit(|s| {
        s.security.mfa = Some(MfaPolicy::Required);
        s.security.mfa_required_roles = vec![MfaRole::Admin, MfaRole::Nurse];
    });
    let m = assert_verdict(&run(&p, no_change), RuleId::MfaRequired, Verdict::Fail);
    assert!(m.contains("physician"), "{m}");
    // an apiServer.env override is judged as the API sees it
    let env = |s: &mut HealthcarePlatformSpec| {
        s.api_server.env = vec![k8s_openapi::api::core::v1::EnvVar {
            name: "CADUCEUS_MFA".into(),
            value: Some("disabled".into()),
            ..Default::default()
        }];
    };
    assert_verdict(
        &run(&audit(env), no_change),
        RuleId::MfaRequired,
        Verdict::Fail,
    );
    // Enforce: raised to Required, the override removed, the ConfigMap says required
    let a = run(
        &enforce(|s| {
            s.security.mfa = Some(MfaPolicy::Disabled);
            env(s)
        }),
        no_change,
    );
    assert_verdict(&a, RuleId::MfaRequired, Verdict::Pass);
    let fields: Vec<&str> = a.overrides.iter().map(|o| o.field.as_str()).collect();
    assert!(fields.contains(&"spec.security.mfa"), "{fields:?}");
    assert!(
        fields.contains(&"spec.apiServer.env[CADUCEUS_MFA]"),
        "{fields:?}"
    );
}

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

#[test]
fn network_policies_present_and_unmodified() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::NetworkPolicyDefaultDeny,
        Verdict::Pass,
    );
    let off = |s: &mut HealthcarePlatformSpec| s.network_policy.enabled = false;
    assert_verdict(
        &run(&audit(off), no_change),
        RuleId::NetworkPolicyDefaultDeny,
        Verdict::Fail,
    );
    let a = run(&enforce(off), no_change);
    assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Pass);
    assert_eq!(a.overrides[0].field, "spec.networkPolicy.enabled");
    let a = run(&audit(|_| {}), |_, ev| {
        ev.network_policies.retain(|n| {
            !n.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .ends_with("default-deny")
        });
    });
    let m = assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Fail);
    assert!(m.contains("demo-default-deny is missing"), "{m}");
    let a = run(&audit(|_| {}), |_, ev| {
        if let Some(spec) = ev.network_policies[0].spec.as_mut() {
            spec.ingress = None;
            spec.policy_types = Some(vec!["Egress".into()]);
        }
    });
    let m = assert_verdict(&a, RuleId::NetworkPolicyDefaultDeny, Verdict::Fail);
    assert!(m.contains("modified"), "{m}");
}

#[test]
fn pod_security_and_resource_limits() {
    let a = run(&audit(|_| {}), no_change);
    assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Pass);
    assert_verdict(&a, RuleId::ResourceLimits, Verdict::Pass);
    let a = run(&audit(|_| {}), |c, _| {
        let spec = c
            .api_deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        let api = &mut spec.containers[0];
        if let Some(sc) = api.security_context.as_mut() {
            sc.allow_privilege_escalation = Some(true);
        }
        if let Some(r) = api.resources.as_mut() {
            r.limits = None;
        }
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(m.contains("allowPrivilegeEscalation"), "{m}");
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(m.contains("limits.cpu"), "{m}");
}

fn backup_pod(
    job: &mut k8s_openapi::api::batch::v1::JobSpec,
) -> &mut k8s_openapi::api::core::v1::PodSpec {
    job.template.spec.as_mut().unwrap()
}

/// What a pod template without hardening looks like (e.g. a CronJob edited by hand before the
/// operator restored it, or a Job created with `kubectl create job`).
fn unharden(pod: &mut k8s_openapi::api::core::v1::PodSpec) {
    pod.security_context = None;
    let c = &mut pod.containers[0];
    c.security_context = None;
    c.resources = None;
}

#[test]
fn backup_pods_are_workloads_desired_and_live() {
    let p = audit(|_| {});
    // API Deployment, Postgres and Redis StatefulSets and the backup CronJob's job template.
    let m = assert_verdict(
        &run(&p, no_change),
        RuleId::PodSecurityRestricted,
        Verdict::Pass,
    );
    assert!(m.starts_with("4 workload(s)"), "{m}");
    let m = assert_verdict(
        &assess_static(&p, now()),
        RuleId::ResourceLimits,
        Verdict::Pass,
    );
    assert!(m.contains("of 4 workload(s)"), "{m}");

    // The desired CronJob's pod template not hardened.
    let a = run(&p, |c, _| {
        let cj = c.backup.cron_job.as_mut().unwrap().spec.as_mut().unwrap();
        unharden(backup_pod(cj.job_template.spec.as_mut().unwrap()));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(m.contains("CronJob demo-backup: pod runAsNonRoot"), "{m}");
    assert!(
        m.contains("CronJob demo-backup/backup: runAsNonRoot"),
        "{m}"
    );
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(
        m.contains("CronJob demo-backup/backup: missing requests.cpu"),
        "{m}"
    );
    assert!(!m.contains("Deployment"), "{m}");

    // The desired on-demand Job (not created yet: no live Job of that name).
    let mut pending = p.clone();
    pending.backup_now = Some("tok1".into());
    let job_name = p
        .names
        .backup_now_job(&crate::desired::backup::token_hash("tok1"));
    let a = run(&pending, |c, ev| {
        ev.backup_jobs.clear();
        unharden(backup_pod(
            c.backup
                .on_demand_job
                .as_mut()
                .unwrap()
                .spec
                .as_mut()
                .unwrap(),
        ));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains(&format!("Job {job_name}: pod runAsNonRoot")),
        "{m}"
    );
    assert!(!m.contains("CronJob"), "{m}");
    assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    // Offline too.
    let mut children = children_of(&pending);
    unharden(backup_pod(
        children
            .backup
            .on_demand_job
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap(),
    ));
    let offline = assess(&pending, &children, None, Vec::new(), now());
    assert_verdict(&offline, RuleId::PodSecurityRestricted, Verdict::Fail);

    // Once it exists, the live Job is what runs and replaces the desired one of the same name.
    let a = run(&pending, |c, ev| {
        assert_eq!(ev.backup_jobs.len(), 1);
        unharden(backup_pod(
            c.backup
                .on_demand_job
                .as_mut()
                .unwrap()
                .spec
                .as_mut()
                .unwrap(),
        ));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Pass);
    assert!(m.starts_with("5 workload(s)"), "{m}");
    let a = run(&pending, |_, ev| {
        unharden(backup_pod(ev.backup_jobs[0].spec.as_mut().unwrap()));
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains(&format!("Job {job_name}: pod runAsNonRoot")),
        "{m}"
    );

    // A live scheduled Job with a privileged, limit-less container fails both rules though the
    // desired CronJob is hardened.
    let a = run(&p, |c, ev| {
        let mut job = k8s_openapi::api::batch::v1::Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("demo-backup-29000001".into()),
                ..Default::default()
            },
            spec: c
                .backup
                .cron_job
                .as_ref()
                .and_then(|cj| cj.spec.as_ref())
                .and_then(|s| s.job_template.spec.clone()),
            status: None,
        };
        let pod = backup_pod(job.spec.as_mut().unwrap());
        let sc = pod.containers[0].security_context.as_mut().unwrap();
        sc.privileged = Some(true);
        pod.containers[0].resources = None;
        ev.backup_jobs = vec![job];
    });
    let m = assert_verdict(&a, RuleId::PodSecurityRestricted, Verdict::Fail);
    assert!(
        m.contains("Job demo-backup-29000001/backup: privileged"),
        "{m}"
    );
    assert!(!m.contains("CronJob"), "{m}");
    let m = assert_verdict(&a, RuleId::ResourceLimits, Verdict::Fail);
    assert!(
        m.contains("Job demo-backup-29000001/backup: missing"),
        "{m}"
    );
}

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

#[test]
fn rate_limiting() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::RateLimiting,
        Verdict::Pass,
    );
    let lax =
        |s: &mut HealthcarePlatformSpec| s.security.rate_limit.login_attempts_per_minute = 100;
    assert_verdict(
        &run(&audit(lax), no_change),
        RuleId::RateLimiting,
        Verdict::Fail,
    );
    assert_verdict(
        &run(&enforce(lax), no_change),
        RuleId::RateLimiting,
        Verdict::Pass,
    );
    let a = run(&audit(|_| {}), |_, ev| {
        if let Ok(r) = ev.self_report.as_mut() {
            r.rate_limit.enabled = false;
        }
    });
    assert_verdict(&a, RuleId::RateLimiting, Verdict::Fail);
}

#[test]
fn no_secrets_in_config() {
    assert_verdict(
        &run(&audit(|_| {}), no_change),
        RuleId::NoSecretsInConfig,
        Verdict::Pass,
    );
    let leaky = |s: &mut HealthcarePlatformSpec| {
        s.api_server.env = vec![k8s_openapi::api::core::v1::EnvVar {
            name: "SMTP_PASSWORD".into(),
            value: Some("hunter2".into()),
            ..Default::default()
        }];
    };
    let a = run(&audit(leaky), no_change);
    let m = assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Fail);
    assert!(m.contains("SMTP_PASSWORD") && !m.contains("hunter2"), "{m}");
    let a = run(&enforce(leaky), no_change);
    assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Pass);
    let a = run(&audit(|_| {}), |c, _| {
        c.api_config
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("UPSTREAM".into(), "https://user:pw@example.org".into());
    });
    assert_verdict(&a, RuleId::NoSecretsInConfig, Verdict::Fail);
}

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
