//! Evaluation: a pure function from the platform, its built children, optional live evidence and
//! the current time to one result per rule of the selected profiles.
//!
//! A rule whose evidence is not available is `NotEvaluated` with the reason, never `Pass`.
//!
//! This file holds the inputs, verdicts, exceptions and the dispatch of each rule to its check;
//! the checks live by rule family: `encryption` (PHI key ring, field encryption), `transport`
//! (HTTPS to the API), `connections` (Ingress TLS, database TLS, Redis auth), `access` (session
//! lifetimes, MFA, rate limiting), `audit`, `workloads` (network policies, pod security,
//! resource limits), `resilience` (availability, backup RPO) and `secrets` (no secrets in
//! config); `evidence` reads the evidence they share.

mod access;
mod audit;
mod connections;
mod encryption;
mod evidence;
mod resilience;
mod secrets;
mod transport;
mod workloads;

use caduceus_contract::settings;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::catalogue::{rules_for, Rule, RuleId};
use super::self_report::SelfReport;
use crate::crd::{AuditChainHead, BackupStatus, ComplianceException};
use crate::desired::Children;
use crate::validate::ValidatedPlatform;

pub use access::HIPAA_MFA_ROLES;
use access::{mfa_required, minutes_at_most, rate_limiting};
use audit::{audit_chain_intact, audit_retention, audit_write_failures};
use connections::{database_tls, ingress_tls, redis_auth};
use encryption::{field_encryption_active, phi_key_valid};
use evidence::{api_container, api_setting, self_report, tls_secret_problem};
use resilience::{api_availability, backup_rpo};
use secrets::no_secrets_in_config;
pub use secrets::{credential_like, has_url_credentials};
use workloads::{network_policy_default_deny, pod_security, resource_limits};

/// Most minutes of idle time / token lifetime the rules accept.
pub const MAX_SESSION_MINUTES: i32 = 15;
/// HIPAA documentation retention: 6 years.
pub const MIN_AUDIT_RETENTION_DAYS: i32 = settings::SIX_YEARS_DAYS as i32;
/// Most login attempts per minute per client the rate-limiting rule accepts.
pub const MAX_LOGIN_ATTEMPTS_PER_MINUTE: i32 = 10;
/// Replicas the availability rule asks for.
pub const MIN_API_REPLICAS: i32 = 2;

/// The API's environment variables the compliance rules govern; `apiServer.env` must not
/// override them.
pub const GOVERNED_ENV: [&str; 9] = [
    settings::SESSION_IDLE_TIMEOUT_MINUTES.name,
    settings::MFA,
    settings::MFA_REQUIRED_ROLES,
    settings::ACCESS_TOKEN_TTL_MINUTES.name,
    settings::AUDIT_RETENTION_DAYS.name,
    settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name,
    settings::RATE_LIMIT_LOGIN_PER_MINUTE.name,
    settings::TLS_CERT_FILE,
    settings::TLS_KEY_FILE,
];

/// Evidence only a cluster can give.
#[derive(Clone, Debug)]
pub struct LiveEvidence {
    /// The platform's NetworkPolicies as they are in the cluster.
    pub network_policies: Vec<NetworkPolicy>,
    /// `status.backup` as this reconcile computes it (from the backup Jobs' results or
    /// CloudNativePG's Cluster status, merged with the previous one).
    pub backup: Option<BackupStatus>,
    /// The platform's backup Jobs in the cluster (scheduled and on-demand), whose pods the
    /// workload rules check.
    pub backup_jobs: Vec<Job>,
    /// The API's self-report, or why it could not be read.
    pub self_report: Result<SelfReport, String>,
    /// Audit chain head seen at the previous evaluation.
    pub previous_chain_head: Option<AuditChainHead>,
}

/// Everything one evaluation looks at.
pub struct Inputs<'a> {
    /// The platform as the children were built (after enforcement in `Enforce` mode).
    pub platform: &'a ValidatedPlatform,
    pub children: &'a Children,
    /// `None` offline (`compliance-report`).
    pub live: Option<&'a LiveEvidence>,
    pub now: Timestamp,
}

/// Verdict of one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Fail,
    NotEvaluated,
    /// Failing, but an unexpired exception accepts it.
    Excepted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::NotEvaluated => "NotEvaluated",
            Verdict::Excepted => "Excepted",
        }
    }

    /// Value of `caduceus_compliance_rule_status`: 1 pass, 0 fail, -1 not evaluated, 2 excepted.
    pub fn metric_value(self) -> i64 {
        match self {
            Verdict::Pass => 1,
            Verdict::Fail => 0,
            Verdict::NotEvaluated => -1,
            Verdict::Excepted => 2,
        }
    }
}

