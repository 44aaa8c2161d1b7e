//! Network policy and security sections of the `HealthcarePlatform` spec.

use super::*;
use caduceus_contract::settings;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Network policy, security

/// NetworkPolicies of the platform.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create default-deny and allow policies (strongly recommended).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the API on port 8080. Default: every pod in the platform's namespace.
    /// Add your ingress controller's namespace here when the Ingress is enabled. Must not be
    /// empty (an empty list would admit every source).
    #[serde(default = "default_ingress_from")]
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// Namespace whose pods may scrape metrics on port 9090.
    #[serde(default = "default_monitoring_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub monitoring_namespace: String,
    /// Namespace of caduceus-operator, whose pods may read the API's compliance self-report on
    /// port 9090 (and whose metrics the per-platform operator ServiceMonitor scrapes).
    #[serde(default = "default_operator_namespace")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub operator_namespace: String,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress_from: default_ingress_from(),
            monitoring_namespace: default_monitoring_namespace(),
            operator_namespace: default_operator_namespace(),
        }
    }
}

fn default_operator_namespace() -> String {
    "caduceus-system".into()
}

pub(super) fn default_true() -> bool {
    true
}
fn default_ingress_from() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }]
}
fn default_monitoring_namespace() -> String {
    "monitoring".into()
}

/// Security settings passed to the API server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Automatic logoff after this many idle minutes.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 1, max = 1440))]
    pub session_idle_timeout_minutes: i32,
    /// Maximum age of a session in hours, counted from the login whatever the activity
    /// (`CADUCEUS_MAX_SESSION_HOURS`): an older session cannot be used or refreshed.
    #[serde(default = "default_max_session_hours")]
    #[schemars(range(min = 1, max = 24))]
    pub max_session_hours: i32,
    /// Access token (JWT) lifetime in minutes.
    #[serde(default = "default_token_ttl")]
    #[schemars(range(min = 1, max = 1440))]
    pub access_token_ttl_minutes: i32,
    /// Rate limits.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// How long audit records are kept (HIPAA: 6 years = 2190 days).
    #[serde(default = "default_audit_retention")]
    #[schemars(range(min = 1, max = 36500))]
    pub audit_retention_days: i32,
    /// Soft-deleted patients are purged this many days after their deletion
    /// (`CADUCEUS_PATIENT_RETENTION_DAYS`). At least 2190 (6 years: HIPAA documentation retention
    /// and the audit trail's minimum, so a record never goes while the audit about it must stay).
    #[serde(default = "default_patient_retention")]
    #[schemars(range(min = 2190, max = 36500))]
    pub patient_retention_days: i32,
    /// Days after an appointment (its end) during which the appointment keeps its practitioner
    /// in the patient's care team (`CADUCEUS_CARE_TEAM_ACCESS_DAYS`); cancelled and no-show
    /// appointments never count, explicit assignments last until revoked.
    #[serde(default = "default_care_team_access_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub care_team_access_days: i32,
    /// Reverse proxies / ingress controllers whose `X-Forwarded-For` the API believes
    /// (`CADUCEUS_TRUSTED_PROXIES`): CIDRs such as `10.0.0.0/8` or single IP addresses. The
    /// client IP keys the per-IP rate limits and the audit trail. Empty trusts no proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(x, isCIDR(x) || isIP(x))").message("security.trustedProxies entries must be CIDRs such as 10.0.0.0/8 or IP addresses"))]
    pub trusted_proxies: Vec<String>,
    /// Origins allowed by CORS; empty disables CORS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_allowed_origins: Vec<String>,
    /// Enables `POST /auth/register`.
    #[serde(default)]
    pub self_registration: bool,
    /// Multi-factor authentication (TOTP) of the API's accounts (`CADUCEUS_MFA`): `Required`
    /// (the roles of `mfaRequiredRoles` must use it: without it their login opens a session that
    /// may only enrol), `Optional` (any account may enrol) or `Disabled` (no new enrolment;
    /// accounts already using MFA keep being asked for it). Unset: `Required` under the HIPAA
    /// compliance profile, `Optional` otherwise. Compliance rule `mfa-required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<MfaPolicy>,
    /// Roles that must use MFA when it is `Required` (`CADUCEUS_MFA_REQUIRED_ROLES`).
    #[serde(default = "default_mfa_required_roles")]
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(x, x == r))").message("security.mfaRequiredRoles must not repeat a role"))]
    pub mfa_required_roles: Vec<MfaRole>,
}

