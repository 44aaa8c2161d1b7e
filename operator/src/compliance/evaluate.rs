//! Evaluation: a pure function from the platform, its built children, optional live evidence and
//! the current time to one result per rule of the selected profiles.
//!
//! A rule whose evidence is not available is `NotEvaluated` with the reason, never `Pass`.

use caduceus_contract::key_files::{KeyFileError, PhiKeyRingFile};
use caduceus_contract::settings;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::catalogue::{rules_for, Rule, RuleId};
use super::self_report::SelfReport;
use crate::crd::{
    AuditChainHead, BackupStatus, CacheProvider, ComplianceException, DatabaseProvider,
};
use crate::desired::security::container_violations;
use crate::desired::Children;
use crate::names::{ANNOTATION_PLACEHOLDER, PHI_KEYS, REDIS_AUTH_CONF_KEY};
use crate::validate::ValidatedPlatform;

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

mod transport;

fn self_report<'a>(i: &'a Inputs<'_>) -> Result<&'a SelfReport, String> {
    match i.live {
        None => Err(OFFLINE.to_string()),
        Some(live) => live
            .self_report
            .as_ref()
            .map_err(|e| format!("API self-report unavailable: {e}")),
    }
}

fn secret_value<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

fn is_placeholder(s: &Secret) -> bool {
    s.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PLACEHOLDER))
}

fn phi_key_valid(i: &Inputs<'_>) -> Check {
    let secret = &i.children.api_secrets;
    if is_placeholder(secret) {
        return not_evaluated(format!(
            "the key ring is generated in the cluster; {OFFLINE}"
        ));
    }
    let Some(raw) = secret_value(secret, PHI_KEYS) else {
        return fail(format!("{PHI_KEYS} is missing from the API secrets"));
    };
    let ring: PhiKeyRingFile = match serde_json::from_slice(raw) {
        Ok(r) => r,
        Err(_) => {
            return fail(format!(
                "{PHI_KEYS} is not a key ring in the documented format"
            ))
        }
    };
    if let Err(e) = ring.check() {
        return fail(match e {
            KeyFileError::Version(v) => {
                format!("key ring version {v} is not supported (expected 1)")
            }
            KeyFileError::ActiveMissing(_) => "the active key id is not in the key ring".into(),
            KeyFileError::KeyId(id) => {
                format!("key id `{id}` does not match ^[a-z0-9][a-z0-9-]{{0,31}}$")
            }
            KeyFileError::KeyBytes(what) if what == "blind_index_key" => {
                "the blind-index key is not 32 bytes of standard base64".into()
            }
            KeyFileError::KeyBytes(what) => {
                format!("{what} is not 32 bytes of standard base64")
            }
            other @ (KeyFileError::BlindIndexForm | KeyFileError::ActiveBlindIndexMissing(_)) => {
                other.to_string()
            }
        });
    }
    pass(format!(
        "key ring valid: {} key(s), active key `{}`",
        ring.keys.len(),
        ring.active_key_id
    ))
}

fn field_encryption_active(i: &Inputs<'_>) -> Check {
    let r = match self_report(i) {
        Ok(r) => r,
        Err(e) => return not_evaluated(e),
    };
    if !r.encryption.active {
        fail("the API reports field encryption inactive")
    } else if !r.encryption.key_ids.contains(&r.encryption.active_key_id) {
        fail("the API's active key id is not among the keys it holds")
    } else {
        pass(format!(
            "field encryption active with key `{}` ({} key(s) loaded)",
            r.encryption.active_key_id,
            r.encryption.key_ids.len()
        ))
    }
}

