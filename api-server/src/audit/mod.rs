//! Audit trail: chain verification, retention of the trail and the undo of unaudited changes;
//! the admin endpoints (`/audit-events`, `/audit-events/verify`) are in [`routes`]. The events, their
//! action names and the group-commit writer live in [`crate::store::audit`] (re-exported here).
//!
//! Record an event with `state.audit.record(AuditEvent::by(&auth, action, resource))`
//! (see [`AuditEvent`] builders) and `?` the result BEFORE returning PHI: an unwritable audit
//! trail turns into `503 audit-unavailable` (fail closed). Events never carry PHI: ids, action
//! names, outcome, client metadata and the stated purpose only. Access to a patient's data is
//! audited through [`crate::access::AccessLog`].

pub use crate::store::audit::{
    actions, write_now, AuditEvent, AuditWriter, Outcome, CHAIN_LOCK, HEAD_SQL,
};
use crate::store::audit::{canonical, chain_hash};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres};
use utoipa::ToSchema;
use uuid::Uuid;

pub mod routes;

/// Result of a chain verification.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VerifyResult {
    pub valid: bool,
    pub checked: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_invalid_id: Option<i64>,
}

#[derive(FromRow)]
struct ChainRow {
    id: i64,
    occurred_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
    action: String,
    resource_type: String,
    resource_id: Option<String>,
    patient_id: Option<Uuid>,
    outcome: String,
    client_ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    purpose: Option<String>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Take back a committed change whose audit record could not be written (fail closed: no change
/// is kept unaudited). `undo` reverses it; if even that fails (typically the database is down as
/// well), the failure is logged, without values, as `what` and the change stays.
pub async fn undo_unaudited(
    pool: &sqlx::PgPool,
    undo: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    what: &str,
) {
    if let Err(e) = undo.execute(pool).await {
        tracing::error!(error = %crate::error::error_kind(&e), change = what, "an unaudited change could not be undone");
    }
}

/// Minimum audit retention enforced by the database trigger (six years).
pub use crate::config::MIN_AUDIT_RETENTION_DAYS as MIN_RETENTION_DAYS;

/// Delete the prefix of the chain older than `max(retention_days, 2190)` days and record the
/// anchor in `audit_purges`. Returns the number of rows deleted.
pub async fn purge_expired(pool: &sqlx::PgPool, retention_days: u32) -> Result<u64, sqlx::Error> {
    let days = retention_days.max(MIN_RETENTION_DAYS) as i32;
    // The runtime role may not delete audit rows: the owner's function does exactly this purge
    // (migration 0110), under the writers' chain lock.
    let deleted: i64 = sqlx::query_scalar("SELECT audit_purge_expired($1)")
        .bind(days)
        .fetch_one(pool)
        .await?;
    Ok(deleted.max(0) as u64)
}

/// Recompute the whole chain from the first record (or the last retention purge's anchor).
pub async fn verify_chain(pool: &sqlx::PgPool) -> Result<VerifyResult, sqlx::Error> {
    let anchor: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT through_id, through_hash FROM audit_purges ORDER BY through_id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let (mut expected_id, mut expected_prev) = match anchor {
        Some((id, hash)) => (id + 1, hash),
        None => (1i64, vec![0u8; 32]),
    };
    let mut checked = 0i64;
    loop {
        let rows: Vec<ChainRow> = sqlx::query_as(
            "SELECT id, occurred_at, actor_id, actor_role, action, resource_type, resource_id, \
             patient_id, outcome, client_ip, user_agent, request_id, purpose, prev_hash, hash \
             FROM audit_events WHERE id >= $1 ORDER BY id LIMIT 2000",
        )
        .bind(expected_id)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(VerifyResult {
                valid: true,
                checked,
                first_invalid_id: None,
            });
        }
        for r in rows {
            checked += 1;
            let outcome = match r.outcome.as_str() {
                "success" => Outcome::Success,
                "denied" => Outcome::Denied,
                _ => Outcome::Error,
            };
            let event = AuditEvent {
                actor_id: r.actor_id,
                actor_role: r.actor_role,
                action: r.action,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                patient_id: r.patient_id,
                outcome,
                client_ip: r.client_ip,
                user_agent: r.user_agent,
                request_id: r.request_id,
                purpose: r.purpose,
            };
            let recomputed = chain_hash(&r.prev_hash, &canonical(r.id, r.occurred_at, &event));
            if r.id != expected_id || r.prev_hash != expected_prev || recomputed != r.hash {
                return Ok(VerifyResult {
                    valid: false,
                    checked,
                    first_invalid_id: Some(r.id),
                });
            }
            expected_prev = r.hash;
            expected_id += 1;
        }
    }
}
