//! Patients: `POST/GET /patients`, `GET/PATCH/DELETE /patients/{id}`,
//! `POST /patients/{id}/care-team`.
//!
//! PHI is encrypted per column ([`model::encrypt`]); lookups use blind indexes; every access is
//! audited before the response is returned (fail closed). Record-level access is decided by
//! [`crate::rbac::patient_access`].

pub mod model;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{actions, AuditEvent};
use crate::auth::{AuthUser, Authorized};
use crate::error::{ApiJson, Error, FieldError, Validate};
use crate::pagination::{Page, PageParams};
use crate::rbac::{self, perm, ListScope, PatientAccess, Permission, Relation, Role};
use crate::state::AppState;

use model::{NewPatient, Patient, PatientPatch, PatientRow, ENC_COLUMNS, ROW_COLUMNS};

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/patients", get(list).post(create))
        .route("/patients/{id}", get(read).patch(update).delete(remove))
        .route("/patients/{id}/care-team", post(add_care_team))
}

/// SQL for "the caller (`me`, an SQL expression) is in the care team of patient `p`": registered
/// the patient, was assigned, or has a non-cancelled appointment with the patient.
pub fn in_care_team_sql(me: &str) -> String {
    format!(
        "(p.created_by = {me} \
         OR EXISTS (SELECT 1 FROM care_team c WHERE c.patient_id = p.id AND c.user_id = {me}) \
         OR EXISTS (SELECT 1 FROM appointments a WHERE a.patient_id = p.id \
                    AND a.practitioner_id = {me} AND a.status <> 'cancelled'))"
    )
}

/// Narrows a list query (`qb`, which joins `patients p` and a `caller` row with `caller.me`) to the
/// records `scope` allows: the caller's own record (`own_patient`, compared with `patient_col`),
/// their care team, or everything. The one place list endpoints apply the list scope.
pub fn push_list_scope(
    qb: &mut QueryBuilder<Postgres>,
    scope: ListScope,
    own_patient: Option<Uuid>,
    patient_col: &str,
) {
    match scope {
        ListScope::OwnRecord => match own_patient {
            Some(pid) => {
                qb.push(format!(" AND {patient_col} = ")).push_bind(pid);
            }
            None => {
                qb.push(" AND false");
            }
        },
        ListScope::CareTeam => {
            qb.push(" AND ").push(in_care_team_sql("caller.me"));
        }
        ListScope::All => {}
    }
}

impl Validate for NewPatient {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errs = self.check();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

impl Validate for PatientPatch {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(()) // checked on the merged record
    }
}

fn relation(auth: &AuthUser, patient_id: Uuid, in_care_team: bool) -> Relation {
    Relation::of(
        auth.role,
        auth.patient_id,
        patient_id,
        in_care_team,
        auth.break_glass_reason.is_some(),
    )
}

/// Decide the caller's access to the live record `row` (`None`: missing or deleted) named `id`,
/// and audit denials. Returns the row and the access level (never `Denied`/`Hidden`).
async fn access_to(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
    row: Option<PatientRow>,
) -> Result<(PatientRow, PatientAccess), Error> {
    // patient accounts learn nothing about other records
    if rbac::hidden_without_lookup(auth.role, auth.patient_id, id) {
        auth.denied(state, "patient", Some(id.to_string()), None)
            .await;
        return Err(Error::NotFound);
    }
    let row: PatientRow = row.ok_or(Error::NotFound)?;
    let access = rbac::patient_access(auth.role, relation(auth, id, row.in_care_team));
    match access {
        PatientAccess::Hidden => {
            auth.denied(state, "patient", Some(id.to_string()), Some(id))
                .await;
            Err(Error::NotFound)
        }
        PatientAccess::Denied => {
            auth.denied(state, "patient", Some(id.to_string()), Some(id))
                .await;
            Err(Error::Forbidden(
                if rbac::allows(auth.role, Permission::BreakGlass) {
                    "not in this patient's care team; a physician may break the glass with an X-Break-Glass-Reason header".into()
                } else {
                    "not in this patient's care team".into()
                },
            ))
        }
        _ => Ok((row, access)),
    }
}

