//! The environment settings that cross a process boundary: the operator writes them (the API's
//! ConfigMap and Deployment, the backup Jobs) and the API server / backup agent read them.
//! Names, defaults and bounds are defined here once; docs/contracts.md is tested against
//! [`ALL`].

/// A whole-number setting with its default and the bounds the operator's CRD enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    pub name: &'static str,
    pub default: u32,
    pub min: u32,
    pub max: u32,
}

/// Automatic logoff after this many idle minutes (`spec.security.sessionIdleTimeoutMinutes`).
pub const SESSION_IDLE_TIMEOUT_MINUTES: Number = Number {
    name: "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES",
    default: 15,
    min: 1,
    max: 1440,
};
/// Maximum age of a session in hours (`spec.security.maxSessionHours`): counted from the login,
/// whatever the activity; after it the session cannot be used or refreshed.
pub const MAX_SESSION_HOURS: Number = Number {
    name: "CADUCEUS_MAX_SESSION_HOURS",
    default: 12,
    min: 1,
    max: 24,
};
/// Access token (JWT) lifetime in minutes (`spec.security.accessTokenTtlMinutes`).
pub const ACCESS_TOKEN_TTL_MINUTES: Number = Number {
    name: "CADUCEUS_ACCESS_TOKEN_TTL_MINUTES",
    default: 15,
    min: 1,
    max: 1440,
};
/// Requests per minute per client IP and per user (`spec.security.rateLimit.requestsPerMinute`).
pub const RATE_LIMIT_REQUESTS_PER_MINUTE: Number = Number {
    name: "CADUCEUS_RATE_LIMIT_REQUESTS_PER_MINUTE",
    default: 600,
    min: 1,
    max: 1_000_000,
};
/// Login attempts per minute per client IP (`spec.security.rateLimit.loginAttemptsPerMinute`).
pub const RATE_LIMIT_LOGIN_PER_MINUTE: Number = Number {
    name: "CADUCEUS_RATE_LIMIT_LOGIN_PER_MINUTE",
    default: 5,
    min: 1,
    max: 1000,
};
/// HIPAA's six years (45 CFR 164.316(b)(2)): the least audit retention the compliance rules
/// accept, and the least patient retention anyone may configure.
pub const SIX_YEARS_DAYS: u32 = 2190;
/// Audit records are kept this many days (`spec.security.auditRetentionDays`; the compliance
/// rule `audit-retention` asks for at least [`SIX_YEARS_DAYS`]).
pub const AUDIT_RETENTION_DAYS: Number = Number {
    name: "CADUCEUS_AUDIT_RETENTION_DAYS",
    default: SIX_YEARS_DAYS,
    min: 1,
    max: 36500,
};
/// Soft-deleted patients are purged this many days after deletion
/// (`spec.security.patientRetentionDays`); never below [`SIX_YEARS_DAYS`].
pub const PATIENT_RETENTION_DAYS: Number = Number {
    name: "CADUCEUS_PATIENT_RETENTION_DAYS",
    default: 3650,
    min: SIX_YEARS_DAYS,
    max: 36500,
};
/// Days after an appointment (its end) during which the appointment keeps its practitioner in
/// the patient's care team (`spec.security.careTeamAccessDays`); cancelled and no-show
/// appointments never count.
pub const CARE_TEAM_ACCESS_DAYS: Number = Number {
    name: "CADUCEUS_CARE_TEAM_ACCESS_DAYS",
    default: 30,
    min: 1,
    max: 3650,
};

