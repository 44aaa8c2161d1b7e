//! Patients: `POST/GET /patients`, `GET/PATCH/DELETE /patients/{id}`,
//! `POST /patients/{id}/care-team`, `DELETE /patients/{id}/care-team/{user_id}`.
//!
//! PHI is encrypted per column ([`model::encrypt`]); lookups use blind indexes; every access is
//! audited before the response is returned (fail closed). Record-level access is decided by
//! [`crate::access`]; the SQL lives in [`crate::store::patients`].
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the router and the handlers |
//! | `extract.rs` | [`CallerAndPatient`]: session check and record read in one statement |
//! | `model.rs` | API types, validation, encryption of the PHI columns |
//! | `narrow.rs` | [`Narrowing`]: conditions checked on the decrypted record (FHIR `given`, `gender`) |

mod extract;
pub mod model;
mod narrow;

pub use extract::CallerAndPatient;
pub use narrow::Narrowing;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::access::{self, AccessLog, Need, Resource, Target};
use crate::audit::{actions, AuditEvent, Outcome};
use crate::auth::{AuthUser, Authorized};
use crate::error::ApiQuery;
use crate::error::{validated, ApiJson, Error, FieldError, Validate};
use crate::pagination::{ListScope, Page, PageParams};
use crate::rbac::{perm, Permission, Role};
use crate::state::AppState;
use crate::store::patients::{
    mrn_taken_under_other_keys, write_phi, Inserted, PendingPatient, ROW_COLUMNS,
};
use sqlx::{Postgres, QueryBuilder};

use model::{NewPatient, Patient, PatientPatch, PatientRow};

/// Patient records for [`crate::access`].
const PATIENTS: Resource = Resource {
    resource_type: "patient",
    columns: ROW_COLUMNS,
    from: "patients p",
    id_col: "p.id",
    patient_col: "p.id",
    need: access::Need::Record,
};

/// Count one patient operation (`create`, `read`, `list`, `update`, `delete`).
fn count(state: &AppState, operation: &str) {
    state
        .metrics
        .patient_operations_total
        .with_label_values(&[operation])
        .inc();
}

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/patients", get(list).post(create))
        .route("/patients/{id}", get(read).patch(update).delete(remove))
        .route("/patients/{id}/care-team", post(add_care_team))
        .route(
            "/patients/{id}/care-team/{user_id}",
            delete(remove_care_team),
        )
}

impl Validate for NewPatient {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errs = self.check();
        validated(errs)
    }
}

impl Validate for PatientPatch {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(()) // checked on the merged record
    }
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
        // written in the insert's own transaction (see `PatientInsert`)
        event: AuditEvent::by(&auth, actions::PATIENT_CREATE, "patient")
            .resource(id)
            .patient(id),
    };
    let created_at = match state.patient_inserts.get(pending).await? {
        Some(Inserted::Created(t)) => t,
        Some(Inserted::MrnTaken) => {
            return Err(Error::conflict("a patient with this MRN already exists"))
        }
        Some(Inserted::Unaudited) => return Err(Error::AuditUnavailable),
        Some(Inserted::Failed) | None => {
            return Err(Error::internal(anyhow::anyhow!("patient insert failed")))
        }
    };
    state.audit.written(Outcome::Success);
    // registering a patient puts a clinician in the care team
    let access = access::on_write(&auth, id, true);
    count(&state, "create");
    let patient = Patient::from_phi(id, body, access.clinical(), created_at, created_at);
    Ok((StatusCode::CREATED, Json(patient)))
}

/// Read one patient.
#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = Uuid, Path), ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited, limited per user and hour)")),
    responses((status = 200, body = Patient), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem),
              (status = 503, description = "audit trail unavailable", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    caller: CallerAndPatient<perm::PatientRead>,
) -> Result<Json<Patient>, Error> {
    read_for(&state, caller, Need::Record).await.map(Json)
}

/// [`read`] for a route that opens `need` of the record: with [`Need::Clinical`] (FHIR
/// AllergyIntolerance, Condition) a caller with demographic access only is refused and audited
/// like one without any ([`CallerAndPatient::access_for`]), before anything is decrypted.
pub async fn read_for(
    state: &AppState,
    caller: CallerAndPatient<perm::PatientRead>,
    need: Need,
) -> Result<Patient, Error> {
    let (auth, id, row, access) = caller.access_for(state, need).await?;
    let phi = model::decrypt(&state.keys, &row)?;
    AccessLog::new("patient")
        .add(&auth, actions::PATIENT_READ, id, id, access)
        .write(state)
        .await?;
    count(state, "read");
    Ok(Patient::from_phi(
        id,
        phi,
        access.clinical(),
        row.created_at,
        row.updated_at,
    ))
}