/// Extractor of `GET` and `PATCH /patients/{id}`: the caller, authenticated (see [`AuthUser`])
/// and holding permission `P` (like [`Authorized`]), the path's record id, and the live record
/// with the caller's care-team flag (`None`: missing or deleted). Session and record come from
/// ONE grouped statement ([`SessionPatientLookup`]) instead of two in turn. The record is only
/// fetched, not yet allowed: [`access_to`] decides.
///
/// Refusals keep the order of every other route: 401, then 403, then 400 for a path that is not
/// a UUID (that path gets the plain session check).
pub struct CallerAndPatient<P> {
    auth: AuthUser,
    id: Uuid,
    row: Option<PatientRow>,
    _perm: std::marker::PhantomData<P>,
}

impl<P: perm::Required> axum::extract::FromRequestParts<AppState> for CallerAndPatient<P> {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let claims = crate::auth::verified_claims(parts, state).map_err(Error::into_response)?;
        let path = Path::<Uuid>::from_request_parts(parts, state).await;
        let (session, found) = match &path {
            Ok(Path(id)) => {
                let both = state
                    .patient_reads
                    .get((claims.sid, claims.sub, *id))
                    .await
                    .map_err(Error::into_response)?;
                match both {
                    Some(b) => (Some(b.session), b.patient),
                    None => (None, None),
                }
            }
            Err(_) => {
                let session = state
                    .sessions
                    .get((claims.sid, claims.sub))
                    .await
                    .map_err(Error::into_response)?;
                (session, None)
            }
        };
        let auth = AuthUser::from_session(parts, state, &claims, session)
            .await
            .map_err(Error::into_response)?;
        auth.require(state, P::PERMISSION)
            .await
            .map_err(Error::into_response)?;
        match path {
            Ok(Path(id)) => Ok(Self {
                auth,
                id,
                row: found,
                _perm: std::marker::PhantomData,
            }),
            Err(rejection) => Err(rejection.into_response()),
        }
    }
}

impl<P> CallerAndPatient<P> {
    /// The caller, the record id, the record and the caller's access to it.
    async fn access(
        self,
        state: &AppState,
    ) -> Result<(AuthUser, Uuid, PatientRow, PatientAccess), Error> {
        let (row, access) = access_to(state, &self.auth, self.id, self.row).await?;
        Ok((self.auth, self.id, row, access))
    }
}

/// Grouped session check and patient read: key = (session id, user id) of a verified access
/// token and the patient id of the path. No row: no such session for this user. Otherwise the
/// session's state ([`crate::auth::SessionCheck`]) and, when live, the record's ciphertexts with
/// the caller's care-team flag (see [`crate::batch`]).
pub struct SessionPatientLookup;

/// What [`SessionPatientLookup`] finds for one key.
pub struct SessionAndPatient {
    session: crate::auth::SessionCheck,
    patient: Option<PatientRow>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for SessionAndPatient {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let found: bool = row.try_get("patient_found")?;
        Ok(Self {
            session: crate::auth::SessionCheck::from_row(row)?,
            patient: if found {
                Some(PatientRow::from_row(row)?)
            } else {
                None
            },
        })
    }
}

pub(crate) static SESSION_PATIENT_LOOKUP_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT q.ord, {}, p.id IS NOT NULL AS patient_found, {ROW_COLUMNS}, \
             {} AS in_care_team \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) WITH ORDINALITY AS q(sid, uid, pid, ord) \
             JOIN sessions s ON s.id = q.sid AND s.user_id = q.uid \
             JOIN users u ON u.id = s.user_id \
             LEFT JOIN patients p ON p.id = q.pid AND p.deleted_at IS NULL",
            crate::auth::SESSION_COLUMNS,
            in_care_team_sql("q.uid")
        )
    });

impl crate::batch::Lookup for SessionPatientLookup {
    type Key = (Uuid, Uuid, Uuid);
    type Row = SessionAndPatient;
    const NAME: &'static str = "session and patient";

    async fn fetch(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[(Uuid, Uuid, Uuid)],
    ) -> Result<Vec<(usize, SessionAndPatient)>, sqlx::Error> {
        let mut sids = Vec::with_capacity(keys.len());
        let mut uids = Vec::with_capacity(keys.len());
        let mut pids = Vec::with_capacity(keys.len());
        for (sid, uid, pid) in keys {
            sids.push(*sid);
            uids.push(*uid);
            pids.push(*pid);
        }
        let rows: Vec<SessionAndPatient> =
            sqlx::query_as(sqlx::AssertSqlSafe(SESSION_PATIENT_LOOKUP_SQL.as_str()))
                .bind(&sids)
                .bind(&uids)
                .bind(&pids)
                .fetch_all(conn)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (crate::batch::index(r.session.ord), r))
            .collect())
    }
}