/// Public API address (`0.0.0.0:<port>`).
pub const HTTP_ADDR: &str = "CADUCEUS_HTTP_ADDR";
/// Admin address: `/metrics`, `/health/detailed`, the self-report.
pub const ADMIN_ADDR: &str = "CADUCEUS_ADMIN_ADDR";
/// The API's public port (its default `CADUCEUS_HTTP_ADDR` and the Service's target).
pub const API_HTTP_PORT: u16 = 8080;
/// The API's admin port (its default `CADUCEUS_ADMIN_ADDR`, scraped and read by the operator).
pub const API_ADMIN_PORT: u16 = 9090;
/// File holding the HS256 JWT secret (base64 of at least 32 bytes).
pub const JWT_KEY_FILE: &str = "CADUCEUS_JWT_KEY_FILE";
/// File holding the PHI key ring (JSON).
pub const PHI_KEYS_FILE: &str = "CADUCEUS_PHI_KEYS_FILE";
/// Comma-separated CIDRs / addresses of trusted reverse proxies.
pub const TRUSTED_PROXIES: &str = "CADUCEUS_TRUSTED_PROXIES";
/// Comma-separated CORS origins.
pub const CORS_ALLOWED_ORIGINS: &str = "CADUCEUS_CORS_ALLOWED_ORIGINS";
/// `true` enables patient self-registration.
pub const SELF_REGISTRATION: &str = "CADUCEUS_SELF_REGISTRATION";
/// The identifier system (an absolute URI) of the platform's MRNs on the FHIR interface
/// (`Patient.identifier.system`, the `identifier` search): `spec.apiServer.fhir.mrnSystem`.
/// Checked with [`is_absolute_uri`] on both sides.
pub const FHIR_MRN_SYSTEM: &str = "CADUCEUS_FHIR_MRN_SYSTEM";
/// [`FHIR_MRN_SYSTEM`] when unset: a URN of this product (set the hospital's own system).
pub const DEFAULT_FHIR_MRN_SYSTEM: &str = "urn:caduceus:mrn";

/// An absolute URI as [`FHIR_MRN_SYSTEM`] needs it (RFC 3986 §4.3, loosely): a scheme (a letter,
/// then letters, digits, `+`, `.`, `-`), `:`, something, and no whitespace or control
/// characters (`urn:oid:1.2.3`, `https://hospital.example/mrn`).
pub fn is_absolute_uri(v: &str) -> bool {
    let Some((scheme, rest)) = v.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        && !rest.is_empty()
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}
/// Multi-factor authentication (TOTP) policy of the API (`spec.security.mfa`): `required` (the
/// roles of [`MFA_REQUIRED_ROLES`] must use MFA: without it their login opens a session that may
/// only enrol), `optional` (any account may enrol) or `disabled` (no new enrolment; accounts that
/// already use MFA keep being asked for it).
pub const MFA: &str = "CADUCEUS_MFA";
/// The values of [`MFA`].
pub const MFA_POLICIES: [&str; 3] = ["required", "optional", "disabled"];
/// [`MFA`] when unset (the operator always sets it: `required` under the HIPAA profile).
pub const DEFAULT_MFA: &str = "optional";
/// Comma-separated roles that must use MFA when [`MFA`] is `required`
/// (`spec.security.mfaRequiredRoles`).
pub const MFA_REQUIRED_ROLES: &str = "CADUCEUS_MFA_REQUIRED_ROLES";
/// The roles [`MFA_REQUIRED_ROLES`] may name (staff: patients may enrol, never must).
pub const MFA_ROLES: [&str; 4] = ["admin", "physician", "nurse", "receptionist"];
/// [`MFA_REQUIRED_ROLES`] when unset: the roles HIPAA's profile requires MFA of.
pub const DEFAULT_MFA_REQUIRED_ROLES: &str = "admin,physician";
/// tracing filter of the API (and of the operator).
pub const LOG_LEVEL: &str = "CADUCEUS_LOG_LEVEL";
/// Where the backup agent writes / reads archives (`s3://…`, `file://…`).
pub const BACKUP_DESTINATION: &str = "CADUCEUS_BACKUP_DESTINATION";
/// S3 endpoint of the backup agent (path-style).
pub const BACKUP_S3_ENDPOINT: &str = "CADUCEUS_BACKUP_S3_ENDPOINT";
/// File holding the backup encryption key.
pub const BACKUP_KEY_FILE: &str = "CADUCEUS_BACKUP_KEY_FILE";
/// The API's runtime database role that `caduceus-api db-setup` creates and grants (neither
/// superuser nor owner; `serve` connects as it).
pub const APP_DB_USER: &str = "CADUCEUS_APP_DB_USER";
pub const DEFAULT_APP_DB_USER: &str = "caduceus_app";
/// Its password (`db-setup` sets it; the operator generates it into `<platform>-postgres-app`).
pub const APP_DB_PASSWORD: &str = "CADUCEUS_APP_DB_PASSWORD";
/// PEM file of the CA bundle that signs the Redis server certificate: with it, `REDIS_URL` must
/// be `rediss://` and the server certificate is verified against this bundle only (the system
/// roots are not consulted). Unset: a `rediss://` URL is verified against the system roots. The
/// operator sets it for the embedded Redis (`<platform>-redis-tls`, only `ca.crt` mounted).
pub const REDIS_CA_FILE: &str = "CADUCEUS_REDIS_CA_FILE";
/// PEM file of the API's serving certificate (chain, leaf first). Set together with
/// [`TLS_KEY_FILE`]: `serve` then speaks only HTTPS (TLS 1.2/1.3, rustls) on both its public and
/// its admin address; unset, it serves plain HTTP and logs that it does (local runs, tests). The
/// operator always sets it (`<platform>-api-internal-tls`, mounted at
/// `/etc/caduceus/tls/tls.crt`). Read at start: a renewed certificate rolls the pods.
pub const TLS_CERT_FILE: &str = "CADUCEUS_TLS_CERT_FILE";
/// PEM file of the private key of [`TLS_CERT_FILE`] (PKCS#8, PKCS#1 or SEC1). Like every key
/// file it must not be readable by other accounts (mode 0600/0640/0400/0440 at most,
/// [`crate::key_files::read_key_file`]).
pub const TLS_KEY_FILE: &str = "CADUCEUS_TLS_KEY_FILE";