fn ingress_tls(i: &Inputs<'_>) -> Check {
    let Some(ing) = &i.children.api_ingress else {
        return pass("no Ingress: the API is reachable only inside the cluster");
    };
    let spec = ing.spec.clone().unwrap_or_default();
    let hosts: Vec<String> = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .collect();
    let tls = spec.tls.unwrap_or_default();
    let uncovered: Vec<&String> = hosts
        .iter()
        .filter(|h| {
            !tls.iter().any(|t| {
                t.secret_name.as_deref().is_some_and(|s| !s.is_empty())
                    && t.hosts.iter().flatten().any(|th| th == *h)
            })
        })
        .collect();
    if hosts.is_empty() || !uncovered.is_empty() {
        fail(format!(
            "the Ingress serves host(s) without TLS: {}",
            uncovered
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        pass(format!("Ingress TLS covers {}", hosts.join(", ")))
    }
}

fn database_tls(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    let report = self_report(i);
    if let Ok(r) = &report {
        if !r.database_tls {
            return fail("the API reports its database connection is not TLS-verified");
        }
    }
    match p.spec.database.provider {
        DatabaseProvider::Embedded => {
            // The API connects as its runtime role (`<platform>-postgres-app`).
            let Some(creds) = &i.children.postgres_app else {
                return fail("the API's database role has no credentials Secret");
            };
            let url = secret_value(creds, crate::names::PG_URL_KEY)
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default();
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
            let params: Vec<&str> = query.split('&').collect();
            let verify_full = params.contains(&"sslmode=verify-full");
            let root = params.iter().any(|p| p.starts_with("sslrootcert="));
            let server_ssl = i.children.postgres.as_ref().is_some_and(|pg| {
                pod_spec_of_sts(&pg.stateful_set)
                    .map(|s| {
                        s.containers
                            .iter()
                            .any(|c| command_line(c).contains("ssl=on"))
                    })
                    .unwrap_or(false)
            });
            match (verify_full && root, server_ssl) {
                (true, true) => match certificate_problem(i) {
                    Some(problem) => fail(problem),
                    None => pass(
                        "the API connects with sslmode=verify-full to Postgres running with ssl=on",
                    ),
                },
                (false, _) => {
                    fail("the API's DATABASE_URL does not use sslmode=verify-full with sslrootcert")
                }
                (true, false) => fail("the embedded Postgres does not run with ssl=on"),
            }
        }
        _ => match report {
            Ok(_) => pass("the API reports a TLS-verified database connection"),
            Err(e) => not_evaluated(format!(
                "external and CloudNativePG databases are judged by the API self-report: {e}"
            )),
        },
    }
}

/// What is wrong with the embedded database's certificate Secret, if anything (nothing to say
/// offline, where the values are placeholders).
fn certificate_problem(i: &Inputs<'_>) -> Option<String> {
    let Some(secret) = &i.children.postgres_tls else {
        return Some("the embedded database has no TLS Secret".into());
    };
    tls_secret_problem(secret, "database", i.now)
}

/// What is wrong with an operator-issued TLS Secret (`ca.crt`, `tls.crt`) of the `server`
/// (`database`, `API`) at `now`, if anything (nothing to say offline, where the values are
/// placeholders).
fn tls_secret_problem(secret: &Secret, server: &str, now: Timestamp) -> Option<String> {
    use crate::desired::certs::{expiry, CA_CERT_KEY, SERVER_CERT_KEY};
    if is_placeholder(secret) {
        return None;
    }
    let text = |key: &str| {
        secret_value(secret, key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    match expiry(&text(CA_CERT_KEY), &text(SERVER_CERT_KEY)) {
        None => Some(format!(
            "the {server} TLS Secret holds no valid CA and server certificate (issuing failed)"
        )),
        Some((not_after, _)) if not_after <= now => Some(format!(
            "the {server} server certificate expired at {not_after}"
        )),
        Some(_) => None,
    }
}

fn pod_spec_of_sts(s: &k8s_openapi::api::apps::v1::StatefulSet) -> Option<&PodSpec> {
    s.spec.as_ref()?.template.spec.as_ref()
}

fn command_line(c: &Container) -> String {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

fn api_container(children: &Children) -> Option<&Container> {
    children
        .api_deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "api")
}

fn redis_auth(i: &Inputs<'_>) -> Check {
    match i.platform.spec.cache.provider {
        CacheProvider::Disabled => pass("no cache runs (the API rate-limits per pod)"),
        CacheProvider::External => not_evaluated(
            "external Redis: authentication is configured by its provider and cannot be verified by the operator",
        ),
        CacheProvider::Embedded => {
            let Some(creds) = &i.children.redis_credentials else {
                return fail("the embedded Redis has no credentials Secret");
            };
            let conf = secret_value(creds, REDIS_AUTH_CONF_KEY)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default();
            let has_pass = conf
                .lines()
                .any(|l| l.trim_start().starts_with("requirepass ") && l.trim().len() > "requirepass \"\"".len());
            let loads_conf = i.children.redis.as_ref().is_some_and(|r| {
                pod_spec_of_sts(&r.stateful_set).is_some_and(|s| {
                    s.containers
                        .iter()
                        .any(|c| command_line(c).contains(REDIS_AUTH_CONF_KEY))
                })
            });
            let url_from_secret = api_container(i.children).is_some_and(|c| {
                c.env.iter().flatten().any(|e| {
                    e.name == "REDIS_URL"
                        && e.value.is_none()
                        && e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).is_some()
                })
            });
            match (has_pass, loads_conf, url_from_secret) {
                (true, true, true) => pass("Redis loads requirepass from its Secret; the API authenticates with the Secret's URL"),
                (false, _, _) => fail("the Redis auth.conf has no requirepass"),
                (_, false, _) => fail("the Redis container does not load auth.conf"),
                (_, _, false) => fail("the API's REDIS_URL does not come from a Secret"),
            }
        }
    }
}

/// Effective value of a setting of the API container: the last literal env var of that name,
/// else the ConfigMap.
fn api_setting(children: &Children, name: &str) -> Option<String> {
    let from_env = api_container(children).and_then(|c| {
        c.env
            .iter()
            .flatten()
            .rfind(|e| e.name == name)
            .map(|e: &EnvVar| e.value.clone().unwrap_or_default())
    });
    from_env.or_else(|| {
        children
            .api_config
            .data
            .as_ref()
            .and_then(|d| d.get(name).cloned())
    })
}

fn env_overridden(children: &Children, name: &str) -> bool {
    api_container(children).is_some_and(|c| c.env.iter().flatten().any(|e| e.name == name))
}

fn int_setting(children: &Children, name: &str) -> Result<i64, String> {
    let raw = api_setting(children, name).ok_or_else(|| format!("{name} is not set"))?;
    raw.trim()
        .parse::<i64>()
        .map_err(|_| format!("{name} is not an integer"))
}

fn minutes_at_most(
    i: &Inputs<'_>,
    env: &str,
    what: &str,
    reported: impl Fn(&SelfReport) -> i64,
) -> Check {
    let configured = match int_setting(i.children, env) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let max = i64::from(MAX_SESSION_MINUTES);
    if configured > max || configured < 1 {
        return fail(format!("{what} is {configured} min (must be 1..={max})"));
    }
    if let Ok(r) = self_report(i) {
        let live = reported(r);
        if live > max || live < 1 {
            return fail(format!(
                "the API reports an {what} of {live} min (must be 1..={max})"
            ));
        }
    }
    pass(format!("{what} is {configured} min"))
}

/// Roles the HIPAA profile requires MFA of.
pub const HIPAA_MFA_ROLES: [&str; 2] = ["admin", "physician"];

fn mfa_required(i: &Inputs<'_>) -> Check {
    let hipaa = i
        .platform
        .spec
        .compliance
        .profiles
        .contains(&crate::crd::ComplianceProfile::HIPAA);
    let Some(policy) = api_setting(i.children, settings::MFA) else {
        return fail(format!("{} is not set", settings::MFA));
    };
    let roles = api_setting(i.children, settings::MFA_REQUIRED_ROLES).unwrap_or_default();
    let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
    match policy.trim() {
        "disabled" => fail("multi-factor authentication is disabled"),
        "optional" if hipaa => fail(
            "multi-factor authentication is optional; the HIPAA profile requires it of admin and physician accounts",
        ),
        "optional" => pass("multi-factor authentication is offered to every account (optional)"),
        "required" => {
            let missing: Vec<&str> = HIPAA_MFA_ROLES
                .into_iter()
                .filter(|r| !roles.contains(r))
                .collect();
            if hipaa && !missing.is_empty() {
                fail(format!(
                    "multi-factor authentication is not required of: {}",
                    missing.join(", ")
                ))
            } else {
                pass(format!(
                    "multi-factor authentication required of: {}",
                    roles.join(", ")
                ))
            }
        }
        _ => fail(format!(
            "{} is not one of {}",
            settings::MFA,
            settings::MFA_POLICIES.join(", ")
        )),
    }
}

fn audit_retention(i: &Inputs<'_>) -> Check {
    let configured = match int_setting(i.children, settings::AUDIT_RETENTION_DAYS.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let min = i64::from(MIN_AUDIT_RETENTION_DAYS);
    if configured < min {
        return fail(format!(
            "audit retention is {configured} days (HIPAA needs at least {min})"
        ));
    }
    if let Ok(r) = self_report(i) {
        if r.audit.retention_days < min {
            return fail(format!(
                "the API reports audit retention of {} days (HIPAA needs at least {min})",
                r.audit.retention_days
            ));
        }
    }
    pass(format!("audit retention is {configured} days"))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn audit_chain_intact(i: &Inputs<'_>) -> Check {
    let r = match self_report(i) {
        Ok(r) => r,
        Err(e) => return not_evaluated(e),
    };
    let head = AuditChainHead {
        id: r.audit.chain_head_id,
        hash: r.audit.chain_head_hash.to_ascii_lowercase(),
    };
    if head.id < 0 || !is_sha256_hex(&head.hash) {
        return fail("the API reports a malformed audit chain head");
    }
    let previous = i.live.and_then(|l| l.previous_chain_head.as_ref());
    match previous {
        Some(prev) if head.id < prev.id => fail(format!(
            "the audit chain head went back from id {} to {}: audit records were removed",
            prev.id, head.id
        )),
        Some(prev) if head.id == prev.id && !head.hash.eq_ignore_ascii_case(&prev.hash) => {
            fail(format!(
                "the hash of audit chain head {} changed: the audit trail was rewritten",
                head.id
            ))
        }
        Some(_) | None => pass(format!(
            "audit chain intact up to head {} (no removal or rewrite seen)",
            head.id
        )),
    }
}

fn audit_write_failures(i: &Inputs<'_>) -> Check {
    match self_report(i) {
        Err(e) => not_evaluated(e),
        Ok(r) if r.audit.write_failures == 0 => pass("no audit write failures"),
        Ok(r) => fail(format!(
            "the API reports {} audit write failure(s) since it started",
            r.audit.write_failures
        )),
    }
}

fn network_policy_default_deny(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    let desired = &i.children.network_policies;
    let deny_name = p.names.netpol_default_deny();
    let Some(deny) = desired
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(deny_name.as_str()))
    else {
        return fail("no default-deny NetworkPolicy (networkPolicy.enabled is false)");
    };
    let spec = deny.spec.clone().unwrap_or_default();
    let types = spec.policy_types.clone().unwrap_or_default();
    let denies_all = types.iter().any(|t| t == "Ingress")
        && types.iter().any(|t| t == "Egress")
        && spec.ingress.as_ref().is_none_or(|r| r.is_empty())
        && spec.egress.as_ref().is_none_or(|r| r.is_empty());
    let selects_platform = spec.pod_selector.as_ref().is_some_and(|s| {
        s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
            && s.match_labels.clone().unwrap_or_default() == p.names.platform_selector()
    });
    if !denies_all || !selects_platform {
        return fail(
            "the default-deny NetworkPolicy does not deny both directions for every platform pod",
        );
    }
    let Some(live) = i.live else {
        return pass(format!(
            "{} desired NetworkPolicies including default-deny",
            desired.len()
        ));
    };
    let mut problems = Vec::new();
    for want in desired {
        let name = want.metadata.name.clone().unwrap_or_default();
        match live
            .network_policies
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
        {
            None => problems.push(format!("{name} is missing")),
            Some(got)
                if !crate::apply::same_network_policy_spec(
                    got.spec.as_ref(),
                    want.spec.as_ref(),
                ) =>
            {
                problems.push(format!("{name} was modified"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} NetworkPolicies present and unmodified",
            desired.len()
        ))
    } else {
        fail(format!(
            "NetworkPolicies differ from the desired ones: {}",
            problems.join("; ")
        ))
    }
}

/// Every workload pod spec of the platform with its name: the API Deployment, the database and
/// cache StatefulSets, the backup CronJob's job template and the on-demand backup Job as built,
/// and (with live evidence) the backup Jobs in the cluster. A live Job is what actually runs, so
/// it replaces the desired Job of the same name.
fn workloads<'a>(
    children: &'a Children,
    live: Option<&'a LiveEvidence>,
) -> Vec<(String, &'a PodSpec)> {
    let mut out = Vec::new();
    let d = &children.api_deployment;
    if let Some(s) = d.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
        out.push((
            format!("Deployment {}", d.metadata.name.clone().unwrap_or_default()),
            s,
        ));
    }
    let stses = [
        children.postgres.as_ref().map(|p| &p.stateful_set),
        children.redis.as_ref().map(|r| &r.stateful_set),
    ];
    for sts in stses.into_iter().flatten() {
        if let Some(s) = pod_spec_of_sts(sts) {
            out.push((
                format!(
                    "StatefulSet {}",
                    sts.metadata.name.clone().unwrap_or_default()
                ),
                s,
            ));
        }
    }
    if let Some(cj) = &children.backup.cron_job {
        let template = cj
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref());
        if let Some(s) = template {
            out.push((
                format!("CronJob {}", cj.metadata.name.clone().unwrap_or_default()),
                s,
            ));
        }
    }
    let live_jobs: &[Job] = live.map(|l| l.backup_jobs.as_slice()).unwrap_or_default();
    let desired_jobs = children.backup.on_demand_job.iter().filter(|d| {
        !live_jobs
            .iter()
            .any(|l| l.metadata.name.is_some() && l.metadata.name == d.metadata.name)
    });
    for job in desired_jobs.chain(live_jobs) {
        if let Some(s) = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            out.push((
                format!("Job {}", job.metadata.name.clone().unwrap_or_default()),
                s,
            ));
        }
    }
    out
}

fn all_containers(s: &PodSpec) -> impl Iterator<Item = &Container> {
    s.init_containers
        .iter()
        .flatten()
        .chain(s.containers.iter())
}

fn pod_security(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    let wl = workloads(i.children, i.live);
    for (name, spec) in &wl {
        let psc = spec.security_context.clone().unwrap_or_default();
        if psc.run_as_non_root != Some(true) {
            problems.push(format!("{name}: pod runAsNonRoot"));
        }
        if spec.host_network == Some(true)
            || spec.host_pid == Some(true)
            || spec.host_ipc == Some(true)
        {
            problems.push(format!("{name}: host namespaces"));
        }
        for c in all_containers(spec) {
            let v: Vec<String> = container_violations(c)
                .into_iter()
                .filter(|v| {
                    !v.starts_with("requests.")
                        && !v.starts_with("limits.")
                        && !v.starts_with("image")
                })
                .collect();
            if !v.is_empty() {
                problems.push(format!("{name}/{}: {}", c.name, v.join(", ")));
            }
            if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
                problems.push(format!("{name}/{}: privileged", c.name));
            }
        }
    }
    if problems.is_empty() {
        pass(format!(
            "{} workload(s) meet the restricted profile",
            wl.len()
        ))
    } else {
        fail(format!("not restricted: {}", problems.join("; ")))
    }
}