/// Grouped patient registration (see [`crate::batch`]): every `POST /patients` queued while a
/// batch is in flight is inserted by ONE statement and made durable by ONE commit, instead of a
/// transaction (and a WAL flush) each.
///
/// The statement is idempotent, as the batcher requires (it re-runs a batch whose connection
/// broke, possibly after the first run committed): `ON CONFLICT DO NOTHING` skips a row that
/// already exists, and a row whose own id (a fresh UUIDv7, known only to this request) is found
/// in the table counts as created. A row skipped whose id is NOT in the table lost on the MRN:
/// an existing patient, or an earlier row of the same batch with the same MRN. If the statement
/// fails for any other reason, each row is tried alone so that one bad row cannot fail the rest.
pub struct PatientInsert;

/// One patient to insert: its new id, the registering user and the encrypted columns.
pub struct PendingPatient {
    pub id: Uuid,
    pub created_by: Uuid,
    pub enc: model::Encrypted,
}

/// What became of one [`PendingPatient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (and durable: the worker's connection runs with `synchronous_commit = on`).
    Created(chrono::DateTime<chrono::Utc>),
    /// Another live or deleted record has this MRN.
    MrnTaken,
    /// The row failed on its own (logged by SQLSTATE by the worker); nothing was stored.
    Failed,
}

pub(crate) static PATIENT_INSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(
    || {
        let enc = ENC_COLUMNS.join(", ");
        let enc_arrays: String = (0..ENC_COLUMNS.len())
            .map(|i| format!(", ${}::bytea[]", i + 6))
            .collect();
        format!(
            "WITH q AS (SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::text[], \
             $5::uuid[]{enc_arrays}) WITH ORDINALITY \
             AS q(id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc}, ord)), \
             ins AS (INSERT INTO patients (id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc}) \
             SELECT id, mrn_bidx, name_dob_bidx, phi_key_id, created_by, {enc} FROM q ORDER BY ord \
             ON CONFLICT DO NOTHING RETURNING id, created_at) \
             SELECT q.ord, COALESCE(ins.created_at, \
             (SELECT p.created_at FROM patients p WHERE p.id = q.id)) AS created_at \
             FROM q LEFT JOIN ins ON ins.id = q.id"
        )
    },
);

impl PatientInsert {
    async fn insert(
        conn: &mut sqlx::PgConnection,
        rows: &[PendingPatient],
    ) -> Result<Vec<(usize, Inserted)>, sqlx::Error> {
        let mut q = sqlx::query_as::<_, (i64, Option<chrono::DateTime<chrono::Utc>>)>(
            sqlx::AssertSqlSafe(PATIENT_INSERT_SQL.as_str()),
        )
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.enc.mrn_bidx.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.enc.name_dob_bidx.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.enc.key_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.created_by).collect::<Vec<_>>());
        for c in 0..ENC_COLUMNS.len() {
            q = q.bind(
                rows.iter()
                    .map(|r| r.enc.cols[c].as_deref())
                    .collect::<Vec<Option<&[u8]>>>(),
            );
        }
        let found = q.fetch_all(conn).await?;
        Ok(found
            .into_iter()
            .map(|(ord, at)| {
                let outcome = at.map_or(Inserted::MrnTaken, Inserted::Created);
                (crate::batch::index(ord), outcome)
            })
            .collect())
    }
}

impl crate::batch::Lookup for PatientInsert {
    type Key = PendingPatient;
    type Row = Inserted;
    const NAME: &'static str = "patient insert";

