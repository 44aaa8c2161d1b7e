//! `caduceus-api rotate-blind-index`: recompute every stored blind index under the active
//! blind-index key, in batches, resumably (`docs/api.md`, "Rotating the blind-index key").
//!
//! Every stored index records the key that made it (`bidx_key_id`, migration 0170). Each batch
//! (own transaction, `FOR UPDATE SKIP LOCKED`, like `rotate-keys`) decrypts the inputs of rows
//! whose `bidx_key_id` is not the active key — a patient's MRN, family name and birth date, an
//! account's e-mail — and writes their indexes under the active key. An interrupted run simply
//! continues where it stopped; a finished one finds nothing to do.
//!
//! Indexes whose input is never stored cannot be recomputed: failure counters of e-mails
//! (`login_attempts`; those of an ended window are deleted here, the others end within
//! [`crate::auth::routes::LOCKOUT_WINDOW_MINUTES`]) and one-time recovery codes
//! (`mfa_recovery_codes`: spent ones are deleted here, an unused one keeps working while its key
//! is in the ring; confirming a new MFA enrolment or an admin's MFA reset replaces them).
//! [`remaining`] counts every row still under another key: an old key may leave the ring only
//! when none is.

use chrono::NaiveDate;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::{Aad, KeyRing};

/// Rows still under a blind-index key other than the active one, per key id and kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// `(key id, kind, rows)`; kind: `patients`, `users`, `login_attempts` (live failure
    /// counters) or `mfa_recovery_codes` (unused codes).
    pub rows: Vec<(String, String, i64)>,
}

impl Remaining {
    pub fn total(&self) -> i64 {
        self.rows.iter().map(|(_, _, n)| n).sum()
    }

    /// The ids of the keys still in use besides the active one.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.rows.iter().map(|(k, _, _)| k.as_str()).collect();
        ids.dedup();
        ids
    }
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlindIndexReport {
    /// Rows whose indexes were recomputed, per table.
    pub recomputed: Vec<(&'static str, u64)>,
    /// Failure counters of ended windows and spent recovery codes under other keys, deleted.
    pub deleted: u64,
    /// What is still under other keys after the run.
    pub remaining: Remaining,
}

impl BlindIndexReport {
    pub fn total(&self) -> u64 {
        self.recomputed.iter().map(|(_, n)| n).sum()
    }
}

/// Rows under another key than `active`, per key and kind.
pub async fn remaining(pool: &PgPool, active: &str) -> Result<Remaining, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT k, kind, n FROM ( \
           SELECT bidx_key_id AS k, 'patients' AS kind, count(*) AS n FROM patients \
             WHERE bidx_key_id <> $1 GROUP BY 1 \
           UNION ALL SELECT bidx_key_id, 'users', count(*) FROM users \
             WHERE email_enc IS NOT NULL AND bidx_key_id <> $1 GROUP BY 1 \
           UNION ALL SELECT bidx_key_id, 'login_attempts', count(*) FROM login_attempts \
             WHERE bidx_key_id <> $1 GROUP BY 1 \
           UNION ALL SELECT bidx_key_id, 'mfa_recovery_codes', count(*) FROM mfa_recovery_codes \
             WHERE bidx_key_id <> $1 AND used_at IS NULL GROUP BY 1 \
         ) r ORDER BY k, kind",
    )
    .bind(active)
    .fetch_all(pool)
    .await?;
    Ok(Remaining { rows })
}

/// A problem of one row: names the row, never its content.
fn row_error(table: &str, id: Uuid, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{table} row {id}: {what}")
}

/// The unique index refused a recomputed value: two rows have the same value under two keys.
fn unique_error(table: &str, id: Uuid, e: sqlx::Error) -> anyhow::Error {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => row_error(
            table,
            id,
            "another row has the same value (stored under another blind-index key); \
             resolve the duplicate, then run the command again",
        ),
        _ => e.into(),
    }
}

/// A patient's id and the ciphertexts its indexes are made of: MRN, family name, birth date.
type PatientInputs = (Uuid, Vec<u8>, Vec<u8>, Vec<u8>);

