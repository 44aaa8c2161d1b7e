//! Appointments: `POST/GET /appointments`, `GET/PATCH /appointments/{id}`,
//! `POST /appointments/{id}/cancel`.
//!
//! * `reason` is PHI: AES-256-GCM with AAD (`appointments`, row id, `reason`), like patient fields.
//! * Double booking is impossible in the database: the `appointments_no_overlap` exclusion
//!   constraint (migration 0003) refuses overlapping non-cancelled bookings per practitioner, also
//!   between concurrent transactions; SQLSTATE 23P01 becomes `409`.
//! * Record-level access follows [`crate::access`] for the appointment's patient:
//!   the care team (and a patient for their own appointments) sees the `reason`; admins and
//!   receptionists see the schedule without it (`access: "demographics"`); clinicians outside the
//!   care team get `403` (physicians may break the glass); patients get `404` for other people's
//!   appointments.
//! * Every access is audited before the response is returned (fail closed).
//!
//! Status transitions ([`Status::can_become`]), anything else answers `409`:
//!
//! | from | to |
//! |---|---|
//! | `booked` | `arrived`, `cancelled`, `noshow` |
//! | `arrived` | `fulfilled`, `cancelled` (left before being seen) |
//! | `fulfilled`, `cancelled`, `noshow` | — (final) |

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::access::{self, AccessLog, Need, PatientScoped, Resource, Target};
use crate::audit::AuditEvent;
use crate::auth::Authorized;
use crate::crypto::{Aad, KeyRing};
use crate::error::{ApiJson, Error, FieldError, Validate};
use crate::pagination::{Page, PageParams};
use crate::rbac::{perm, PatientAccess, Role};
use crate::state::AppState;

/// Audit action names of this module (stable; clients filter on them).
pub mod actions {
    pub const CREATE: &str = "appointment.create";
    pub const READ: &str = "appointment.read";
    pub const LIST: &str = "appointment.list";
    pub const UPDATE: &str = "appointment.update";
    pub const CANCEL: &str = "appointment.cancel";
}

const TABLE: &str = "appointments";
/// Longest bookable appointment.
pub const MAX_DURATION_HOURS: i64 = 12;
/// Longest `reason`, in characters.
pub const REASON_MAX_CHARS: usize = 1000;

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/appointments", get(list).post(create))
        .route("/appointments/{id}", get(read).patch(update))
        .route("/appointments/{id}/cancel", post(cancel))
}

/// Appointment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Booked,
    Arrived,
    Fulfilled,
    Cancelled,
    Noshow,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Booked,
        Status::Arrived,
        Status::Fulfilled,
        Status::Cancelled,
        Status::Noshow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Booked => "booked",
            Status::Arrived => "arrived",
            Status::Fulfilled => "fulfilled",
            Status::Cancelled => "cancelled",
            Status::Noshow => "noshow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The transition table in the module docs.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Booked, Arrived)
                | (Booked, Cancelled)
                | (Booked, Noshow)
                | (Arrived, Fulfilled)
                | (Arrived, Cancelled)
        )
    }

    /// Statuses reachable from `self`.
    pub fn next(self) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|n| self.can_become(*n))
            .map(Status::as_str)
            .collect()
    }
}

fn transition_conflict(from: Status, to: Status) -> Error {
    let mut ext = Map::new();
    ext.insert("from".into(), json!(from.as_str()));
    ext.insert("to".into(), json!(to.as_str()));
    ext.insert("allowed".into(), json!(from.next()));
    Error::Conflict {
        detail: format!(
            "an appointment cannot change from {} to {}",
            from.as_str(),
            to.as_str()
        ),
        extensions: ext,
    }
}

/// `POST /appointments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppointment {
    pub patient_id: Uuid,
    /// An active physician or nurse account.
    pub practitioner_id: Uuid,
    /// RFC 3339 start (inclusive).
    pub start: DateTime<Utc>,
    /// RFC 3339 end (exclusive); after `start`, at most 12 hours later, in the future.
    pub end: DateTime<Utc>,
    /// Reason for the visit (PHI, encrypted at rest; 1 to 1000 characters).
    pub reason: Option<String>,
}