    async fn fetch(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[PendingPatient],
    ) -> Result<Vec<(usize, Inserted)>, sqlx::Error> {
        match Self::insert(conn, keys).await {
            Err(sqlx::Error::Database(db))
                if keys.len() > 1 && !crate::batch::is_broken_code(db.code().as_deref()) =>
            {
                tracing::warn!(rows = keys.len(), sqlstate = ?db.code(), "grouped patient insert failed; inserting row by row");
                let mut out = Vec::with_capacity(keys.len());
                for (i, row) in keys.iter().enumerate() {
                    match Self::insert(conn, std::slice::from_ref(row)).await {
                        Ok(mut one) => out.extend(one.pop().map(|(_, r)| (i, r))),
                        Err(sqlx::Error::Database(db))
                            if !crate::batch::is_broken_code(db.code().as_deref()) =>
                        {
                            tracing::error!(sqlstate = ?db.code(), "patient insert failed");
                            out.push((i, Inserted::Failed));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            done => done,
        }
    }
}

/// Record-level access of the caller to patient `id`, for other resources scoped to a patient
/// (appointments, prescriptions). Reads no PHI. Missing or soft-deleted patients and records a
/// patient account may not see answer `404`; clinicians outside the care team without
/// break-glass get `403`. Denials are counted and audited here; the caller audits the access
/// itself (use [`access_events`]-style events: add `.purpose(reason)` and a `patient.break_glass`
/// event when the result is [`PatientAccess::BreakGlass`]).
pub async fn check_access(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
) -> Result<PatientAccess, Error> {
    if rbac::hidden_without_lookup(auth.role, auth.patient_id, id) {
        auth.denied(state, "patient", Some(id.to_string()), None)
            .await;
        return Err(Error::NotFound);
    }
    let in_care_team: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM patients p WHERE p.id = $1 AND p.deleted_at IS NULL",
        in_care_team_sql("$2")
    )))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.pool)
    .await?;
    let in_care_team = in_care_team.ok_or(Error::NotFound)?;
    match rbac::patient_access(auth.role, relation(auth, id, in_care_team)) {
        PatientAccess::Hidden => {
            auth.denied(state, "patient", Some(id.to_string()), Some(id))
                .await;
            Err(Error::NotFound)
        }
        PatientAccess::Denied => {
            auth.denied(state, "patient", Some(id.to_string()), Some(id))
                .await;
            Err(Error::Forbidden("not in this patient's care team".into()))
        }
        access => Ok(access),
    }
}

/// Audit events for a successful patient-scoped access (plus the `patient.break_glass` event,
/// carrying the stated reason, when access came through break-glass).
pub fn access_events(
    auth: &AuthUser,
    action: &str,
    resource_type: &str,
    resource_id: impl ToString,
    patient: Uuid,
    access: PatientAccess,
) -> Vec<AuditEvent> {
    let resource_id = resource_id.to_string();
    let mut ev = AuditEvent::by(auth, action, resource_type)
        .resource(&resource_id)
        .patient(patient);
    let mut out = Vec::with_capacity(2);
    if access == PatientAccess::BreakGlass {
        let reason = auth.break_glass_reason.clone().unwrap_or_default();
        ev = ev.purpose(&reason);
        out.push(
            AuditEvent::by(auth, actions::BREAK_GLASS, resource_type)
                .resource(&resource_id)
                .patient(patient)
                .purpose(&reason),
        );
    }
    out.push(ev);
    out
}

/// Write access events (fail closed) and count break-glass use.
pub async fn audit_access(
    state: &AppState,
    events: Vec<AuditEvent>,
    break_glass: bool,
) -> Result<(), Error> {
    state.audit.record_all(events).await?;
    if break_glass {
        state.metrics.break_glass_access_total.inc();
    }
    Ok(())
}