/// Whether `id` is a soft-deleted record (kept for the retention period) that the caller could
/// open while it was live: the same decision ([`access::visible`]) on the care-team flag it
/// still has. FHIR answers `410 Gone` then, and `404` to everyone else (existence must not
/// leak). No PHI is read.
pub async fn deleted_and_visible(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
) -> Result<bool, Error> {
    if crate::rbac::hidden_without_lookup(auth.role, auth.patient_id, id) {
        return Ok(false);
    }
    let in_care_team: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM patients p WHERE p.id = $1 AND p.deleted_at IS NOT NULL",
        crate::store::patients::in_care_team_sql("$2", "$3")
    )))
    .bind(id)
    .bind(auth.user_id)
    .bind(crate::store::patients::access_days(
        state.config.care_team_access_days,
    ))
    .fetch_optional(&state.pool)
    .await?;
    Ok(in_care_team
        .is_some_and(|flag| access::visible(auth, id, flag, access::Need::Record).is_some()))
}

/// Filters of `GET /patients`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PatientFilter {
    /// Exact MRN (blind-index lookup).
    pub mrn: Option<String>,
    /// With `birth_date`: exact family name (case-insensitive) and birth date.
    pub family_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// These records only (FHIR `_id`; not a query parameter of `/api/v1`).
    #[serde(skip)]
    #[param(ignore)]
    pub ids: Vec<Uuid>,
    /// Narrowing on the decrypted record (FHIR `given`, `gender`; not query parameters of
    /// `/api/v1`): exact given name (case-insensitive), sex.
    #[serde(skip)]
    #[param(ignore)]
    pub narrow: Narrowing,
}

