//! Validate stage: a `HealthcarePlatform` in, a [`ValidatedPlatform`] out, or every problem with
//! its field path. Pure: no client, no clock.
//!
//! The CRD schema and its CEL rules refuse most of these at admission; this stage repeats them so
//! `render` and `compliance-report` work without a cluster, and adds checks CEL cannot express
//! (quantities, requests ≤ limits, CIDRs).

use caduceus_contract::settings;
use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{
    BackupImageSpec, CacheProvider, DatabaseProvider, FromBackup, HealthcarePlatform,
    HealthcarePlatformSpec, ResourcesSpec, DEFAULT_BACKUP_IMAGE, DEFAULT_CNPG_POSTGRES_IMAGE,
    DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE,
};
use crate::desired::backup::{token_hash, ANNOTATION_BACKUP_NOW};
use crate::names::{Names, MAX_PLATFORM_NAME_LEN};

/// Environment variables the operator owns; `apiServer.env` may not set them.
pub const RESERVED_ENV: [&str; 4] = [
    "DATABASE_URL",
    "REDIS_URL",
    settings::JWT_KEY_FILE,
    settings::PHI_KEYS_FILE,
];

/// API settings the operator sets from the spec; `apiServer.env` may not set them (an env entry
/// would silently win over the ConfigMap).
pub const SPEC_ENV: [(&str, &str); 5] = [
    (
        settings::MAX_SESSION_HOURS.name,
        "spec.security.maxSessionHours",
    ),
    (
        settings::PATIENT_RETENTION_DAYS.name,
        "spec.security.patientRetentionDays",
    ),
    (
        settings::CARE_TEAM_ACCESS_DAYS.name,
        "spec.security.careTeamAccessDays",
    ),
    (settings::TRUSTED_PROXIES, "spec.security.trustedProxies"),
    (settings::FHIR_MRN_SYSTEM, "spec.apiServer.fhir.mrnSystem"),
];

/// Least `spec.security.patientRetentionDays` (6 years), as the API requires.
pub const MIN_PATIENT_RETENTION_DAYS: i32 = settings::PATIENT_RETENTION_DAYS.min as i32;

/// A standard 5-field cron expression (what a CronJob's `schedule` and the backup status's
/// next-run computation read), checked by the `croner` parser: fields in range, valid names and
/// steps; no seconds, no year.
fn valid_schedule(schedule: &str) -> bool {
    use croner::parser::{CronParser, Seconds, Year};
    schedule.split_whitespace().count() == 5
        && CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(schedule)
            .is_ok()
}

/// A platform that passed validation: everything the builders need.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedPlatform {
    pub name: String,
    pub namespace: String,
    /// UID of the platform object; `None` when rendering offline (then no ownerReferences).
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub spec: HealthcarePlatformSpec,
    /// Image tag of the API (spec tag or the operator's version).
    pub api_version: String,
    pub names: Names,
    /// The `caduceus.io/backup-now` token whose on-demand backup Job has not been created yet
    /// (`status.backup.lastOnDemandJob` records the handled one), `None` otherwise.
    pub backup_now: Option<String>,
    /// `database.bootstrap.fromBackup` is set and has not been restored yet: no `status.restore`
    /// records it, and the API never ran (`status.apiServer.version` is set once every desired
    /// API pod was ready, so that database is bootstrapped already). While true the restore Job
    /// runs and the API is held at 0 replicas.
    pub restore_pending: bool,
}

impl ValidatedPlatform {
    /// Whether the API is held at 0 replicas: stopped, or waiting for the restore.
    pub fn api_held(&self) -> bool {
        self.spec.stopped || self.restore_pending
    }

    /// Desired API replicas when autoscaling is off (0 when stopped or restoring).
    pub fn api_replicas(&self) -> i32 {
        if self.api_held() {
            0
        } else {
            self.spec.api_server.replicas
        }
    }

    /// Whether the HPA owns the API replica count (not while the API is held at 0).
    pub fn autoscaling(&self) -> bool {
        self.spec.api_server.autoscaling.enabled && !self.api_held()
    }

    /// `spec.database.bootstrap.fromBackup`, when set.
    pub fn from_backup(&self) -> Option<&FromBackup> {
        self.spec
            .database
            .bootstrap
            .as_ref()
            .and_then(|b| b.from_backup.as_ref())
    }

    /// The least number of API pods the platform runs while not stopped.
    pub fn api_min_replicas(&self) -> i32 {
        if self.spec.stopped {
            0
        } else if self.spec.api_server.autoscaling.enabled {
            self.spec.api_server.autoscaling.min_replicas
        } else {
            self.spec.api_server.replicas
        }
    }

