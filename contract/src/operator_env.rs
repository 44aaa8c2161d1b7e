//! The operator's own settings: the environment variables the Helm chart's Deployment sets
//! (`charts/caduceus-operator/templates/deployment.yaml`) and the operator's `run` command reads,
//! with their defaults (the chart's `values.yaml` defaults are tested against these).

/// `host:port` of the operator's /metrics, /healthz and /readyz server.
pub const METRICS_ADDR: &str = "CADUCEUS_METRICS_ADDR";
/// Port of that server (the chart's `metrics.port`).
pub const DEFAULT_METRICS_PORT: u16 = 8080;
/// Elect a leader through a coordination.k8s.io Lease.
pub const LEADER_ELECTION: &str = "CADUCEUS_LEADER_ELECTION";
pub const DEFAULT_LEADER_ELECTION: bool = true;
/// Name of the Lease.
pub const LEASE_NAME: &str = "CADUCEUS_LEASE_NAME";
pub const DEFAULT_LEASE_NAME: &str = "caduceus-operator-leader";
/// Lease duration in seconds.
pub const LEASE_DURATION_SECONDS: &str = "CADUCEUS_LEASE_DURATION_SECONDS";
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;
/// Watch only this namespace (unset or empty: all).
pub const WATCH_NAMESPACE: &str = "CADUCEUS_WATCH_NAMESPACE";
/// Periodic re-check of every platform, in seconds.
pub const REQUEUE_SECONDS: &str = "CADUCEUS_REQUEUE_SECONDS";
pub const DEFAULT_REQUEUE_SECONDS: u64 = 300;
/// Platforms reconciled concurrently.
pub const CONCURRENCY: &str = "CADUCEUS_CONCURRENCY";
pub const DEFAULT_CONCURRENCY: u16 = 8;
/// tracing filter.
pub const LOG_LEVEL: &str = "CADUCEUS_LOG_LEVEL";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The pod's name (downward API): identity in the Lease and Events.
pub const POD_NAME: &str = "POD_NAME";
/// The pod's namespace (downward API): where the Lease lives.
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Every variable the chart may set and the operator reads.
pub const ALL: &[&str] = &[
    METRICS_ADDR,
    LEADER_ELECTION,
    LEASE_NAME,
    LEASE_DURATION_SECONDS,
    WATCH_NAMESPACE,
    REQUEUE_SECONDS,
    CONCURRENCY,
    LOG_LEVEL,
    POD_NAME,
    POD_NAMESPACE,
];
