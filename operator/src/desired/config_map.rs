//! ConfigMap of the API: the non-secret settings, under the environment variable names of
//! docs/contracts.md. Secrets never go here (they come from Secret refs).

use caduceus_contract::settings;
use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{child_meta, string_map};
use crate::names::{Component, API_HTTP_PORT, API_METRICS_PORT};
use crate::validate::ValidatedPlatform;

pub fn build(p: &ValidatedPlatform) -> ConfigMap {
    let sec = &p.spec.security;
    let data = string_map([
        (settings::HTTP_ADDR, format!("0.0.0.0:{API_HTTP_PORT}")),
        (settings::ADMIN_ADDR, format!("0.0.0.0:{API_METRICS_PORT}")),
        (
            settings::SESSION_IDLE_TIMEOUT_MINUTES.name,
            sec.session_idle_timeout_minutes.to_string(),
        ),
        (
            settings::MAX_SESSION_HOURS.name,
            sec.max_session_hours.to_string(),
        ),
        (
            settings::ACCESS_TOKEN_TTL_MINUTES.name,
            sec.access_token_ttl_minutes.to_string(),
        ),
        (
            settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name,
            sec.rate_limit.requests_per_minute.to_string(),
        ),
        (
            settings::RATE_LIMIT_LOGIN_PER_MINUTE.name,
            sec.rate_limit.login_attempts_per_minute.to_string(),
        ),
        (
            settings::AUDIT_RETENTION_DAYS.name,
            sec.audit_retention_days.to_string(),
        ),
        (
            settings::PATIENT_RETENTION_DAYS.name,
            sec.patient_retention_days.to_string(),
        ),
        (
            settings::CARE_TEAM_ACCESS_DAYS.name,
            sec.care_team_access_days.to_string(),
        ),
        (settings::TRUSTED_PROXIES, sec.trusted_proxies.join(",")),
        (
            settings::CORS_ALLOWED_ORIGINS,
            sec.cors_allowed_origins.join(","),
        ),
        (
            settings::SELF_REGISTRATION,
            sec.self_registration.to_string(),
        ),
        (
            settings::MFA,
            sec.effective_mfa(&p.spec.compliance.profiles)
                .setting()
                .to_string(),
        ),
        (
            settings::MFA_REQUIRED_ROLES,
            sec.mfa_required_roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (settings::LOG_LEVEL, p.spec.api_server.log_level.clone()),
        (
            settings::FHIR_MRN_SYSTEM,
            p.spec.api_server.fhir.mrn_system.clone(),
        ),
    ]);
    ConfigMap {
        metadata: child_meta(p, p.names.api_config(), Component::ApiServer),
        data: Some(data),
        ..Default::default()
    }
}

/// Stable hash of the ConfigMap data; put on the pod template so a settings change rolls pods.
pub fn hash(cm: &ConfigMap) -> String {
    let mut h = Sha256::new();
    for (k, v) in cm.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn settings_use_contract_names() {
        let cm = build(&platform(|s| {
            s.security.session_idle_timeout_minutes = 10;
            s.security.max_session_hours = 8;
            s.security.cors_allowed_origins =
                vec!["https://a.example".into(), "https://b.example".into()];
        }));
        let d = cm.data.unwrap();
        assert_eq!(d["CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES"], "10");
        assert_eq!(d["CADUCEUS_MAX_SESSION_HOURS"], "8");
        assert_eq!(d["CADUCEUS_ACCESS_TOKEN_TTL_MINUTES"], "15");
        assert_eq!(d["CADUCEUS_AUDIT_RETENTION_DAYS"], "2190");
        assert_eq!(d["CADUCEUS_PATIENT_RETENTION_DAYS"], "3650");
        assert_eq!(
            d["CADUCEUS_TRUSTED_PROXIES"], "",
            "trusts no proxy by default"
        );
        assert_eq!(d["CADUCEUS_RATE_LIMIT_REQUESTS_PER_MINUTE"], "600");
        assert_eq!(d["CADUCEUS_RATE_LIMIT_LOGIN_PER_MINUTE"], "5");
        assert_eq!(
            d["CADUCEUS_CORS_ALLOWED_ORIGINS"],
            "https://a.example,https://b.example"
        );
        assert_eq!(d["CADUCEUS_HTTP_ADDR"], "0.0.0.0:8080");
        assert_eq!(d["CADUCEUS_ADMIN_ADDR"], "0.0.0.0:9090");
        // No secrets in the ConfigMap.
        assert!(!d.keys().any(|k| k.contains("URL") || k.contains("KEY")));
    }

    #[test]
    fn patient_retention_and_trusted_proxies_reach_the_api() {
        let cm = build(&platform(|s| {
            s.security.patient_retention_days = 2555;
            s.security.trusted_proxies = vec!["10.42.0.0/16".into(), "192.168.0.10".into()];
        }));
        let d = cm.data.unwrap();
        assert_eq!(d["CADUCEUS_PATIENT_RETENTION_DAYS"], "2555");
        assert_eq!(d["CADUCEUS_TRUSTED_PROXIES"], "10.42.0.0/16,192.168.0.10");
    }

    #[test]
    fn the_fhir_mrn_system_reaches_the_api() {
        let d = build(&platform(|_| {})).data.unwrap();
        assert_eq!(
            d["CADUCEUS_FHIR_MRN_SYSTEM"],
            settings::DEFAULT_FHIR_MRN_SYSTEM
        );
        let d = build(&platform(|s| {
            s.api_server.fhir.mrn_system = "urn:oid:2.16.840.1.113883.3.1234".into()
        }))
        .data
        .unwrap();
        assert_eq!(
            d["CADUCEUS_FHIR_MRN_SYSTEM"],
            "urn:oid:2.16.840.1.113883.3.1234"
        );
    }

    #[test]
    fn care_team_access_days_reach_the_api() {
        let d = build(&platform(|_| {})).data.unwrap();
        assert_eq!(d["CADUCEUS_CARE_TEAM_ACCESS_DAYS"], "30");
        let d = build(&platform(|s| s.security.care_team_access_days = 7))
            .data
            .unwrap();
        assert_eq!(d["CADUCEUS_CARE_TEAM_ACCESS_DAYS"], "7");
    }

    #[test]
    fn mfa_policy_reaches_the_api() {
        use crate::crd::{ComplianceProfile, MfaPolicy, MfaRole};
        // default: HIPAA profile, MFA required of admins and physicians
        let d = build(&platform(|_| {})).data.unwrap();
        assert_eq!(d["CADUCEUS_MFA"], "required");
        assert_eq!(d["CADUCEUS_MFA_REQUIRED_ROLES"], "admin,physician");
        let d = build(&platform(|s| {
            s.compliance.profiles = vec![ComplianceProfile::GDPR];
        }))
        .data
        .unwrap();
        assert_eq!(d["CADUCEUS_MFA"], "optional");
        let d = build(&platform(|s| {
            s.security.mfa = Some(MfaPolicy::Disabled);
            s.security.mfa_required_roles = vec![MfaRole::Nurse, MfaRole::Admin];
        }))
        .data
        .unwrap();
        assert_eq!(d["CADUCEUS_MFA"], "disabled");
        assert_eq!(d["CADUCEUS_MFA_REQUIRED_ROLES"], "nurse,admin");
    }

    #[test]
    fn hash_changes_with_settings() {
        let a = hash(&build(&platform(|_| {})));
        let b = hash(&build(&platform(|s| {
            s.api_server.log_level = "debug".into()
        })));
        assert_ne!(a, b);
        assert_eq!(a, hash(&build(&platform(|_| {}))));
        assert_eq!(a.len(), 32);
    }
}
