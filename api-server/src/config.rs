//! Configuration from the environment (`docs/contracts.md`, "Environment").
//!
//! [`Config::from_env`] is what `serve` uses: it refuses to start (with a message naming the
//! variable) on anything missing, short or malformed. `migrate` needs only `DATABASE_URL`.

use caduceus_contract::settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use zeroize::Zeroizing;

use crate::crypto::{self, KeyRing};

/// Minimum audit retention, in days, enforced by the database trigger (six years);
/// `CADUCEUS_AUDIT_RETENTION_DAYS` below it is raised to it ([`crate::audit::purge_expired`]).
pub const MIN_AUDIT_RETENTION_DAYS: u32 = settings::SIX_YEARS_DAYS;
/// Lowest accepted `CADUCEUS_PATIENT_RETENTION_DAYS`: six years, the HIPAA documentation retention
/// (45 CFR 164.316(b)(2)) and the audit trail's own minimum ([`MIN_AUDIT_RETENTION_DAYS`]), so a
/// record never disappears while the audit events about it must still be kept. Many
/// jurisdictions require longer for medical records (hence the default).
pub const MIN_PATIENT_RETENTION_DAYS: u32 = settings::PATIENT_RETENTION_DAYS.min;
/// Default `CADUCEUS_PATIENT_RETENTION_DAYS`: ten years (common adult medical-record retention).
pub const DEFAULT_PATIENT_RETENTION_DAYS: u32 = settings::PATIENT_RETENTION_DAYS.default;