async fn patients_batch(pool: &PgPool, keys: &KeyRing, batch: i64) -> anyhow::Result<u64> {
    let active = keys.active_blind_index_key_id();
    let mut tx = pool.begin().await?;
    let rows: Vec<PatientInputs> = sqlx::query_as(
        "SELECT id, mrn, family_name, birth_date FROM patients WHERE bidx_key_id <> $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(active)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    for (id, mrn, family_name, birth_date) in &rows {
        let open = |column: &str, ct: &[u8]| {
            let aad = Aad {
                table: "patients",
                row: *id,
                column,
            };
            keys.decrypt_str(aad, ct)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| row_error("patients", *id, format!("column {column}: {e}")))
        };
        let mrn = open("mrn", mrn)?;
        let name = open("family_name", family_name)?;
        let born = open("birth_date", birth_date)?;
        let born = NaiveDate::parse_from_str(&born, "%Y-%m-%d")
            .map_err(|_| row_error("patients", *id, "birth_date is not a date"))?;
        sqlx::query(
            "UPDATE patients SET mrn_bidx = $2, name_dob_bidx = $3, bidx_key_id = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(keys.mrn_index(&mrn))
        .bind(keys.name_dob_index(&name, born))
        .bind(active)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_error("patients", *id, e))?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

async fn users_batch(pool: &PgPool, keys: &KeyRing, batch: i64) -> anyhow::Result<u64> {
    let active = keys.active_blind_index_key_id();
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, email_enc FROM users WHERE email_enc IS NOT NULL AND bidx_key_id <> $1 \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(active)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    for (id, email_enc) in &rows {
        let aad = Aad {
            table: crate::users::TABLE,
            row: *id,
            column: crate::users::ENC_COLUMNS[0],
        };
        let email = keys
            .decrypt_str(aad, email_enc)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| row_error("users", *id, format!("column email_enc: {e}")))?;
        sqlx::query("UPDATE users SET email_bidx = $2, bidx_key_id = $3 WHERE id = $1")
            .bind(id)
            .bind(crate::users::email_index(keys, &email))
            .bind(active)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_error("users", *id, e))?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Recompute every blind index not under the active key; `progress(table, rows so far)` after
/// each batch. Safe to interrupt and re-run, and to run while the API serves.
pub async fn rotate_blind_index(
    pool: &PgPool,
    keys: &KeyRing,
    batch: i64,
    mut progress: impl FnMut(&str, u64),
) -> anyhow::Result<BlindIndexReport> {
    let batch = batch.max(1);
    let active = keys.active_blind_index_key_id();
    let mut report = BlindIndexReport::default();
    // plaintext e-mails from before migration 0102 get their index (under the active key) first
    let converted = crate::users::encrypt_legacy_emails(pool, keys, batch).await?;
    if converted > 0 {
        progress("users (plaintext e-mails encrypted)", converted);
    }
    for table in ["patients", "users"] {
        let mut done = 0u64;
        loop {
            let n = match table {
                "patients" => patients_batch(pool, keys, batch).await?,
                _ => users_batch(pool, keys, batch).await?,
            };
            if n == 0 {
                break;
            }
            done += n;
            progress(table, done);
        }
        report.recomputed.push((table, done));
    }
    let counters = sqlx::query(
        "DELETE FROM login_attempts WHERE bidx_key_id <> $1 \
         AND window_start <= now() - make_interval(mins => $2)",
    )
    .bind(active)
    .bind(crate::auth::routes::LOCKOUT_WINDOW_MINUTES)
    .execute(pool)
    .await?;
    let spent = sqlx::query(
        "DELETE FROM mfa_recovery_codes WHERE bidx_key_id <> $1 AND used_at IS NOT NULL",
    )
    .bind(active)
    .execute(pool)
    .await?;
    report.deleted = counters.rows_affected() + spent.rows_affected();
    report.remaining = remaining(pool, active).await?;
    Ok(report)
}
