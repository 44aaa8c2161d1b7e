//! Group-commit audit writer.
//!
//! Requests send an [`AuditEvent`] over a channel with a oneshot ack and wait for it
//! ([`AuditWriter::record`]). One background task drains everything queued, chains the batch
//! (ids and hashes computed in memory) and writes it as ONE multi-row `INSERT ... SELECT FROM
//! unnest(...)` (a single prepared statement whatever the batch size), then acks every sender
//! after COMMIT. While a batch is being written, new events queue up and form the next batch, so
//! concurrent PHI reads share commits instead of running one transaction each. If the write
//! fails every waiter gets an error (fail closed) and `audit_write_failures_total` grows.
//!
//! Chain integrity across writers (replicas, CLI): the writer remembers the head it last wrote.
//! The fast path is one autocommit statement (one round trip; with `synchronous_commit = on` it
//! returns only once the rows are durable) that appends after that head; the primary key on `id`
//! makes it fail if any other writer appended meanwhile (committed or concurrently), and a
//! guard on `max(id)` makes it insert nothing if rows beyond the head exist. (The guard must stay
//! `max(id)`, one backward step of the primary-key index: the cached generic plan of the earlier
//! `NOT EXISTS (… WHERE id > $1)` was a sequential scan of the whole table, so every batch got
//! slower as the audit trail grew — 2 ms to 15 ms per batch within one 40 k-row benchmark run.) On such a conflict,
//! on startup and after any error, the locked path runs: under the transaction-scoped advisory
//! lock [`CHAIN_LOCK`] read the head, append, commit. Either way row `n + 1` always carries the
//! hash of the committed row `n`.
//!
//! Hashes are keyed (hash scheme 1, migration 0130): `HMAC-SHA256(audit key, prev_hash ||
//! canonical row)` with the [`AuditKey`] derived from the PHI key ring, which the database does
//! not hold; one HMAC per row (the key's inner/outer state is computed once and cloned).
//!
//! Audit rows of a change are written in the change's own transaction ([`append_in`], used
//! through [`AuditWriter::write_in`]): the transaction takes [`CHAIN_LOCK`], reads the head and
//! appends, and its COMMIT makes the change and its audit rows durable together, so there is
//! nothing to undo when the audit write fails. The lock is held from the head read to that
//! COMMIT, which is why the fast path takes it too (`pg_try_advisory_xact_lock` inside its one
//! statement, inserting nothing when it is held): no fast-path row can appear in the middle of a
//! transaction's append. Grouped writes ([`crate::store::patients::PatientInsert`]) append the
//! whole group's rows in the group's one transaction, so their group commit is kept.
//!
//! The writer keeps its own connection (opened with `synchronous_commit = on`, see
//! [`crate::state::worker_options`]) instead of taking one from the pool per batch: a pooled
//! connection costs sqlx's ping round trip each time it goes back. A connection that broke is
//! dropped and the next batch opens a new one. A failed batch is never retried: after a broken
//! connection the batch may or may not have committed, and a retry could record it twice; its
//! waiters get an error instead (fail closed), and the next batch starts on the locked path.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgExecutor, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{AuditEvent, CHAIN_LOCK};

/// Longest a change's transaction waits for the chain lock ([`append_in`]): writers hold it
/// for one append and COMMIT, milliseconds; a longer wait means a stuck writer.
pub const CHAIN_LOCK_TIMEOUT_MS: u64 = 5_000;
use crate::crypto::AuditKey;
use crate::error::Error;
use crate::metrics::Metrics;

const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;
/// Locked-path attempts per batch: a fast-path writer (another replica, which does not take the
/// lock) may append between our head read and our insert; we then read the head again.
const LOCKED_ATTEMPTS: usize = 3;

type Job = (AuditEvent, oneshot::Sender<bool>);

/// Last row of the chain: id and hash.
type Head = (i64, Vec<u8>);

/// Handle to the background writer; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    metrics: Metrics,
    key: AuditKey,
}

