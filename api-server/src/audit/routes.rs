//! The audit trail's admin endpoints: `GET /audit-events` and `GET /audit-events/verify`.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{actions, checkpoints_from_query, verify_chain_with, AuditEvent, VerifyResult};
use crate::auth::Authorized;
use crate::error::ApiQuery;
use crate::error::Error;
use crate::pagination::{ListScope, Page, PageParams};
use crate::rbac::perm;
use crate::state::AppState;

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
    ApiQuery(filter): ApiQuery<AuditFilter>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<AuditRecord>>, Error> {
    let scope = ListScope::new("/api/v1/audit-events", auth.user_id)
        .filter("actor", filter.actor)
        .filter("patient_id", filter.patient_id)
        .filter("action", filter.action.as_deref())
        .filter("from", filter.from)
        .filter("to", filter.to);
    let paging = page.open::<i64>(&state.cursor_key, scope)?;
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
    if let Some(c) = paging.after {
        qb.push(" AND id < ").push_bind(c);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(paging.limit + 1);
    let rows: Vec<AuditRecord> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = paging.page(rows, |r| r.id);
    state
        .audit
        .record(AuditEvent::by(&auth, actions::AUDIT_READ, "audit_event"))
        .await?;
    Ok(Json(page))
}

/// Parameters of `GET /audit-events/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// A checkpoint recorded outside the database, `<id>:<64 hex digits>` (the chain head
    /// `id` and `hash` of a self-report or a backup manifest); repeat for several (at most 64).
    /// Each is reported as `match`, `mismatch`, `purged` or `missing`; a mismatch or a missing
    /// row makes the result invalid.
    #[param(style = Form, explode, inline, max_items = 64, value_type = Option<Vec<CheckpointParam>>)]
    pub checkpoint: Option<Vec<String>>,
}

/// The schema of one `checkpoint` value (what `checkpoints_from_query` accepts).
#[derive(ToSchema)]
#[schema(pattern = r"^[0-9]{1,18}:[0-9a-fA-F]{64}$")]
#[allow(dead_code)]
struct CheckpointParam(String);

/// Verify the audit hash chain (admin), optionally against checkpoints kept outside the
/// database.
#[utoipa::path(get, path = "/api/v1/audit-events/verify", tag = "audit",
    params(VerifyParams),
    responses((status = 200, body = VerifyResult), (status = 403, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AuditRead>,
    RawQuery(query): RawQuery,
) -> Result<Json<VerifyResult>, Error> {
    let checkpoints = checkpoints_from_query(query.as_deref())
        .map_err(|m| Error::validation("checkpoint", &m))?;
    let result = verify_chain_with(&state.pool, state.keys.audit_key(), &checkpoints).await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::AUDIT_VERIFY, "audit_event"))
        .await?;
    Ok(Json(result))
}