/// List / search patients visible to the caller. `X-Break-Glass-Reason` opens only an exact-MRN
/// lookup (one record); on any other list or search it changes nothing (the care team's scope).
#[utoipa::path(get, path = "/api/v1/patients", tag = "patients",
    params(PatientFilter, PageParams, ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians: opens the record of an exact `mrn` lookup outside the care team (audited, limited per user and hour); ignored on other lists and searches")),
    responses((status = 200, body = Page<Patient>), (status = 422, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem),
              (status = 503, description = "audit trail unavailable", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiQuery(filter): ApiQuery<PatientFilter>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<Patient>>, Error> {
    auth.require(&state, Permission::PatientList).await?;
    let mut scope = ListScope::new("/api/v1/patients", auth.user_id)
        .filter("mrn", filter.mrn.as_deref())
        .filter("family_name", filter.family_name.as_deref())
        .filter("birth_date", filter.birth_date)
        .filter("ids", Some(ids_key(&filter.ids)));
    if !filter.narrow.is_empty() {
        scope = scope.filter("narrow", Some(filter.narrow.key()));
    }
    let paging = page.open::<Uuid>(&state.cursor_key, scope)?;
    let (mut qb, searched) = filtered_query(&state, &auth, &filter, access::Select::Rows)?;
    if let Some(c) = paging.after {
        qb.push(" AND p.id > ").push_bind(c);
    }
    qb.push(" ORDER BY p.id LIMIT ").push_bind(paging.limit + 1);
    let rows: Vec<PatientRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = paging.page(rows, |r| r.id);
    let action = if searched {
        actions::PATIENT_SEARCH
    } else {
        actions::PATIENT_LIST
    };
    let mut items = Vec::with_capacity(page.items.len());
    let mut log = AccessLog::new("patient");
    for row in &page.items {
        let Some(access) = access::visible(&auth, row.id, row.in_care_team, access::Need::Record)
        else {
            continue;
        };
        let phi = model::decrypt(&state.keys, row)?;
        if !filter.narrow.admits(&phi) {
            log = opened_to_narrow(log, &auth, action, row.id, access);
            continue;
        }
        log = log.add(&auth, action, row.id, row.id, access);
        items.push(Patient::from_phi(
            row.id,
            phi,
            access.clinical(),
            row.created_at,
            row.updated_at,
        ));
    }
    log.or_action(&auth, action).write(&state).await?;
    count(&state, "list");
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// How many records [`list`] finds for `filter`, over all its pages: a count over the same
/// scoped query, of the rows [`access::visible`] opens ([`access::count_visible`]; with a
/// [`Narrowing`], the rows the blind-index or id filter found are decrypted to check it). The
/// count tells whether records match, so it is audited like the list it counts
/// (`patient.search` / `patient.list`, on the resource type: no record is returned).
pub async fn total(
    state: &AppState,
    auth: &AuthUser,
    filter: &PatientFilter,
) -> Result<i64, Error> {
    auth.require(state, Permission::PatientList).await?;
    let action = |searched| {
        if searched {
            actions::PATIENT_SEARCH
        } else {
            actions::PATIENT_LIST
        }
    };
    if filter.narrow.is_empty() {
        let (qb, searched) = filtered_query(state, auth, filter, access::Select::Count)?;
        return access::count_visible(state, auth, &PATIENTS, qb, action(searched)).await;
    }
    let (mut qb, searched) = filtered_query(state, auth, filter, access::Select::Rows)?;
    qb.push(" LIMIT ").push_bind(MAX_NARROWED + 1);
    let rows: Vec<PatientRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    if rows.len() as i64 > MAX_NARROWED {
        return Err(Error::bad_parameter(
            "query",
            "too many records to narrow: search by MRN, ids, or family name with birth date",
        ));
    }
    let mut total = 0;
    let mut log = AccessLog::new("patient");
    for row in &rows {
        let Some(access) = access::visible(auth, row.id, row.in_care_team, access::Need::Record)
        else {
            continue;
        };
        if filter.narrow.admits(&model::decrypt(&state.keys, row)?) {
            total += 1;
        }
        log = opened_to_narrow(log, auth, action(searched), row.id, access);
    }
    log.or_action(auth, action(searched)).write(state).await?;
    Ok(total)
}

/// A record decrypted only to check a [`Narrowing`] (not returned): through break-glass that is
/// an opening of the patient, audited as one (`action` naming the patient, and
/// `patient.break_glass`), as [`access::count_visible`] does for a count; otherwise nothing.
fn opened_to_narrow(
    log: AccessLog,
    auth: &AuthUser,
    action: &str,
    patient: Uuid,
    access: crate::rbac::PatientAccess,
) -> AccessLog {
    if access == crate::rbac::PatientAccess::BreakGlass {
        let ev = AuditEvent::by(auth, action, "patient").patient(patient);
        log.add_event(auth, ev, access)
    } else {
        log
    }
}

/// At most this many records are decrypted to count a [`Narrowing`] ([`total`]) (a blind-index or id
/// filter finds a handful).
const MAX_NARROWED: i64 = 1000;

/// The query of [`list`] and [`total`]: the caller's scope ([`access::scoped_query`]) narrowed
/// by `filter`, without order and paging, selecting `select`; and whether it searches (by MRN or
/// name) rather than lists.
fn filtered_query(
    state: &AppState,
    auth: &AuthUser,
    filter: &PatientFilter,
    select: access::Select,
) -> Result<(QueryBuilder<Postgres>, bool), Error> {
    // break-glass opens an exact-MRN lookup (one record), never a list or a name search
    let target = match (&filter.mrn, &filter.family_name, filter.birth_date) {
        (Some(_), None, None) => access::ListTarget::OnePatient,
        _ => access::ListTarget::Many,
    };
    let mut qb = access::scoped_query(state, auth, &PATIENTS, target, select);
    let searched =
        filter.mrn.is_some() || filter.family_name.is_some() || filter.birth_date.is_some();
    match (&filter.mrn, &filter.family_name, filter.birth_date) {
        (Some(mrn), None, None) => {
            // under every blind-index key of the ring (a rotation may be under way)
            qb.push(" AND p.mrn_bidx = ANY(")
                .push_bind(state.keys.mrn_indexes(mrn).all())
                .push(")");
        }
        (None, Some(name), Some(dob)) => {
            qb.push(" AND p.name_dob_bidx = ANY(")
                .push_bind(state.keys.name_dob_indexes(name, dob).all())
                .push(")");
        }
        (None, None, None) => {}
        _ => {
            return Err(Error::Validation(vec![FieldError::new(
                "query",
                "filter by mrn alone, or by family_name together with birth_date",
            )]))
        }
    }
    if !filter.ids.is_empty() {
        qb.push(" AND p.id = ANY(")
            .push_bind(filter.ids.clone())
            .push(")");
    }
    Ok((qb, searched))
}

/// The `ids` filter as it is bound into list cursors.
fn ids_key(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",")
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
        let target = Target {
            resource_type: "patient.clinical",
            resource_id: Some(id),
            patient: id,
        };
        return Err(access::refuse_action(&state, &auth, &target).await);
    }
    let mut phi = model::decrypt(&state.keys, &row)?;
    patch.apply(&mut phi);
    let errs = phi.check();
    if !errs.is_empty() {
        return Err(Error::Validation(errs));
    }
    // optimistic concurrency: the row must be unchanged since it was read; the change and its
    // audit rows commit together (or not at all)
    let mut tx = state.pool.begin().await?;
    let enc = model::encrypt(&state.keys, id, &phi);
    if !mrn_taken_under_other_keys(&mut tx, &[(id, &enc)])
        .await?
        .is_empty()
    {
        return Err(Error::conflict("a patient with this MRN already exists"));
    }
    let written = write_phi(id, enc, row.updated_at, None)
        .build_query_scalar()
        .fetch_optional(&mut *tx)
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
    AccessLog::new("patient")
        .add(&auth, actions::PATIENT_UPDATE, id, id, access)
        .write_in(&state, &mut tx)
        .await?;
    tx.commit().await?;
    count(&state, "update");
    Ok(Json(Patient::from_phi(
        id,
        phi,
        access.clinical(),
        row.created_at,
        updated_at,
    )))
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
    let mut tx = state.pool.begin().await?;
    let deleted: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "UPDATE patients SET deleted_at = now(), deleted_by = $2 WHERE id = $1 AND deleted_at IS NULL \
         RETURNING deleted_at",
    )
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    deleted.ok_or(Error::NotFound)?;
    // the delete and its audit row commit together (or not at all)
    let event = AuditEvent::by(&auth, actions::PATIENT_DELETE, "patient")
        .resource(id)
        .patient(id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    count(&state, "delete");
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
    check_care_team_assigner(&state, &auth, id).await?;
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
    // the grant and its audit record commit together (or not at all)
    let event = AuditEvent::by(&auth, actions::CARE_TEAM_ADD, "care_team")
        .resource(body.user_id)
        .patient(id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CareTeamMember {
            patient_id: id,
            user_id: body.user_id,
        }),
    ))
}

