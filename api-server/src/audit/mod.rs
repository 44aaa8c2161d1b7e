//! Audit trail: events, the group-commit writer, and the admin endpoints.
//!
//! Record an event with `state.audit.record(AuditEvent::new(&auth.meta, action, resource))`
//! (see [`AuditEvent`] builders) and `?` the result BEFORE returning PHI: an unwritable audit
//! trail turns into `503 audit-unavailable` (fail closed). Events never carry PHI: ids, action
//! names, outcome, client metadata and the stated purpose only.

mod writer;

pub use writer::{write_now, AuditWriter};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{AuthUser, Authorized};
use crate::error::Error;
use crate::middleware::RequestMeta;
use crate::pagination::{Page, PageParams};
use crate::rbac::perm;
use crate::state::AppState;

/// Advisory lock key serialising writers of the hash chain (any replica).
pub const CHAIN_LOCK: i64 = 0x00CA_D0CE_A0D1;

/// The chain head `(id, hash)`: the newest audit row or, when retention has purged every row,
/// the newest purge anchor (`audit_purges`), so the chain continues after it instead of
/// restarting at id 1 and the reported head never moves backwards. No row: the empty chain.
pub const HEAD_SQL: &str = "SELECT id, hash FROM ( \
       (SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1) \
       UNION ALL \
       (SELECT through_id, through_hash FROM audit_purges ORDER BY through_id DESC LIMIT 1) \
     ) h ORDER BY id DESC LIMIT 1";

/// Outcome of an audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// Action names used in `audit_events.action` (stable; clients filter on them).
pub mod actions {
    pub const LOGIN_SUCCESS: &str = "auth.login";
    pub const LOGIN_FAILURE: &str = "auth.login_failed";
    pub const LOCKOUT: &str = "auth.lockout";
    pub const REFRESH: &str = "auth.refresh";
    pub const REFRESH_REUSE: &str = "auth.refresh_reuse";
    pub const LOGOUT: &str = "auth.logout";
    pub const REGISTER: &str = "auth.register";
    pub const PERMISSION_DENIED: &str = "access.denied";
    pub const USER_CREATE: &str = "user.create";
    pub const USER_UPDATE: &str = "user.update";
    pub const USER_LIST: &str = "user.list";
    pub const USER_READ: &str = "user.read";
    pub const PATIENT_CREATE: &str = "patient.create";
    pub const PATIENT_READ: &str = "patient.read";
    pub const PATIENT_LIST: &str = "patient.list";
    pub const PATIENT_SEARCH: &str = "patient.search";
    pub const PATIENT_UPDATE: &str = "patient.update";
    pub const PATIENT_DELETE: &str = "patient.delete";
    pub const BREAK_GLASS: &str = "patient.break_glass";
    pub const CARE_TEAM_ADD: &str = "patient.care_team_add";
    pub const AUDIT_READ: &str = "audit.read";
    pub const AUDIT_VERIFY: &str = "audit.verify";
    pub const KEYS_ROTATE: &str = "keys.rotate";
    /// A soft-deleted patient hard-deleted after `CADUCEUS_PATIENT_RETENTION_DAYS` (`serve`).
    pub const PATIENT_PURGE: &str = "patient.purge";
}

/// One audit record before it is chained.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: Outcome,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub purpose: Option<String>,
}

impl AuditEvent {
    /// A successful event with client metadata; no actor yet.
    pub fn new(meta: &RequestMeta, action: &str, resource_type: &str) -> Self {
        Self {
            actor_id: None,
            actor_role: None,
            action: action.to_string(),
            resource_type: resource_type.to_string(),
            resource_id: None,
            patient_id: None,
            outcome: Outcome::Success,
            client_ip: Some(meta.client_ip.clone()),
            user_agent: meta.user_agent.clone(),
            request_id: Some(meta.request_id.clone()),
            purpose: None,
        }
    }

    /// Event performed by an operator through the command line (no HTTP request, no actor).
    pub fn cli(action: &str, resource_type: &str) -> Self {
        Self {
            actor_id: None,
            actor_role: None,
            action: action.to_string(),
            resource_type: resource_type.to_string(),
            resource_id: None,
            patient_id: None,
            outcome: Outcome::Success,
            client_ip: None,
            user_agent: Some(format!("caduceus-api/{} cli", env!("CARGO_PKG_VERSION"))),
            request_id: None,
            purpose: None,
        }
    }

    /// Event performed by the server itself (scheduled maintenance; no request, no actor).
    pub fn system(action: &str, resource_type: &str) -> Self {
        Self {
            user_agent: Some(format!(
                "caduceus-api/{} scheduler",
                env!("CARGO_PKG_VERSION")
            )),
            ..Self::cli(action, resource_type)
        }
    }

