//! Enforcement (`mode: Enforce`): non-compliant values of the spec are overridden before the
//! children are built, so the applied objects are compliant and the normal apply restores any
//! drift. Every override is returned so status can say which field changed and why.
//! Rules with an active exception, and rules outside the selected profiles, are not enforced.

use serde::Serialize;

use super::catalogue::{rule, RuleId};
use super::evaluate::{
    credential_like, has_url_credentials, GOVERNED_ENV, HIPAA_MFA_ROLES,
    MAX_LOGIN_ATTEMPTS_PER_MINUTE, MAX_SESSION_MINUTES, MIN_API_REPLICAS, MIN_AUDIT_RETENTION_DAYS,
};
use crate::crd::{ComplianceProfile, HealthcarePlatformSpec, MfaPolicy, MfaRole};

/// One overridden value. `from`/`to` never carry secret values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Override {
    pub rule: RuleId,
    /// Spec path such as `spec.security.sessionIdleTimeoutMinutes`.
    pub field: String,
    pub from: String,
    pub to: String,
}

impl Override {
    /// Human-readable sentence for status and events.
    pub fn message(&self) -> String {
        format!(
            "{} overridden from {} to {} by rule {} ({})",
            self.field,
            self.from,
            self.to,
            self.rule.as_str(),
            rule(self.rule).clauses.first().copied().unwrap_or("")
        )
    }
}