/// The caller may assign (and revoke) members of live patient `id`'s care team
/// ([`access::may_assign_care_team`]): `404` for a missing patient, `403` (audited) otherwise.
async fn check_care_team_assigner(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
) -> Result<(), Error> {
    let in_care_team = crate::store::patients::in_care_team(
        &state.pool,
        id,
        auth.user_id,
        state.config.care_team_access_days,
    )
    .await?;
    let Some(in_care_team) = in_care_team else {
        return Err(Error::NotFound);
    };
    if !access::may_assign_care_team(auth, id, in_care_team) {
        let target = Target {
            resource_type: "care_team",
            resource_id: Some(id),
            patient: id,
        };
        return Err(access::refuse_action(state, auth, &target).await);
    }
    Ok(())
}

/// Audit action of a revoked care-team assignment (resource: the member's user id).
pub const CARE_TEAM_REMOVE: &str = "patient.care_team_remove";

/// Revoke a clinician's explicit assignment to a patient's care team (who may assign may
/// revoke). Registering the patient and a recent appointment (`CADUCEUS_CARE_TEAM_ACCESS_DAYS`)
/// still count: this removes the assignment only.
#[utoipa::path(delete, path = "/api/v1/patients/{id}/care-team/{user_id}", tag = "patients",
    params(("id" = Uuid, Path, description = "the patient"), ("user_id" = Uuid, Path, description = "the assigned physician or nurse")),
    responses((status = 204, description = "the assignment is revoked (audited as `patient.care_team_remove`)"),
              (status = 403, body = crate::error::Problem),
              (status = 404, description = "no such patient, or the user is not assigned to its care team", body = crate::error::Problem),
              (status = 503, description = "audit trail unavailable", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn remove_care_team(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::CareTeamAssign>,
    Path((id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    check_care_team_assigner(&state, &auth, id).await?;
    let mut tx = state.pool.begin().await?;
    let removed = sqlx::query("DELETE FROM care_team WHERE patient_id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    // the revocation and its audit record commit together (or not at all)
    let event = AuditEvent::by(&auth, CARE_TEAM_REMOVE, "care_team")
        .resource(user_id)
        .patient(id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
