//! The per-section checks of a `HealthcarePlatform` spec (API server, database, cache, network
//! policy, security, backup, restore bootstrap), in the order their errors are reported.

use caduceus_contract::settings;

use crate::crd::{
    CacheProvider, DatabaseProvider, HealthcarePlatformSpec, DEFAULT_CNPG_POSTGRES_IMAGE,
    DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE,
};

use super::checks::{
    check_backup_image, check_external_cidrs, check_quantity, check_repository, check_resources,
    check_secret_ref, valid_schedule,
};
use super::syntax::{is_dns1123_label, is_hostname, is_proxy, is_version};
use super::{Checker, MIN_PATIENT_RETENTION_DAYS, RESERVED_ENV, SPEC_ENV};

pub(super) fn check_spec(c: &mut Checker, spec: &HealthcarePlatformSpec) {
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
