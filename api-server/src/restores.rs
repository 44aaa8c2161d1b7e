//! Restores of a backup, audited. `caduceus-backup restore` cannot append to the keyed audit
//! chain (it does not hold the audit key), so it leaves a row in `backup_restores` (migration
//! 0150) of the database it restored; `serve` turns every row not yet audited into a
//! `backup.restore` event at start (and with the daily maintenance) and marks it.
//!
//! The event has no actor (the server records it); its resource is the backup's name and its
//! purpose names the backup's time, key id, the audit chain head recorded in the backup's
//! manifest (the checkpoint to pass to `GET /audit-events/verify?checkpoint=`), whether the
//! manifest was authenticated and where the replaced database was kept. No PHI.
//!
//! Atomicity: per row, the audit event is committed first, then the row is marked; the row is
//! locked (`FOR UPDATE SKIP LOCKED`) meanwhile, so concurrent replicas do not audit it twice,
//! and a crash between the two audits it again on the next start rather than never.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::audit::{self, actions, AuditEvent};
use crate::crypto::AuditKey;

type Row = (
    i64,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    String,
    bool,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// The audit event of one `backup_restores` row.
fn event(row: &Row) -> AuditEvent {
    let (_, restored_at, name, backup_time, key_id, authenticated, head_id, head_hash, previous) =
        row;
    let head = match (head_id, head_hash) {
        (Some(id), Some(hash)) => format!("audit chain head of the backup {id}:{hash}"),
        _ => "no audit chain head in the backup".to_string(),
    };
    let previous = previous
        .as_deref()
        .map(|p| format!("; replaced database kept as {p}"))
        .unwrap_or_default();
    let manifest = if *authenticated {
        "authenticated manifest"
    } else {
        "UNAUTHENTICATED manifest (--allow-unauthenticated)"
    };
    AuditEvent::system(actions::BACKUP_RESTORE, "backup")
        .resource(name)
        .purpose(&format!(
            "restored at {} from backup taken {} (key {key_id}, {manifest}); {head}{previous}",
            rfc3339(*restored_at),
            rfc3339(*backup_time),
        ))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Audit every restore the backup agent recorded and not yet audited. Returns how many.
pub async fn audit_restores(pool: &PgPool, audit_key: &AuditKey) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, restored_at, backup_name, backup_time, key_id, manifest_authenticated, \
               audit_head_id, audit_head_hash, previous_database \
             FROM backup_restores WHERE audited_at IS NULL \
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(total);
        };
        audit::write_now(pool, audit_key, &event(&row)).await?;
        sqlx::query("UPDATE backup_restores SET audited_at = now() WHERE id = $1")
            .bind(row.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        total += 1;
    }
}
