//! Backup manifests, backup names and the retention rule.

use caduceus_contract::self_report::AuditCheckpoint;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Manifest format version written by this agent: 2 adds `audit_head` and `mac`
/// ([`crate::auth`]); version 1 manifests (no MAC) are read as unauthenticated.
pub const MANIFEST_VERSION: u32 = 2;

/// Written next to each archive (`<name>.json`) after the archive upload completed; a backup
/// without a manifest is incomplete and never listed, verified or restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// Archive (ciphertext) size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the archive (ciphertext).
    pub sha256: String,
    pub key_id: String,
    /// `SHOW server_version` of the dumped server.
    pub postgres_version: String,
    /// Highest applied sqlx migration (`_sqlx_migrations`), `null` if the table does not exist.
    pub schema_version: Option<i64>,
    /// Name of the dumped database.
    pub database: String,
    /// Object name of the archive, relative to the destination prefix.
    pub archive: String,
    /// The audit chain head in the dump (the newest `audit_events` row, or the newest purge
    /// anchor, read in the dump's snapshot): `{"id":…,"hash":"<64 hex>"}`, `null` when the
    /// database has no audit trail. Checked against the restored database and printed by
    /// `restore` as a checkpoint for `GET /audit-events/verify?checkpoint=<id>:<hash>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<AuditCheckpoint>,
    /// Lowercase hex HMAC-SHA256 over every other field ([`crate::auth`]); absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Manifest {
    pub fn parsed_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The contract's final stdout line for `backup` (docs/contracts.md).
    pub fn result_line(&self) -> String {
        serde_json::json!({
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "key_id": self.key_id,
            "time": self.time,
        })
        .to_string()
    }
}

/// Backup names sort chronologically: `backup-YYYYMMDDTHHMMSS.mmmZ`.
pub fn backup_name(now: DateTime<Utc>) -> String {
    format!("backup-{}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Names are used as object names: letters, digits, `.`, `_`, `-` only, no leading dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Sort newest first (by time, then name).
pub fn sort_newest_first(manifests: &mut [Manifest]) {
    manifests.sort_by(|a, b| {
        b.parsed_time()
            .cmp(&a.parsed_time())
            .then_with(|| b.name.cmp(&a.name))
    });
}

/// The retention rule: a backup is deleted when it is older than `retention_days` AND at least
/// `min_count` newer backups are kept. The newest `min_count` backups are never deleted, however old.
/// Backups with an unparsable time are never deleted.
pub fn select_for_pruning(
    manifests: &[Manifest],
    retention_days: u32,
    min_count: usize,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut sorted = manifests.to_vec();
    sort_newest_first(&mut sorted);
    let cutoff = now - Duration::days(i64::from(retention_days));
    sorted
        .iter()
        .skip(min_count)
        .filter(|m| m.parsed_time().is_some_and(|t| t < cutoff))
        .map(|m| m.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn manifest(name: &str, time: DateTime<Utc>) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            name: name.to_string(),
            time: rfc3339(time),
            size: 1,
            sha256: String::new(),
            key_id: "bk-000000000000".into(),
            postgres_version: "15".into(),
            schema_version: None,
            database: "db".into(),
            archive: format!("{name}.cbk"),
            audit_head: None,
            mac: None,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn prunes_only_expired_backups_beyond_min_count() {
        let n = now();
        let ms = vec![
            manifest("d40", n - Duration::days(40)),
            manifest("d1", n - Duration::days(1)),
            manifest("d31", n - Duration::days(31)),
            manifest("d10", n - Duration::days(10)),
            manifest("d60", n - Duration::days(60)),
        ];
        let mut pruned = select_for_pruning(&ms, 30, 2, n);
        pruned.sort();
        assert_eq!(pruned, vec!["d31", "d40", "d60"]);
        // A larger minCount protects expired backups too.
        let mut pruned = select_for_pruning(&ms, 30, 4, n);
        pruned.sort();
        assert_eq!(pruned, vec!["d60"]);
    }

    #[test]
    fn never_prunes_below_min_count_even_when_all_expired() {
        let n = now();
        let ms: Vec<_> = (0..5)
            .map(|i| manifest(&format!("b{i}"), n - Duration::days(100 + i)))
            .collect();
        let mut pruned = select_for_pruning(&ms, 7, 3, n);
        pruned.sort();
        // The three newest (b0, b1, b2) survive.
        assert_eq!(pruned, vec!["b3", "b4"]);
        assert!(select_for_pruning(&ms, 7, 5, n).is_empty());
        assert!(select_for_pruning(&ms, 7, 10, n).is_empty());
    }

    #[test]
    fn nothing_is_pruned_within_retention() {
        let n = now();
        let ms: Vec<_> = (0..5)
            .map(|i| manifest(&format!("b{i}"), n - Duration::hours(i)))
            .collect();
        assert!(select_for_pruning(&ms, 1, 0, n).is_empty());
    }

    #[test]
    fn names_sort_chronologically_and_are_valid() {
        let a = backup_name(now());
        let b = backup_name(now() + Duration::milliseconds(1));
        assert_eq!(a, "backup-20261122T120000.000Z");
        assert!(a < b);
        assert!(valid_name(&a));
        for bad in ["", "../x", "a/b", ".hidden", "x y"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn result_line_has_the_contract_fields() {
        let m = manifest("backup-1", now());
        let v: serde_json::Value = serde_json::from_str(&m.result_line()).expect("json");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["key_id", "name", "sha256", "size", "time"]);
        assert_eq!(v["time"], "2026-11-22T12:00:00.000Z");
    }
}