/// Register a patient.
#[utoipa::path(post, path = "/api/v1/patients", tag = "patients", request_body = NewPatient,
    responses((status = 201, body = Patient), (status = 403, body = crate::error::Problem),
              (status = 409, description = "MRN already exists", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PatientCreate>,
    ApiJson(body): ApiJson<NewPatient>,
) -> Result<(StatusCode, Json<Patient>), Error> {
    let id = Uuid::now_v7();
    let pending = PendingPatient {
        id,
        created_by: auth.user_id,
        enc: model::encrypt(&state.keys, id, &body),
    };
    let created_at = match state.patient_inserts.get(pending).await? {
        Some(Inserted::Created(t)) => t,
        Some(Inserted::MrnTaken) => {
            return Err(Error::conflict("a patient with this MRN already exists"))
        }
        Some(Inserted::Failed) | None => {
            return Err(Error::internal(anyhow::anyhow!("patient insert failed")))
        }
    };
    let access = rbac::patient_access(
        auth.role,
        Relation {
            own_record: false,
            in_care_team: auth.role.is_clinician(),
            break_glass: false,
        },
    );
    let audited = state
        .audit
        .record(
            AuditEvent::by(&auth, actions::PATIENT_CREATE, "patient")
                .resource(id)
                .patient(id),
        )
        .await;
    if let Err(e) = audited {
        // No PHI may be stored without its audit record, and the client is told the create
        // failed (and may retry with the same MRN): take the row back. Nobody has seen it.
        let undo = sqlx::query("DELETE FROM patients WHERE id = $1").bind(id);
        crate::audit::undo_unaudited(&state.pool, undo, "patient create").await;
        return Err(e);
    }
    state
        .metrics
        .patient_operations_total
        .with_label_values(&["create"])
        .inc();
    let patient = Patient::from_phi(id, body, access.clinical(), created_at, created_at);
    Ok((StatusCode::CREATED, Json(patient)))
}

/// Read one patient.
#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = Uuid, Path), ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited)")),
    responses((status = 200, body = Patient), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 503, description = "audit trail unavailable", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    caller: CallerAndPatient<perm::PatientRead>,
) -> Result<Json<Patient>, Error> {
    let (auth, id, row, access) = caller.access(&state).await?;
    let phi = model::decrypt(&state.keys, &row)?;
    audit_access(
        &state,
        access_events(&auth, actions::PATIENT_READ, "patient", id, id, access),
        access == PatientAccess::BreakGlass,
    )
    .await?;
    state
        .metrics
        .patient_operations_total
        .with_label_values(&["read"])
        .inc();
    Ok(Json(Patient::from_phi(
        id,
        phi,
        access.clinical(),
        row.created_at,
        row.updated_at,
    )))
}

/// Filters of `GET /patients`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientFilter {
    /// Exact MRN (blind-index lookup).
    pub mrn: Option<String>,
    /// With `birth_date`: exact family name (case-insensitive) and birth date.
    pub family_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
}

