//! Status of the `HealthcarePlatform`.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Status

/// Observed state of a platform. Written only by the operator, through the status subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HealthcarePlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Provisioning, Ready, Degraded, Failed, Paused or Stopped.
    #[serde(default)]
    pub phase: Phase,
    /// Human-readable summary of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions in the `metav1.Condition` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Where clients reach the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// The running API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerStatus>,
    /// The embedded database's TLS certificates (absent for other providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
    /// Compliance evaluation result (absent until evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceStatus>,
    /// Backup state (absent until the first backup ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The completed restore of `spec.database.bootstrap.fromBackup` (absent until it
    /// succeeded). Once set, the restore never runs again, even after its Job is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Lifecycle phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Ready,
    Degraded,
    Failed,
    Paused,
    Stopped,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Ready,
        Phase::Degraded,
        Phase::Failed,
        Phase::Paused,
        Phase::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Paused => "Paused",
            Phase::Stopped => "Stopped",
        }
    }
}

/// API endpoints.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// In-cluster URL, e.g. `https://demo-api.ns.svc:8080` (the API serves HTTPS with the
    /// operator-issued certificate of `<platform>-api-internal-tls`; trust its `ca.crt`).
    pub internal: String,
    /// Public URL through the Ingress, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
}

/// API server rollout state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerStatus {
    /// Version (image tag) every ready pod runs; absent during a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub ready_replicas: i32,
    pub desired_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    pub ready: String,
}

/// Operator-issued TLS of the embedded database (renewed automatically).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// When the Postgres server certificate expires (re-issued 30 days before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_not_after: Option<Time>,
    /// When the newest CA in `ca.crt` expires (a new CA is issued a year before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<Time>,
}

/// Compliance evaluation summary (filled by the compliance engine).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<ComplianceProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ComplianceMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant: Option<bool>,
    #[serde(default)]
    pub passed: i32,
    #[serde(default)]
    pub total: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ComplianceViolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// Rules whose evidence is not available yet (never counted as passed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_evaluated: Vec<ComplianceRuleNote>,
    /// Values the operator overrode in `Enforce` mode, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforced: Vec<ComplianceOverride>,
    /// State of each exception of the spec (active, expired or naming an unknown rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ComplianceExceptionStatus>,
    /// Head of the API's audit hash chain at the last evaluation (tamper detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_chain_head: Option<AuditChainHead>,
}

/// A rule and why it was not evaluated.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceRuleNote {
    pub rule: String,
    pub message: String,
}

/// One value overridden by `Enforce` mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceOverride {
    pub rule: String,
    /// Spec path, e.g. `spec.security.sessionIdleTimeoutMinutes`.
    pub field: String,
    pub from: String,
    pub to: String,
    pub message: String,
}

/// State of one compliance exception.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceExceptionStatus {
    pub rule: String,
    pub expires: Time,
    /// `Active`, `Expired` or `UnknownRule`.
    pub state: String,
    pub message: String,
}

/// Head of the API's audit hash chain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditChainHead {
    pub id: i64,
    pub hash: String,
}

/// One failing compliance rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceViolation {
    pub rule: String,
    pub severity: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Backup state: from the backup Jobs and their pods' termination messages, or from
/// CloudNativePG's Cluster status when backups are delegated.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_time: Option<Time>,
    /// The Job of the last `caduceus.io/backup-now` token handled (each token runs once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_on_demand_job: Option<String>,
}

/// A completed restore of `spec.database.bootstrap.fromBackup`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `fromBackup.name` as requested (`latest` or a backup name).
    pub backup_name: String,
    /// The backup the agent restored (`latest` resolved); absent when it restored nothing
    /// because the database already had tables (`skipped`) or it did not report the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_backup: Option<String>,
    /// True when the database already had tables, so nothing was restored (`--if-empty`).
    #[serde(default)]
    pub skipped: bool,
    /// When the restore Job succeeded.
    pub completion_time: Time,
    /// The Job that ran the restore (deleted a week after it finished).
    pub job: String,
}
