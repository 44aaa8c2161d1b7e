//! Patient record retention: soft-deleted patients are hard-deleted once they have been deleted
//! for longer than `CADUCEUS_PATIENT_RETENTION_DAYS` (`serve` runs [`purge_deleted_patients`] at
//! start and then daily, next to the audit purge).
//!
//! What goes, per patient: the `patients` row (all its ciphertexts), its appointments,
//! prescriptions and care-team rows. A patient account linked to the record is unlinked,
//! deactivated and its sessions ended (the account row itself stays: sessions, audit and
//! created-by references point at it; its e-mail is encrypted). Audit events stay (the trail is
//! append-only and holds no PHI, only ids). Every purged patient is audited as
//! `patient.purge` (resource and patient id, the retention as purpose; no PHI).
//!
//! Atomicity: per batch, the audit events are committed first, then the deletions. If the
//! deletion fails after the audit commit, the next run purges (and audits) those rows again, so a
//! deletion is never unaudited.

use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, actions, AuditEvent};

pub use crate::config::{DEFAULT_PATIENT_RETENTION_DAYS, MIN_PATIENT_RETENTION_DAYS};

/// Patients purged per transaction.
const BATCH: i64 = 100;

/// Hard-delete patients soft-deleted more than `retention_days` ago (never fewer than
/// [`MIN_PATIENT_RETENTION_DAYS`]) with their dependent rows. Returns the number purged.
pub async fn purge_deleted_patients(
    pool: &PgPool,
    audit_key: &crate::crypto::AuditKey,
    retention_days: u32,
) -> Result<u64, sqlx::Error> {
    let days = retention_days.max(MIN_PATIENT_RETENTION_DAYS);
    let mut total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM patients WHERE deleted_at IS NOT NULL \
             AND deleted_at < now() - make_interval(days => $1) \
             ORDER BY deleted_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(days as i32)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(total);
        }
        for id in &ids {
            audit::write_now(
                pool,
                audit_key,
                &AuditEvent::system(actions::PATIENT_PURGE, "patient")
                    .resource(id)
                    .patient(*id)
                    .purpose(&format!(
                        "retention: soft-deleted more than {days} days ago"
                    )),
            )
            .await?;
        }
        sqlx::query(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'user_deactivated' \
             WHERE revoked_at IS NULL AND user_id IN (SELECT id FROM users WHERE patient_id = ANY($1))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE users SET patient_id = NULL, active = false, updated_at = now() WHERE patient_id = ANY($1)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        for table in ["appointments", "prescriptions", "care_team"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE patient_id = ANY($1)"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        let n = sqlx::query("DELETE FROM patients WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        total += n;
    }
}