/// Overrides non-compliant values of `spec` for every rule for which `enforced(rule)` is true.
pub fn enforce(
    spec: &mut HealthcarePlatformSpec,
    enforced: impl Fn(RuleId) -> bool,
) -> Vec<Override> {
    let mut out = Vec::new();
    let clamp_max =
        |rule: RuleId, field: &str, value: &mut i32, max: i32, out: &mut Vec<Override>| {
            if enforced(rule) && *value > max {
                out.push(Override {
                    rule,
                    field: field.into(),
                    from: value.to_string(),
                    to: max.to_string(),
                });
                *value = max;
            }
        };
    let sec = &mut spec.security;
    clamp_max(
        RuleId::SessionIdleTimeout,
        "spec.security.sessionIdleTimeoutMinutes",
        &mut sec.session_idle_timeout_minutes,
        MAX_SESSION_MINUTES,
        &mut out,
    );
    clamp_max(
        RuleId::AccessTokenTtl,
        "spec.security.accessTokenTtlMinutes",
        &mut sec.access_token_ttl_minutes,
        MAX_SESSION_MINUTES,
        &mut out,
    );
    clamp_max(
        RuleId::RateLimiting,
        "spec.security.rateLimit.loginAttemptsPerMinute",
        &mut sec.rate_limit.login_attempts_per_minute,
        MAX_LOGIN_ATTEMPTS_PER_MINUTE,
        &mut out,
    );
    if enforced(RuleId::AuditRetention) && sec.audit_retention_days < MIN_AUDIT_RETENTION_DAYS {
        out.push(Override {
            rule: RuleId::AuditRetention,
            field: "spec.security.auditRetentionDays".into(),
            from: sec.audit_retention_days.to_string(),
            to: MIN_AUDIT_RETENTION_DAYS.to_string(),
        });
        sec.audit_retention_days = MIN_AUDIT_RETENTION_DAYS;
    }

    if enforced(RuleId::MfaRequired) {
        let hipaa = spec.compliance.profiles.contains(&ComplianceProfile::HIPAA);
        let sec = &mut spec.security;
        let effective = sec.effective_mfa(&spec.compliance.profiles);
        let wanted = match effective {
            MfaPolicy::Disabled if hipaa => Some(MfaPolicy::Required),
            MfaPolicy::Disabled => Some(MfaPolicy::Optional),
            MfaPolicy::Optional if hipaa => Some(MfaPolicy::Required),
            _ => None,
        };
        if let Some(to) = wanted {
            out.push(Override {
                rule: RuleId::MfaRequired,
                field: "spec.security.mfa".into(),
                from: format!("{effective:?}"),
                to: format!("{to:?}"),
            });
            sec.mfa = Some(to);
        }
        if hipaa {
            let before = sec.mfa_required_roles.clone();
            for role in [MfaRole::Admin, MfaRole::Physician] {
                debug_assert!(HIPAA_MFA_ROLES.contains(&role.as_str()));
                if !sec.mfa_required_roles.contains(&role) {
                    sec.mfa_required_roles.push(role);
                }
            }
            if sec.mfa_required_roles != before {
                let names = |roles: &[MfaRole]| {
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                out.push(Override {
                    rule: RuleId::MfaRequired,
                    field: "spec.security.mfaRequiredRoles".into(),
                    from: names(&before),
                    to: names(&sec.mfa_required_roles),
                });
            }
        }
    }

    if enforced(RuleId::NetworkPolicyDefaultDeny) && !spec.network_policy.enabled {
        out.push(Override {
            rule: RuleId::NetworkPolicyDefaultDeny,
            field: "spec.networkPolicy.enabled".into(),
            from: "false".into(),
            to: "true".into(),
        });
        spec.network_policy.enabled = true;
    }

    if enforced(RuleId::ApiAvailability) && !spec.stopped {
        let api = &mut spec.api_server;
        if api.autoscaling.enabled {
            if api.autoscaling.min_replicas < MIN_API_REPLICAS {
                out.push(Override {
                    rule: RuleId::ApiAvailability,
                    field: "spec.apiServer.autoscaling.minReplicas".into(),
                    from: api.autoscaling.min_replicas.to_string(),
                    to: MIN_API_REPLICAS.to_string(),
                });
                api.autoscaling.min_replicas = MIN_API_REPLICAS;
            }
            if api.autoscaling.max_replicas < api.autoscaling.min_replicas {
                out.push(Override {
                    rule: RuleId::ApiAvailability,
                    field: "spec.apiServer.autoscaling.maxReplicas".into(),
                    from: api.autoscaling.max_replicas.to_string(),
                    to: api.autoscaling.min_replicas.to_string(),
                });
                api.autoscaling.max_replicas = api.autoscaling.min_replicas;
            }
        } else if api.replicas < MIN_API_REPLICAS {
            out.push(Override {
                rule: RuleId::ApiAvailability,
                field: "spec.apiServer.replicas".into(),
                from: api.replicas.to_string(),
                to: MIN_API_REPLICAS.to_string(),
            });
            api.replicas = MIN_API_REPLICAS;
        }
    }

    // apiServer.env entries that would override governed settings or carry literal credentials.
    let env_rule = |name: &str, value: Option<&str>| -> Option<RuleId> {
        use caduceus_contract::settings::*;
        let governed = [
            (
                SESSION_IDLE_TIMEOUT_MINUTES.name,
                RuleId::SessionIdleTimeout,
            ),
            (ACCESS_TOKEN_TTL_MINUTES.name, RuleId::AccessTokenTtl),
            (MFA, RuleId::MfaRequired),
            (MFA_REQUIRED_ROLES, RuleId::MfaRequired),
            (AUDIT_RETENTION_DAYS.name, RuleId::AuditRetention),
            (RATE_LIMIT_REQUESTS_PER_MINUTE.name, RuleId::RateLimiting),
            (RATE_LIMIT_LOGIN_PER_MINUTE.name, RuleId::RateLimiting),
            (TLS_CERT_FILE, RuleId::ApiTls),
            (TLS_KEY_FILE, RuleId::ApiTls),
        ];
        match governed.iter().find(|(n, _)| *n == name) {
            Some((_, rule)) => Some(*rule),
            None => value
                .filter(|v| (credential_like(name) && !v.is_empty()) || has_url_credentials(v))
                .map(|_| RuleId::NoSecretsInConfig),
        }
    };
    debug_assert!(GOVERNED_ENV.iter().all(|n| env_rule(n, None).is_some()));
    let mut kept = Vec::with_capacity(spec.api_server.env.len());
    for e in std::mem::take(&mut spec.api_server.env) {
        match env_rule(&e.name, e.value.as_deref()) {
            Some(r) if enforced(r) => out.push(Override {
                rule: r,
                field: format!("spec.apiServer.env[{}]", e.name),
                from: if e.value.is_some() {
                    "a literal value"
                } else {
                    "a reference"
                }
                .into(),
                to: "removed".into(),
            }),
            _ => kept.push(e),
        }
    }
    spec.api_server.env = kept;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn compliant_spec_is_untouched() {
        let mut spec = HealthcarePlatformSpec::default();
        let before = spec.clone();
        assert!(enforce(&mut spec, |_| true).is_empty());
        assert_eq!(spec, before);
    }

    #[test]
    fn non_compliant_values_are_clamped_and_reported() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.security.session_idle_timeout_minutes = 60;
        spec.security.access_token_ttl_minutes = 120;
        spec.security.audit_retention_days = 30;
        spec.security.rate_limit.login_attempts_per_minute = 100;
        spec.network_policy.enabled = false;
        spec.api_server.replicas = 1;
        spec.api_server.env = vec![
            env("CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES", "600"),
            env("SMTP_PASSWORD", "hunter2"),
            env("FEATURE_FLAG", "on"),
        ];
        let o = enforce(&mut spec, |_| true);
        assert_eq!(spec.security.session_idle_timeout_minutes, 15);
        assert_eq!(spec.security.access_token_ttl_minutes, 15);
        assert_eq!(spec.security.audit_retention_days, 2190);
        assert_eq!(spec.security.rate_limit.login_attempts_per_minute, 10);
        assert!(spec.network_policy.enabled);
        assert_eq!(spec.api_server.replicas, 2);
        assert_eq!(spec.api_server.env, vec![env("FEATURE_FLAG", "on")]);
        assert_eq!(o.len(), 8, "{o:?}");
        let idle = o
            .iter()
            .find(|x| x.field == "spec.security.sessionIdleTimeoutMinutes")
            .unwrap();
        assert_eq!((idle.from.as_str(), idle.to.as_str()), ("60", "15"));
        assert!(
            idle.message().contains("164.312(a)(2)(iii)"),
            "{}",
            idle.message()
        );
        for x in &o {
            assert!(!x.message().contains("hunter2"));
        }
    }

    #[test]
    fn mfa_is_raised_to_the_profile_minimum() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.security.mfa = Some(MfaPolicy::Optional);
        spec.security.mfa_required_roles = vec![MfaRole::Nurse];
        let o = enforce(&mut spec, |_| true);
        assert_eq!(spec.security.mfa, Some(MfaPolicy::Required));
        assert_eq!(
            spec.security.mfa_required_roles,
            vec![MfaRole::Nurse, MfaRole::Admin, MfaRole::Physician]
        );
        assert_eq!(o.len(), 2, "{o:?}");
        assert_eq!(
            (o[0].field.as_str(), o[0].from.as_str(), o[0].to.as_str()),
            ("spec.security.mfa", "Optional", "Required")
        );
        assert_eq!(o[1].to, "nurse,admin,physician");
        assert!(o[0].message().contains("164.312(d)"), "{}", o[0].message());
        // outside HIPAA only Disabled is raised, to Optional
        let mut spec = HealthcarePlatformSpec::default();
        spec.compliance.profiles = vec![ComplianceProfile::SOC2];
        spec.security.mfa = Some(MfaPolicy::Disabled);
        spec.security.mfa_required_roles = vec![MfaRole::Nurse];
        let o = enforce(&mut spec, |_| true);
        assert_eq!(spec.security.mfa, Some(MfaPolicy::Optional));
        assert_eq!(spec.security.mfa_required_roles, vec![MfaRole::Nurse]);
        assert_eq!(o.len(), 1);
        // excepted: untouched
        let mut spec = HealthcarePlatformSpec::default();
        spec.security.mfa = Some(MfaPolicy::Disabled);
        assert!(enforce(&mut spec, |r| r != RuleId::MfaRequired).is_empty());
        assert_eq!(spec.security.mfa, Some(MfaPolicy::Disabled));
    }

    #[test]
    fn excepted_rules_are_not_enforced() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.security.session_idle_timeout_minutes = 30;
        spec.api_server.replicas = 1;
        let o = enforce(&mut spec, |r| r != RuleId::SessionIdleTimeout);
        assert_eq!(spec.security.session_idle_timeout_minutes, 30);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].rule, RuleId::ApiAvailability);
    }

    #[test]
    fn autoscaling_minimum_is_raised_with_maximum() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.autoscaling.enabled = true;
        spec.api_server.autoscaling.min_replicas = 1;
        spec.api_server.autoscaling.max_replicas = 1;
        let o = enforce(&mut spec, |_| true);
        assert_eq!(spec.api_server.autoscaling.min_replicas, 2);
        assert_eq!(spec.api_server.autoscaling.max_replicas, 2);
        assert_eq!(o.len(), 2);
        let mut stopped = HealthcarePlatformSpec {
            stopped: true,
            ..Default::default()
        };
        stopped.api_server.replicas = 1;
        assert!(enforce(&mut stopped, |_| true).is_empty());
    }
}
