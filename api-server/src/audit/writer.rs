//! Group-commit audit writer.
//!
//! Requests send an [`AuditEvent`] over a channel with a oneshot ack and wait for it
//! ([`AuditWriter::record`]). One background task drains everything queued, writes the batch in
//! ONE transaction (multi-row INSERT) under a transaction-scoped advisory lock that serialises the
//! hash chain across replicas, and acks every sender after COMMIT. While a batch is being written,
//! new events queue up and form the next batch, so concurrent PHI reads share commits instead of
//! running one transaction each. If the write fails every waiter gets an error (fail closed) and
//! `audit_write_failures_total` grows.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use super::{AuditEvent, CHAIN_LOCK};
use crate::error::Error;
use crate::metrics::Metrics;

const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

type Job = (AuditEvent, oneshot::Sender<bool>);

/// Handle to the background writer; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    metrics: Metrics,
}

impl AuditWriter {
    /// Spawn the writer task on the current runtime.
    pub fn spawn(pool: PgPool, metrics: Metrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx, metrics.clone()));
        Self { tx, metrics }
    }

    /// Write one event durably; returns only after COMMIT. Errors mean "not recorded".
    pub async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let outcome = event.outcome.as_str();
        let (ack, wait) = oneshot::channel();
        if self.tx.send((event, ack)).await.is_err() {
            self.metrics.audit_write_failures_total.inc();
            return Err(Error::AuditUnavailable);
        }
        match wait.await {
            Ok(true) => {
                self.metrics
                    .audit_events_total
                    .with_label_values(&[outcome])
                    .inc();
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

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Job>, metrics: Metrics) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // all senders gone: app shut down
        }
        let events: Vec<&AuditEvent> = batch.iter().map(|(e, _)| e).collect();
        let ok = match write_batch(&pool, &events).await {
            Ok(()) => true,
            Err(e) => {
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
pub(crate) fn canonical(id: i64, at: DateTime<Utc>, e: &AuditEvent) -> Vec<u8> {
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

pub(crate) fn chain_hash(prev: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().to_vec()
}

/// Write one event synchronously, without a writer task (CLI subcommands).
pub async fn write_now(pool: &PgPool, event: &AuditEvent) -> Result<(), sqlx::Error> {
    write_batch(pool, &[event]).await
}

async fn write_batch(pool: &PgPool, events: &[&AuditEvent]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (mut id, mut prev) = head.unwrap_or((0, vec![0u8; 32]));
    let now = Utc::now();
    let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        id += 1;
        let hash = chain_hash(&prev, &canonical(id, at, e));
        rows.push((id, prev.clone(), hash.clone(), *e));
        prev = hash;
    }
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO audit_events (id, occurred_at, actor_id, actor_role, action, resource_type, \
         resource_id, patient_id, outcome, client_ip, user_agent, request_id, purpose, prev_hash, hash) ",
    );
    qb.push_values(rows, |mut b, (id, prev, hash, e)| {
        b.push_bind(id)
            .push_bind(at)
            .push_bind(e.actor_id)
            .push_bind(e.actor_role.clone())
            .push_bind(e.action.clone())
            .push_bind(e.resource_type.clone())
            .push_bind(e.resource_id.clone())
            .push_bind(e.patient_id)
            .push_bind(e.outcome.as_str())
            .push_bind(e.client_ip.clone())
            .push_bind(e.user_agent.clone())
            .push_bind(e.request_id.clone())
            .push_bind(e.purpose.clone())
            .push_bind(prev)
            .push_bind(hash);
    });
    qb.build().execute(&mut *tx).await?;
    tx.commit().await
}