/// Result of one rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleResult {
    pub rule: &'static Rule,
    pub verdict: Verdict,
    /// Why (never contains secret values or PHI).
    pub message: String,
}

/// State of one exception at evaluation time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ExceptionState {
    Active,
    Expired,
    UnknownRule,
}

/// Whether the exception applies at `now`.
pub fn exception_state(e: &ComplianceException, now: Timestamp) -> ExceptionState {
    if RuleId::parse(&e.rule).is_none() {
        ExceptionState::UnknownRule
    } else if e.expires.0 > now {
        ExceptionState::Active
    } else {
        ExceptionState::Expired
    }
}

/// Rules with an active exception.
pub fn excepted_rules(exceptions: &[ComplianceException], now: Timestamp) -> Vec<RuleId> {
    exceptions
        .iter()
        .filter(|e| exception_state(e, now) == ExceptionState::Active)
        .filter_map(|e| RuleId::parse(&e.rule))
        .collect()
}

/// Evaluates every rule of the platform's profiles and applies its exceptions.
pub fn evaluate(inputs: &Inputs<'_>) -> Vec<RuleResult> {
    let spec = &inputs.platform.spec.compliance;
    rules_for(&spec.profiles)
        .into_iter()
        .map(|rule| {
            let (verdict, message) = check(rule.rule, inputs);
            apply_exceptions(rule, verdict, message, &spec.exceptions, inputs.now)
        })
        .collect()
}

fn apply_exceptions(
    rule: &'static Rule,
    verdict: Verdict,
    message: String,
    exceptions: &[ComplianceException],
    now: Timestamp,
) -> RuleResult {
    let mine: Vec<&ComplianceException> = exceptions.iter().filter(|e| e.rule == rule.id).collect();
    let active = mine
        .iter()
        .filter(|e| exception_state(e, now) == ExceptionState::Active)
        .map(|e| e.expires.0)
        .max();
    let expired = mine
        .iter()
        .filter(|e| exception_state(e, now) == ExceptionState::Expired)
        .map(|e| e.expires.0)
        .max();
    match (verdict, active, expired) {
        (Verdict::Fail, Some(until), _) => RuleResult {
            rule,
            verdict: Verdict::Excepted,
            message: format!("{message} (accepted by an exception until {until})"),
        },
        (Verdict::Fail, None, Some(at)) => RuleResult {
            rule,
            verdict,
            message: format!(
                "{message} (the exception for this rule expired at {at} and no longer applies)"
            ),
        },
        _ => RuleResult {
            rule,
            verdict,
            message,
        },
    }
}

type Check = (Verdict, String);

fn pass(m: impl Into<String>) -> Check {
    (Verdict::Pass, m.into())
}
fn fail(m: impl Into<String>) -> Check {
    (Verdict::Fail, m.into())
}
fn not_evaluated(m: impl Into<String>) -> Check {
    (Verdict::NotEvaluated, m.into())
}

const OFFLINE: &str = "needs a running platform (not evaluable offline)";

fn check(rule: RuleId, i: &Inputs<'_>) -> Check {
    match rule {
        RuleId::PhiKeyValid => phi_key_valid(i),
        RuleId::FieldEncryptionActive => field_encryption_active(i),
        RuleId::IngressTls => ingress_tls(i),
        RuleId::DatabaseTls => database_tls(i),
        RuleId::ApiTls => transport::api_tls(i),
        RuleId::RedisAuth => redis_auth(i),
        RuleId::SessionIdleTimeout => minutes_at_most(
            i,
            settings::SESSION_IDLE_TIMEOUT_MINUTES.name,
            "idle timeout",
            |r| r.sessions.idle_timeout_minutes,
        ),
        RuleId::AccessTokenTtl => minutes_at_most(
            i,
            settings::ACCESS_TOKEN_TTL_MINUTES.name,
            "access-token lifetime",
            |r| r.sessions.access_token_ttl_minutes,
        ),
        RuleId::MfaRequired => mfa_required(i),
        RuleId::AuditRetention => audit_retention(i),
        RuleId::AuditChainIntact => audit_chain_intact(i),
        RuleId::AuditWriteFailures => audit_write_failures(i),
        RuleId::NetworkPolicyDefaultDeny => network_policy_default_deny(i),
        RuleId::PodSecurityRestricted => pod_security(i),
        RuleId::ResourceLimits => resource_limits(i),
        RuleId::ApiAvailability => api_availability(i),
        RuleId::BackupRpo => backup_rpo(i),
        RuleId::RateLimiting => rate_limiting(i),
        RuleId::NoSecretsInConfig => no_secrets_in_config(i),
    }
}
