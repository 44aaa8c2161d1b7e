//! Prescriptions: `POST/GET /prescriptions`, `GET /prescriptions/{id}`,
//! `POST /prescriptions/{id}/discontinue`.
//!
//! * Only physicians prescribe and discontinue; physicians and nurses read within the patient's
//!   care team (a physician may break the glass); a patient reads their own (others: `404`).
//! * Every clinical field is encrypted per column (AAD `prescriptions`, row id, column).
//! * On create, inside one transaction that locks the patient row (so two concurrent
//!   prescriptions for one patient cannot miss each other), the new medication is checked against
//!   the patient's active prescriptions, the record's `medications` and `allergies`
//!   ([`interactions`]). A `major` finding answers `409` with the list in `interactions`, unless
//!   `override_reason` is given: then it is created, the findings are stored with it, and the
//!   override is audited as `prescription.interaction_override` with the reason as `purpose`.
//!   Moderate and minor findings never block; they are returned in `interactions`.

pub mod interactions;
pub mod model;

use model::{aad, PrescriptionRow};
pub use model::{
    Medication, NewPrescription, Prescription, PrescriptionStatus, RouteOfAdministration,
    ENC_COLUMNS, TABLE,
};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Map};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::access::{self, AccessLog, Need, PatientScoped, Select, Target};
use crate::audit::{AuditEvent, Outcome};
use crate::auth::{AuthUser, Authorized};
use crate::error::ApiQuery;
use crate::error::{ApiJson, Error};
use crate::pagination::{ListScope, Page, PageParams};
use crate::patients::model as patient_model;
use crate::rbac::{perm, Permission};
use crate::state::AppState;
use crate::store::patients::{access_days, in_care_team_sql};
use sqlx::{Postgres, QueryBuilder};

use interactions::{Existing, Formulary, Interaction, Severity, Source};

/// Audit action names of this module (stable; clients filter on them).
pub mod actions {
    pub const CREATE: &str = "prescription.create";
    pub const READ: &str = "prescription.read";
    pub const LIST: &str = "prescription.list";
    pub const DISCONTINUE: &str = "prescription.discontinue";
    /// A major interaction was overridden (`purpose` = the override reason).
    pub const INTERACTION_OVERRIDE: &str = "prescription.interaction_override";
    /// A prescription was refused because of a major interaction (outcome `denied`).
    pub const INTERACTION_REFUSED: &str = "prescription.interaction_refused";
}

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/prescriptions", get(list).post(create))
        .route("/prescriptions/{id}", get(read))
        .route("/prescriptions/{id}/discontinue", post(discontinue))
}

fn interaction_conflict(found: &[Interaction]) -> Error {
    let mut ext = Map::new();
    ext.insert("interactions".into(), json!(found));
    Error::Conflict {
        detail: "major interaction with the patient's medications or allergies; review the interactions, or prescribe with override_reason".into(),
        extensions: ext,
    }
}