fn check_times(errs: &mut Vec<FieldError>, start: DateTime<Utc>, end: DateTime<Utc>) {
    if end <= start {
        errs.push(FieldError::new("end", "must be after start"));
    } else if end - start > Duration::hours(MAX_DURATION_HOURS) {
        errs.push(FieldError::new(
            "end",
            format!("must be at most {MAX_DURATION_HOURS} hours after start"),
        ));
    }
    if end <= Utc::now() {
        errs.push(FieldError::new("end", "must be in the future"));
    }
}

fn check_reason(errs: &mut Vec<FieldError>, reason: Option<&str>) {
    if let Some(r) = reason {
        let n = r.trim().chars().count();
        if n == 0 || n > REASON_MAX_CHARS {
            errs.push(FieldError::new(
                "reason",
                format!("must be 1 to {REASON_MAX_CHARS} characters"),
            ));
        }
    }
}

fn into_result(errs: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

impl Validate for NewAppointment {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        check_times(&mut errs, self.start, self.end);
        check_reason(&mut errs, self.reason.as_deref());
        into_result(errs)
    }
}

/// `PATCH /appointments/{id}`: absent fields are unchanged. Rescheduling (`start`, `end`,
/// `practitioner_id`) is possible while the appointment is `booked`; `status` follows the
/// transition table; `reason` may be changed by the care team only.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentPatch {
    pub practitioner_id: Option<Uuid>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub status: Option<Status>,
}

impl AppointmentPatch {
    fn reschedules(&self) -> bool {
        self.practitioner_id.is_some() || self.start.is_some() || self.end.is_some()
    }
}

impl Validate for AppointmentPatch {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if !self.reschedules() && self.reason.is_none() && self.status.is_none() {
            errs.push(FieldError::new("", "at least one field must be given"));
        }
        check_reason(&mut errs, self.reason.as_deref());
        into_result(errs)
    }
}

/// An appointment as returned by the API. `reason` is present only with `access: "full"`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Appointment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub practitioner_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: Status,
    /// `full` (care team, the patient) or `demographics` (schedule only, no reason).
    pub access: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Stored row (+ the caller's care-team flag for the appointment's patient).
#[derive(Debug, FromRow)]
struct AppointmentRow {
    id: Uuid,
    patient_id: Uuid,
    practitioner_id: Uuid,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    reason: Option<Vec<u8>>,
    status: String,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    in_care_team: bool,
}

const COLUMNS: &str = "a.id, a.patient_id, a.practitioner_id, a.start_at, a.end_at, a.reason, \
    a.status, a.created_by, a.created_at, a.updated_at";

/// Appointments for [`crate::access::load`] and [`crate::access::list_query`]: the care team (and
/// the patient) opens them fully, others in the schedule without the reason; a patient account
/// asking for someone else's appointment gets `404`.
impl PatientScoped for AppointmentRow {
    const RESOURCE: Resource = Resource {
        resource_type: "appointment",
        columns: COLUMNS,
        from: "appointments a JOIN patients p ON p.id = a.patient_id",
        id_col: "a.id",
        patient_col: "a.patient_id",
        need: Need::Record,
    };

    fn scope(&self) -> (Uuid, bool) {
        (self.patient_id, self.in_care_team)
    }
}

fn reason_aad(id: Uuid) -> Aad<'static> {
    Aad {
        table: TABLE,
        row: id,
        column: "reason",
    }
}

fn encrypt_reason(keys: &KeyRing, id: Uuid, reason: Option<&str>) -> Option<Vec<u8>> {
    reason.map(|r| keys.encrypt_str(reason_aad(id), r.trim()))
}