/// All runtime settings of the API server.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    /// `None` = no Redis (local rate limiter only).
    pub redis_url: Option<String>,
    /// PEM CA bundle the Redis server certificate is verified against, read from
    /// `CADUCEUS_REDIS_CA_FILE` at start (`None`: a `rediss://` server is verified against the
    /// system roots).
    pub redis_ca: Option<Vec<u8>>,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// HTTPS on both addresses (`CADUCEUS_TLS_CERT_FILE` / `CADUCEUS_TLS_KEY_FILE`, read at
    /// start by [`crate::tls::from_env`]); `None`: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub jwt_key: Arc<Zeroizing<Vec<u8>>>,
    pub phi_keys: Arc<KeyRing>,
    pub session_idle_timeout: Duration,
    /// Sessions older than this (from the login) are ended (`CADUCEUS_MAX_SESSION_HOURS`).
    pub max_session_age: Duration,
    pub access_token_ttl: Duration,
    pub rate_limit_per_minute: u32,
    pub login_rate_limit_per_minute: u32,
    pub audit_retention_days: u32,
    /// Soft-deleted patients are purged after this many days (≥ [`MIN_PATIENT_RETENTION_DAYS`]).
    pub patient_retention_days: u32,
    /// An appointment keeps its practitioner in the patient's care team until this many days
    /// after its end (`CADUCEUS_CARE_TEAM_ACCESS_DAYS`, 1–3650).
    pub care_team_access_days: u32,
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` is believed (`CADUCEUS_TRUSTED_PROXIES`; empty = none).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub self_registration: bool,
    /// The identifier system of MRNs on the FHIR interface (`CADUCEUS_FHIR_MRN_SYSTEM`).
    pub fhir_mrn_system: String,
    /// MFA policy (`CADUCEUS_MFA`).
    pub mfa: MfaPolicy,
    /// Roles that must use MFA when [`Config::mfa`] is [`MfaPolicy::Required`]
    /// (`CADUCEUS_MFA_REQUIRED_ROLES`).
    pub mfa_required_roles: Vec<crate::rbac::Role>,
    pub log_level: String,
    /// Prefix of every Redis key (tests use a unique one each). Not an env contract.
    pub redis_key_prefix: String,
    /// Maximum request body size.
    pub body_limit_bytes: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print URLs (they carry passwords) or keys
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("tls", &self.tls.is_some())
            .field("redis", &self.redis_url.is_some())
            .field("phi_active_key_id", &self.phi_keys.active_key_id())
            .finish_non_exhaustive()
    }
}

/// Multi-factor authentication policy (`CADUCEUS_MFA`, `docs/api.md` "Multi-factor
/// authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaPolicy {
    /// The roles of `CADUCEUS_MFA_REQUIRED_ROLES` must use MFA.
    Required,
    /// Any account may enrol; nobody must.
    Optional,
    /// No new enrolment; accounts that already use MFA keep being asked for it.
    Disabled,
}

impl Config {
    /// Whether an account of `role` must use MFA.
    pub fn mfa_required_for(&self, role: crate::rbac::Role) -> bool {
        self.mfa == MfaPolicy::Required && self.mfa_required_roles.contains(&role)
    }
}

/// `CADUCEUS_MFA` and `CADUCEUS_MFA_REQUIRED_ROLES`.
pub fn mfa(env: &dyn Env) -> Result<(MfaPolicy, Vec<crate::rbac::Role>), ConfigError> {
    let policy = match env
        .get(settings::MFA)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .as_deref()
        .unwrap_or(settings::DEFAULT_MFA)
    {
        "required" => MfaPolicy::Required,
        "optional" => MfaPolicy::Optional,
        "disabled" => MfaPolicy::Disabled,
        other => {
            return Err(ConfigError(format!(
                "CADUCEUS_MFA={other:?} must be required, optional or disabled"
            )))
        }
    };
    let list = env
        .get(settings::MFA_REQUIRED_ROLES)
        .unwrap_or_else(|| settings::DEFAULT_MFA_REQUIRED_ROLES.to_string());
    let mut roles = Vec::new();
    for name in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match crate::rbac::Role::parse(name) {
            Some(r) if settings::MFA_ROLES.contains(&name) => {
                if !roles.contains(&r) {
                    roles.push(r)
                }
            }
            _ => {
                return Err(ConfigError(format!(
                    "CADUCEUS_MFA_REQUIRED_ROLES: {name:?} is not one of {}",
                    settings::MFA_ROLES.join(", ")
                )))
            }
        }
    }
    Ok((policy, roles))
}

/// A configuration problem; the message names the variable and never echoes a secret.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Source of variables (the process environment, or a map in tests).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

fn required(env: &dyn Env, name: &str) -> Result<String, ConfigError> {
    match env.get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(ConfigError(format!("{name} is required but not set"))),
    }
}

fn parse_or<T: std::str::FromStr>(env: &dyn Env, name: &str, default: T) -> Result<T, ConfigError> {
    match env.get(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name}={v:?} is not valid"))),
    }
}

/// A whole-number setting of the contract, its default when unset; 0 is refused.
fn positive(env: &dyn Env, setting: settings::Number) -> Result<u32, ConfigError> {
    let name = setting.name;
    let v: u32 = parse_or(env, name, setting.default)?;
    if v == 0 {
        return Err(ConfigError(format!("{name} must be greater than 0")));
    }
    Ok(v)
}

/// `DATABASE_URL`, the only thing `migrate` needs.
pub fn database_url(env: &dyn Env) -> Result<String, ConfigError> {
    let url = required(env, "DATABASE_URL")?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError(
            "DATABASE_URL must be a postgres:// or postgresql:// URL".into(),
        ));
    }
    Ok(url)
}

/// `CADUCEUS_REDIS_CA_FILE`: the PEM bundle the Redis server certificate is verified against,
/// read now. With it, a Redis URL must be `rediss://` (the CA would otherwise go unused and the
/// traffic unencrypted); without a Redis URL it is not used.
pub fn redis_ca(env: &dyn Env, redis_url: Option<&str>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = env
        .get(settings::REDIS_CA_FILE)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let Some(url) = redis_url else {
        return Ok(None);
    };
    if !url.starts_with("rediss://") {
        return Err(ConfigError(
            "CADUCEUS_REDIS_CA_FILE is set but REDIS_URL is not a rediss:// URL".into(),
        ));
    }
    let pem = std::fs::read(&path)
        .map_err(|e| ConfigError(format!("CADUCEUS_REDIS_CA_FILE: cannot read {path}: {e}")))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError(format!(
            "CADUCEUS_REDIS_CA_FILE: {path} holds no PEM certificate"
        )));
    }
    Ok(Some(pem))
}

/// The PHI key ring named by `CADUCEUS_PHI_KEYS_FILE`.
pub fn phi_keys(env: &dyn Env) -> Result<KeyRing, ConfigError> {
    let path = PathBuf::from(required(env, settings::PHI_KEYS_FILE)?);
    KeyRing::load(&path).map_err(|e| ConfigError(format!("CADUCEUS_PHI_KEYS_FILE: {e}")))
}