impl AuditWriter {
    /// Spawn the writer task on the current runtime; it connects with `options` and keys the
    /// chain with `key`.
    pub fn spawn(options: Arc<PgConnectOptions>, metrics: Metrics, key: AuditKey) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(options, rx, metrics.clone(), key.clone()));
        Self { tx, metrics, key }
    }

    /// The key that chains the trail (for grouped writes that append in their own transaction).
    pub fn key(&self) -> &AuditKey {
        &self.key
    }

    /// Append `events` inside the change's open transaction `conn` ([`append_in`]): they become
    /// durable with its COMMIT, or vanish with its rollback. An error means the transaction must
    /// not commit (drop it): `503 audit-unavailable`.
    pub async fn write_in(
        &self,
        conn: &mut PgConnection,
        events: &[AuditEvent],
    ) -> Result<(), Error> {
        let refs: Vec<&AuditEvent> = events.iter().collect();
        match append_in(conn, &self.key, &refs).await {
            Ok(()) => {
                for e in events {
                    self.written(e.outcome);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(events = events.len(), error = %crate::error::error_kind(&e), "audit write in the change's transaction failed");
                self.metrics
                    .audit_write_failures_total
                    .inc_by(events.len() as u64);
                Err(Error::AuditUnavailable)
            }
        }
    }

    /// Count one event written (`audit_events_total` by outcome).
    pub fn written(&self, outcome: super::Outcome) {
        self.metrics
            .audit_events_total
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// Write one event durably; returns only after COMMIT. Errors mean "not recorded".
    pub async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let outcome = event.outcome;
        let (ack, wait) = oneshot::channel();
        if self.tx.send((event, ack)).await.is_err() {
            self.metrics.audit_write_failures_total.inc();
            return Err(Error::AuditUnavailable);
        }
        match wait.await {
            Ok(true) => {
                self.written(outcome);
                Ok(())
            }
            _ => Err(Error::AuditUnavailable),
        }
    }
}

impl AuditWriter {
    /// Write several events; they usually land in the same batch. Fails if any is not recorded.
    pub async fn record_all(&self, events: Vec<AuditEvent>) -> Result<(), Error> {
        let results = futures::future::join_all(events.into_iter().map(|e| self.record(e))).await;
        results.into_iter().collect()
    }
}

async fn run(
    options: Arc<PgConnectOptions>,
    mut rx: mpsc::Receiver<Job>,
    metrics: Metrics,
    key: AuditKey,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // the chain head this writer last committed; None = unknown (read it under the lock)
    let mut head: Option<Head> = None;
    let mut conn: Option<crate::batch::WorkerConnection> = None;
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // all senders gone: app shut down
        }
        let events: Vec<&AuditEvent> = batch.iter().map(|(e, _)| e).collect();
        let written = match crate::batch::open(&mut conn, &options).await {
            Ok(c) => match tokio::time::timeout(
                crate::batch::CLIENT_STATEMENT_TIMEOUT,
                append(c, &mut head, &events, &key),
            )
            .await
            {
                Ok(done) => done,
                // no answer at all: a dead connection; the batch may or may not have
                // committed, so the next one reads the head under the lock
                Err(_) => {
                    head = None;
                    Err(crate::batch::timed_out("the audit write"))
                }
            },
            Err(e) => Err(e),
        };
        let ok = match written {
            Ok(()) => true,
            Err(e) => {
                if crate::batch::broken(&e) {
                    conn = None;
                }
                let code = match &e {
                    sqlx::Error::Database(db) => {
                        db.code().map(|c| c.to_string()).unwrap_or_default()
                    }
                    _ => "connection".to_string(),
                };
                tracing::error!(events = batch.len(), sqlstate = %code, "audit write failed");
                metrics
                    .audit_write_failures_total
                    .inc_by(batch.len() as u64);
                false
            }
        };
        for (_, ack) in batch.drain(..) {
            let _ = ack.send(ok);
        }
    }
}

/// Canonical bytes of one record, hashed into the chain. Field order is fixed.
pub fn canonical(id: i64, at: DateTime<Utc>, e: &AuditEvent) -> Vec<u8> {
    let v = serde_json::json!([
        id,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.actor_id,
        e.actor_role,
        e.action,
        e.resource_type,
        e.resource_id,
        e.patient_id,
        e.outcome.as_str(),
        e.client_ip,
        e.user_agent,
        e.request_id,
        e.purpose,
    ]);
    v.to_string().into_bytes()
}

/// Unkeyed chain hash (hash scheme 0): rows written before migration 0130 only.
pub fn chain_hash(prev: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().to_vec()
}