/// Prescribe (physicians). Checked against active prescriptions, the record's medications and allergies.
#[utoipa::path(post, path = "/api/v1/prescriptions", tag = "prescriptions", request_body = NewPrescription,
    params(("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited, limited per user and hour)")),
    responses((status = 201, body = Prescription), (status = 403, body = crate::error::Problem),
              (status = 409, description = "major interaction (listed in `interactions`); resend with `override_reason` to prescribe anyway (audited, as break-glass too when opened so)", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PrescriptionCreate>,
    ApiJson(body): ApiJson<NewPrescription>,
) -> Result<(StatusCode, Json<Prescription>), Error> {
    let formulary = Formulary::load(&state.pool).await?;
    let mut tx = state.pool.begin().await?;
    // lock the patient: concurrent prescriptions for one patient are checked one after the other
    let sql = format!(
        "SELECT {}, {} AS in_care_team FROM patients p \
         WHERE p.id = $1 AND p.deleted_at IS NULL FOR UPDATE OF p",
        patient_model::ROW_COLUMNS,
        in_care_team_sql("$2", "$3")
    );
    let patient: patient_model::PatientRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(body.patient_id)
        .bind(auth.user_id)
        .bind(access_days(state.config.care_team_access_days))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::validation("patient_id", "no such patient"))?;
    let access = access::decide(&auth, body.patient_id, patient.in_care_team, Need::Clinical);
    if !access.clinical() {
        drop(tx);
        let target = Target {
            resource_type: PrescriptionRow::RESOURCE.resource_type,
            resource_id: None,
            patient: body.patient_id,
        };
        return Err(access::refuse(&state, &auth, &target, access).await);
    }
    let phi = patient_model::decrypt(&state.keys, &patient)?;
    let active: Vec<(Uuid, Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, medication_name, medication_code FROM prescriptions \
         WHERE patient_id = $1 AND status = 'active' AND ends_at > now() ORDER BY id",
    )
    .bind(body.patient_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut existing = Vec::with_capacity(active.len() + phi.medications.len());
    for (id, name, code) in &active {
        let name = state.keys.decrypt_str(aad(*id, "medication_name"), name)?;
        let code = code
            .as_ref()
            .map(|c| state.keys.decrypt_str(aad(*id, "medication_code"), c))
            .transpose()?;
        existing.push(Existing {
            source: Source::Prescription,
            prescription_id: Some(*id),
            terms: formulary.terms(&name, code.as_deref()),
        });
    }
    for m in &phi.medications {
        existing.push(Existing {
            source: Source::MedicationList,
            prescription_id: None,
            terms: formulary.terms(m, None),
        });
    }
    for a in &phi.allergies {
        existing.push(Existing {
            source: Source::Allergy,
            prescription_id: None,
            terms: formulary.terms(a, None),
        });
    }
    let new_terms = formulary.terms(&body.medication.name, body.medication.code.as_deref());
    let found = formulary.check(&new_terms, &existing);
    let major = found.iter().any(|i| i.severity == Severity::Major);
    let override_reason = body
        .override_reason
        .as_deref()
        .map(str::trim)
        .filter(|_| major);
    if major && override_reason.is_none() {
        drop(tx);
        // the refusal discloses facts about the record (allergies, medications): audit it (fail
        // closed) before answering — through break-glass as a break-glass opening too
        let refused = AuditEvent::by(&auth, actions::INTERACTION_REFUSED, "prescription")
            .patient(body.patient_id)
            .outcome(Outcome::Denied);
        AccessLog::new(PrescriptionRow::RESOURCE.resource_type)
            .add_event(&auth, refused, access)
            .write(&state)
            .await?;
        return Err(interaction_conflict(&found));
    }

    let id = Uuid::now_v7();
    let keys = &state.keys;
    let enc = |col: &str, v: &str| keys.encrypt_str(aad(id, col), v);
    let name = body.medication.name.trim().to_string();
    let code = body
        .medication
        .code
        .as_deref()
        .map(|c| c.trim().to_string());
    let dose = body.dose.trim().to_string();
    let frequency = body.frequency.trim().to_string();
    let notes = body
        .notes
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let stored_interactions = (!found.is_empty())
        .then(|| serde_json::to_string(&found))
        .transpose()
        .map_err(Error::internal)?;
    let starts_at = Utc::now();
    let ends_at = starts_at + Duration::days(i64::from(body.duration_days));
    let (created_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO prescriptions (id, patient_id, prescriber_id, phi_key_id, medication_name, \
         medication_code, dose, route, frequency, notes, override_reason, interactions, \
         duration_days, starts_at, ends_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING created_at",
    )
    .bind(id)
    .bind(body.patient_id)
    .bind(auth.user_id)
    .bind(keys.active_key_id())
    .bind(enc("medication_name", &name))
    .bind(code.as_deref().map(|c| enc("medication_code", c)))
    .bind(enc("dose", &dose))
    .bind(enc("route", body.route.as_str()))
    .bind(enc("frequency", &frequency))
    .bind(notes.as_deref().map(|n| enc("notes", n)))
    .bind(override_reason.map(|r| enc("override_reason", r)))
    .bind(stored_interactions.as_deref().map(|s| enc("interactions", s)))
    .bind(body.duration_days)
    .bind(starts_at)
    .bind(ends_at)
    .fetch_one(&mut *tx)
    .await?;

    let mut log = AccessLog::new(PrescriptionRow::RESOURCE.resource_type).add(
        &auth,
        actions::CREATE,
        id,
        body.patient_id,
        access,
    );
    if let Some(reason) = override_reason {
        if let Some(ev) = log.last_mut() {
            ev.purpose = Some(reason.chars().take(500).collect());
        }
        log.push(
            AuditEvent::by(&auth, actions::INTERACTION_OVERRIDE, "prescription")
                .resource(id)
                .patient(body.patient_id)
                .purpose(reason),
        );
    }
    // the prescription and its audit records commit together: without them it is rolled back
    // (dropping `tx`), so no unaudited prescription exists or takes part in later checks
    log.write_in(&state, &mut tx).await?;
    tx.commit().await?;
    state.metrics.prescriptions_created_total.inc();
    Ok((
        StatusCode::CREATED,
        Json(Prescription {
            id,
            patient_id: body.patient_id,
            prescriber_id: auth.user_id,
            medication: Medication { name, code },
            dose,
            route: body.route,
            frequency,
            duration_days: body.duration_days,
            notes,
            status: PrescriptionStatus::Active,
            starts_at,
            ends_at,
            interactions: found,
            override_reason: override_reason.map(str::to_string),
            discontinued_at: None,
            discontinued_by: None,
            created_at,
            updated_at: created_at,
        }),
    ))
}

/// Read one prescription.
#[utoipa::path(get, path = "/api/v1/prescriptions/{id}", tag = "prescriptions",
    params(("id" = Uuid, Path), ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited, limited per user and hour)")),
    responses((status = 200, body = Prescription), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PrescriptionRead>,
    Path(id): Path<Uuid>,
) -> Result<Json<Prescription>, Error> {
    let (row, access) = access::load::<PrescriptionRow>(&state, &auth, id).await?;
    let p = row.decrypt(&state.keys)?;
    AccessLog::new(PrescriptionRow::RESOURCE.resource_type)
        .add(&auth, actions::READ, id, row.patient_id, access)
        .write(&state)
        .await?;
    Ok(Json(p))
}

/// Filters of `GET /prescriptions`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PrescriptionFilter {
    pub patient_id: Option<Uuid>,
    pub prescriber_id: Option<Uuid>,
    /// `active`, `completed` or `discontinued`.
    pub status: Option<PrescriptionStatus>,
}

/// List prescriptions visible to the caller (oldest first). `X-Break-Glass-Reason` opens only the
/// prescriptions of one patient (`patient_id`); on any other list it changes nothing.
#[utoipa::path(get, path = "/api/v1/prescriptions", tag = "prescriptions",
    params(PrescriptionFilter, PageParams, ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians: opens the prescriptions of one patient (`patient_id`) outside the care team (audited, limited per user and hour); ignored on other lists")),
    responses((status = 200, body = Page<Prescription>), (status = 403, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PrescriptionRead>,
    ApiQuery(filter): ApiQuery<PrescriptionFilter>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<Prescription>>, Error> {
    let scope = ListScope::new("/api/v1/prescriptions", auth.user_id)
        .filter("patient_id", filter.patient_id)
        .filter("prescriber_id", filter.prescriber_id)
        .filter("status", filter.status.map(|s| format!("{s:?}")));
    let paging = page.open::<Uuid>(&state.cursor_key, scope)?;
    // rows without full access are dropped below (admins/receptionists never get here)
    let mut qb = filtered(&state, &auth, &filter, Select::Rows);
    if let Some(c) = paging.after {
        qb.push(" AND r.id > ").push_bind(c);
    }
    qb.push(" ORDER BY r.id LIMIT ").push_bind(paging.limit + 1);
    let rows: Vec<PrescriptionRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = paging.page(rows, |r| r.id);
    let mut items = Vec::with_capacity(page.items.len());
    let mut log = AccessLog::new(PrescriptionRow::RESOURCE.resource_type);
    for row in &page.items {
        let Some(access) = access::visible(&auth, row.patient_id, row.in_care_team, Need::Clinical)
        else {
            continue;
        };
        items.push(row.decrypt(&state.keys)?);
        log = log.add(&auth, actions::LIST, row.id, row.patient_id, access);
    }
    log.or_action(&auth, actions::LIST).write(&state).await?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// How many prescriptions [`list`] finds for `filter` over all its pages: a count over the same
/// scoped and filtered query ([`access::count_visible`]: the rows clinical access opens, no row
/// decrypted), audited like the list it counts (`prescription.list` on the resource type, fail
/// closed). The permission is the list's (admins and receptionists: `403`).
pub async fn total(
    state: &AppState,
    auth: &AuthUser,
    filter: &PrescriptionFilter,
) -> Result<i64, Error> {
    auth.require(state, Permission::PrescriptionRead).await?;
    let qb = filtered(state, auth, filter, Select::Count);
    access::count_visible(state, auth, &PrescriptionRow::RESOURCE, qb, actions::LIST).await
}

/// The query of [`list`] and [`total`]: the caller's scope ([`access::scoped_query`] selecting
/// `select`; break-glass opens only one patient's prescriptions) narrowed by `filter`, without
/// order and paging. The one place both take their filters from.
fn filtered(
    state: &AppState,
    auth: &AuthUser,
    filter: &PrescriptionFilter,
    select: Select,
) -> QueryBuilder<Postgres> {
    let target = match filter.patient_id {
        Some(_) => access::ListTarget::OnePatient,
        None => access::ListTarget::Many,
    };
    let mut qb = access::scoped_query(state, auth, &PrescriptionRow::RESOURCE, target, select);
    if let Some(p) = filter.patient_id {
        qb.push(" AND r.patient_id = ").push_bind(p);
    }
    if let Some(p) = filter.prescriber_id {
        qb.push(" AND r.prescriber_id = ").push_bind(p);
    }
    match filter.status {
        Some(PrescriptionStatus::Active) => {
            qb.push(" AND r.status = 'active' AND r.ends_at > now()");
        }
        Some(PrescriptionStatus::Completed) => {
            qb.push(" AND r.status = 'active' AND r.ends_at <= now()");
        }
        Some(PrescriptionStatus::Discontinued) => {
            qb.push(" AND r.status = 'discontinued'");
        }
        None => {}
    }
    qb
}

/// Every prescription of patient `patient` the caller's clinical access opens (the scope of
/// [`list`] narrowed to that patient, [`access::visible`] with [`Need::Clinical`]), oldest
/// first, NOT audited: for a route that admitted the caller to the patient and audits its
/// access as one (FHIR `Patient/$everything`).
pub async fn of_patient(
    state: &AppState,
    auth: &AuthUser,
    patient: Uuid,
) -> Result<Vec<Prescription>, Error> {
    let mut qb = access::list_query(
        state,
        auth,
        &PrescriptionRow::RESOURCE,
        access::ListTarget::OnePatient,
    );
    qb.push(" AND r.patient_id = ")
        .push_bind(patient)
        .push(" ORDER BY r.id");
    let rows: Vec<PrescriptionRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    rows.iter()
        .filter(|r| access::visible(auth, r.patient_id, r.in_care_team, Need::Clinical).is_some())
        .map(|r| r.decrypt(&state.keys))
        .collect()
}

/// Stop an active prescription (physicians in the care team).
#[utoipa::path(post, path = "/api/v1/prescriptions/{id}/discontinue", tag = "prescriptions", params(("id" = Uuid, Path)),
    responses((status = 200, body = Prescription), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "already discontinued or completed", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn discontinue(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::PrescriptionDiscontinue>,
    Path(id): Path<Uuid>,
) -> Result<Json<Prescription>, Error> {
    discontinue_checked(&state, &auth, id, None).await.map(Json)
}

/// What a caller of [`discontinue_checked`] checks of the prescription as it is before it is
/// stopped (an error refuses the change).
pub type DiscontinueCheck<'a> = &'a (dyn Fn(&Prescription) -> Result<(), Error> + Send + Sync);

/// [`discontinue`] (same access decision, change and audit event), after `check` accepted the
/// prescription as it is: FHIR's `PUT` with `status: stopped` checks `If-Match` and that
/// nothing else of the resource changes. A refusal of `check` changes and audits nothing.
pub async fn discontinue_checked(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
    check: Option<DiscontinueCheck<'_>>,
) -> Result<Prescription, Error> {
    let (mut row, access) = access::load::<PrescriptionRow>(state, auth, id).await?;
    if let Some(check) = check {
        check(&row.decrypt(&state.keys)?)?;
    }
    let mut tx = state.pool.begin().await?;
    let updated: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE prescriptions SET status = 'discontinued', discontinued_at = now(), \
         discontinued_by = $2, updated_at = now() \
         WHERE id = $1 AND status = 'active' AND ends_at > now() RETURNING discontinued_at",
    )
    .bind(id)
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((at,)) = updated else {
        let current = if row.status == "discontinued" {
            "discontinued"
        } else {
            "completed"
        };
        return Err(Error::conflict(format!(
            "the prescription is already {current}"
        )));
    };
    row.status = "discontinued".into();
    row.discontinued_at = Some(at);
    row.discontinued_by = Some(auth.user_id);
    row.updated_at = at;
    let p = row.decrypt(&state.keys)?;
    // the change and its audit record commit together (or not at all)
    AccessLog::new(PrescriptionRow::RESOURCE.resource_type)
        .add(auth, actions::DISCONTINUE, id, row.patient_id, access)
        .write_in(state, &mut tx)
        .await?;
    tx.commit().await?;
    Ok(p)
}