impl Config {
    /// Load everything `serve` needs.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let database_url = database_url(env)?;
        let redis_url = match env.get("REDIS_URL") {
            None => {
                return Err(ConfigError(
                    "REDIS_URL is required (set it empty to run without Redis)".into(),
                ))
            }
            Some(v) if v.trim().is_empty() => None,
            Some(v) => {
                let v = v.trim().to_string();
                if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
                    return Err(ConfigError(
                        "REDIS_URL must be a redis:// or rediss:// URL".into(),
                    ));
                }
                Some(v)
            }
        };
        let redis_ca = redis_ca(env, redis_url.as_deref())?;
        let tls = crate::tls::from_env(|name| env.get(name)).map_err(ConfigError)?;
        let http_addr = parse_or(
            env,
            settings::HTTP_ADDR,
            SocketAddr::from(([0, 0, 0, 0], settings::API_HTTP_PORT)),
        )?;
        let admin_addr = parse_or(
            env,
            settings::ADMIN_ADDR,
            SocketAddr::from(([0, 0, 0, 0], settings::API_ADMIN_PORT)),
        )?;
        let jwt_path = PathBuf::from(required(env, settings::JWT_KEY_FILE)?);
        let jwt_key = crypto::load_jwt_key(&jwt_path)
            .map_err(|e| ConfigError(format!("CADUCEUS_JWT_KEY_FILE: {e}")))?;
        let phi_keys = phi_keys(env)?;
        let idle = positive(env, settings::SESSION_IDLE_TIMEOUT_MINUTES)?;
        let max_session_hours = positive(env, settings::MAX_SESSION_HOURS)?;
        let ttl = positive(env, settings::ACCESS_TOKEN_TTL_MINUTES)?;
        let rpm = positive(env, settings::RATE_LIMIT_REQUESTS_PER_MINUTE)?;
        let login_rpm = positive(env, settings::RATE_LIMIT_LOGIN_PER_MINUTE)?;
        let retention = positive(env, settings::AUDIT_RETENTION_DAYS)?;
        let patient_retention = positive(env, settings::PATIENT_RETENTION_DAYS)?;
        if patient_retention < MIN_PATIENT_RETENTION_DAYS {
            return Err(ConfigError(format!(
                "CADUCEUS_PATIENT_RETENTION_DAYS={patient_retention} is below the minimum of {} days (6 years)",
                MIN_PATIENT_RETENTION_DAYS
            )));
        }
        let care_team_access_days = positive(env, settings::CARE_TEAM_ACCESS_DAYS)?;
        if care_team_access_days > settings::CARE_TEAM_ACCESS_DAYS.max {
            return Err(ConfigError(format!(
                "CADUCEUS_CARE_TEAM_ACCESS_DAYS={care_team_access_days} is above the maximum of {} days",
                settings::CARE_TEAM_ACCESS_DAYS.max
            )));
        }
        let mut cors_allowed_origins = Vec::new();
        if let Some(list) = env.get(settings::CORS_ALLOWED_ORIGINS) {
            for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if !(origin.starts_with("https://") || origin.starts_with("http://"))
                    || origin == "*"
                {
                    return Err(ConfigError(format!(
                        "CADUCEUS_CORS_ALLOWED_ORIGINS: {origin:?} is not an http(s) origin"
                    )));
                }
                let v = HeaderValue::from_str(origin).map_err(|_| {
                    ConfigError(format!(
                        "CADUCEUS_CORS_ALLOWED_ORIGINS: {origin:?} is not valid"
                    ))
                })?;
                cors_allowed_origins.push(v);
            }
        }
        let trusted_proxies = trusted_proxies(env)?;
        let self_registration = match env
            .get(settings::SELF_REGISTRATION)
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "CADUCEUS_SELF_REGISTRATION={other:?} must be true or false"
                )))
            }
        };
        let fhir_mrn_system = match env
            .get(settings::FHIR_MRN_SYSTEM)
            .map(|v| v.trim().to_string())
        {
            None => settings::DEFAULT_FHIR_MRN_SYSTEM.to_string(),
            Some(v) if settings::is_absolute_uri(&v) => v,
            Some(_) => {
                return Err(ConfigError(format!(
                "{} must be an absolute URI (e.g. urn:oid:1.2.3 or https://hospital.example/mrn)",
                settings::FHIR_MRN_SYSTEM
            )))
            }
        };
        let (mfa, mfa_required_roles) = mfa(env)?;
        let log_level = env
            .get(settings::LOG_LEVEL)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError(format!(
                "CADUCEUS_LOG_LEVEL={log_level:?} is not a valid filter"
            )));
        }
        Ok(Self {
            database_url,
            redis_url,
            redis_ca,
            http_addr,
            admin_addr,
            tls,
            jwt_key: Arc::new(jwt_key),
            phi_keys: Arc::new(phi_keys),
            session_idle_timeout: Duration::from_secs(u64::from(idle) * 60),
            max_session_age: Duration::from_secs(u64::from(max_session_hours) * 3600),
            access_token_ttl: Duration::from_secs(u64::from(ttl) * 60),
            rate_limit_per_minute: rpm,
            login_rate_limit_per_minute: login_rpm,
            audit_retention_days: retention,
            patient_retention_days: patient_retention,
            care_team_access_days,
            cors_allowed_origins,
            trusted_proxies,
            self_registration,
            fhir_mrn_system,
            mfa,
            mfa_required_roles,
            log_level,
            redis_key_prefix: "caduceus:".into(),
            body_limit_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
        })
    }

    /// Whether the database connections use TLS with the server certificate verified against a
    /// CA *and* the host name: only `sslmode=verify-full` (`require` encrypts without checking
    /// the certificate, `verify-ca` does not check the host name). The mode is read the way the
    /// connection pool reads it (the URL's last `sslmode`, else `PGSSLMODE`, else `prefer`); an
    /// unparsable URL counts as no TLS.
    pub fn database_tls(&self) -> bool {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        self.database_url
            .parse::<PgConnectOptions>()
            .is_ok_and(|o| matches!(o.get_ssl_mode(), PgSslMode::VerifyFull))
    }
}

