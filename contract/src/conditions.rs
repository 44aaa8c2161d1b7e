//! Condition types and reasons of `HealthcarePlatform.status.conditions`: the names clients,
//! dashboards and the ArgoCD health check read, defined once. Their values are an API: tests pin
//! them as literals (e.g. `status.rs`'s tests), so a rename here fails them.

// Condition types.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const CACHE_READY: &str = "CacheReady";
pub const API_SERVER_READY: &str = "ApiServerReady";
pub const NETWORK_POLICY_READY: &str = "NetworkPolicyReady";
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
pub const STOPPED: &str = "Stopped";
pub const MONITORING_READY: &str = "MonitoringReady";
pub const BACKUP_HEALTHY: &str = "BackupHealthy";
pub const COMPLIANT: &str = "Compliant";

// Reasons.
/// Reason used when the CloudNativePG CRD is not served.
pub const REASON_CNPG_NOT_INSTALLED: &str = "CloudNativePGNotInstalled";
/// `MonitoringReady`: the Prometheus Operator CRDs are not served.
pub const REASON_PROMETHEUS_OPERATOR_NOT_INSTALLED: &str = "PrometheusOperatorNotInstalled";
/// `Progressing` / `Ready` reason while `database.bootstrap.fromBackup` is being restored.
pub const REASON_RESTORING: &str = "Restoring";
/// `Ready` / `Degraded` / `Progressing` reason when the restore Job failed.
pub const REASON_RESTORE_FAILED: &str = "RestoreFailed";
/// `ApiServerReady` reason while the API is held at 0 replicas for the restore.
pub const REASON_WAITING_FOR_RESTORE: &str = "WaitingForRestore";
/// `CacheReady` reasons of an External cache, from the API's self-report.
pub const REASON_EXTERNAL_REACHABLE: &str = "ExternalReachable";
pub const REASON_EXTERNAL_UNREACHABLE: &str = "ExternalUnreachable";
pub const REASON_EXTERNAL_NOT_VERIFIED: &str = "ExternalNotVerified";
/// `Ready`: every component is ready.
pub const REASON_ALL_COMPONENTS_READY: &str = "AllComponentsReady";
/// `MonitoringReady`: the monitoring objects are applied.
pub const REASON_APPLIED: &str = "Applied";
/// `Degraded` is false: no problems detected.
pub const REASON_AS_EXPECTED: &str = "AsExpected";
/// `Ready` / `Degraded`: some component is not ready.
pub const REASON_COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
/// `BackupHealthy`: the backup destination cannot be used.
pub const REASON_DESTINATION_UNSUPPORTED: &str = "DestinationUnsupported";
/// A feature the condition reports on is disabled.
pub const REASON_DISABLED: &str = "Disabled";
/// A component scaled to zero (the platform is stopped).
pub const REASON_HIBERNATING: &str = "Hibernating";
/// The spec failed validation.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// `MonitoringReady`: the monitoring objects could not be applied.
pub const REASON_MISSING: &str = "Missing";
/// The workload does not exist yet.
pub const REASON_NOT_CREATED: &str = "NotCreated";
/// The workload's pods are not all ready.
pub const REASON_PODS_NOT_READY: &str = "PodsNotReady";
/// The workload's pods are ready.
pub const REASON_PODS_READY: &str = "PodsReady";
/// The Deployment did not progress within its deadline.
pub const REASON_PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// `Progressing`: the platform is being provisioned.
pub const REASON_PROVISIONING: &str = "Provisioning";
/// A new revision is rolling out.
pub const REASON_ROLLING_OUT: &str = "RollingOut";
/// Generated Secrets of an existing platform are missing (not regenerated).
pub const REASON_SECRETS_MISSING: &str = "SecretsMissing";
/// `Progressing` is false: nothing is rolling out.
pub const REASON_SETTLED: &str = "Settled";
/// The platform is stopped (`spec.stopped`).
pub const REASON_STOPPED: &str = "Stopped";
/// `BackupHealthy`: `spec.backup.enabled` is false.
pub const REASON_BACKUPS_DISABLED: &str = "BackupsDisabled";
/// `BackupHealthy` unknown: no backup has completed yet.
pub const REASON_NO_BACKUP_YET: &str = "NoBackupYet";
/// `BackupHealthy`: the last backup failed.
pub const REASON_BACKUP_FAILED: &str = "BackupFailed";
/// `BackupHealthy`: the last success is older than the RPO.
pub const REASON_RPO_EXCEEDED: &str = "RpoExceeded";
/// `BackupHealthy`: the last success is within the RPO.
pub const REASON_BACKUP_WITHIN_RPO: &str = "BackupWithinRpo";
/// `ReconciliationPaused`: `spec.paused` is true / false.
pub const REASON_PAUSED: &str = "Paused";
pub const REASON_RECONCILING: &str = "Reconciling";
/// `Stopped` is false: the platform runs.
pub const REASON_RUNNING: &str = "Running";
/// `MonitoringReady`: `monitoring.enabled` is false.
pub const REASON_MONITORING_DISABLED: &str = "MonitoringDisabled";
