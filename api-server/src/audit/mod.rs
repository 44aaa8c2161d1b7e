//! Audit trail: chain verification and retention of the trail;
//! the admin endpoints (`/audit-events`, `/audit-events/verify`) are in [`routes`]. The events, their
//! action names and the group-commit writer live in [`crate::store::audit`] (re-exported here).
//!
//! Record an event with `state.audit.record(AuditEvent::by(&auth, action, resource))`
//! (see [`AuditEvent`] builders) and `?` the result BEFORE returning PHI: an unwritable audit
//! trail turns into `503 audit-unavailable` (fail closed). A change writes its events in its own
//! transaction (`state.audit.write_in(&mut tx, &events)`, before COMMIT): the change and its
//! record are durable together or not at all. Events never carry PHI: ids, action
//! names, outcome, client metadata and the stated purpose only. Access to a patient's data is
//! audited through [`crate::access::AccessLog`].

use crate::crypto::AuditKey;
pub use crate::store::audit::{
    actions, write_now, AuditEvent, AuditWriter, Outcome, CHAIN_LOCK, HEAD_SQL,
};
pub use crate::store::audit::{canonical, chain_hash};
use caduceus_contract::self_report::{AuditCheckpoint, CheckpointCheck, CheckpointStatus};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

pub mod routes;

/// Result of a chain verification.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VerifyResult {
    /// The chain verifies from its start (or the newest purge anchor) to its head, and no
    /// checkpoint passed differs from it or is missing.
    pub valid: bool,
    /// Rows checked.
    pub checked: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_invalid_id: Option<i64>,
    /// Why the chain is not valid (ids only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The checkpoints passed (`?checkpoint=<id>:<hex hash>`), compared with the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<VerifiedCheckpoint>,
}

/// One checkpoint compared with the chain as it is now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub id: i64,
    pub status: CheckpointState,
}

/// `match`: row `id` has the checkpoint's hash; `mismatch`: another hash (history up to `id`
/// was rewritten); `purged`: row `id` is behind the newest purge anchor (retention), nothing to
/// compare; `missing`: row `id` is beyond the head or absent (rows were removed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointState {
    Match,
    Mismatch,
    Purged,
    Missing,
}

impl From<CheckpointCheck> for VerifiedCheckpoint {
    fn from(c: CheckpointCheck) -> Self {
        let status = match c.status {
            CheckpointStatus::Match => CheckpointState::Match,
            CheckpointStatus::Mismatch => CheckpointState::Mismatch,
            CheckpointStatus::Purged => CheckpointState::Purged,
            CheckpointStatus::Missing => CheckpointState::Missing,
        };
        Self { id: c.id, status }
    }
}

impl VerifyResult {
    fn invalid(checked: i64, first_invalid_id: Option<i64>, reason: String) -> Self {
        Self {
            valid: false,
            checked,
            first_invalid_id,
            reason: Some(reason),
            checkpoints: Vec::new(),
        }
    }
}

/// Hash schemes of `audit_events.hash_scheme` (migration 0130).
pub mod hash_scheme {
    /// `sha256(prev_hash || canonical)`: rows written before migration 0130 only.
    pub const SHA256: i16 = 0;
    /// `HMAC-SHA256(audit key, prev_hash || canonical)` ([`crate::crypto::AuditKey`]).
    pub const HMAC_SHA256: i16 = 1;
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
    hash_scheme: i16,
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

/// The checkpoints of a query string (`checkpoint=<id>:<hex hash>`, repeated; other parameters
/// ignored). The error names the problem, never echoes the value.
pub fn checkpoints_from_query(query: Option<&str>) -> Result<Vec<AuditCheckpoint>, String> {
    use caduceus_contract::self_report::{CHECKPOINT_PARAM, MAX_CHECKPOINTS};
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k != CHECKPOINT_PARAM {
            continue;
        }
        if out.len() == MAX_CHECKPOINTS {
            return Err(format!("at most {MAX_CHECKPOINTS} checkpoints"));
        }
        out.push(
            AuditCheckpoint::parse(&v)
                .ok_or_else(|| "expected <id>:<64 hex digits>".to_string())?,
        );
    }
    Ok(out)
}

/// The newest purge anchor `(through_id, through_hash)`, if any.
const ANCHOR_SQL: &str =
    "SELECT through_id, through_hash FROM audit_purges ORDER BY through_id DESC LIMIT 1";