/// `CADUCEUS_TRUSTED_PROXIES`: comma-separated CIDRs (a bare address means that one host);
/// unset or empty = trust no proxy.
pub fn trusted_proxies(env: &dyn Env) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let Some(list) = env.get(settings::TRUSTED_PROXIES) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "CADUCEUS_TRUSTED_PROXIES: {entry:?} is not a CIDR (e.g. 10.0.0.0/8) or IP address"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base(dir: &std::path::Path) -> HashMap<String, String> {
        crypto::write_key_files(dir).unwrap();
        HashMap::from([
            ("DATABASE_URL".into(), "postgres://localhost/db".into()),
            ("REDIS_URL".into(), "redis://localhost:6379".into()),
            (
                "CADUCEUS_JWT_KEY_FILE".into(),
                dir.join("jwt.key").display().to_string(),
            ),
            (
                "CADUCEUS_PHI_KEYS_FILE".into(),
                dir.join("phi-keys.json").display().to_string(),
            ),
        ])
    }

    #[test]
    fn database_tls_means_verify_full_only() {
        let dir = tempfile::tempdir().unwrap();
        let env = base(dir.path());
        let tls = |url: &str| {
            let mut env = env.clone();
            env.insert("DATABASE_URL".into(), url.into());
            Config::from_env(&env).unwrap().database_tls()
        };
        assert!(tls(
            "postgres://api@db:5432/caduceus?sslmode=verify-full&sslrootcert=/etc/caduceus/db-ca/ca.crt"
        ));
        assert!(tls("postgres://api@db/caduceus?sslmode=VERIFY-FULL"));
        for unverified in [
            "postgres://api@db/caduceus?sslmode=require",
            "postgres://api@db/caduceus?sslmode=verify-ca&sslrootcert=/ca.crt",
            "postgres://api@db/caduceus?sslmode=prefer",
            "postgres://api@db/caduceus?sslmode=disable",
            // The last sslmode is the one the pool uses.
            "postgres://api@db/caduceus?sslmode=verify-full&sslmode=require",
            // Not a parameter, only text in the password.
            "postgres://api:sslmode=verify-full@db/caduceus?sslmode=require",
        ] {
            assert!(!tls(unverified), "{unverified}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = base(dir.path());
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.http_addr.port(), 8080);
        assert_eq!(c.admin_addr.port(), 9090);
        assert_eq!(c.session_idle_timeout, Duration::from_secs(900));
        assert_eq!(c.max_session_age, Duration::from_secs(12 * 3600));
        assert_eq!(c.rate_limit_per_minute, 600);
        assert_eq!(c.login_rate_limit_per_minute, 5);
        assert_eq!(c.audit_retention_days, 2190);
        assert_eq!(c.patient_retention_days, 3650);
        assert_eq!(c.care_team_access_days, 30);
        assert!(c.trusted_proxies.is_empty());
        assert!(!c.self_registration);
        env.insert("REDIS_URL".into(), "".into());
        env.insert(
            "CADUCEUS_CORS_ALLOWED_ORIGINS".into(),
            "https://a.example, https://b.example".into(),
        );
        env.insert("CADUCEUS_SELF_REGISTRATION".into(), "true".into());
        env.insert(
            "CADUCEUS_TRUSTED_PROXIES".into(),
            " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,".into(),
        );
        let c = Config::from_env(&env).unwrap();
        assert_eq!(
            c.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.168.1.7/32".parse().unwrap(),
                "fd00::/8".parse().unwrap()
            ]
        );
        assert!(c.redis_url.is_none());
        assert_eq!(c.cors_allowed_origins.len(), 2);
        assert!(c.self_registration);
    }

    #[test]
    fn refuses_missing_short_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let env = base(dir.path());
        for (k, v, needle) in [
            ("DATABASE_URL", "", "DATABASE_URL is required"),
            ("DATABASE_URL", "mysql://x", "DATABASE_URL must be"),
            (
                "CADUCEUS_JWT_KEY_FILE",
                "/nonexistent/jwt.key",
                "CADUCEUS_JWT_KEY_FILE",
            ),
            (
                "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES",
                "abc",
                "CADUCEUS_SESSION_IDLE_TIMEOUT_MINUTES",
            ),
            (
                "CADUCEUS_RATE_LIMIT_LOGIN_PER_MINUTE",
                "0",
                "greater than 0",
            ),
            ("CADUCEUS_MAX_SESSION_HOURS", "0", "greater than 0"),
            ("CADUCEUS_SELF_REGISTRATION", "yes", "true or false"),
            (
                "CADUCEUS_TRUSTED_PROXIES",
                "10.0.0.0/8, proxy.internal",
                "CADUCEUS_TRUSTED_PROXIES: \"proxy.internal\" is not a CIDR",
            ),
            (
                "CADUCEUS_TRUSTED_PROXIES",
                "10.0.0.0/33",
                "CADUCEUS_TRUSTED_PROXIES: \"10.0.0.0/33\"",
            ),
            (
                "CADUCEUS_PATIENT_RETENTION_DAYS",
                "30",
                "CADUCEUS_PATIENT_RETENTION_DAYS=30 is below the minimum of 2190 days",
            ),
            (
                "CADUCEUS_PATIENT_RETENTION_DAYS",
                "ten years",
                "CADUCEUS_PATIENT_RETENTION_DAYS",
            ),
            (
                "CADUCEUS_CARE_TEAM_ACCESS_DAYS",
                "0",
                "CADUCEUS_CARE_TEAM_ACCESS_DAYS must be greater than 0",
            ),
            (
                "CADUCEUS_CARE_TEAM_ACCESS_DAYS",
                "3651",
                "CADUCEUS_CARE_TEAM_ACCESS_DAYS=3651 is above the maximum of 3650 days",
            ),
            (
                "CADUCEUS_CORS_ALLOWED_ORIGINS",
                "*",
                "not an http(s) origin",
            ),
        ] {
            let mut e = env.clone();
            e.insert(k.into(), v.into());
            let err = Config::from_env(&e).unwrap_err().to_string();
            assert!(err.contains(needle), "{k}={v}: {err}");
        }
        let mut e = env.clone();
        e.remove("REDIS_URL");
        assert!(Config::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("REDIS_URL"));
        // short JWT key
        let short = dir.path().join("short.key");
        std::fs::write(&short, "AAAA\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut e = env.clone();
        e.insert("CADUCEUS_JWT_KEY_FILE".into(), short.display().to_string());
        assert!(Config::from_env(&e)
            .unwrap_err()
            .to_string()
            .contains("at least 32"));
        // a key file readable by every account is refused, whatever it holds
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut e = env.clone();
        e.insert("CADUCEUS_JWT_KEY_FILE".into(), short.display().to_string());
        let err = Config::from_env(&e).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 0600"),
            "{err}"
        );
        // malformed PHI key ring
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\"version\":1}").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut e = env;
        e.insert("CADUCEUS_PHI_KEYS_FILE".into(), bad.display().to_string());
        let err = Config::from_env(&e).unwrap_err().to_string();
        assert!(err.contains("CADUCEUS_PHI_KEYS_FILE"), "{err}");
    }
}