impl AppointmentRow {
    fn status(&self) -> Result<Status, Error> {
        Status::parse(&self.status)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("unknown appointment status in row")))
    }

    fn reason(&self, keys: &KeyRing) -> Result<Option<String>, Error> {
        Ok(self
            .reason
            .as_ref()
            .map(|ct| keys.decrypt_str(reason_aad(self.id), ct))
            .transpose()?)
    }

    /// Response body; decrypts the reason only when the caller may see it.
    fn to_api(&self, keys: &KeyRing, access: PatientAccess) -> Result<Appointment, Error> {
        let clinical = access.clinical();
        Ok(Appointment {
            id: self.id,
            patient_id: self.patient_id,
            practitioner_id: self.practitioner_id,
            start: self.start_at,
            end: self.end_at,
            reason: if clinical { self.reason(keys)? } else { None },
            status: self.status()?,
            access: if clinical { "full" } else { "demographics" }.into(),
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The practitioner must be an active physician or nurse.
async fn check_practitioner(state: &AppState, id: Uuid) -> Result<(), Error> {
    let found: Option<(String, bool)> =
        sqlx::query_as("SELECT role, active FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    match found {
        Some((role, true)) if Role::parse(&role).is_some_and(Role::is_clinician) => Ok(()),
        _ => Err(Error::validation(
            "practitioner_id",
            "must be an active physician or nurse",
        )),
    }
}

/// Map database errors of INSERT/UPDATE to API errors.
fn write_error(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e {
        match (db.code().as_deref(), db.constraint()) {
            (Some("23P01"), _) => {
                return Error::conflict(
                    "the practitioner already has a booking that overlaps this time",
                );
            }
            (Some("23503"), Some(c)) if c.contains("patient") => {
                return Error::validation("patient_id", "no such patient");
            }
            (Some("23503"), _) => {
                return Error::validation("practitioner_id", "no such practitioner");
            }
            _ => {}
        }
    }
    e.into()
}

/// Book an appointment.
#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", request_body = NewAppointment,
    responses((status = 201, body = Appointment), (status = 403, body = crate::error::Problem),
              (status = 409, description = "overlaps another booking of the practitioner", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentBook>,
    ApiJson(body): ApiJson<NewAppointment>,
) -> Result<(StatusCode, Json<Appointment>), Error> {
    check_practitioner(&state, body.practitioner_id).await?;
    let in_care_team =
        crate::store::patients::in_care_team(&state.pool, body.patient_id, auth.user_id)
            .await?
            .ok_or_else(|| Error::validation("patient_id", "no such patient"))?;
    if !access::may_book(&auth, body.patient_id, in_care_team) {
        let target = Target {
            resource_type: "appointment",
            resource_id: None,
            patient: body.patient_id,
        };
        return Err(access::refuse_action(&state, &auth, &target).await);
    }
    let id = Uuid::now_v7();
    let reason = encrypt_reason(&state.keys, id, body.reason.as_deref());
    let mut tx = state.pool.begin().await?;
    let (created_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO appointments (id, patient_id, practitioner_id, start_at, end_at, reason, phi_key_id, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
    )
    .bind(id)
    .bind(body.patient_id)
    .bind(body.practitioner_id)
    .bind(body.start)
    .bind(body.end)
    .bind(reason)
    .bind(state.keys.active_key_id())
    .bind(auth.user_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(write_error)?;
    // booking yourself puts you in the care team (see rbac.rs)
    let in_care_team = in_care_team || body.practitioner_id == auth.user_id;
    let access = access::on_write(&auth, body.patient_id, in_care_team);
    // audited before COMMIT: if the audit record cannot be written the booking is rolled back
    // (dropping `tx`) and does not hold the practitioner's slot
    state
        .audit
        .record(
            AuditEvent::by(&auth, actions::CREATE, "appointment")
                .resource(id)
                .patient(body.patient_id),
        )
        .await?;
    tx.commit().await.map_err(write_error)?;
    state.metrics.appointment_bookings_total.inc();
    let clinical = access.clinical();
    Ok((
        StatusCode::CREATED,
        Json(Appointment {
            id,
            patient_id: body.patient_id,
            practitioner_id: body.practitioner_id,
            start: body.start,
            end: body.end,
            reason: if clinical {
                body.reason.map(|r| r.trim().to_string())
            } else {
                None
            },
            status: Status::Booked,
            access: if clinical { "full" } else { "demographics" }.into(),
            created_by: auth.user_id,
            created_at,
            updated_at: created_at,
        }),
    ))
}

/// Read one appointment.
#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments",
    params(("id" = Uuid, Path), ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited)")),
    responses((status = 200, body = Appointment), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentRead>,
    Path(id): Path<Uuid>,
) -> Result<Json<Appointment>, Error> {
    let (row, access) = access::load::<AppointmentRow>(&state, &auth, id).await?;
    let appointment = row.to_api(&state.keys, access)?;
    AccessLog::new(AppointmentRow::RESOURCE.resource_type)
        .add(&auth, actions::READ, id, row.patient_id, access)
        .write(&state)
        .await?;
    Ok(Json(appointment))
}

/// Filters of `GET /appointments`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AppointmentFilter {
    pub patient_id: Option<Uuid>,
    pub practitioner_id: Option<Uuid>,
    /// Appointments ending after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Appointments starting before this instant (RFC 3339).
    pub to: Option<DateTime<Utc>>,
}

/// List appointments visible to the caller, ordered by start time.
#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments", params(AppointmentFilter, PageParams),
    responses((status = 200, body = Page<Appointment>), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentRead>,
    Query(filter): Query<AppointmentFilter>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<Appointment>>, Error> {
    let limit = page.limit()?;
    let cursor = page.cursor_uuid()?;
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if to <= from {
            return Err(Error::validation("to", "must be after from"));
        }
    }
    let mut qb = access::list_query(&auth, &AppointmentRow::RESOURCE);
    if let Some(p) = filter.patient_id {
        qb.push(" AND a.patient_id = ").push_bind(p);
    }
    if let Some(p) = filter.practitioner_id {
        qb.push(" AND a.practitioner_id = ").push_bind(p);
    }
    if let Some(from) = filter.from {
        qb.push(" AND a.end_at > ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND a.start_at < ").push_bind(to);
    }
    if let Some(c) = cursor {
        let key: Option<(DateTime<Utc>,)> =
            sqlx::query_as("SELECT start_at FROM appointments WHERE id = $1")
                .bind(c)
                .fetch_optional(&state.pool)
                .await?;
        let (start,) = key.ok_or_else(|| Error::validation("cursor", "is not a valid cursor"))?;
        qb.push(" AND (a.start_at, a.id) > (")
            .push_bind(start)
            .push(", ")
            .push_bind(c)
            .push(")");
    }
    qb.push(" ORDER BY a.start_at, a.id LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<AppointmentRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = Page::from_rows(rows, limit, |r| r.id.to_string());
    let mut items = Vec::with_capacity(page.items.len());
    let mut log = AccessLog::new(AppointmentRow::RESOURCE.resource_type);
    for row in &page.items {
        let Some(access) = access::visible(&auth, row.patient_id, row.in_care_team, Need::Record)
        else {
            continue;
        };
        items.push(row.to_api(&state.keys, access)?);
        log = log.add(&auth, actions::LIST, row.id, row.patient_id, access);
    }
    log.or_action(&auth, actions::LIST).write(&state).await?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Reschedule, change the reason, or move the status along the transition table.
#[utoipa::path(patch, path = "/api/v1/appointments/{id}", tag = "appointments", params(("id" = Uuid, Path)),
    request_body = AppointmentPatch,
    responses((status = 200, body = Appointment), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "invalid status transition, overlap, or concurrent change", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentUpdate>,
    Path(id): Path<Uuid>,
    ApiJson(patch): ApiJson<AppointmentPatch>,
) -> Result<Json<Appointment>, Error> {
    let (row, access) = access::load::<AppointmentRow>(&state, &auth, id).await?;
    if patch.reason.is_some() && !access.clinical() {
        let target = Target {
            resource_type: "appointment.reason",
            resource_id: Some(id),
            patient: row.patient_id,
        };
        return Err(access::refuse_action(&state, &auth, &target).await);
    }
    let current = row.status()?;
    let status = match patch.status {
        Some(next) if next != current && !current.can_become(next) => {
            return Err(transition_conflict(current, next));
        }
        Some(next) => next,
        None => current,
    };
    let (start, end, practitioner) = if patch.reschedules() {
        if current != Status::Booked {
            return Err(Error::conflict(format!(
                "only booked appointments can be rescheduled (this one is {})",
                current.as_str()
            )));
        }
        let start = patch.start.unwrap_or(row.start_at);
        let end = patch.end.unwrap_or(row.end_at);
        let mut errs = Vec::new();
        check_times(&mut errs, start, end);
        if !errs.is_empty() {
            return Err(Error::Validation(errs));
        }
        let practitioner = patch.practitioner_id.unwrap_or(row.practitioner_id);
        if practitioner != row.practitioner_id {
            if !access::may_book(&auth, row.patient_id, row.in_care_team) {
                let target = Target {
                    resource_type: "appointment",
                    resource_id: Some(id),
                    patient: row.patient_id,
                };
                return Err(access::refuse_action(&state, &auth, &target).await);
            }
            check_practitioner(&state, practitioner).await?;
        }
        (start, end, practitioner)
    } else {
        (row.start_at, row.end_at, row.practitioner_id)
    };
    // re-encrypt the reason under the active key so the row's phi_key_id stays truthful
    let reason_plain = match patch.reason {
        Some(r) => Some(r.trim().to_string()),
        None => row.reason(&state.keys)?,
    };
    let reason = encrypt_reason(&state.keys, id, reason_plain.as_deref());
    let mut tx = state.pool.begin().await?;
    let updated: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE appointments SET practitioner_id = $2, start_at = $3, end_at = $4, reason = $5, \
         phi_key_id = $6, status = $7, updated_at = now() \
         WHERE id = $1 AND updated_at = $8 RETURNING updated_at",
    )
    .bind(id)
    .bind(practitioner)
    .bind(start)
    .bind(end)
    .bind(reason)
    .bind(state.keys.active_key_id())
    .bind(status.as_str())
    .bind(row.updated_at)
    .fetch_optional(&mut *tx)
    .await
    .map_err(write_error)?;
    let (updated_at,) = updated.ok_or_else(|| {
        Error::conflict("the appointment was changed concurrently; fetch it and retry")
    })?;
    // audited before COMMIT (rolled back without its audit record)
    AccessLog::new(AppointmentRow::RESOURCE.resource_type)
        .add(&auth, actions::UPDATE, id, row.patient_id, access)
        .write(&state)
        .await?;
    tx.commit().await.map_err(write_error)?;
    let clinical = access.clinical();
    Ok(Json(Appointment {
        id,
        patient_id: row.patient_id,
        practitioner_id: practitioner,
        start,
        end,
        reason: if clinical { reason_plain } else { None },
        status,
        access: if clinical { "full" } else { "demographics" }.into(),
        created_by: row.created_by,
        created_at: row.created_at,
        updated_at,
    }))
}

/// Cancel a booked or arrived appointment; the slot becomes free at once.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/cancel", tag = "appointments", params(("id" = Uuid, Path)),
    responses((status = 200, body = Appointment), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "already fulfilled, cancelled or no-show", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentUpdate>,
    Path(id): Path<Uuid>,
) -> Result<Json<Appointment>, Error> {
    let (mut row, access) = access::load::<AppointmentRow>(&state, &auth, id).await?;
    let current = row.status()?;
    if !current.can_become(Status::Cancelled) {
        return Err(transition_conflict(current, Status::Cancelled));
    }
    let mut tx = state.pool.begin().await?;
    let updated: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE appointments SET status = 'cancelled', updated_at = now() \
         WHERE id = $1 AND status = $2 RETURNING updated_at",
    )
    .bind(id)
    .bind(current.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (updated_at,) = updated.ok_or_else(|| {
        Error::conflict("the appointment was changed concurrently; fetch it and retry")
    })?;
    row.status = Status::Cancelled.as_str().into();
    row.updated_at = updated_at;
    let appointment = row.to_api(&state.keys, access)?;
    // audited before COMMIT (rolled back without its audit record)
    AccessLog::new(AppointmentRow::RESOURCE.resource_type)
        .add(&auth, actions::CANCEL, id, row.patient_id, access)
        .write(&state)
        .await?;
    tx.commit().await?;
    Ok(Json(appointment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use Status::*;
        let allowed = [
            (Booked, Arrived),
            (Booked, Cancelled),
            (Booked, Noshow),
            (Arrived, Fulfilled),
            (Arrived, Cancelled),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
            assert_eq!(Status::parse(from.as_str()), Some(from));
        }
        for terminal in [Fulfilled, Cancelled, Noshow] {
            assert!(terminal.next().is_empty());
        }
    }

    #[test]
    fn time_rules() {
        let now = Utc::now();
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(2),
            now + Duration::hours(1),
        );
        assert_eq!(errs.len(), 1);
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(1),
            now + Duration::hours(14),
        );
        assert_eq!(errs[0].field, "end");
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now - Duration::hours(3),
            now - Duration::hours(2),
        );
        assert_eq!(errs.len(), 1);
        let mut errs = Vec::new();
        check_times(
            &mut errs,
            now + Duration::hours(1),
            now + Duration::hours(2),
        );
        assert!(errs.is_empty());
    }
}
