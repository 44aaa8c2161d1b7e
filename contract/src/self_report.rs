//! The API server's compliance self-report: `GET /internal/compliance` on its admin port,
//! serialised by the API (`api-server/src/health.rs`), parsed by the operator
//! (`operator/src/compliance/self_report.rs`), documented in docs/contracts.md.

use serde::{Deserialize, Serialize};

/// Path of the self-report on the API's admin port.
pub const SELF_REPORT_PATH: &str = "/internal/compliance";

/// What the API reports about itself. Unknown fields are ignored (newer API versions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfReport {
    pub version: String,
    pub schema_version: i64,
    pub encryption: EncryptionReport,
    pub audit: AuditReport,
    pub sessions: SessionsReport,
    pub rate_limit: RateLimitReport,
    pub database_tls: bool,
    /// Redis as the API sees it; `None` from API versions that do not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
}

/// Whether the API has a Redis URL and Redis answered its `PING` when the report was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    pub configured: bool,
    pub reachable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncryptionReport {
    pub active: bool,
    pub active_key_id: String,
    pub key_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub chain_head_id: i64,
    pub chain_head_hash: String,
    pub write_failures: u64,
    pub retention_days: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionsReport {
    pub idle_timeout_minutes: i64,
    pub access_token_ttl_minutes: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimitReport {
    pub enabled: bool,
    pub backend: String,
    pub requests_per_minute: i64,
    pub login_attempts_per_minute: i64,
}