/// List / search patients visible to the caller.
#[utoipa::path(get, path = "/api/v1/patients", tag = "patients", params(PatientFilter, PageParams),
    responses((status = 200, body = Page<Patient>), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(filter): Query<PatientFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<Patient>>, Error> {
    auth.require(&state, Permission::PatientList).await?;
    let limit = page.limit()?;
    let cursor = page.cursor_uuid()?;
    let scope = rbac::patient_list_scope(auth.role, auth.break_glass_reason.is_some());
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {ROW_COLUMNS}, {} AS in_care_team FROM patients p CROSS JOIN (SELECT ",
        in_care_team_sql("caller.me")
    ));
    qb.push_bind(auth.user_id)
        .push("::uuid AS me) caller WHERE p.deleted_at IS NULL");
    let searched =
        filter.mrn.is_some() || filter.family_name.is_some() || filter.birth_date.is_some();
    match (&filter.mrn, &filter.family_name, filter.birth_date) {
        (Some(mrn), None, None) => {
            qb.push(" AND p.mrn_bidx = ")
                .push_bind(state.keys.mrn_index(mrn));
        }
        (None, Some(name), Some(dob)) => {
            qb.push(" AND p.name_dob_bidx = ")
                .push_bind(state.keys.name_dob_index(name, dob));
        }
        (None, None, None) => {}
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "query",
                "filter by mrn alone, or by family_name together with birth_date",
            )]))
        }
    }
    push_list_scope(&mut qb, scope, auth.patient_id, "p.id");
    if let Some(c) = cursor {
        qb.push(" AND p.id > ").push_bind(c);
    }
    qb.push(" ORDER BY p.id LIMIT ").push_bind(limit + 1);
    let rows: Vec<PatientRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = Page::from_rows(rows, limit, |r| r.id.to_string());
    let action = if searched {
        actions::PATIENT_SEARCH
    } else {
        actions::PATIENT_LIST
    };
    let mut items = Vec::with_capacity(page.items.len());
    let mut events = Vec::new();
    let mut used_glass = false;
    for row in &page.items {
        let access = rbac::patient_access(auth.role, relation(&auth, row.id, row.in_care_team));
        let access = match access {
            PatientAccess::Denied | PatientAccess::Hidden => continue,
            a => a,
        };
        used_glass |= access == PatientAccess::BreakGlass;
        let phi = model::decrypt(&state.keys, row)?;
        events.extend(access_events(
            &auth, action, "patient", row.id, row.id, access,
        ));
        items.push(Patient::from_phi(
            row.id,
            phi,
            access.clinical(),
            row.created_at,
            row.updated_at,
        ));
    }
    if events.is_empty() {
        events.push(AuditEvent::by(&auth, action, "patient"));
    }
    audit_access(&state, events, used_glass).await?;
    state
        .metrics
        .patient_operations_total
        .with_label_values(&["list"])
        .inc();
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Update a patient. Demographics-only callers (admin, receptionist) may not change clinical fields.
#[utoipa::path(patch, path = "/api/v1/patients/{id}", tag = "patients", params(("id" = Uuid, Path)),
    request_body = PatientPatch,
    responses((status = 200, body = Patient), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: CallerAndPatient<perm::PatientUpdate>,
    ApiJson(patch): ApiJson<PatientPatch>,
) -> Result<Json<Patient>, Error> {
    let (auth, id, row, access) = caller.access(&state).await?;
    if patch.touches_clinical() && !access.clinical() {
        auth.denied(&state, "patient.clinical", Some(id.to_string()), Some(id))
            .await;
        return Err(Error::Forbidden(
            "the clinical fields of this record may only be changed by its care team".into(),
        ));
    }
    let mut phi = model::decrypt(&state.keys, &row)?;
    let before = phi.clone();
    patch.apply(&mut phi);
    let errs = phi.check();
    if !errs.is_empty() {
        return Err(Error::Validation(errs));
    }
    // optimistic concurrency: the row must be unchanged since it was read
    let written = write_phi(
        id,
        model::encrypt(&state.keys, id, &phi),
        row.updated_at,
        None,
    )
    .build_query_scalar()
    .fetch_optional(&state.pool)
    .await;
    let updated_at: Option<chrono::DateTime<chrono::Utc>> = match written {
        Ok(t) => t,
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("patients_mrn_bidx_key") => {
            return Err(Error::conflict("a patient with this MRN already exists"))
        }
        Err(e) => return Err(e.into()),
    };
    let updated_at = updated_at.ok_or_else(|| {
        Error::conflict("the record was changed concurrently; fetch it and retry")
    })?;
    let audited = audit_access(
        &state,
        access_events(&auth, actions::PATIENT_UPDATE, "patient", id, id, access),
        access == PatientAccess::BreakGlass,
    )
    .await;
    if let Err(e) = audited {
        // no unaudited change to PHI: put the previous values back (unless the record changed
        // again meanwhile, which then was audited itself)
        let mut undo = write_phi(
            id,
            model::encrypt(&state.keys, id, &before),
            updated_at,
            Some(row.updated_at),
        );
        crate::audit::undo_unaudited(&state.pool, undo.build(), "patient update").await;
        return Err(e);
    }
    state
        .metrics
        .patient_operations_total
        .with_label_values(&["update"])
        .inc();
    Ok(Json(Patient::from_phi(
        id,
        phi,
        access.clinical(),
        row.created_at,
        updated_at,
    )))
}

/// `UPDATE` of every encrypted column (and blind index) of live patient `id`, only while its
/// `updated_at` is still `expected` (optimistic concurrency); `updated_at` becomes `stamp`
/// (`now()` when `None`). Returns the new `updated_at`.
fn write_phi(
    id: Uuid,
    enc: model::Encrypted,
    expected: chrono::DateTime<chrono::Utc>,
    stamp: Option<chrono::DateTime<chrono::Utc>>,
) -> QueryBuilder<Postgres> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE patients SET updated_at = ");
    match stamp {
        Some(t) => qb.push_bind(t),
        None => qb.push("now()"),
    };
    qb.push(", mrn_bidx = ")
        .push_bind(enc.mrn_bidx)
        .push(", name_dob_bidx = ")
        .push_bind(enc.name_dob_bidx)
        .push(", phi_key_id = ")
        .push_bind(enc.key_id);
    for (c, v) in ENC_COLUMNS.iter().zip(enc.cols) {
        qb.push(", ").push(*c).push(" = ").push_bind(v);
    }
    qb.push(" WHERE deleted_at IS NULL AND id = ")
        .push_bind(id)
        .push(" AND updated_at = ")
        .push_bind(expected)
        .push(" RETURNING updated_at");
    qb
}