fn resource_limits(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    let wl = workloads(i.children, i.live);
    for (name, spec) in &wl {
        for c in all_containers(spec) {
            let v: Vec<String> = container_violations(c)
                .into_iter()
                .filter(|v| v.starts_with("requests.") || v.starts_with("limits."))
                .collect();
            if !v.is_empty() {
                problems.push(format!("{name}/{}: missing {}", c.name, v.join(", ")));
            }
        }
    }
    if problems.is_empty() {
        pass(format!(
            "every container of {} workload(s) has requests and limits",
            wl.len()
        ))
    } else {
        fail(problems.join("; "))
    }
}

fn api_availability(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    if p.spec.stopped {
        return pass("the platform is stopped on purpose (spec.stopped)");
    }
    let min = p.api_min_replicas();
    if min < MIN_API_REPLICAS {
        return fail(format!(
            "the API runs {min} replica(s) at minimum (at least {MIN_API_REPLICAS} needed)"
        ));
    }
    if i.children.api_pdb.is_none() {
        return fail("the API has no PodDisruptionBudget");
    }
    pass(format!(
        "at least {min} API replicas with a PodDisruptionBudget"
    ))
}

fn backup_rpo(i: &Inputs<'_>) -> Check {
    let b = &i.platform.spec.backup;
    if !b.enabled {
        return fail("backups are disabled (backup.enabled is false)");
    }
    if let Some(problem) = crate::desired::backup_cnpg::delegation_problem(i.platform) {
        return fail(format!("backups cannot run: {problem}"));
    }
    let Some(live) = i.live else {
        return not_evaluated(format!("backup age {OFFLINE}"));
    };
    let status = live.backup.as_ref();
    let Some(last) = status.and_then(|s| s.last_successful_time.as_ref()) else {
        if let Some(failed) = status.and_then(|s| s.last_failure_time.as_ref()) {
            return fail(format!(
                "no backup has succeeded yet; the last one failed at {}",
                failed.0
            ));
        }
        return not_evaluated(
            "no backup has completed yet (status.backup has no lastSuccessfulTime); \
             evaluated from the first backup on",
        );
    };
    if !crate::desired::backup_status::rpo_satisfied(live.backup.as_ref(), b.rpo_minutes, i.now) {
        fail(format!(
            "the last successful backup ({}) is older than the RPO of {} min",
            last.0, b.rpo_minutes
        ))
    } else {
        pass(format!(
            "last successful encrypted backup at {} (RPO {} min)",
            last.0, b.rpo_minutes
        ))
    }
}