/// Compare checkpoints recorded outside the database with the chain as it is now: one indexed
/// read of the rows they name (cheap enough for every self-report).
pub async fn check_checkpoints(
    db: &mut sqlx::PgConnection,
    checkpoints: &[AuditCheckpoint],
) -> Result<Vec<CheckpointCheck>, sqlx::Error> {
    if checkpoints.is_empty() {
        return Ok(Vec::new());
    }
    let anchor: Option<(i64, Vec<u8>)> =
        sqlx::query_as(ANCHOR_SQL).fetch_optional(&mut *db).await?;
    let ids: Vec<i64> = checkpoints.iter().map(|c| c.id).collect();
    let rows: HashMap<i64, Vec<u8>> =
        sqlx::query_as::<_, (i64, Vec<u8>)>("SELECT id, hash FROM audit_events WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *db)
            .await?
            .into_iter()
            .collect();
    Ok(checkpoints
        .iter()
        .map(|c| {
            let want = hex::decode(&c.hash).unwrap_or_default();
            let same = |h: &[u8]| {
                if h == want.as_slice() {
                    CheckpointStatus::Match
                } else {
                    CheckpointStatus::Mismatch
                }
            };
            let status = match (rows.get(&c.id), &anchor) {
                (Some(hash), _) => same(hash),
                (None, Some((through, hash))) if *through == c.id => same(hash),
                // the empty chain's head (nothing written yet)
                (None, _) if c.id == 0 => same(&[0u8; 32]),
                (None, Some((through, _))) if c.id < *through => CheckpointStatus::Purged,
                (None, _) => CheckpointStatus::Missing,
            };
            CheckpointCheck { id: c.id, status }
        })
        .collect())
}

/// Recompute the whole chain from the first record (or the newest retention purge's anchor).
pub async fn verify_chain(
    pool: &sqlx::PgPool,
    key: &AuditKey,
) -> Result<VerifyResult, sqlx::Error> {
    verify_chain_with(pool, key, &[]).await
}

/// [`verify_chain`], and compare `checkpoints` (recorded outside the database: the operator's
/// status, backup manifests) with the chain: valid only when none differs or is missing.
///
/// The rules (docs/compliance.md, "Audit trail integrity"):
/// - a row of hash scheme 1 must carry `HMAC-SHA256(audit key, prev_hash || canonical)`, one of
///   scheme 0 `sha256(prev_hash || canonical)`, and no scheme-0 row may follow a scheme-1 row
///   (an owner who rewrites history without the key can only write scheme-0 rows);
/// - ids are contiguous and each row's `prev_hash` is the previous row's hash;
/// - the newest purge anchor must sit directly before the first remaining row (`through_id =
///   first id - 1`, and that row's `prev_hash = through_hash`, which its keyed hash covers): an
///   anchor past the rows, or one that no row follows, makes the chain invalid instead of
///   hiding it. Anchors need no MAC of their own: the purge runs as the owner's function, and
///   the first remaining row (keyed, written by the API) is what vouches for the anchor; the
///   API records an `audit.purge` event after every purge that deleted rows, so a row always
///   follows.
///
/// Runs in one repeatable-read snapshot (a purge or append meanwhile does not interleave).
pub async fn verify_chain_with(
    pool: &sqlx::PgPool,
    key: &AuditKey,
    checkpoints: &[AuditCheckpoint],
) -> Result<VerifyResult, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut result = verify_rows(&mut tx, key).await?;
    let checks = check_checkpoints(&mut tx, checkpoints).await;
    tx.commit().await?;
    let checks = checks?;
    if let Some(bad) = checks.iter().find(|c| {
        matches!(
            c.status,
            CheckpointStatus::Mismatch | CheckpointStatus::Missing
        )
    }) {
        if result.valid {
            result.valid = false;
            result.reason = Some(match bad.status {
                CheckpointStatus::Mismatch => format!(
                    "checkpoint {} does not match: the chain up to it was rewritten",
                    bad.id
                ),
                _ => format!("checkpoint {} is missing: audit rows were removed", bad.id),
            });
        }
    }
    result.checkpoints = checks.into_iter().map(Into::into).collect();
    Ok(result)
}

async fn verify_rows(
    tx: &mut sqlx::PgConnection,
    key: &AuditKey,
) -> Result<VerifyResult, sqlx::Error> {
    let anchor: Option<(i64, Vec<u8>)> =
        sqlx::query_as(ANCHOR_SQL).fetch_optional(&mut *tx).await?;
    let first: Option<i64> = sqlx::query_scalar("SELECT min(id) FROM audit_events")
        .fetch_one(&mut *tx)
        .await?;
    let (mut expected_id, mut expected_prev) = match anchor {
        Some((through, hash)) => {
            match first {
                Some(f) if f == through + 1 => {}
                Some(f) => {
                    return Ok(VerifyResult::invalid(
                        0,
                        Some(f),
                        format!(
                            "the newest purge anchor (through id {through}) does not sit directly \
                             before the first remaining row {f}"
                        ),
                    ))
                }
                None => {
                    return Ok(VerifyResult::invalid(
                        0,
                        Some(through),
                        format!(
                        "the purge anchor through id {through} is not confirmed by any audit row"
                    ),
                    ))
                }
            }
            (through + 1, hash)
        }
        None => (1i64, vec![0u8; 32]),
    };
    let mut checked = 0i64;
    let mut keyed_seen = false;
    loop {
        let rows: Vec<ChainRow> = sqlx::query_as(
            "SELECT id, occurred_at, actor_id, actor_role, action, resource_type, resource_id, \
             patient_id, outcome, client_ip, user_agent, request_id, purpose, prev_hash, hash, \
             hash_scheme FROM audit_events WHERE id >= $1 ORDER BY id LIMIT 2000",
        )
        .bind(expected_id)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(VerifyResult {
                valid: true,
                checked,
                first_invalid_id: None,
                reason: None,
                checkpoints: Vec::new(),
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
            let bytes = canonical(r.id, r.occurred_at, &event);
            let reason = if r.id != expected_id {
                Some(format!("row {expected_id} is missing"))
            } else if r.prev_hash != expected_prev {
                Some(format!("row {} does not chain onto its predecessor", r.id))
            } else {
                match r.hash_scheme {
                    hash_scheme::HMAC_SHA256 => {
                        keyed_seen = true;
                        (!key.verify(&r.prev_hash, &bytes, &r.hash))
                            .then(|| format!("row {}: keyed hash does not match", r.id))
                    }
                    hash_scheme::SHA256 if keyed_seen => Some(format!(
                        "row {}: an unkeyed hash after keyed rows (recomputed without the key)",
                        r.id
                    )),
                    hash_scheme::SHA256 => (chain_hash(&r.prev_hash, &bytes) != r.hash)
                        .then(|| format!("row {}: hash does not match", r.id)),
                    other => Some(format!("row {}: unknown hash scheme {other}", r.id)),
                }
            };
            if let Some(reason) = reason {
                return Ok(VerifyResult::invalid(checked, Some(r.id), reason));
            }
            expected_prev = r.hash;
            expected_id += 1;
        }
    }
}