/// Write one event synchronously, without a writer task (CLI subcommands).
pub async fn write_now(
    pool: &PgPool,
    key: &AuditKey,
    event: &AuditEvent,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    append(&mut conn, &mut None, &[event], key).await
}

/// Append `events` inside the caller's open transaction `conn` (the change's own): take the
/// chain lock (held until that transaction ends), read the head, append. Nothing is durable
/// until the caller commits. The caller should make its change before calling this, so that the
/// lock is held for as short a time as possible.
pub async fn append_in(
    conn: &mut PgConnection,
    key: &AuditKey,
    events: &[&AuditEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    // a bounded lock wait, then the change fails (503) instead of holding its connection and
    // row locks indefinitely
    sqlx::query("SELECT set_config('lock_timeout', $2, true), pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .bind(CHAIN_LOCK_TIMEOUT_MS.to_string())
        .execute(&mut *conn)
        .await?;
    let head: Option<Head> = sqlx::query_as(super::HEAD_SQL)
        .fetch_optional(&mut *conn)
        .await?;
    let head = head.unwrap_or((0, vec![0u8; 32]));
    let rows = Rows::chain(&head, events, key);
    if rows.insert(&mut *conn, head.0).await? {
        Ok(())
    } else {
        // only a writer that does not take the chain lock can get here (none of ours)
        Err(sqlx::Error::Protocol(
            "the audit chain head moved under the chain lock".into(),
        ))
    }
}

/// Append a batch: the fast path after a known head, else (or on a conflict) the locked path.
async fn append(
    conn: &mut PgConnection,
    head: &mut Option<Head>,
    events: &[&AuditEvent],
    key: &AuditKey,
) -> Result<(), sqlx::Error> {
    if let Some(known) = head.take() {
        let rows = Rows::chain(&known, events, key);
        match rows.insert(&mut *conn, known.0).await {
            Ok(true) => {
                *head = Some(rows.head());
                return Ok(());
            }
            // another writer appended: fall through to the locked path
            Ok(false) => {}
            Err(e) if is_id_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let mut attempt = 1;
    loop {
        match write_locked(conn, events, key).await {
            Ok(Some(new_head)) => {
                *head = Some(new_head);
                return Ok(());
            }
            Ok(None) if attempt < LOCKED_ATTEMPTS => attempt += 1,
            Err(e) if is_id_conflict(&e) && attempt < LOCKED_ATTEMPTS => attempt += 1,
            Ok(None) => {
                return Err(sqlx::Error::Protocol(
                    "the audit chain head kept moving while appending".into(),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Unique violation on `audit_events.id`: another writer took the id.
fn is_id_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("audit_events_pkey"))
}

/// Under the chain lock: read the head, append, commit. Returns the new head, or `None` when a
/// fast-path writer (which does not take the lock) appended between the head read and the
/// insert (nothing was written; try again).
async fn write_locked(
    conn: &mut PgConnection,
    events: &[&AuditEvent],
    key: &AuditKey,
) -> Result<Option<Head>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let head: Option<Head> = sqlx::query_as(super::HEAD_SQL)
        .fetch_optional(&mut *tx)
        .await?;
    let head = head.unwrap_or((0, vec![0u8; 32]));
    let rows = Rows::chain(&head, events, key);
    if !rows.insert(&mut *tx, head.0).await? {
        return Ok(None); // dropping `tx` rolls back
    }
    tx.commit().await?;
    Ok(Some(rows.head()))
}

/// A chained batch as column arrays for `unnest`.
struct Rows {
    at: DateTime<Utc>,
    id: Vec<i64>,
    actor_id: Vec<Option<Uuid>>,
    actor_role: Vec<Option<String>>,
    action: Vec<String>,
    resource_type: Vec<String>,
    resource_id: Vec<Option<String>>,
    patient_id: Vec<Option<Uuid>>,
    outcome: Vec<&'static str>,
    client_ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    purpose: Vec<Option<String>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    /// The chain head after this batch.
    last: Head,
}

const INSERT_SQL: &str = "INSERT INTO audit_events (id, occurred_at, actor_id, actor_role, action, \
     resource_type, resource_id, patient_id, outcome, client_ip, user_agent, request_id, purpose, \
     prev_hash, hash, hash_scheme) \
     SELECT u.id, $2, u.actor_id, u.actor_role, u.action, u.resource_type, u.resource_id, \
     u.patient_id, u.outcome, u.client_ip, u.user_agent, u.request_id, u.purpose, u.prev_hash, u.hash, \
     1::smallint \
     FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], \
     $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bytea[], \
     $16::bytea[]) AS u(id, actor_id, actor_role, action, resource_type, resource_id, patient_id, \
     outcome, client_ip, user_agent, request_id, purpose, prev_hash, hash) \
     WHERE COALESCE((SELECT max(id) FROM audit_events), $1) <= $1 \
     AND (SELECT pg_try_advisory_xact_lock($17))";

impl Rows {
    /// Ids and keyed hashes continuing the chain after `head`; one timestamp for the batch.
    fn chain(head: &Head, events: &[&AuditEvent], key: &AuditKey) -> Self {
        let now = Utc::now();
        let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        let n = events.len();
        let mut r = Rows {
            at,
            id: Vec::with_capacity(n),
            actor_id: Vec::with_capacity(n),
            actor_role: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            resource_type: Vec::with_capacity(n),
            resource_id: Vec::with_capacity(n),
            patient_id: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            client_ip: Vec::with_capacity(n),
            user_agent: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            purpose: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            last: head.clone(),
        };
        let (mut id, mut prev) = (head.0, head.1.clone());
        for e in events {
            id += 1;
            let hash = key.chain_hash(&prev, &canonical(id, at, e));
            r.id.push(id);
            r.actor_id.push(e.actor_id);
            r.actor_role.push(e.actor_role.clone());
            r.action.push(e.action.clone());
            r.resource_type.push(e.resource_type.clone());
            r.resource_id.push(e.resource_id.clone());
            r.patient_id.push(e.patient_id);
            r.outcome.push(e.outcome.as_str());
            r.client_ip.push(e.client_ip.clone());
            r.user_agent.push(e.user_agent.clone());
            r.request_id.push(e.request_id.clone());
            r.purpose.push(e.purpose.clone());
            r.prev_hash.push(std::mem::replace(&mut prev, hash.clone()));
            r.hash.push(hash);
        }
        r.last = (id, prev);
        r
    }

    /// The chain head after this batch.
    fn head(&self) -> Head {
        self.last.clone()
    }

    /// One statement; `false` if rows after `after_id` exist (nothing was inserted).
    async fn insert<'e>(
        &self,
        db: impl PgExecutor<'e>,
        after_id: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(INSERT_SQL)
            .bind(after_id)
            .bind(self.at)
            .bind(&self.id)
            .bind(&self.actor_id)
            .bind(&self.actor_role)
            .bind(&self.action)
            .bind(&self.resource_type)
            .bind(&self.resource_id)
            .bind(&self.patient_id)
            .bind(&self.outcome)
            .bind(&self.client_ip)
            .bind(&self.user_agent)
            .bind(&self.request_id)
            .bind(&self.purpose)
            .bind(&self.prev_hash)
            .bind(&self.hash)
            .bind(CHAIN_LOCK)
            .execute(db)
            .await?;
        Ok(done.rows_affected() == self.id.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::INSERT_SQL;
    use sqlx::PgPool;

    /// The append statement is prepared once and then runs on Postgres' cached generic plan. Its
    /// "no rows beyond the head" guard must reach `audit_events` through the primary key: a
    /// sequential scan there makes every batch read the whole, ever-growing audit trail.
    #[sqlx::test]
    async fn the_append_guard_never_scans_the_audit_trail(pool: PgPool) {
        let mut conn = pool.acquire().await.expect("connection");
        sqlx::raw_sql(
            "INSERT INTO audit_events (id, occurred_at, action, resource_type, outcome, prev_hash, hash, hash_scheme) \
             SELECT g, now(), 'test', 'test', 'success', '\\x00', '\\x00', 1 \
             FROM generate_series(1, 2000) g; ANALYZE audit_events",
        )
        .execute(&mut *conn)
        .await
        .expect("seed");
        let args = ["2000".to_string(), "now()".to_string()]
            .into_iter()
            .chain(std::iter::repeat_n("'{}'".to_string(), 14))
            .chain(std::iter::once(super::CHAIN_LOCK.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let plan = crate::testing::generic_plan(&mut conn, "append", INSERT_SQL, &args).await;
        assert!(plan.contains("audit_events_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan on audit_events"), "{plan}");
    }
}
