//! Tests of the access-control rules: session idle timeout and token lifetime (audit vs
//! enforce), MFA and rate limiting.

use super::*;

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
