//! The rule catalogue: every compliance rule the operator evaluates, with the regulatory clause
//! it serves, its severity, how it is evaluated and how `Enforce` mode enforces it.
//!
//! Clauses: HIPAA Security Rule 45 CFR 164.308/164.312/164.316, GDPR Art. 5/25/32, SOC 2 Trust
//! Services Criteria (CC = common criteria, A = availability).

use serde::Serialize;

use crate::crd::ComplianceProfile;

/// Severity of a violation (the `severity` label of `caduceus_compliance_violations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Where a rule's evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The spec and the children built from it: evaluable offline (`compliance-report`).
    Static,
    /// Live objects in the cluster (Secrets, NetworkPolicies) or the platform status.
    Live,
    /// The API server's self-report (`GET /internal/compliance` on the admin port).
    SelfReport,
}

/// Identifier of a rule (stable: used in exceptions, metrics labels and status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RuleId {
    PhiKeyValid,
    FieldEncryptionActive,
    IngressTls,
    DatabaseTls,
    ApiTls,
    RedisAuth,
    SessionIdleTimeout,
    AccessTokenTtl,
    MfaRequired,
    AuditRetention,
    AuditChainIntact,
    AuditWriteFailures,
    NetworkPolicyDefaultDeny,
    PodSecurityRestricted,
    ResourceLimits,
    ApiAvailability,
    BackupRpo,
    RateLimiting,
    NoSecretsInConfig,
}

impl RuleId {
    pub fn as_str(self) -> &'static str {
        rule(self).id
    }

    /// Looks a rule up by its id string (exceptions name rules this way).
    pub fn parse(s: &str) -> Option<RuleId> {
        RULES.iter().find(|r| r.id == s).map(|r| r.rule)
    }
}

/// One rule of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(skip)]
    pub rule: RuleId,
    /// Stable kebab-case id.
    pub id: &'static str,
    pub title: &'static str,
    /// The regulatory clauses the rule serves.
    pub clauses: &'static [&'static str],
    pub profiles: &'static [ComplianceProfile],
    pub severity: Severity,
    pub source: Source,
    /// How the rule is evaluated.
    pub evaluation: &'static str,
    /// What `Enforce` mode does (or why it cannot).
    pub enforcement: &'static str,
}

impl Rule {
    /// Whether any of `profiles` includes this rule.
    pub fn applies_to(&self, profiles: &[ComplianceProfile]) -> bool {
        self.profiles.iter().any(|p| profiles.contains(p))
    }
}

use ComplianceProfile::{GDPR, HIPAA, SOC2};

const ALL_PROFILES: &[ComplianceProfile] = &[HIPAA, GDPR, SOC2];

