//! `caduceus-api rotate-keys`: re-encrypt PHI under the active key, in batches, resumably.
//!
//! Every encrypted table has a `phi_key_id` column naming the key of all its ciphertexts. Each
//! batch (own transaction, `FOR UPDATE SKIP LOCKED`) decrypts rows whose `phi_key_id` is not the
//! active key and writes them back under the active key. Interrupted runs simply continue where
//! they stopped. A new encrypted table is added to [`ENCRYPTED_TABLES`].
//!
//! `caduceus-api rotate-blind-index` ([`blind_index`]) does the same for the blind indexes.

use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::crypto::{Aad, KeyRing};

pub mod blind_index;
pub use blind_index::{rotate_blind_index, BlindIndexReport, Remaining};

/// A table with PHI ciphertext columns (AAD = table, row id, column).
pub struct EncryptedTable {
    pub table: &'static str,
    pub columns: &'static [&'static str],
}

/// All tables holding PHI ciphertexts.
pub const ENCRYPTED_TABLES: &[EncryptedTable] = &[
    EncryptedTable {
        table: "patients",
        columns: &crate::patients::model::ENC_COLUMNS,
    },
    EncryptedTable {
        table: "appointments",
        columns: &["reason"],
    },
    EncryptedTable {
        table: crate::prescriptions::TABLE,
        columns: &crate::prescriptions::ENC_COLUMNS,
    },
    // account e-mails (rows not yet converted from plaintext have no phi_key_id: `rotate_keys`
    // converts them first)
    EncryptedTable {
        table: crate::users::TABLE,
        columns: &crate::users::ENC_COLUMNS,
    },
    // TOTP secrets (row id = user id)
    EncryptedTable {
        table: crate::auth::mfa::TABLE,
        columns: &crate::auth::mfa::ENC_COLUMNS,
    },
];

/// Rows re-encrypted per table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub rows: Vec<(&'static str, u64)>,
}

impl RotationReport {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

async fn rotate_batch(
    pool: &PgPool,
    keys: &KeyRing,
    t: &EncryptedTable,
    batch: i64,
) -> anyhow::Result<u64> {
    let active = keys.active_key_id();
    let mut tx = pool.begin().await?;
    let sql = format!(
        "SELECT id, {} FROM {} WHERE phi_key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        t.columns.join(", "),
        t.table
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(active)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
    let n = rows.len() as u64;
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE ");
        qb.push(t.table)
            .push(" SET phi_key_id = ")
            .push_bind(active.to_string());
        for col in t.columns {
            let value: Option<Vec<u8>> = row.try_get(*col)?;
            let aad = Aad {
                table: t.table,
                row: id,
                column: col,
            };
            let new = match value {
                Some(ct) => {
                    let plain =
                        zeroize::Zeroizing::new(keys.decrypt(aad, &ct).map_err(|e| {
                            anyhow::anyhow!("{} row {id} column {col}: {e}", t.table)
                        })?);
                    Some(keys.encrypt(aad, &plain))
                }
                None => None,
            };
            qb.push(", ").push(*col).push(" = ").push_bind(new);
        }
        qb.push(" WHERE id = ").push_bind(id);
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// Re-encrypt everything not under the active key. `progress` is called after each batch.
pub async fn rotate_keys(
    pool: &PgPool,
    keys: &KeyRing,
    batch: i64,
    mut progress: impl FnMut(&str, u64),
) -> anyhow::Result<RotationReport> {
    let mut report = RotationReport::default();
    // plaintext e-mails from before migration 0102 are encrypted (under the active key) first
    let converted = crate::users::encrypt_legacy_emails(pool, keys, batch).await?;
    if converted > 0 {
        progress("users (plaintext e-mails encrypted)", converted);
        report.rows.push(("users (plaintext e-mails)", converted));
    }
    for t in ENCRYPTED_TABLES {
        let mut done = 0u64;
        loop {
            let n = rotate_batch(pool, keys, t, batch.max(1)).await?;
            if n == 0 {
                break;
            }
            done += n;
            progress(t.table, done);
        }
        report.rows.push((t.table, done));
    }
    Ok(report)
}
