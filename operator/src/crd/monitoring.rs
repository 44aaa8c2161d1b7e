//! Monitoring, compliance and deletion policy sections of the `HealthcarePlatform` spec.

use super::*;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Monitoring, compliance (schema owned here, behaviour by their own modules)

/// Prometheus Operator integration (ServiceMonitor, PrometheusRule, dashboard).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create ServiceMonitors, a PrometheusRule and a Grafana dashboard ConfigMap when the
    /// Prometheus Operator CRDs are installed (condition `MonitoringReady` says when they are not).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Extra labels on the ServiceMonitors and the PrometheusRule, e.g. the `release` label
    /// your Prometheus selects them by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Base URL of the runbooks the alerts link to (`<base>/<alert>.md`).
    #[serde(default = "default_runbook_base_url")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^https?://"))]
    pub runbook_base_url: String,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            runbook_base_url: default_runbook_base_url(),
        }
    }
}

/// The runbooks in `docs/runbooks/` of this repository.
pub const DEFAULT_RUNBOOK_BASE_URL: &str =
    "https://github.com/caduceus-health/caduceus/blob/main/docs/runbooks";

fn default_runbook_base_url() -> String {
    DEFAULT_RUNBOOK_BASE_URL.into()
}

/// Continuous compliance evaluation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Regulatory profiles to evaluate.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<ComplianceProfile>,
    /// `Enforce` overrides non-compliant values; `Audit` only reports.
    #[serde(default)]
    pub mode: ComplianceMode,
    /// Time-limited, justified exceptions to single rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ComplianceException>,
}

impl Default for ComplianceSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            profiles: default_profiles(),
            mode: ComplianceMode::default(),
            exceptions: Vec::new(),
        }
    }
}

fn default_profiles() -> Vec<ComplianceProfile> {
    vec![ComplianceProfile::HIPAA]
}

/// A regulatory profile.
#[allow(clippy::upper_case_acronyms)]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComplianceProfile {
    HIPAA,
    GDPR,
    SOC2,
}

/// Compliance mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ComplianceMode {
    #[default]
    Enforce,
    Audit,
}

/// An exception to one compliance rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceException {
    #[schemars(length(min = 1, max = 128))]
    pub rule: String,
    #[schemars(length(min = 1, max = 1024))]
    pub justification: String,
    /// RFC 3339 time after which the exception no longer applies.
    pub expires: Time,
}

/// What happens to data when the platform is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep PVCs, credentials, key rings and backups (default: PHI is never deleted by accident).
    #[default]
    Retain,
    /// Delete PVCs and backups together with the platform.
    Delete,
}