/// The catalogue, in evaluation order.
pub static RULES: [Rule; 19] = [
    Rule {
        rule: RuleId::PhiKeyValid,
        id: "phi-key-valid",
        title: "PHI encryption key ring present and valid",
        clauses: &["HIPAA 45 CFR 164.312(a)(2)(iv) encryption and decryption", "GDPR Art. 32(1)(a) encryption", "SOC2 CC6.1"],
        profiles: ALL_PROFILES,
        severity: Severity::Critical,
        source: Source::Live,
        evaluation: "phi-keys.json in <platform>-api-secrets parses as key ring version 1, the active key id is in the ring, every key and the blind-index key are 32 bytes",
        enforcement: "a missing key ring is generated; an invalid one is never replaced (that would make stored PHI unreadable): reported only",
    },
    Rule {
        rule: RuleId::FieldEncryptionActive,
        id: "field-encryption-active",
        title: "API reports field-level PHI encryption active",
        clauses: &["HIPAA 45 CFR 164.312(a)(2)(iv) encryption and decryption", "GDPR Art. 32(1)(a) encryption", "SOC2 CC6.1"],
        profiles: ALL_PROFILES,
        severity: Severity::Critical,
        source: Source::SelfReport,
        evaluation: "self-report encryption.active is true and its active key id is one of the key ids it holds",
        enforcement: "none possible from outside the API: reported",
    },
    Rule {
        rule: RuleId::IngressTls,
        id: "ingress-tls",
        title: "TLS on the Ingress",
        clauses: &["HIPAA 45 CFR 164.312(e)(1) transmission security", "GDPR Art. 32(1)(a) encryption", "SOC2 CC6.7"],
        profiles: ALL_PROFILES,
        severity: Severity::Critical,
        source: Source::Static,
        evaluation: "when the Ingress is enabled it has a tls entry covering its host and a certificate Secret; no Ingress passes (the API is not exposed)",
        enforcement: "the Ingress builder always adds TLS; reported if it is ever missing",
    },
    Rule {
        rule: RuleId::DatabaseTls,
        id: "database-tls",
        title: "API to Postgres over verified TLS",
        clauses: &["HIPAA 45 CFR 164.312(e)(2)(ii) encryption in transit", "GDPR Art. 32(1)(a) encryption", "SOC2 CC6.7"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "embedded database: the API's DATABASE_URL uses sslmode=verify-full with sslrootcert and Postgres runs with ssl=on; otherwise (and additionally, when available) the self-report database_tls must be true",
        enforcement: "not enforced by this operator version: reported",
    },
    Rule {
        rule: RuleId::ApiTls,
        id: "api-tls",
        title: "HTTPS to the API inside the platform",
        clauses: &["HIPAA 45 CFR 164.312(e)(1) transmission security", "HIPAA 45 CFR 164.312(e)(2)(ii) encryption in transit", "GDPR Art. 32(1)(a) encryption", "SOC2 CC6.7"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "the API gets CADUCEUS_TLS_CERT_FILE and CADUCEUS_TLS_KEY_FILE (not blanked by apiServer.env), its probes use HTTPS and <p>-api-internal-tls holds an unexpired serving certificate; when available, the self-report api_tls must not be false",
        enforcement: "always built that way (operator-issued certificate, renewed automatically); apiServer.env entries overriding the two settings are removed",
    },
    Rule {
        rule: RuleId::RedisAuth,
        id: "redis-auth",
        title: "Redis requires authentication",
        clauses: &["HIPAA 45 CFR 164.312(d) person or entity authentication", "GDPR Art. 32(1)(b) confidentiality", "SOC2 CC6.1"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "embedded Redis loads auth.conf with requirepass from its Secret and the API's REDIS_URL carries the password from that Secret; disabled cache passes; an external Redis is not evaluable",
        enforcement: "the Redis builder always sets requirepass; reported if it is ever missing",
    },
    Rule {
        rule: RuleId::SessionIdleTimeout,
        id: "session-idle-timeout",
        title: "Session idle timeout at most 15 minutes",
        clauses: &["HIPAA 45 CFR 164.312(a)(2)(iii) automatic logoff", "SOC2 CC6.1"],
        profiles: &[HIPAA, SOC2],
        severity: Severity::High,
        source: Source::Static,
        evaluation: "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES of the API (ConfigMap, not overridden by apiServer.env) is at most 15; the self-report agrees when available",
        enforcement: "security.sessionIdleTimeoutMinutes clamped to 15 and apiServer.env overrides removed",
    },
    Rule {
        rule: RuleId::AccessTokenTtl,
        id: "access-token-ttl",
        title: "Access-token lifetime at most 15 minutes",
        clauses: &["HIPAA 45 CFR 164.312(d) person or entity authentication", "HIPAA 45 CFR 164.312(a)(2)(iii) automatic logoff", "SOC2 CC6.1"],
        profiles: &[HIPAA, SOC2],
        severity: Severity::High,
        source: Source::Static,
        evaluation: "CADUCEUS_ACCESS_TOKEN_TTL_MINUTES of the API is at most 15; the self-report agrees when available",
        enforcement: "security.accessTokenTtlMinutes clamped to 15 and apiServer.env overrides removed",
    },
    Rule {
        rule: RuleId::MfaRequired,
        id: "mfa-required",
        title: "Multi-factor authentication for staff",
        clauses: &["HIPAA 45 CFR 164.312(d) person or entity authentication", "HIPAA 45 CFR 164.308(a)(5)(ii)(D) password management", "GDPR Art. 32(1)(b) confidentiality", "SOC2 CC6.1"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "CADUCEUS_MFA of the API (ConfigMap, not overridden by apiServer.env) is not disabled; under the HIPAA profile it is required and CADUCEUS_MFA_REQUIRED_ROLES names at least admin and physician",
        enforcement: "security.mfa raised to Required under the HIPAA profile (Optional otherwise) when it is weaker, admin and physician added to security.mfaRequiredRoles under HIPAA, and apiServer.env overrides removed",
    },
    Rule {
        rule: RuleId::AuditRetention,
        id: "audit-retention",
        title: "Audit records kept at least 6 years",
        clauses: &["HIPAA 45 CFR 164.316(b)(2)(i) retention of documentation (6 years)", "HIPAA 45 CFR 164.312(b) audit controls"],
        profiles: &[HIPAA],
        severity: Severity::High,
        source: Source::Static,
        evaluation: "CADUCEUS_AUDIT_RETENTION_DAYS of the API is at least 2190; the self-report agrees when available",
        enforcement: "security.auditRetentionDays raised to 2190 and apiServer.env overrides removed",
    },
    Rule {
        rule: RuleId::AuditChainIntact,
        id: "audit-chain-intact",
        title: "Audit hash chain intact",
        clauses: &["HIPAA 45 CFR 164.312(c)(1) integrity", "HIPAA 45 CFR 164.312(b) audit controls", "SOC2 CC7.2"],
        profiles: ALL_PROFILES,
        severity: Severity::Critical,
        source: Source::SelfReport,
        evaluation: "self-report chain head hash is a 32-byte hex digest; the head id never decreases and the hash of an unchanged head id never changes between evaluations",
        enforcement: "none possible (evidence of tampering must be investigated): reported",
    },
    Rule {
        rule: RuleId::AuditWriteFailures,
        id: "audit-write-failures",
        title: "No audit write failures",
        clauses: &["HIPAA 45 CFR 164.312(b) audit controls", "GDPR Art. 5(2) accountability", "SOC2 CC7.2"],
        profiles: ALL_PROFILES,
        severity: Severity::Critical,
        source: Source::SelfReport,
        evaluation: "self-report audit.write_failures is 0",
        enforcement: "none possible (the API fails closed on audit errors): reported",
    },
    Rule {
        rule: RuleId::NetworkPolicyDefaultDeny,
        id: "network-policy-default-deny",
        title: "Default-deny network policies present and unmodified",
        clauses: &["HIPAA 45 CFR 164.312(e)(1) transmission security", "HIPAA 45 CFR 164.312(a)(1) access control", "GDPR Art. 32(1)(b) confidentiality", "SOC2 CC6.6"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "the platform's NetworkPolicies include a default-deny for both directions over every platform pod; live policies equal the desired ones",
        enforcement: "networkPolicy.enabled forced to true; modified or deleted policies are restored by apply",
    },
    Rule {
        rule: RuleId::PodSecurityRestricted,
        id: "pod-security-restricted",
        title: "Every pod at Pod Security Standards \"restricted\"",
        clauses: &["HIPAA 45 CFR 164.308(a)(1)(ii)(B) risk management", "GDPR Art. 25 data protection by design", "SOC2 CC6.8"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "every container and init container of every workload (API Deployment, database and cache StatefulSets, the backup CronJob's job template, the on-demand backup Job and the backup Jobs in the cluster) runs as non-root with a non-zero uid, no privilege escalation, read-only root filesystem, drops ALL capabilities and uses the RuntimeDefault seccomp profile",
        enforcement: "the builders always set the restricted security contexts; drifted workloads are restored by apply (a Job's pod template is immutable: a non-compliant Job is reported until the CronJob history limit or its TTL removes it)",
    },
    Rule {
        rule: RuleId::ResourceLimits,
        id: "resource-limits",
        title: "CPU and memory requests and limits on every container",
        clauses: &["SOC2 A1.1 capacity", "HIPAA 45 CFR 164.308(a)(7)(ii)(C) emergency mode operation"],
        profiles: ALL_PROFILES,
        severity: Severity::Medium,
        source: Source::Static,
        evaluation: "every container of every workload (including the backup CronJob's job template and the backup Jobs) has cpu and memory requests and limits",
        enforcement: "the builders always set them from the spec; drifted workloads are restored by apply",
    },
    Rule {
        rule: RuleId::ApiAvailability,
        id: "api-availability",
        title: "At least 2 API replicas and a PodDisruptionBudget",
        clauses: &["HIPAA 45 CFR 164.308(a)(7)(ii)(C) emergency mode operation", "SOC2 A1.2"],
        profiles: &[HIPAA, SOC2],
        severity: Severity::Medium,
        source: Source::Static,
        evaluation: "the API runs at least 2 replicas (or an HPA with minReplicas >= 2) and has a PodDisruptionBudget; a stopped platform passes",
        enforcement: "apiServer.replicas and autoscaling.minReplicas raised to 2 (maxReplicas too if needed), which creates the PDB",
    },
    Rule {
        rule: RuleId::BackupRpo,
        id: "backup-rpo",
        title: "Encrypted backups within the RPO",
        clauses: &["HIPAA 45 CFR 164.308(a)(7)(ii)(A) data backup plan", "GDPR Art. 32(1)(c) restore availability", "SOC2 A1.2"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Live,
        evaluation: "backup.enabled is true, the backups can run (CloudNativePG needs an s3 destination) and status.backup.lastSuccessfulTime (from the backup Jobs' results, or CloudNativePG's Cluster status) is within backup.rpoMinutes; Fail when only failed backups are recorded; NotEvaluated before the first backup completes and offline",
        enforcement: "not enforced (enabling backups needs a destination decision): reported",
    },
    Rule {
        rule: RuleId::RateLimiting,
        id: "rate-limiting",
        title: "Rate limiting on",
        clauses: &["HIPAA 45 CFR 164.312(a)(1) access control", "SOC2 CC6.1", "SOC2 A1.1"],
        profiles: ALL_PROFILES,
        severity: Severity::Medium,
        source: Source::Static,
        evaluation: "the API's request and login limits are set in its ConfigMap and not overridden by apiServer.env, login attempts at most 10 per minute; the self-report says rate_limit.enabled when available",
        enforcement: "login attempts clamped to 10 per minute and apiServer.env overrides removed",
    },
    Rule {
        rule: RuleId::NoSecretsInConfig,
        id: "no-secrets-in-config",
        title: "No secrets in ConfigMaps or literal env values",
        clauses: &["HIPAA 45 CFR 164.312(a)(1) access control", "GDPR Art. 32(1)(b) confidentiality", "SOC2 CC6.1"],
        profiles: ALL_PROFILES,
        severity: Severity::High,
        source: Source::Static,
        evaluation: "no ConfigMap key or literal env var is named like a credential (a PASSWORD, SECRET, CREDENTIAL or APIKEY segment, or ending in TOKEN or KEY) and no value contains a URL with embedded credentials",
        enforcement: "literal credential env vars are removed from the API container (only the names are reported; move the value to a Secret and use valueFrom)",
    },
];

/// The catalogue entry of a rule.
pub fn rule(id: RuleId) -> &'static Rule {
    // RULES lists every RuleId exactly once (tested), so the search always succeeds.
    RULES.iter().find(|r| r.rule == id).unwrap_or(&RULES[0])
}

/// Rules of the given profiles, in catalogue order.
pub fn rules_for(profiles: &[ComplianceProfile]) -> Vec<&'static Rule> {
    RULES.iter().filter(|r| r.applies_to(profiles)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_rule_id_is_unique_and_resolvable() {
        let ids: HashSet<&str> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), RULES.len());
        for r in &RULES {
            assert_eq!(rule(r.rule).id, r.id);
            assert_eq!(RuleId::parse(r.id), Some(r.rule));
            assert!(!r.clauses.is_empty() && !r.profiles.is_empty(), "{}", r.id);
            assert!(
                r.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                r.id
            );
        }
        assert_eq!(RuleId::parse("no-such-rule"), None);
    }

    #[test]
    fn audit_retention_is_hipaa_only_and_profiles_filter() {
        let gdpr = rules_for(&[GDPR]);
        assert!(!gdpr.iter().any(|r| r.rule == RuleId::AuditRetention));
        assert!(!gdpr.iter().any(|r| r.rule == RuleId::SessionIdleTimeout));
        let hipaa = rules_for(&[HIPAA]);
        assert!(hipaa.iter().any(|r| r.rule == RuleId::AuditRetention));
        assert_eq!(rules_for(&[HIPAA, GDPR, SOC2]).len(), RULES.len());
    }

    #[test]
    fn mfa_rule_applies_to_every_profile_and_cites_authentication() {
        for p in [HIPAA, GDPR, SOC2] {
            assert!(rules_for(&[p])
                .iter()
                .any(|r| r.rule == RuleId::MfaRequired));
        }
        assert_eq!(RuleId::parse("mfa-required"), Some(RuleId::MfaRequired));
        assert!(rule(RuleId::MfaRequired)
            .clauses
            .iter()
            .any(|c| c.contains("164.312(d)")));
    }

    #[test]
    fn hipaa_clause_for_automatic_logoff_is_cited() {
        assert!(rule(RuleId::SessionIdleTimeout)
            .clauses
            .iter()
            .any(|c| c.contains("164.312(a)(2)(iii)")));
    }
}
