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
use crate::auth::{AuthUser, Authorized};
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
    let query = AuditQuery {
        actor: filter.actor,
        patient_id: filter.patient_id,
        action: filter.action,
        from: filter.from,
        to: filter.to,
        ..Default::default()
    };
    find(&state, &auth, "/api/v1/audit-events", &query, page)
        .await
        .map(Json)
}

/// What a read of the trail asks for: the filters of `GET /audit-events` and those the FHIR
/// `AuditEvent` search adds (all of them must hold).
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// This record only.
    pub id: Option<i64>,
    pub actor: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    /// This action name.
    pub action: Option<String>,
    /// Any of these action names (none: every action).
    pub actions: Vec<String>,
    /// The action's verb, the part after its last dot (`read` of `patient.read`).
    pub verbs: Option<NamePart>,
    /// The action's area, the part before its first dot (`patient` of `patient.read`).
    pub areas: Option<NamePart>,
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to`.
    pub to: Option<DateTime<Utc>>,
}

/// A condition on one part of the action names: one of `values`, or (`negate`) none of them.
#[derive(Debug, Clone)]
pub struct NamePart {
    pub values: Vec<&'static str>,
    pub negate: bool,
}

impl NamePart {
    /// How the condition is bound into list cursors.
    fn key(&self) -> String {
        format!(
            "{}{}",
            if self.negate { "!" } else { "" },
            self.values.join(",")
        )
    }
}

impl AuditQuery {
    /// The cursor scope of this query on list `route`: the filters of `GET /audit-events` as
    /// before, the others only when given.
    fn scope(&self, route: &str, caller: Uuid) -> ListScope {
        let mut scope = ListScope::new(route, caller)
            .filter("actor", self.actor)
            .filter("patient_id", self.patient_id)
            .filter("action", self.action.as_deref())
            .filter("from", self.from)
            .filter("to", self.to);
        if let Some(id) = self.id {
            scope = scope.filter("id", Some(id));
        }
        if !self.actions.is_empty() {
            scope = scope.filter("actions", Some(self.actions.join(",")));
        }
        if let Some(v) = &self.verbs {
            scope = scope.filter("verbs", Some(v.key()));
        }
        if let Some(a) = &self.areas {
            scope = scope.filter("areas", Some(a.key()));
        }
        scope
    }

    /// `AND ...` for each condition.
    fn push_conditions(&self, qb: &mut QueryBuilder<Postgres>) {
        if let Some(id) = self.id {
            qb.push(" AND id = ").push_bind(id);
        }
        if let Some(a) = self.actor {
            qb.push(" AND actor_id = ").push_bind(a);
        }
        if let Some(p) = self.patient_id {
            qb.push(" AND patient_id = ").push_bind(p);
        }
        if let Some(a) = &self.action {
            qb.push(" AND action = ").push_bind(a.clone());
        }
        if !self.actions.is_empty() {
            qb.push(" AND action = ANY(")
                .push_bind(self.actions.clone())
                .push(")");
        }
        for (part, expr) in [
            (&self.verbs, "substring(action from '[^.]*$')"),
            (&self.areas, "split_part(action, '.', 1)"),
        ] {
            if let Some(p) = part {
                let values: Vec<String> = p.values.iter().map(|v| v.to_string()).collect();
                qb.push(if p.negate { " AND NOT " } else { " AND " })
                    .push(expr)
                    .push(" = ANY(")
                    .push_bind(values)
                    .push(")");
            }
        }
        if let Some(f) = self.from {
            qb.push(" AND occurred_at >= ").push_bind(f);
        }
        if let Some(t) = self.to {
            qb.push(" AND occurred_at < ").push_bind(t);
        }
    }
}

/// The audit records `query` selects, newest first, one page of list `route` (for its
/// cursors); the read itself is audited (`audit.read`, fail closed). The caller must hold
/// `AuditRead` (the routes take `Authorized<perm::AuditRead>`).
pub async fn find(
    state: &AppState,
    auth: &AuthUser,
    route: &str,
    query: &AuditQuery,
    page: PageParams,
) -> Result<Page<AuditRecord>, Error> {
    let paging = page.open::<i64>(&state.cursor_key, query.scope(route, auth.user_id))?;
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, occurred_at, actor_id, actor_role, action, resource_type, resource_id, patient_id, \
         outcome, client_ip, user_agent, request_id, purpose, hash FROM audit_events WHERE true",
    );
    query.push_conditions(&mut qb);
    if let Some(c) = paging.after {
        qb.push(" AND id < ").push_bind(c);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(paging.limit + 1);
    let rows: Vec<AuditRecord> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = paging.page(rows, |r| r.id);
    state
        .audit
        .record(AuditEvent::by(auth, actions::AUDIT_READ, "audit_event"))
        .await?;
    Ok(page)
}

/// How many audit records `query` selects (for a FHIR search's `total`; the records
/// themselves are read, and audited, by [`find`]).
pub async fn count(state: &AppState, query: &AuditQuery) -> Result<i64, Error> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT count(*) FROM audit_events WHERE true");
    query.push_conditions(&mut qb);
    Ok(qb.build_query_scalar().fetch_one(&state.pool).await?)
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
