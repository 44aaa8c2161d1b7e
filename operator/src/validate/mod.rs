//! Validate stage: a `HealthcarePlatform` in, a [`ValidatedPlatform`] out, or every problem with
//! its field path. Pure: no client, no clock.
//!
//! The CRD schema and its CEL rules refuse most of these at admission; this stage repeats them so
//! `render` and `compliance-report` work without a cluster, and adds checks CEL cannot express
//! (quantities, requests ≤ limits, CIDRs).
//!
//! Files by concern: this file holds the entry point [`validate`], its result
//! [`ValidatedPlatform`], the error types and the `Checker` that collects every bad field;
//! `spec` the per-section checks of the spec, `checks` the shared field checks (secret refs,
//! image repositories, resources, quantities, CIDRs, schedules), `syntax` the pure format
//! predicates and the quantity parser, `tests` the unit tests of the whole stage.

mod checks;
mod spec;
mod syntax;
#[cfg(test)]
mod tests;

use caduceus_contract::settings;
use std::fmt;

use crate::crd::{FromBackup, HealthcarePlatform, HealthcarePlatformSpec};
use crate::desired::backup::{token_hash, ANNOTATION_BACKUP_NOW};
use crate::names::{Names, MAX_PLATFORM_NAME_LEN};

use spec::check_spec;
use syntax::is_dns1035_label;
pub use syntax::parse_quantity;

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