/// Postgres connections one API pod opens at most (its pool, its grouped-statement workers and
/// its audit writer): the API divides it up, the operator sizes the embedded database's
/// `max_connections` from it.
pub const API_CONNECTIONS_PER_POD: u32 = 16;

/// The whole-number settings.
pub const NUMBERS: [Number; 8] = [
    SESSION_IDLE_TIMEOUT_MINUTES,
    MAX_SESSION_HOURS,
    ACCESS_TOKEN_TTL_MINUTES,
    RATE_LIMIT_REQUESTS_PER_MINUTE,
    RATE_LIMIT_LOGIN_PER_MINUTE,
    AUDIT_RETENTION_DAYS,
    PATIENT_RETENTION_DAYS,
    CARE_TEAM_ACCESS_DAYS,
];

/// Every `CADUCEUS_*` setting the operator passes to the API server or the backup agent.
pub const ALL: [&str; 27] = [
    HTTP_ADDR,
    ADMIN_ADDR,
    JWT_KEY_FILE,
    PHI_KEYS_FILE,
    SESSION_IDLE_TIMEOUT_MINUTES.name,
    MAX_SESSION_HOURS.name,
    ACCESS_TOKEN_TTL_MINUTES.name,
    RATE_LIMIT_REQUESTS_PER_MINUTE.name,
    RATE_LIMIT_LOGIN_PER_MINUTE.name,
    AUDIT_RETENTION_DAYS.name,
    PATIENT_RETENTION_DAYS.name,
    CARE_TEAM_ACCESS_DAYS.name,
    TRUSTED_PROXIES,
    CORS_ALLOWED_ORIGINS,
    SELF_REGISTRATION,
    FHIR_MRN_SYSTEM,
    MFA,
    MFA_REQUIRED_ROLES,
    LOG_LEVEL,
    BACKUP_DESTINATION,
    BACKUP_S3_ENDPOINT,
    BACKUP_KEY_FILE,
    APP_DB_USER,
    APP_DB_PASSWORD,
    REDIS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris() {
        for ok in [
            DEFAULT_FHIR_MRN_SYSTEM,
            "urn:oid:1.2.3",
            "https://h.example/mrn",
            "x+y.z-1:a",
        ] {
            assert!(is_absolute_uri(ok), "{ok}");
        }
        for bad in [
            "",
            "mrn",
            ":x",
            "1a:b",
            "urn:",
            "https://h/a b",
            "ur n:x",
            "urn:a\tb",
        ] {
            assert!(!is_absolute_uri(bad), "{bad:?}");
        }
    }

    #[test]
    fn defaults_lie_within_their_bounds_and_names_are_unique() {
        for n in NUMBERS {
            assert!(n.min <= n.default && n.default <= n.max, "{}", n.name);
        }
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|n| n.starts_with("CADUCEUS_")));
        assert!(MFA_POLICIES.contains(&DEFAULT_MFA));
        assert!(DEFAULT_MFA_REQUIRED_ROLES
            .split(',')
            .all(|r| MFA_ROLES.contains(&r)));
    }
}
