//! Uniqueness of a blind-indexed value across blind-index keys (`patients.mrn_bidx`,
//! `users.email_bidx`).
//!
//! While the PHI key ring holds several blind-index keys, a unique index cannot see that a new
//! value's index under the active key and a stored row's index under an older key are the same
//! value. Every writer of such a value therefore, in the transaction that writes it and before
//! the write: takes the value's transaction-scoped advisory lock
//! ([`crate::crypto::BlindIndexes::lock`]: derived from the ring's fixed key, so every replica,
//! whatever its active blind-index key, takes the same lock for the same value), then looks for
//! a stored row with the value's index under one of the other keys. The write's statement comes
//! after the lock, so it sees every row committed under it; the unique index still refuses two
//! rows under the same key. With one blind-index key nothing of this runs.

use uuid::Uuid;

use crate::crypto::BIDX_LOCK_CLASS;

/// One value to check: the row it is for (its own stored index does not count), the value's
/// indexes under the ring's other keys, and its lock.
pub struct Candidate<'a> {
    pub row: Uuid,
    pub others: &'a [Vec<u8>],
    pub lock: i32,
}

/// A table and its unique blind-index column (constants of this crate, never input).
#[derive(Clone, Copy)]
pub struct UniqueIndex {
    pub table: &'static str,
    pub column: &'static str,
}

pub const PATIENT_MRN: UniqueIndex = UniqueIndex {
    table: "patients",
    column: "mrn_bidx",
};
pub const USER_EMAIL: UniqueIndex = UniqueIndex {
    table: "users",
    column: "email_bidx",
};

/// Locks the candidates' values (in lock order) and returns the positions of those that another
/// row of `index.table` (any row: soft-deleted patients keep their MRN) has under another key.
pub async fn taken_under_other_keys(
    conn: &mut sqlx::PgConnection,
    index: UniqueIndex,
    candidates: &[Candidate<'_>],
) -> Result<Vec<usize>, sqlx::Error> {
    let (mut ords, mut ids, mut values, mut locks) = (vec![], vec![], vec![], vec![]);
    for (i, c) in candidates.iter().enumerate() {
        for v in c.others {
            // 1-based, as [`crate::batch::index`] reads it
            ords.push(i as i64 + 1);
            ids.push(c.row);
            values.push(v.as_slice());
        }
        if !c.others.is_empty() {
            locks.push(c.lock);
        }
    }
    if locks.is_empty() {
        return Ok(vec![]);
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock($1, l) \
         FROM (SELECT DISTINCT unnest($2::int4[]) AS l) x ORDER BY l",
    )
    .bind(BIDX_LOCK_CLASS)
    .bind(&locks)
    .execute(&mut *conn)
    .await?;
    let UniqueIndex { table, column } = index;
    let taken: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT o.ord FROM unnest($1::int8[], $2::uuid[], $3::bytea[]) AS o(ord, id, bidx) \
         WHERE EXISTS (SELECT 1 FROM {table} t WHERE t.{column} = o.bidx AND t.id <> o.id)"
    )))
    .bind(&ords)
    .bind(&ids)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    Ok(taken.into_iter().map(crate::batch::index).collect())
}