/// MFA policy of the API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaPolicy {
    Required,
    Optional,
    Disabled,
}

impl MfaPolicy {
    /// The value of `CADUCEUS_MFA`.
    pub fn setting(self) -> &'static str {
        match self {
            MfaPolicy::Required => "required",
            MfaPolicy::Optional => "optional",
            MfaPolicy::Disabled => "disabled",
        }
    }
}

/// A staff role that can be required to use MFA.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum MfaRole {
    Admin,
    Physician,
    Nurse,
    Receptionist,
}

impl MfaRole {
    /// The role's name in the API (`CADUCEUS_MFA_REQUIRED_ROLES`).
    pub fn as_str(self) -> &'static str {
        match self {
            MfaRole::Admin => "admin",
            MfaRole::Physician => "physician",
            MfaRole::Nurse => "nurse",
            MfaRole::Receptionist => "receptionist",
        }
    }
}

fn default_mfa_required_roles() -> Vec<MfaRole> {
    vec![MfaRole::Admin, MfaRole::Physician]
}

impl SecuritySpec {
    /// The MFA policy in effect: `spec.security.mfa`, or when unset `Required` under the HIPAA
    /// profile and `Optional` otherwise.
    pub fn effective_mfa(&self, profiles: &[ComplianceProfile]) -> MfaPolicy {
        self.mfa
            .unwrap_or(if profiles.contains(&ComplianceProfile::HIPAA) {
                MfaPolicy::Required
            } else {
                MfaPolicy::Optional
            })
    }
}

impl Default for SecuritySpec {
    fn default() -> Self {
        Self {
            session_idle_timeout_minutes: default_idle_timeout(),
            max_session_hours: default_max_session_hours(),
            access_token_ttl_minutes: default_token_ttl(),
            rate_limit: RateLimitSpec::default(),
            audit_retention_days: default_audit_retention(),
            patient_retention_days: default_patient_retention(),
            care_team_access_days: default_care_team_access_days(),
            trusted_proxies: Vec::new(),
            cors_allowed_origins: Vec::new(),
            self_registration: false,
            mfa: None,
            mfa_required_roles: default_mfa_required_roles(),
        }
    }
}

/// A contract default as the CRD's `i32` (every bound is far below `i32::MAX`).
const fn contract_default(n: settings::Number) -> i32 {
    n.default as i32
}
fn default_idle_timeout() -> i32 {
    contract_default(settings::SESSION_IDLE_TIMEOUT_MINUTES)
}
fn default_max_session_hours() -> i32 {
    contract_default(settings::MAX_SESSION_HOURS)
}
fn default_token_ttl() -> i32 {
    contract_default(settings::ACCESS_TOKEN_TTL_MINUTES)
}
fn default_audit_retention() -> i32 {
    contract_default(settings::AUDIT_RETENTION_DAYS)
}
fn default_patient_retention() -> i32 {
    contract_default(settings::PATIENT_RETENTION_DAYS)
}
fn default_care_team_access_days() -> i32 {
    contract_default(settings::CARE_TEAM_ACCESS_DAYS)
}

/// Rate limits of the API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Requests per minute per client IP and per user.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// Login attempts per minute per client IP.
    #[serde(default = "default_login_rpm")]
    #[schemars(range(min = 1, max = 1000))]
    pub login_attempts_per_minute: i32,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests_per_minute: default_rpm(),
            login_attempts_per_minute: default_login_rpm(),
        }
    }
}