fn rate_limiting(i: &Inputs<'_>) -> Check {
    let rpm = match int_setting(i.children, settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let login = match int_setting(i.children, settings::RATE_LIMIT_LOGIN_PER_MINUTE.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let overridden: Vec<&str> = [
        settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name,
        settings::RATE_LIMIT_LOGIN_PER_MINUTE.name,
    ]
    .into_iter()
    .filter(|n| env_overridden(i.children, n))
    .collect();
    if !overridden.is_empty() {
        return fail(format!(
            "apiServer.env overrides the rate limits: {}",
            overridden.join(", ")
        ));
    }
    if rpm < 1 || login < 1 {
        return fail("rate limits must be positive");
    }
    if login > i64::from(MAX_LOGIN_ATTEMPTS_PER_MINUTE) {
        return fail(format!(
            "{login} login attempts per minute allowed (at most {MAX_LOGIN_ATTEMPTS_PER_MINUTE})"
        ));
    }
    if let Ok(r) = self_report(i) {
        if !r.rate_limit.enabled {
            return fail("the API reports rate limiting disabled");
        }
        return pass(format!(
            "{rpm} requests and {login} logins per minute, enforced by the {} backend",
            r.rate_limit.backend
        ));
    }
    pass(format!(
        "{rpm} requests and {login} logins per minute configured"
    ))
}

/// Whether an environment variable or ConfigMap key name looks like a credential: a segment
/// (split at `_`, `-`, `.`) is PASSWORD, PASSWD, SECRET, CREDENTIAL(S) or APIKEY, or the name
/// ends in TOKEN or KEY. Names ending in `_FILE` / `_PATH` point at mounted files and pass.
pub fn credential_like(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    let segments: Vec<&str> = n.split(['_', '-', '.']).filter(|s| !s.is_empty()).collect();
    match segments.last() {
        None | Some(&"FILE") | Some(&"PATH") => false,
        Some(last) => {
            ["TOKEN", "KEY"].contains(last)
                || segments.iter().any(|s| {
                    [
                        "PASSWORD",
                        "PASSWD",
                        "SECRET",
                        "CREDENTIAL",
                        "CREDENTIALS",
                        "APIKEY",
                    ]
                    .contains(s)
                })
        }
    }
}

/// Whether a value holds a URL with embedded credentials (`scheme://user:pass@host`).
pub fn has_url_credentials(value: &str) -> bool {
    value.split_whitespace().any(|word| {
        word.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
    })
}

fn no_secrets_in_config(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    for (k, v) in i.children.api_config.data.iter().flatten() {
        if credential_like(k) && !v.is_empty() {
            problems.push(format!("ConfigMap key {k} looks like a credential"));
        }
        if has_url_credentials(v) {
            problems.push(format!("ConfigMap key {k} holds a URL with credentials"));
        }
    }
    for (name, spec) in workloads(i.children, i.live) {
        for c in all_containers(spec) {
            for e in c.env.iter().flatten() {
                let Some(v) = e.value.as_deref() else {
                    continue;
                };
                if credential_like(&e.name) && !v.is_empty() {
                    problems.push(format!(
                        "{name}/{}: env {} has a literal value",
                        c.name, e.name
                    ));
                } else if has_url_credentials(v) {
                    problems.push(format!(
                        "{name}/{}: env {} holds a URL with credentials",
                        c.name, e.name
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        pass("credentials come only from Secrets")
    } else {
        fail(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_and_urls_are_recognised() {
        assert!(credential_like("STRIPE_API_KEY"));
        assert!(credential_like("db_password"));
        assert!(!credential_like("CADUCEUS_JWT_KEY_FILE"));
        assert!(!credential_like("CADUCEUS_LOG_LEVEL"));
        assert!(!credential_like("CADUCEUS_ACCESS_TOKEN_TTL_MINUTES"));
        assert!(credential_like("GITHUB_TOKEN"));
        assert!(credential_like("aws-secret-access-key"));
        assert!(has_url_credentials("postgres://u:p@h:5432/db"));
        assert!(!has_url_credentials("https://example.org/a@b"));
        assert!(!has_url_credentials("redis://host:6379/0"));
    }
}