/// Soft-delete a patient (admin). The encrypted row is retained; it no longer appears anywhere.
#[utoipa::path(delete, path = "/api/v1/patients/{id}", tag = "patients", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PatientDelete>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "UPDATE patients SET deleted_at = now(), deleted_by = $2 WHERE id = $1 AND deleted_at IS NULL \
         RETURNING deleted_at",
    )
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.pool)
    .await?;
    let deleted_at = deleted_at.ok_or(Error::NotFound)?;
    let audited = state
        .audit
        .record(
            AuditEvent::by(&auth, actions::PATIENT_DELETE, "patient")
                .resource(id)
                .patient(id),
        )
        .await;
    if let Err(e) = audited {
        // no unaudited delete: the record comes back
        let undo = sqlx::query(
            "UPDATE patients SET deleted_at = NULL, deleted_by = NULL \
             WHERE id = $1 AND deleted_at = $2",
        )
        .bind(id)
        .bind(deleted_at);
        crate::audit::undo_unaudited(&state.pool, undo, "patient delete").await;
        return Err(e);
    }
    state
        .metrics
        .patient_operations_total
        .with_label_values(&["delete"])
        .inc();
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /patients/{id}/care-team` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CareTeamRequest {
    /// A physician or nurse account.
    pub user_id: Uuid,
}

impl Validate for CareTeamRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// A care-team membership.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CareTeamMember {
    pub patient_id: Uuid,
    pub user_id: Uuid,
}

/// Assign a physician or nurse to a patient's care team.
#[utoipa::path(post, path = "/api/v1/patients/{id}/care-team", tag = "patients", params(("id" = Uuid, Path)),
    request_body = CareTeamRequest,
    responses((status = 201, body = CareTeamMember), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn add_care_team(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::CareTeamAssign>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<CareTeamRequest>,
) -> Result<(StatusCode, Json<CareTeamMember>), Error> {
    let in_care_team: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM patients p WHERE p.id = $1 AND p.deleted_at IS NULL",
        in_care_team_sql("$2")
    )))
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some(in_care_team) = in_care_team else {
        return Err(Error::NotFound);
    };
    if !rbac::may_assign_care_team(auth.role, relation(&auth, id, in_care_team)) {
        auth.denied(&state, "care_team", Some(id.to_string()), Some(id))
            .await;
        return Err(Error::Forbidden(
            "physicians may only assign clinicians to patients in their own care team".into(),
        ));
    }
    let member: Option<(String, bool)> =
        sqlx::query_as("SELECT role, active FROM users WHERE id = $1")
            .bind(body.user_id)
            .fetch_optional(&state.pool)
            .await?;
    match member {
        Some((role, true)) if Role::parse(&role).is_some_and(Role::is_clinician) => {}
        _ => {
            return Err(Error::validation(
                "user_id",
                "must be an active physician or nurse",
            ))
        }
    }
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "INSERT INTO care_team (patient_id, user_id, added_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(body.user_id)
    .bind(auth.user_id)
    .execute(&mut *tx)
    .await?;
    // audited before COMMIT: without its audit record the grant is rolled back (dropping `tx`)
    state
        .audit
        .record(
            AuditEvent::by(&auth, actions::CARE_TEAM_ADD, "care_team")
                .resource(body.user_id)
                .patient(id),
        )
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CareTeamMember {
            patient_id: id,
            user_id: body.user_id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use sqlx::PgPool;

    use super::*;
    use crate::batch::Lookup;

    async fn a_user(pool: &PgPool) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO users (id, email, password_hash, role, display_name) \
             VALUES (gen_random_uuid(), 'rec@example.org', 'x', 'receptionist', 'r') RETURNING id",
        )
        .fetch_one(pool)
        .await
        .expect("user")
    }

    fn pending(keys: &crate::crypto::KeyRing, by: Uuid, mrn: &str) -> PendingPatient {
        let body: NewPatient = serde_json::from_value(serde_json::json!({
            "mrn": mrn, "given_name": "G", "family_name": "F", "birth_date": "1970-01-02",
            "sex": "other", "allergies": [], "medications": [], "conditions": []
        }))
        .expect("patient body");
        let id = Uuid::now_v7();
        PendingPatient {
            id,
            created_by: by,
            enc: model::encrypt(keys, id, &body),
        }
    }

    /// Run one grouped insert; the outcome of each row, in batch order.
    async fn insert(conn: &mut sqlx::PgConnection, batch: &[PendingPatient]) -> Vec<Inserted> {
        let mut rows = PatientInsert.fetch(conn, batch).await.expect("insert");
        rows.sort_by_key(|(i, _)| *i);
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// The batcher re-runs a batch whose connection broke, possibly after the first run
    /// committed: the second run must report the same patients as created, not as MRN clashes.
    #[sqlx::test]
    async fn a_grouped_insert_keeps_the_first_of_an_mrn_and_can_run_twice(pool: PgPool) {
        let keys = crate::testing::test_config().phi_keys;
        let by = a_user(&pool).await;
        let batch = [
            pending(&keys, by, "MRN-1"),
            pending(&keys, by, "MRN-2"),
            pending(&keys, by, "mrn 1"), // normalises to MRN-1: loses to the first row
        ];
        let mut conn = pool.acquire().await.expect("connection");
        let first = insert(&mut conn, &batch).await;
        assert!(matches!(first[0], Inserted::Created(_)), "{first:?}");
        assert!(matches!(first[1], Inserted::Created(_)), "{first:?}");
        assert_eq!(first[2], Inserted::MrnTaken);
        let again = insert(&mut conn, &batch).await;
        assert_eq!(again, first, "a re-run reports the same outcome");
        let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM patients ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("ids");
        let mut expect = vec![batch[0].id, batch[1].id];
        expect.sort();
        assert_eq!(stored, expect);
    }

    #[sqlx::test]
    async fn one_failing_row_does_not_fail_the_rest_of_its_batch(pool: PgPool) {
        let keys = crate::testing::test_config().phi_keys;
        let by = a_user(&pool).await;
        // created_by names no user: a foreign-key violation for that row alone
        let batch = [
            pending(&keys, by, "MRN-a"),
            pending(&keys, Uuid::new_v4(), "MRN-b"),
            pending(&keys, by, "MRN-c"),
        ];
        let mut conn = pool.acquire().await.expect("connection");
        let got = insert(&mut conn, &batch).await;
        assert!(matches!(got[0], Inserted::Created(_)), "{got:?}");
        assert_eq!(got[1], Inserted::Failed);
        assert!(matches!(got[2], Inserted::Created(_)), "{got:?}");
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(stored, 2);
    }

    /// The grouped insert looks in `patients` only for rows the insert skipped (a re-run batch's
    /// or an MRN clash): a correlated subquery, evaluated only when needed. It used to be a join,
    /// which Postgres planned as a hash join over a sequential scan of every patient, per batch,
    /// when the plan was made while the table was small: most of Postgres' CPU in the create
    /// benchmark. (A small table is seeded so that the planner prefers such scans.)
    #[sqlx::test]
    async fn the_grouped_insert_reads_patients_only_for_skipped_rows(pool: PgPool) {
        let by = a_user(&pool).await;
        sqlx::query(
            "INSERT INTO patients (id, mrn_bidx, name_dob_bidx, phi_key_id, mrn, given_name, \
                 family_name, birth_date, sex, allergies, medications, conditions, created_by) \
             SELECT gen_random_uuid(), int4send(g), '\\x00', 'k', '\\x00', '\\x00', '\\x00', \
                 '\\x00', '\\x00', '\\x00', '\\x00', '\\x00', $1 FROM generate_series(1, 300) g",
        )
        .bind(by)
        .execute(&pool)
        .await
        .expect("seed");
        sqlx::query("ANALYZE patients")
            .execute(&pool)
            .await
            .expect("analyze");
        let mut conn = pool.acquire().await.expect("connection");
        let uuids = "ARRAY[gen_random_uuid()]";
        let bytes = "ARRAY['\\x01'::bytea]";
        let mut args = vec![
            uuids.to_string(),
            bytes.into(),
            bytes.into(),
            "ARRAY['k']".into(),
            format!("ARRAY['{by}'::uuid]"),
        ];
        args.extend(ENC_COLUMNS.iter().map(|_| bytes.to_string()));
        let plan = crate::testing::generic_plan(
            &mut conn,
            "insert",
            &PATIENT_INSERT_SQL,
            &args.join(", "),
        )
        .await;
        // the only read of `patients` (besides the INSERT itself) is inside the subplan
        let subplan = plan.find("SubPlan").expect("a subplan");
        for (at, _) in plan.match_indices("on patients p") {
            assert!(at > subplan, "patients is joined:\n{plan}");
        }
    }
}