fn default_rpm() -> i32 {
    contract_default(settings::RATE_LIMIT_REQUESTS_PER_MINUTE)
}
fn default_login_rpm() -> i32 {
    contract_default(settings::RATE_LIMIT_LOGIN_PER_MINUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD's bounds and defaults of the settings the API reads are the contract's.
    #[test]
    fn security_settings_have_the_contract_bounds_and_defaults() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(HealthcarePlatform::crd()).unwrap();
        let security = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["properties"]["security"]["properties"];
        let spec = HealthcarePlatformSpec::default().security;
        for (field, setting, value) in [
            (
                "sessionIdleTimeoutMinutes",
                settings::SESSION_IDLE_TIMEOUT_MINUTES,
                spec.session_idle_timeout_minutes,
            ),
            (
                "maxSessionHours",
                settings::MAX_SESSION_HOURS,
                spec.max_session_hours,
            ),
            (
                "accessTokenTtlMinutes",
                settings::ACCESS_TOKEN_TTL_MINUTES,
                spec.access_token_ttl_minutes,
            ),
            (
                "auditRetentionDays",
                settings::AUDIT_RETENTION_DAYS,
                spec.audit_retention_days,
            ),
            (
                "patientRetentionDays",
                settings::PATIENT_RETENTION_DAYS,
                spec.patient_retention_days,
            ),
            (
                "careTeamAccessDays",
                settings::CARE_TEAM_ACCESS_DAYS,
                spec.care_team_access_days,
            ),
        ] {
            let schema = &security[field];
            assert_eq!(
                schema["minimum"].as_f64(),
                Some(f64::from(setting.min)),
                "{field}"
            );
            assert_eq!(
                schema["maximum"].as_f64(),
                Some(f64::from(setting.max)),
                "{field}"
            );
            assert_eq!(i64::from(value), i64::from(setting.default), "{field}");
        }
        let rate = &security["rateLimit"]["properties"];
        for (field, setting, value) in [
            (
                "requestsPerMinute",
                settings::RATE_LIMIT_REQUESTS_PER_MINUTE,
                spec.rate_limit.requests_per_minute,
            ),
            (
                "loginAttemptsPerMinute",
                settings::RATE_LIMIT_LOGIN_PER_MINUTE,
                spec.rate_limit.login_attempts_per_minute,
            ),
        ] {
            assert_eq!(
                rate[field]["minimum"].as_f64(),
                Some(f64::from(setting.min)),
                "{field}"
            );
            assert_eq!(
                rate[field]["maximum"].as_f64(),
                Some(f64::from(setting.max)),
                "{field}"
            );
            assert_eq!(i64::from(value), i64::from(setting.default), "{field}");
        }
    }

    /// The roles and the default the CRD offers for MFA are the contract's.
    #[test]
    fn mfa_roles_and_default_are_the_contracts() {
        let roles = [
            MfaRole::Admin,
            MfaRole::Physician,
            MfaRole::Nurse,
            MfaRole::Receptionist,
        ];
        assert_eq!(roles.map(MfaRole::as_str), settings::MFA_ROLES);
        let default: Vec<&str> = default_mfa_required_roles()
            .into_iter()
            .map(MfaRole::as_str)
            .collect();
        assert_eq!(default.join(","), settings::DEFAULT_MFA_REQUIRED_ROLES);
        for p in [
            MfaPolicy::Required,
            MfaPolicy::Optional,
            MfaPolicy::Disabled,
        ] {
            assert!(settings::MFA_POLICIES.contains(&p.setting()));
        }
        let spec: HealthcarePlatformSpec =
            serde_json::from_str(r#"{"security":{"mfa":"Disabled","mfaRequiredRoles":["nurse"]}}"#)
                .unwrap();
        assert_eq!(spec.security.mfa, Some(MfaPolicy::Disabled));
        assert_eq!(spec.security.mfa_required_roles, vec![MfaRole::Nurse]);
    }
}