    /// Event performed by an authenticated user.
    pub fn by(auth: &AuthUser, action: &str, resource_type: &str) -> Self {
        Self::new(&auth.meta, action, resource_type).actor(auth.user_id, auth.role.as_str())
    }

    pub fn actor(mut self, id: Uuid, role: &str) -> Self {
        self.actor_id = Some(id);
        self.actor_role = Some(role.to_string());
        self
    }

    pub fn resource(mut self, id: impl ToString) -> Self {
        self.resource_id = Some(id.to_string());
        self
    }

    pub fn patient(mut self, id: Uuid) -> Self {
        self.patient_id = Some(id);
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Stated purpose (break-glass reason, override reason). Truncated to 500 characters.
    pub fn purpose(mut self, purpose: &str) -> Self {
        self.purpose = Some(purpose.chars().take(500).collect());
        self
    }
}

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/audit-events", get(list))
        .route("/audit-events/verify", get(verify))
}

/// A stored audit record.
#[derive(Debug, Serialize, FromRow, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub purpose: Option<String>,
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
}

/// Filters for `GET /audit-events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub actor: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// List audit events (admin), newest first.
#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit",
    params(AuditFilter, PageParams),
    responses((status = 200, body = Page<AuditRecord>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AuditRead>,
    Query(filter): Query<AuditFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<AuditRecord>>, Error> {
    let limit = page.limit()?;
    let cursor: Option<i64> = page.cursor_i64()?;
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, occurred_at, actor_id, actor_role, action, resource_type, resource_id, patient_id, \
         outcome, client_ip, user_agent, request_id, purpose, hash FROM audit_events WHERE true",
    );
    if let Some(a) = filter.actor {
        qb.push(" AND actor_id = ").push_bind(a);
    }
    if let Some(p) = filter.patient_id {
        qb.push(" AND patient_id = ").push_bind(p);
    }
    if let Some(a) = &filter.action {
        qb.push(" AND action = ").push_bind(a.clone());
    }
    if let Some(f) = filter.from {
        qb.push(" AND occurred_at >= ").push_bind(f);
    }
    if let Some(t) = filter.to {
        qb.push(" AND occurred_at < ").push_bind(t);
    }
    if let Some(c) = cursor {
        qb.push(" AND id < ").push_bind(c);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
    let rows: Vec<AuditRecord> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = Page::from_rows(rows, limit, |r| r.id.to_string());
    state
        .audit
        .record(AuditEvent::by(&auth, actions::AUDIT_READ, "audit_event"))
        .await?;
    Ok(Json(page))
}

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
        tracing::error!(error = %crate::error_kind(&e), change = what, "an unaudited change could not be undone");
    }
}

/// Minimum audit retention enforced by the database trigger (six years).
pub const MIN_RETENTION_DAYS: u32 = 2190;

/// Delete the prefix of the chain older than `max(retention_days, 2190)` days and record the
/// anchor in `audit_purges`. Returns the number of rows deleted.
pub async fn purge_expired(pool: &sqlx::PgPool, retention_days: u32) -> Result<u64, sqlx::Error> {
    let days = retention_days.max(MIN_RETENTION_DAYS) as i32;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    // the purged prefix ends just before the first row that is still within retention
    let through: Option<i64> = sqlx::query_scalar(
        "SELECT COALESCE( \
           (SELECT min(id) - 1 FROM audit_events WHERE occurred_at >= now() - make_interval(days => $1)), \
           (SELECT max(id) FROM audit_events))",
    )
    .bind(days)
    .fetch_one(&mut *tx)
    .await?;
    let first: Option<i64> = sqlx::query_scalar("SELECT min(id) FROM audit_events")
        .fetch_one(&mut *tx)
        .await?;
    let (Some(through), Some(first)) = (through, first) else {
        return Ok(0);
    };
    if through < first {
        return Ok(0);
    }
    let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE id = $1")
        .bind(through)
        .fetch_one(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM audit_events WHERE id <= $1")
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "INSERT INTO audit_purges (through_id, through_hash, rows_deleted, retention_days) VALUES ($1, $2, $3, $4)",
    )
    .bind(through)
    .bind(hash)
    .bind(deleted as i64)
    .bind(days)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
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
            let recomputed = writer::chain_hash(
                &r.prev_hash,
                &writer::canonical(r.id, r.occurred_at, &event),
            );
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

/// Verify the audit hash chain (admin).
#[utoipa::path(get, path = "/api/v1/audit-events/verify", tag = "audit",
    responses((status = 200, body = VerifyResult), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AuditRead>,
) -> Result<Json<VerifyResult>, Error> {
    let result = verify_chain(&state.pool).await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::AUDIT_VERIFY, "audit_event"))
        .await?;
    Ok(Json(result))
}
