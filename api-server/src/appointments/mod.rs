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

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::access::{self, AccessLog, PatientScoped, Target};
use crate::audit::AuditEvent;
use crate::auth::{AuthUser, Authorized};
use crate::error::ApiQuery;
use crate::error::{ApiJson, Error};
use crate::pagination::{ListScope, Page, PageParams};
use crate::rbac::{perm, Role};
use crate::state::AppState;

pub mod model;
pub mod search;

use model::{check_times, encrypt_reason, transition_conflict, AppointmentRow};
pub use model::{
    Appointment, AppointmentPatch, NewAppointment, Status, MAX_DURATION_HOURS, REASON_MAX_CHARS,
};
pub use search::AppointmentQuery;

/// Audit action names of this module (stable; clients filter on them).
pub mod actions {
    pub const CREATE: &str = "appointment.create";
    pub const READ: &str = "appointment.read";
    pub const LIST: &str = "appointment.list";
    pub const UPDATE: &str = "appointment.update";
    pub const CANCEL: &str = "appointment.cancel";
}

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/appointments", get(list).post(create))
        .route("/appointments/{id}", get(read).patch(update))
        .route("/appointments/{id}/cancel", post(cancel))
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

/// Book an appointment. The appointment puts its practitioner in the patient's care team (until
/// `CADUCEUS_CARE_TEAM_ACCESS_DAYS` after it), so booking for another practitioner needs the
/// right to assign the care team (`403` for a nurse; a physician only in their own care team).
#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", request_body = NewAppointment,
    responses((status = 201, body = Appointment), (status = 403, description = "outside the care team, or booking for another practitioner without the right to assign the care team", body = crate::error::Problem),
              (status = 409, description = "overlaps another booking of the practitioner", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentBook>,
    ApiJson(body): ApiJson<NewAppointment>,
) -> Result<(StatusCode, Json<Appointment>), Error> {
    check_practitioner(&state, body.practitioner_id).await?;
    let in_care_team = crate::store::patients::in_care_team(
        &state.pool,
        body.patient_id,
        auth.user_id,
        state.config.care_team_access_days,
    )
    .await?
    .ok_or_else(|| Error::validation("patient_id", "no such patient"))?;
    if !access::may_book(&auth, body.patient_id, in_care_team, body.practitioner_id) {
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
    // the booking and its audit record commit together: without the record the booking is
    // rolled back (dropping `tx`) and does not hold the practitioner's slot
    let event = AuditEvent::by(&auth, actions::CREATE, "appointment")
        .resource(id)
        .patient(body.patient_id);
    state.audit.write_in(&mut tx, &[event]).await?;
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
    params(("id" = Uuid, Path), ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians outside the care team: reason for emergency access (audited, limited per user and hour)")),
    responses((status = 200, body = Appointment), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem)),
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
    /// Appointments starting before this instant (RFC 3339); after `from` when both are given.
    pub to: Option<DateTime<Utc>>,
}

/// List appointments visible to the caller, ordered by start time. `X-Break-Glass-Reason` opens
/// only the appointments of one patient (`patient_id`); on any other list it changes nothing.
/// A `cursor` is good only for the caller, list and filters it was issued for (else `400`
/// naming `cursor`).
#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments",
    params(AppointmentFilter, PageParams, ("X-Break-Glass-Reason" = Option<String>, Header, description = "physicians: opens the appointments of one patient (`patient_id`) outside the care team (audited, limited per user and hour); ignored on other lists")),
    responses((status = 200, body = Page<Appointment>), (status = 422, body = crate::error::Problem),
              (status = 429, description = "break-glass openings of this user exhausted for now (see Retry-After)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AppointmentRead>,
    ApiQuery(filter): ApiQuery<AppointmentFilter>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<Appointment>>, Error> {
    // the cursor holds the last item's (start, id), authenticated for this caller and filters
    let scope = ListScope::new("/api/v1/appointments", auth.user_id)
        .filter("patient_id", filter.patient_id)
        .filter("practitioner_id", filter.practitioner_id)
        .filter("from", filter.from)
        .filter("to", filter.to);
    let query = AppointmentQuery {
        patient_id: filter.patient_id,
        practitioner_id: filter.practitioner_id,
        ends_after: filter.from,
        starts_before: filter.to,
        ..AppointmentQuery::default()
    };
    search::search(&state, &auth, &query, &page, scope)
        .await
        .map(Json)
}

/// Reschedule, change the reason, or move the status along the transition table. Moving the
/// appointment to another practitioner than the caller needs the right to assign the care team.
#[utoipa::path(patch, path = "/api/v1/appointments/{id}", tag = "appointments", params(("id" = Uuid, Path)),
    request_body = AppointmentPatch,
    responses((status = 200, body = Appointment), (status = 403, description = "outside the care team, or moving the appointment to another practitioner without the right to assign the care team", body = crate::error::Problem),
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
    change(&state, &auth, id, patch, None).await.map(Json)
}

/// The caller's view of appointment `id` before changing it (access decided and denials
/// audited as for a read; the change that follows is what gets audited).
pub async fn current(state: &AppState, auth: &AuthUser, id: Uuid) -> Result<Appointment, Error> {
    let (row, access) = access::load::<AppointmentRow>(state, auth, id).await?;
    row.to_api(&state.keys, access)
}

/// `412` when the client based its change on another version than the stored one.
fn check_version(expected: Option<DateTime<Utc>>, stored: DateTime<Utc>) -> Result<(), Error> {
    match expected {
        Some(v) if v != stored => Err(Error::PreconditionFailed(
            "the appointment changed since that version; read it again".into(),
        )),
        _ => Ok(()),
    }
}

/// The change of `PATCH /appointments/{id}` ([`update`]); `expected`: the version
/// (`updated_at`) the client based it on (FHIR `If-Match`), `412` when it is not the stored one.
pub async fn change(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
    patch: AppointmentPatch,
    expected: Option<DateTime<Utc>>,
) -> Result<Appointment, Error> {
    let (row, access) = access::load::<AppointmentRow>(state, auth, id).await?;
    check_version(expected, row.updated_at)?;
    if patch.reason.is_some() && !access.clinical() {
        let target = Target {
            resource_type: "appointment.reason",
            resource_id: Some(id),
            patient: row.patient_id,
        };
        return Err(access::refuse_action(state, auth, &target).await);
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
            if !access::may_book(auth, row.patient_id, row.in_care_team, practitioner) {
                let target = Target {
                    resource_type: "appointment",
                    resource_id: Some(id),
                    patient: row.patient_id,
                };
                return Err(access::refuse_action(state, auth, &target).await);
            }
            check_practitioner(state, practitioner).await?;
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
    let (updated_at,) = updated.ok_or_else(|| concurrent_change(expected))?;
    // the change and its audit record commit together (or not at all)
    AccessLog::new(AppointmentRow::RESOURCE.resource_type)
        .add(auth, actions::UPDATE, id, row.patient_id, access)
        .write_in(state, &mut tx)
        .await?;
    tx.commit().await.map_err(write_error)?;
    let clinical = access.clinical();
    Ok(Appointment {
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
    })
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
    cancel_one(&state, &auth, id, None).await.map(Json)
}

/// The cancellation of `POST /appointments/{id}/cancel` ([`cancel`]); `expected` as for
/// [`change`].
pub async fn cancel_one(
    state: &AppState,
    auth: &AuthUser,
    id: Uuid,
    expected: Option<DateTime<Utc>>,
) -> Result<Appointment, Error> {
    let (mut row, access) = access::load::<AppointmentRow>(state, auth, id).await?;
    check_version(expected, row.updated_at)?;
    let current = row.status()?;
    if !current.can_become(Status::Cancelled) {
        return Err(transition_conflict(current, Status::Cancelled));
    }
    let mut tx = state.pool.begin().await?;
    let updated: Option<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE appointments SET status = 'cancelled', updated_at = now() \
         WHERE id = $1 AND status = $2 AND ($3::timestamptz IS NULL OR updated_at = $3) \
         RETURNING updated_at",
    )
    .bind(id)
    .bind(current.as_str())
    .bind(expected.map(|_| row.updated_at))
    .fetch_optional(&mut *tx)
    .await?;
    let (updated_at,) = updated.ok_or_else(|| concurrent_change(expected))?;
    row.status = Status::Cancelled.as_str().into();
    row.updated_at = updated_at;
    let appointment = row.to_api(&state.keys, access)?;
    // the change and its audit record commit together (or not at all)
    AccessLog::new(AppointmentRow::RESOURCE.resource_type)
        .add(auth, actions::CANCEL, id, row.patient_id, access)
        .write_in(state, &mut tx)
        .await?;
    tx.commit().await?;
    Ok(appointment)
}

/// The row changed between reading and writing it: `409`, or `412` when the client named the
/// version it changes.
fn concurrent_change(expected: Option<DateTime<Utc>>) -> Error {
    match expected {
        Some(_) => Error::PreconditionFailed(
            "the appointment changed since that version; read it again".into(),
        ),
        None => Error::conflict("the appointment was changed concurrently; fetch it and retry"),
    }
}
