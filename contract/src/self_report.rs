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
    /// Whether the API serves HTTPS (with [`crate::settings::TLS_CERT_FILE`]) on its public and
    /// admin ports; `None` from API versions that do not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_tls: Option<bool>,
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
    /// Id of the newest audit row (or of the newest purge anchor when retention purged every
    /// row; 0 for the empty chain).
    pub chain_head_id: i64,
    /// Its hash, lowercase hex of 32 bytes (not PHI: a keyed digest).
    pub chain_head_hash: String,
    pub write_failures: u64,
    pub retention_days: i64,
    /// The checkpoints the reader passed as `?checkpoint=<id>:<hex hash>` compared with the
    /// chain as it is now, in the order given. Empty when none were passed (and from API
    /// versions that do not compare them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointCheck>,
}

/// Query parameter of `GET /internal/compliance` and `GET /api/v1/audit-events/verify` naming
/// one checkpoint, `<id>:<hex hash>`; repeated for several.
pub const CHECKPOINT_PARAM: &str = "checkpoint";
/// Most checkpoints one request may pass (more is a `400`/`422`).
pub const MAX_CHECKPOINTS: usize = 64;

/// A point of the audit hash chain recorded outside the database: row `id` had hash `hash`
/// (lowercase hex of 32 bytes). Written and parsed as `<id>:<hex hash>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub id: i64,
    pub hash: String,
}

impl AuditCheckpoint {
    /// `<id>:<64 hex digits>` with `id >= 0`; the hash is lowercased. `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        let (id, hash) = s.split_once(':')?;
        let id: i64 = id.parse().ok().filter(|id| *id >= 0)?;
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self {
            id,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for AuditCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.id, self.hash)
    }
}

/// How a checkpoint compares with the chain as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointStatus {
    /// Row `id` (or the purge anchor through `id`) has exactly this hash.
    Match,
    /// Row `id` has another hash: the chain up to `id` was rewritten.
    Mismatch,
    /// Row `id` is gone, behind the newest purge anchor (retention): nothing to compare. Only
    /// plausible for a checkpoint older than the retention (six years).
    Purged,
    /// Row `id` is beyond the chain head or absent: audit rows were removed.
    Missing,
}

/// One checkpoint compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCheck {
    pub id: i64,
    pub status: CheckpointStatus,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_parse_and_print_as_id_colon_hash() {
        let h = "AB".repeat(32);
        let c = AuditCheckpoint::parse(&format!("42:{h}")).expect("valid");
        assert_eq!(c.id, 42);
        assert_eq!(c.hash, h.to_ascii_lowercase());
        assert_eq!(AuditCheckpoint::parse(&c.to_string()), Some(c));
        for bad in [
            "",
            "42",
            "x:ab",
            "-1:ab",
            &format!("1:{}", "a".repeat(63)),
            &format!("1:{}", "g".repeat(64)),
        ] {
            assert_eq!(AuditCheckpoint::parse(bad), None, "{bad}");
        }
    }
}