    pub fn api_image(&self) -> String {
        format!(
            "{}:{}",
            self.spec.api_server.image.repository, self.api_version
        )
    }
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.apiServer.autoscaling.maxReplicas`.
    pub field: String,
    pub message: String,
}

/// Everything wrong with a platform.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        write!(f, "{}", parts.join("; "))
    }
}

impl ValidationError {
    /// The first offending field (used as the status reason detail).
    pub fn first_field(&self) -> &str {
        self.errors
            .first()
            .map(|e| e.field.as_str())
            .unwrap_or("spec")
    }
}

struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn range(&mut self, field: &str, value: i32, min: i32, max: i32) {
        if value < min || value > max {
            self.fail(
                field,
                format!("must be between {min} and {max}, got {value}"),
            );
        }
    }
}

/// Validates a platform. `namespace_fallback` is used when the object has no namespace (render).
pub fn validate(
    platform: &HealthcarePlatform,
    namespace_fallback: &str,
) -> Result<ValidatedPlatform, ValidationError> {
    let mut c = Checker { errors: Vec::new() };
    let name = platform.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        c.fail("metadata.name", "is required");
    } else if !is_dns1035_label(&name) || name.len() > MAX_PLATFORM_NAME_LEN {
        c.fail(
            "metadata.name",
            format!(
                "must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at most {MAX_PLATFORM_NAME_LEN} characters"
            ),
        );
    }
    let namespace = platform
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| namespace_fallback.to_string());
    let spec = &platform.spec;
    check_spec(&mut c, spec);
    if !c.errors.is_empty() {
        return Err(ValidationError { errors: c.errors });
    }
    let names = Names::new(name.clone());
    let handled = platform
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_on_demand_job.as_deref());
    let backup_now = platform
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_BACKUP_NOW))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .filter(|t| handled != Some(names.backup_now_job(&token_hash(t)).as_str()));
    let status = platform.status.as_ref();
    let restore_pending = spec
        .database
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.from_backup.is_some())
        && status.and_then(|s| s.restore.as_ref()).is_none()
        && status
            .and_then(|s| s.api_server.as_ref())
            .and_then(|a| a.version.as_ref())
            .is_none();
    Ok(ValidatedPlatform {
        backup_now,
        restore_pending,
        names,
        name,
        namespace,
        uid: platform.metadata.uid.clone(),
        generation: platform.metadata.generation,
        api_version: platform.api_image_tag(),
        spec: spec.clone(),
    })
}

fn check_spec(c: &mut Checker, spec: &HealthcarePlatformSpec) {
    let api = &spec.api_server;
    let image = &api.image;
    if image.repository.is_empty() || image.repository.contains(char::is_whitespace) {
        c.fail(
            "spec.apiServer.image.repository",
            "must be a non-empty image repository",
        );
    }
    if image.repository.contains('@') {
        c.fail(
            "spec.apiServer.image.repository",
            "must not contain a digest; use image.tag",
        );
    }
    if let Some(tag) = &image.tag {
        if tag == "latest" {
            c.fail(
                "spec.apiServer.image.tag",
                "the `latest` tag is not allowed; pin a version",
            );
        } else if tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '-')
            || tag.starts_with(['.', '-'])
        {
            c.fail("spec.apiServer.image.tag", "is not a valid image tag");
        }
    }
    c.range("spec.apiServer.replicas", api.replicas, 1, 100);
    let auto = &api.autoscaling;
    c.range(
        "spec.apiServer.autoscaling.minReplicas",
        auto.min_replicas,
        1,
        100,
    );
    c.range(
        "spec.apiServer.autoscaling.maxReplicas",
        auto.max_replicas,
        1,
        100,
    );
    if auto.max_replicas < auto.min_replicas {
        c.fail(
            "spec.apiServer.autoscaling.maxReplicas",
            format!(
                "must be >= minReplicas ({} < {})",
                auto.max_replicas, auto.min_replicas
            ),
        );
    }
    c.range(
        "spec.apiServer.autoscaling.targetCPUUtilizationPercentage",
        auto.target_cpu_utilization_percentage,
        1,
        100,
    );
    c.range(
        "spec.apiServer.autoscaling.targetMemoryUtilizationPercentage",
        auto.target_memory_utilization_percentage,
        1,
        100,
    );
    check_resources(c, "spec.apiServer.resources", &api.resources);
    if api.ingress.enabled {
        match &api.ingress.host {
            None => c.fail(
                "spec.apiServer.ingress.host",
                "is required when the ingress is enabled",
            ),
            Some(host) if !is_hostname(host) => c.fail(
                "spec.apiServer.ingress.host",
                "must be a lowercase DNS name",
            ),
            Some(_) => {}
        }
    }
    if api.log_level.is_empty()
        || api.log_level.len() > 256
        || !api
            .log_level
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_:=,.-".contains(ch))
    {
        c.fail(
            "spec.apiServer.logLevel",
            "must be a tracing filter such as `info` or `caduceus_api=debug,info`",
        );
    }
    if !settings::is_absolute_uri(&api.fhir.mrn_system) {
        c.fail(
            "spec.apiServer.fhir.mrnSystem",
            "must be an absolute URI (scheme:rest without spaces), e.g. urn:oid:2.16.840.1.113883.3.1234 or https://hospital.example/fhir/mrn",
        );
    }
    for (i, env) in api.env.iter().enumerate() {
        if RESERVED_ENV.contains(&env.name.as_str()) {
            c.fail(
                format!("spec.apiServer.env[{i}].name"),
                format!("{} is set by the operator from a Secret", env.name),
            );
        }
        if let Some((_, field)) = SPEC_ENV.iter().find(|(name, _)| *name == env.name) {
            c.fail(
                format!("spec.apiServer.env[{i}].name"),
                format!("{} is set by the operator from {field}", env.name),
            );
        }
    }

    let db = &spec.database;
    let external = db.provider == DatabaseProvider::External;
    check_secret_ref(c, "database", external, db.secret_ref.is_some());
    if !external {
        check_quantity(c, "spec.database.storage.size", &db.storage.size, true);
        check_resources(c, "spec.database.resources", &db.resources);
    }
    if !is_version(&db.version, 2) {
        c.fail(
            "spec.database.version",
            "must be a PostgreSQL version such as `16` or `16.6`",
        );
    }
    if let Some(repo) = &db.image_repository {
        let example = if db.provider == DatabaseProvider::CloudNativePG {
            DEFAULT_CNPG_POSTGRES_IMAGE
        } else {
            DEFAULT_POSTGRES_IMAGE
        };
        check_repository(
            c,
            "spec.database.imageRepository",
            repo,
            example,
            "the tag is spec.database.version",
        );
    }
    c.range("spec.database.instances", db.instances, 1, 9);
    c.range("spec.database.externalPort", db.external_port, 1, 65535);
    check_external_cidrs(
        c,
        "spec.database.externalCidrs",
        &db.external_cidrs,
        db.provider == DatabaseProvider::External && spec.network_policy.enabled,
        "the database",
    );

    let cache = &spec.cache;
    check_secret_ref(
        c,
        "cache",
        cache.provider == CacheProvider::External,
        cache.secret_ref.is_some(),
    );
    if let Some(repo) = &cache.image_repository {
        check_repository(
            c,
            "spec.cache.imageRepository",
            repo,
            DEFAULT_REDIS_IMAGE,
            "the tag is spec.cache.version",
        );
    }
    if cache.provider == CacheProvider::Embedded {
        if !is_version(&cache.version, 0) || !cache.version.contains('.') {
            c.fail(
                "spec.cache.version",
                "must be a Redis version such as `7.4.2`",
            );
        }
        check_resources(c, "spec.cache.resources", &cache.resources);
        if cache.persistence.enabled {
            check_quantity(
                c,
                "spec.cache.persistence.size",
                &cache.persistence.size,
                true,
            );
        }
    }
    c.range("spec.cache.externalPort", cache.external_port, 1, 65535);
    check_external_cidrs(
        c,
        "spec.cache.externalCidrs",
        &cache.external_cidrs,
        cache.provider == CacheProvider::External && spec.network_policy.enabled,
        "Redis",
    );

    let np = &spec.network_policy;
    if np.enabled && np.ingress_from.is_empty() {
        c.fail(
            "spec.networkPolicy.ingressFrom",
            "must name who may reach the API (an empty list admits every source): e.g. [{podSelector: {}}] for the platform's namespace, plus {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}} for your ingress controller",
        );
    }
    if spec.api_server.ingress.enabled && spec.security.trusted_proxies.is_empty() {
        c.fail(
            "spec.security.trustedProxies",
            "is required when the ingress is enabled: list your ingress controller's pod CIDR (e.g. [10.42.0.0/16]); otherwise every client has the controller's address, one client's failed logins lock out everyone, and the audit trail's client_ip is useless",
        );
    }
    if !is_dns1123_label(&np.monitoring_namespace) {
        c.fail(
            "spec.networkPolicy.monitoringNamespace",
            "must be a namespace name",
        );
    }

    let sec = &spec.security;
    c.range(
        "spec.security.sessionIdleTimeoutMinutes",
        sec.session_idle_timeout_minutes,
        1,
        1440,
    );
    c.range(
        "spec.security.maxSessionHours",
        sec.max_session_hours,
        settings::MAX_SESSION_HOURS.min as i32,
        settings::MAX_SESSION_HOURS.max as i32,
    );
    c.range(
        "spec.security.accessTokenTtlMinutes",
        sec.access_token_ttl_minutes,
        1,
        1440,
    );
    c.range(
        "spec.security.rateLimit.requestsPerMinute",
        sec.rate_limit.requests_per_minute,
        1,
        1_000_000,
    );
    c.range(
        "spec.security.rateLimit.loginAttemptsPerMinute",
        sec.rate_limit.login_attempts_per_minute,
        1,
        1000,
    );
    c.range(
        "spec.security.auditRetentionDays",
        sec.audit_retention_days,
        1,
        36500,
    );
    c.range(
        "spec.security.patientRetentionDays",
        sec.patient_retention_days,
        MIN_PATIENT_RETENTION_DAYS,
        36500,
    );
    c.range(
        "spec.security.careTeamAccessDays",
        sec.care_team_access_days,
        settings::CARE_TEAM_ACCESS_DAYS.min as i32,
        settings::CARE_TEAM_ACCESS_DAYS.max as i32,
    );
    if sec.trusted_proxies.len() > 64 {
        c.fail(
            "spec.security.trustedProxies",
            "must have at most 64 entries",
        );
    }
    for (i, proxy) in sec.trusted_proxies.iter().enumerate() {
        if !is_proxy(proxy) {
            c.fail(
                format!("spec.security.trustedProxies[{i}]"),
                "must be a CIDR such as 10.0.0.0/8 or an IP address",
            );
        }
    }
    for (i, origin) in sec.cors_allowed_origins.iter().enumerate() {
        if !(origin.starts_with("https://") || origin.starts_with("http://"))
            || origin.contains([',', ' '])
        {
            c.fail(
                format!("spec.security.corsAllowedOrigins[{i}]"),
                "must be an origin such as https://app.example.org",
            );
        }
    }

    let backup = &spec.backup;
    if backup.destination.s3.is_some() == backup.destination.pvc.is_some() {
        c.fail("spec.backup.destination", "needs exactly one of s3 or pvc");
    }
    if let Some(pvc) = &backup.destination.pvc {
        check_quantity(c, "spec.backup.destination.pvc.size", &pvc.size, true);
    }
    if !valid_schedule(&backup.schedule) {
        c.fail(
            "spec.backup.schedule",
            "must be a 5-field cron expression such as `0 * * * *` (minute hour day-of-month month day-of-week, each within its range)",
        );
    }
    c.range("spec.backup.rpoMinutes", backup.rpo_minutes, 5, 10080);
    check_backup_image(c, &backup.image);

    if let Some(from) = db.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref()) {
        let path = "spec.database.bootstrap.fromBackup";
        if db.provider == DatabaseProvider::CloudNativePG {
            c.fail(
                path,
                "is not supported with the CloudNativePG provider (use CloudNativePG's own recovery)",
            );
        }
        let name_ok = from.name == "latest"
            || (!from.name.is_empty()
                && from.name.len() <= 128
                && from.name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && from
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)));
        if !name_ok {
            c.fail(
                format!("{path}.name"),
                "must be `latest` or a backup name such as `backup-20261122T030000.000Z`",
            );
        }
        if from.secret_ref.is_empty() {
            c.fail(
                format!("{path}.secretRef"),
                "must name the Secret holding backup-key.json",
            );
        }
        match (&from.source.s3, &from.source.claim_name) {
            (Some(s3), None) => {
                if s3.bucket.is_empty() || s3.credentials_secret_ref.is_empty() {
                    c.fail(
                        format!("{path}.source.s3"),
                        "needs a bucket and a credentialsSecretRef",
                    );
                }
            }
            (None, Some(claim)) if !claim.is_empty() => {}
            _ => c.fail(
                format!("{path}.source"),
                "needs exactly one of s3 or claimName",
            ),
        }
    }
}

/// `spec.<section>.secretRef` is given exactly when `<section>.provider` is External.
fn check_secret_ref(c: &mut Checker, section: &str, external: bool, given: bool) {
    if external && !given {
        c.fail(
            format!("spec.{section}.secretRef"),
            format!("is required when {section}.provider is External"),
        );
    } else if !external && given {
        c.fail(
            format!("spec.{section}.secretRef"),
            format!("is only allowed when {section}.provider is External"),
        );
    }
}

/// An image repository field (`path`): without tag or digest (a registry port is fine), as the
/// CRD's pattern and CEL rule require, so the `repository:tag` the operator builds is valid.
/// `example` is a valid value for the message, `tag_hint` says where the tag comes from.
fn check_repository(c: &mut Checker, path: &str, repo: &str, example: &str, tag_hint: &str) {
    let last_segment = repo.rsplit('/').next().unwrap_or_default();
    if repo.is_empty()
        || repo.len() > 255
        || !repo.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        || !repo.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        || repo.contains("//")
        || !repo
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-/:@".contains(ch))
    {
        c.fail(
            path,
            format!(
                "must be an image repository such as {example} (lowercase, no whitespace, at most 255 characters)"
            ),
        );
    } else if repo.contains('@') {
        c.fail(path, format!("must not contain a digest; {tag_hint}"));
    } else if last_segment.contains(':') {
        c.fail(path, format!("must not contain a tag; {tag_hint}"));
    }
}

/// `spec.backup.image`: a repository without tag or digest (a registry port is fine) and a pinned
/// tag (not `latest`), so the image reference the operator builds is valid.
fn check_backup_image(c: &mut Checker, image: &BackupImageSpec) {
    check_repository(
        c,
        "spec.backup.image.repository",
        &image.repository,
        DEFAULT_BACKUP_IMAGE,
        "use backup.image.tag",
    );
    if let Some(tag) = &image.tag {
        let path = "spec.backup.image.tag";
        if tag == "latest" {
            c.fail(
                path,
                "the `latest` tag is not allowed; pin a version such as 0.1.0-pg16",
            );
        } else if tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '-')
            || tag.starts_with(['.', '-'])
        {
            c.fail(
                path,
                "is not a valid image tag (letters, digits, `_`, `.`, `-`; at most 128), e.g. 0.1.0-pg16",
            );
        }
    }
}

fn check_resources(c: &mut Checker, path: &str, r: &ResourcesSpec) {
    let pairs = [
        ("cpu", &r.requests.cpu, &r.limits.cpu),
        ("memory", &r.requests.memory, &r.limits.memory),
    ];
    for (kind, request, limit) in pairs {
        let req = check_quantity(c, &format!("{path}.requests.{kind}"), request, true);
        let lim = check_quantity(c, &format!("{path}.limits.{kind}"), limit, true);
        if let (Some(req), Some(lim)) = (req, lim) {
            if req > lim {
                c.fail(
                    format!("{path}.requests.{kind}"),
                    format!(
                        "must not exceed limits.{kind} ({} > {})",
                        request.0, limit.0
                    ),
                );
            }
        }
    }
}

fn check_quantity(c: &mut Checker, path: &str, q: &Quantity, positive: bool) -> Option<f64> {
    match parse_quantity(&q.0) {
        Some(v) if !positive || v > 0.0 => Some(v),
        Some(_) => {
            c.fail(path, "must be greater than zero");
            None
        }
        None => {
            c.fail(
                path,
                format!(
                    "`{}` is not a Kubernetes quantity (e.g. 500m, 2, 256Mi, 10Gi)",
                    q.0
                ),
            );
            None
        }
    }
}

/// Parses a Kubernetes quantity to a plain number (cores or bytes).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    Some(value * factor)
}

fn is_dns1035_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|ch: char| ch.is_ascii_lowercase())
        && s.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns1123_label)
}

/// `16`, `16.6`, `7.4.2`; `max_parts` 0 means up to three parts.
fn is_version(s: &str, major_digits: usize) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return false;
    }
    if major_digits > 0 && (parts[0].len() != major_digits || parts.len() > 2) {
        return false;
    }
    parts
        .iter()
        .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|ch| ch.is_ascii_digit()))
}

/// CIDRs the API may reach an external service in: each a CIDR, and at least one when `required`
/// (an External provider with network policies: an empty list would allow any address).
fn check_external_cidrs(
    c: &mut Checker,
    field: &str,
    cidrs: &[String],
    required: bool,
    what: &str,
) {
    if required && cidrs.is_empty() {
        c.fail(
            field,
            format!("must list the CIDRs of {what} the API may reach (e.g. [10.40.0.0/16]); write [0.0.0.0/0, \"::/0\"] to allow any address explicitly"),
        );
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            c.fail(format!("{field}[{i}]"), "must be a CIDR such as 10.0.0.0/8");
        }
    }
}

/// A trusted-proxy entry as the API parses `CADUCEUS_TRUSTED_PROXIES` (a CIDR, or an address
/// meaning that one host), without the surrounding whitespace the comma-separated list would
/// tolerate (the CRD's CEL `isCIDR`/`isIP` does not).
fn is_proxy(s: &str) -> bool {
    s.len() <= 64
        && s.trim() == s
        && (s.parse::<ipnet::IpNet>().is_ok() || s.parse::<std::net::IpAddr>().is_ok())
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use k8s_openapi::api::core::v1::EnvVar;

    fn platform(spec: HealthcarePlatformSpec) -> HealthcarePlatform {
        let mut p = HealthcarePlatform::new("demo", spec);
        p.metadata.namespace = Some("clinic".into());
        p
    }

    fn fields(err: ValidationError) -> Vec<String> {
        err.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn default_spec_is_valid() {
        let v = validate(&platform(HealthcarePlatformSpec::default()), "default").unwrap();
        assert_eq!(v.namespace, "clinic");
        assert_eq!(v.api_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(v.api_replicas(), 2);
    }

    #[test]
    fn backup_schedules_are_checked_by_a_cron_parser() {
        for ok in [
            "0 * * * *",
            "*/15 2 * * MON-FRI",
            "30 3 1,15 * *",
            "0 0 * JAN SUN",
        ] {
            let mut spec = HealthcarePlatformSpec::default();
            spec.backup.schedule = ok.into();
            assert!(validate(&platform(spec), "default").is_ok(), "{ok}");
        }
        for bad in [
            "0 99 * * *",
            "61 * * * *",
            "0 * * *",
            "0 0 * * * *",
            "@hourly",
            "x * * * *",
        ] {
            let mut spec = HealthcarePlatformSpec::default();
            spec.backup.schedule = bad.into();
            let err = validate(&platform(spec), "default").unwrap_err();
            assert_eq!(fields(err), ["spec.backup.schedule"], "{bad}");
        }
    }

    #[test]
    fn max_below_min_replicas_is_refused_with_path() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.autoscaling.min_replicas = 5;
        spec.api_server.autoscaling.max_replicas = 3;
        let err = validate(&platform(spec), "default").unwrap_err();
        assert_eq!(
            fields(err.clone()),
            ["spec.apiServer.autoscaling.maxReplicas"]
        );
        assert!(err.to_string().contains("must be >= minReplicas"));
    }

    #[test]
    fn external_database_requires_secret_ref() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.database.provider = DatabaseProvider::External;
        let err = validate(&platform(spec.clone()), "default").unwrap_err();
        // With network policies, the CIDRs the API may reach are required too: an empty list
        // would let it reach any address.
        assert_eq!(
            fields(err.clone()),
            ["spec.database.secretRef", "spec.database.externalCidrs"]
        );
        assert!(err.to_string().contains("0.0.0.0/0"), "{err}");
        spec.database.secret_ref = Some(SecretKeyRef {
            name: "db".into(),
            key: "url".into(),
        });
        spec.database.external_cidrs = vec!["10.40.0.0/16".into()];
        validate(&platform(spec.clone()), "default").unwrap();
        // Without network policies nothing restricts egress anyway: no CIDRs needed.
        spec.database.external_cidrs.clear();
        spec.network_policy.enabled = false;
        validate(&platform(spec), "default").unwrap();
    }

    #[test]
    fn an_external_cache_needs_its_cidrs() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.cache.provider = CacheProvider::External;
        spec.cache.secret_ref = Some(SecretKeyRef {
            name: "r".into(),
            key: "url".into(),
        });
        assert_eq!(
            fields(validate(&platform(spec.clone()), "default").unwrap_err()),
            ["spec.cache.externalCidrs"]
        );
        spec.cache.external_cidrs = vec!["10.41.0.0/16".into(), "not a cidr".into()];
        assert_eq!(
            fields(validate(&platform(spec.clone()), "default").unwrap_err()),
            ["spec.cache.externalCidrs[1]"]
        );
        spec.cache.external_cidrs.pop();
        validate(&platform(spec), "default").unwrap();
    }

    #[test]
    fn an_empty_ingress_from_is_refused() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.network_policy.ingress_from.clear();
        let err = validate(&platform(spec), "default").unwrap_err();
        assert_eq!(fields(err.clone()), ["spec.networkPolicy.ingressFrom"]);
        assert!(err.to_string().contains("podSelector"), "{err}");
    }

    #[test]
    fn secret_ref_without_external_is_refused() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.cache.secret_ref = Some(SecretKeyRef {
            name: "r".into(),
            key: "url".into(),
        });
        assert_eq!(
            fields(validate(&platform(spec), "default").unwrap_err()),
            ["spec.cache.secretRef"]
        );
    }

    #[test]
    fn latest_tag_and_reserved_env_are_refused() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.image.tag = Some("latest".into());
        spec.api_server.env.push(EnvVar {
            name: "DATABASE_URL".into(),
            value: Some("postgres://x".into()),
            ..Default::default()
        });
        let err = validate(&platform(spec), "default").unwrap_err();
        assert_eq!(
            fields(err.clone()),
            ["spec.apiServer.image.tag", "spec.apiServer.env[0].name"]
        );
        // The message names the variable, never its value.
        assert!(!err.to_string().contains("postgres://x"));
    }

    #[test]
    fn backup_image_is_checked() {
        let ok = |f: fn(&mut HealthcarePlatformSpec)| {
            let mut spec = HealthcarePlatformSpec::default();
            f(&mut spec);
            validate(&platform(spec), "default")
        };
        assert!(ok(|s| {
            s.backup.image.repository = "registry.example.org:5000/mirror/caduceus-backup".into();
            s.backup.image.tag = Some("0.1.0-pg16".into());
        })
        .is_ok());
        for (f, field, says) in [
            (
                (|s| s.backup.image.tag = Some("latest".into())) as fn(&mut HealthcarePlatformSpec),
                "spec.backup.image.tag",
                "latest",
            ),
            (
                |s| s.backup.image.tag = Some("0.1.0 pg16".into()),
                "spec.backup.image.tag",
                "valid image tag",
            ),
            (
                |s| {
                    s.backup.image.repository =
                        "ghcr.io/caduceus-health/caduceus-backup:0.1.0".into()
                },
                "spec.backup.image.repository",
                "must not contain a tag",
            ),
            (
                |s| s.backup.image.repository = "ghcr.io/x/caduceus-backup@sha256:abc".into(),
                "spec.backup.image.repository",
                "digest",
            ),
            (
                |s| s.backup.image.repository = "GHCR.io/x".into(),
                "spec.backup.image.repository",
                "lowercase",
            ),
            (
                |s| s.backup.image.repository = String::new(),
                "spec.backup.image.repository",
                "image repository",
            ),
        ] {
            let err = ok(f).unwrap_err();
            assert_eq!(fields(err.clone()), [field], "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn database_and_cache_image_repositories_are_checked() {
        let check = |f: &dyn Fn(&mut HealthcarePlatformSpec)| {
            let mut spec = HealthcarePlatformSpec::default();
            f(&mut spec);
            validate(&platform(spec), "default")
        };
        // Unset (the defaults) and mirrors, a registry port included, are fine.
        assert!(check(&|_| {}).is_ok());
        assert!(check(&|s| {
            s.database.image_repository =
                Some("registry.clinic.example:5000/mirror/postgres".into());
            s.cache.image_repository = Some("registry.clinic.example/mirror/redis".into());
        })
        .is_ok());
        assert!(check(&|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.database.image_repository = Some("harbor.local/cnpg/postgresql".into());
        })
        .is_ok());

        for (field, set) in [
            (
                "spec.database.imageRepository",
                (|s, v| s.database.image_repository = Some(v))
                    as fn(&mut HealthcarePlatformSpec, String),
            ),
            ("spec.cache.imageRepository", |s, v| {
                s.cache.image_repository = Some(v)
            }),
        ] {
            let tag_from = if field.contains("database") {
                "the tag is spec.database.version"
            } else {
                "the tag is spec.cache.version"
            };
            for (value, says) in [
                (
                    "docker.io/library/postgres:16.6".to_string(),
                    "must not contain a tag",
                ),
                (
                    "registry:5000/mirror/redis:7".to_string(),
                    "must not contain a tag",
                ),
                (
                    "docker.io/library/redis@sha256:abc".to_string(),
                    "must not contain a digest",
                ),
                ("Registry.example/Mirror".to_string(), "lowercase"),
                (
                    "registry.example/mirror ".to_string(),
                    "must be an image repository",
                ),
                (String::new(), "must be an image repository"),
                (
                    "registry.example//redis".to_string(),
                    "must be an image repository",
                ),
                (format!("r/{}", "a".repeat(254)), "at most 255"),
            ] {
                let err = check(&|s| set(s, value.clone())).unwrap_err();
                assert_eq!(fields(err.clone()), [field], "{value}: {err}");
                let text = err.to_string();
                assert!(text.contains(says), "{value}: {text}");
                if says.starts_with("must not contain") {
                    assert!(text.contains(tag_from), "{value}: {text}");
                }
            }
        }
        // The message suggests the provider's own default.
        let err = check(&|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.database.image_repository = Some("Bad".into());
        })
        .unwrap_err();
        assert!(
            err.to_string().contains(DEFAULT_CNPG_POSTGRES_IMAGE),
            "{err}"
        );
        // Checked whatever the provider, as the CRD's rules are.
        let err = check(&|s| {
            s.cache.provider = CacheProvider::Disabled;
            s.cache.image_repository = Some("redis:7".into());
        })
        .unwrap_err();
        assert_eq!(fields(err), ["spec.cache.imageRepository"]);
    }

    #[test]
    fn the_fhir_mrn_system_is_an_absolute_uri() {
        let mut spec = HealthcarePlatformSpec::default();
        assert_eq!(
            spec.api_server.fhir.mrn_system,
            settings::DEFAULT_FHIR_MRN_SYSTEM
        );
        spec.api_server.fhir.mrn_system = "https://hospital.example/fhir/mrn".into();
        assert!(validate(&platform(spec.clone()), "default").is_ok());
        for bad in ["hospital mrn", "mrn", "https://h.example/a b", ""] {
            spec.api_server.fhir.mrn_system = bad.into();
            let err = validate(&platform(spec.clone()), "default").unwrap_err();
            let text = err.to_string();
            assert_eq!(fields(err), ["spec.apiServer.fhir.mrnSystem"], "{bad:?}");
            assert!(text.contains("must be an absolute URI"), "{text}");
        }
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.env.push(EnvVar {
            name: settings::FHIR_MRN_SYSTEM.into(),
            value: Some("urn:x".into()),
            ..Default::default()
        });
        let err = validate(&platform(spec), "default").unwrap_err();
        assert!(err
            .to_string()
            .contains("is set by the operator from spec.apiServer.fhir.mrnSystem"));
    }

    #[test]
    fn patient_retention_and_trusted_proxies() {
        let mut spec = HealthcarePlatformSpec::default();
        assert_eq!(spec.security.patient_retention_days, 3650);
        spec.security.trusted_proxies = vec![
            "10.0.0.0/8".into(),
            "192.168.1.7".into(),
            "fd00::/8".into(),
            "2001:db8::1".into(),
        ];
        assert!(validate(&platform(spec.clone()), "default").is_ok());

        spec.security.patient_retention_days = 2189;
        spec.security.trusted_proxies = vec![
            "10.0.0.0/8".into(),
            "proxy.internal".into(),
            "10.0.0.0/33".into(),
            " 10.1.0.0/16".into(),
            "10.0.0.0/8,10.1.0.0/16".into(),
            String::new(),
        ];
        let err = validate(&platform(spec.clone()), "default").unwrap_err();
        assert_eq!(
            fields(err.clone()),
            [
                "spec.security.patientRetentionDays",
                "spec.security.trustedProxies[1]",
                "spec.security.trustedProxies[2]",
                "spec.security.trustedProxies[3]",
                "spec.security.trustedProxies[4]",
                "spec.security.trustedProxies[5]",
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("must be between 2190 and 36500, got 2189"),
            "{text}"
        );
        assert!(text.contains("must be a CIDR such as 10.0.0.0/8"), "{text}");

        spec.security.patient_retention_days = 2190;
        for days in [0, 3651] {
            let mut bad = spec.clone();
            bad.security.trusted_proxies = Vec::new();
            bad.security.care_team_access_days = days;
            assert_eq!(
                fields(validate(&platform(bad), "default").unwrap_err()),
                ["spec.security.careTeamAccessDays"]
            );
        }
        spec.security.trusted_proxies = vec!["10.0.0.1".into(); 65];
        assert_eq!(
            fields(validate(&platform(spec), "default").unwrap_err()),
            ["spec.security.trustedProxies"]
        );
    }

    #[test]
    fn settings_from_the_spec_cannot_be_set_by_api_env() {
        let mut spec = HealthcarePlatformSpec::default();
        for name in [
            "CADUCEUS_TRUSTED_PROXIES",
            "CADUCEUS_PATIENT_RETENTION_DAYS",
            "CADUCEUS_CARE_TEAM_ACCESS_DAYS",
        ] {
            spec.api_server.env.push(EnvVar {
                name: name.into(),
                value: Some("0.0.0.0/0".into()),
                ..Default::default()
            });
        }
        let err = validate(&platform(spec), "default").unwrap_err();
        assert_eq!(
            fields(err.clone()),
            [
                "spec.apiServer.env[0].name",
                "spec.apiServer.env[1].name",
                "spec.apiServer.env[2].name"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains(
                "CADUCEUS_TRUSTED_PROXIES is set by the operator from spec.security.trustedProxies"
            ),
            "{text}"
        );
        assert!(
            text.contains("from spec.security.patientRetentionDays"),
            "{text}"
        );
        assert!(
            text.contains("from spec.security.careTeamAccessDays"),
            "{text}"
        );
        assert!(!text.contains("0.0.0.0/0"), "{text}");
    }

    #[test]
    fn ingress_needs_host() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.ingress.enabled = true;
        // And the trusted proxies: behind an ingress every client would otherwise share the
        // controller's address (rate limits, lockouts, the audit trail's client_ip).
        let err = validate(&platform(spec.clone()), "default").unwrap_err();
        assert_eq!(
            fields(err.clone()),
            [
                "spec.apiServer.ingress.host",
                "spec.security.trustedProxies"
            ]
        );
        assert!(err.to_string().contains("10.42.0.0/16"), "{err}");
        spec.api_server.ingress.host = Some("api.clinic.example.org".into());
        spec.security.trusted_proxies = vec!["10.42.0.0/16".into()];
        validate(&platform(spec), "default").unwrap();
    }

    #[test]
    fn requests_above_limits_and_bad_quantities_are_refused() {
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.resources = ResourcesSpec::new("2", "256Mi", "1", "512Mi");
        spec.database.storage.size = Quantity("ten gigs".into());
        let errs = fields(validate(&platform(spec), "default").unwrap_err());
        assert_eq!(
            errs,
            [
                "spec.apiServer.resources.requests.cpu",
                "spec.database.storage.size"
            ]
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let mut p = platform(HealthcarePlatformSpec::default());
        p.metadata.name = Some("Demo_1".into());
        assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
        p.metadata.name = Some("a".repeat(41));
        assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
        p.metadata.name = None;
        assert_eq!(fields(validate(&p, "d").unwrap_err()), ["metadata.name"]);
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("1Gb"), None);
    }

    #[test]
    fn cidrs_and_versions() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(is_version("16.6", 2));
        assert!(is_version("16", 2));
        assert!(!is_version("9.6", 2));
        assert!(is_version("7.4.2", 0));
    }

    #[test]
    fn stopped_scales_to_zero_and_disables_autoscaling() {
        let mut spec = HealthcarePlatformSpec {
            stopped: true,
            ..Default::default()
        };
        spec.api_server.autoscaling.enabled = true;
        let v = validate(&platform(spec), "default").unwrap();
        assert_eq!(v.api_replicas(), 0);
        assert!(!v.autoscaling());
        assert_eq!(v.api_min_replicas(), 0);
    }

    #[test]
    fn backup_now_token_is_pending_until_status_records_its_job() {
        use crate::crd::{BackupStatus, HealthcarePlatformStatus};
        let mut hp = platform(HealthcarePlatformSpec::default());
        assert_eq!(validate(&hp, "d").unwrap().backup_now, None);
        hp.metadata.annotations = Some(
            [(ANNOTATION_BACKUP_NOW.to_string(), "  ".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(validate(&hp, "d").unwrap().backup_now, None, "blank token");
        hp.metadata.annotations = Some(
            [(ANNOTATION_BACKUP_NOW.to_string(), " tok1 ".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            validate(&hp, "d").unwrap().backup_now.as_deref(),
            Some("tok1")
        );
        // Handled: its Job is recorded in status.backup.
        let job = Names::new("demo").backup_now_job(&token_hash("tok1"));
        hp.status = Some(HealthcarePlatformStatus {
            backup: Some(BackupStatus {
                last_on_demand_job: Some(job),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(validate(&hp, "d").unwrap().backup_now, None);
        // Another token is pending again.
        hp.metadata.annotations = Some(
            [(ANNOTATION_BACKUP_NOW.to_string(), "tok2".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            validate(&hp, "d").unwrap().backup_now.as_deref(),
            Some("tok2")
        );
    }

    #[test]
    fn restore_is_pending_until_recorded_and_holds_the_api_at_zero() {
        use crate::crd::{
            ApiServerStatus, BackupSource, DatabaseBootstrap, FromBackup, HealthcarePlatformStatus,
            RestoreStatus,
        };
        let mut spec = HealthcarePlatformSpec::default();
        spec.api_server.autoscaling.enabled = true;
        spec.api_server.autoscaling.min_replicas = 3;
        let plain = validate(&platform(spec.clone()), "d").unwrap();
        assert!(!plain.restore_pending && plain.from_backup().is_none());
        assert!(plain.autoscaling());

        spec.database.bootstrap = Some(DatabaseBootstrap {
            from_backup: Some(FromBackup {
                name: "latest".into(),
                source: BackupSource {
                    s3: None,
                    claim_name: Some("old-backups".into()),
                },
                secret_ref: "old-key".into(),
            }),
        });
        let mut hp = platform(spec);
        let v = validate(&hp, "d").unwrap();
        assert!(v.restore_pending);
        assert!(v.api_held());
        assert_eq!(v.api_replicas(), 0);
        assert!(
            !v.autoscaling(),
            "no HPA may scale the API up while restoring"
        );
        assert_eq!(
            v.api_min_replicas(),
            3,
            "the intended availability is unchanged"
        );

        // Recorded in status.restore: never pending again (even once its Job is gone).
        hp.status = Some(HealthcarePlatformStatus {
            restore: Some(RestoreStatus {
                backup_name: "latest".into(),
                restored_backup: Some("backup-20261122T030000.000Z".into()),
                skipped: false,
                completion_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-11-22T06:00:00Z".parse().unwrap(),
                ),
                job: "demo-restore".into(),
            }),
            ..Default::default()
        });
        let v = validate(&hp, "d").unwrap();
        assert!(!v.restore_pending && v.autoscaling());
        // A platform whose API has run already (e.g. restored by an older operator) is
        // bootstrapped: its API is not scaled down to restore again.
        hp.status = Some(HealthcarePlatformStatus {
            api_server: Some(ApiServerStatus {
                version: Some("0.1.0".into()),
                ready_replicas: 2,
                desired_replicas: 2,
                ready: "2/2".into(),
            }),
            ..Default::default()
        });
        assert!(!validate(&hp, "d").unwrap().restore_pending);
    }

    #[test]
    fn from_backup_is_checked() {
        use crate::crd::{BackupSource, DatabaseBootstrap, FromBackup, S3Destination};
        let from = |name: &str, source: BackupSource, secret: &str| {
            let mut spec = HealthcarePlatformSpec::default();
            spec.database.bootstrap = Some(DatabaseBootstrap {
                from_backup: Some(FromBackup {
                    name: name.into(),
                    source,
                    secret_ref: secret.into(),
                }),
            });
            spec
        };
        let claim = BackupSource {
            s3: None,
            claim_name: Some("old-backups".into()),
        };
        assert!(validate(&platform(from("latest", claim.clone(), "k")), "d").is_ok());
        assert!(validate(
            &platform(from("backup-20261122T030000.000Z", claim.clone(), "k")),
            "d"
        )
        .is_ok());
        let s3 = S3Destination {
            endpoint: None,
            bucket: "b".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            credentials_secret_ref: "c".into(),
            force_path_style: false,
        };
        let both = BackupSource {
            s3: Some(s3),
            claim_name: Some("x".into()),
        };
        let err = validate(&platform(from("../etc", both, "")), "d").unwrap_err();
        assert_eq!(
            fields(err),
            [
                "spec.database.bootstrap.fromBackup.name",
                "spec.database.bootstrap.fromBackup.secretRef",
                "spec.database.bootstrap.fromBackup.source"
            ]
        );
        let mut cnpg = from("latest", claim, "k");
        cnpg.database.provider = DatabaseProvider::CloudNativePG;
        let err = validate(&platform(cnpg), "d").unwrap_err();
        assert_eq!(fields(err), ["spec.database.bootstrap.fromBackup"]);
    }
}
