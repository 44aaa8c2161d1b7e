//! The appointment list behind `GET /api/v1/appointments` and the FHIR Appointment search: the
//! caller's scope ([`crate::access::list_query`]), the filters, keyset paging on
//! `(start, id)` in either direction, and the `appointment.list` audit events; and its exact
//! count over all pages ([`count`], FHIR `Bundle.total`).

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::actions;
use super::model::{Appointment, AppointmentRow, Status};
use crate::access::{self, AccessLog, Need, PatientScoped, Select};
use crate::auth::AuthUser;
use crate::error::Error;
use crate::pagination::{ListScope, Page, PageParams};
use crate::rbac::Permission;
use crate::state::AppState;

/// What a list asks for; every filter narrows (absent: not filtered).
#[derive(Debug, Clone, Default)]
pub struct AppointmentQuery {
    pub patient_id: Option<Uuid>,
    pub practitioner_id: Option<Uuid>,
    /// Appointments ending after this instant.
    pub ends_after: Option<DateTime<Utc>>,
    /// Appointments starting before this instant.
    pub starts_before: Option<DateTime<Utc>>,
    /// Appointments starting at or after this instant.
    pub starts_from: Option<DateTime<Utc>>,
    /// Only these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Latest start first (else earliest first).
    pub descending: bool,
}

/// The caller's appointments matching `query`, one page of them in start order (then id), the
/// access audited (`appointment.list`, fail closed). `scope` binds the page's cursor to the
/// route, caller and filters as the route states them. `X-Break-Glass-Reason` opens only a list
/// narrowed to one patient.
pub async fn search(
    state: &AppState,
    auth: &AuthUser,
    query: &AppointmentQuery,
    page: &PageParams,
    scope: ListScope,
) -> Result<Page<Appointment>, Error> {
    let paging = page.open::<(DateTime<Utc>, Uuid)>(&state.cursor_key, scope)?;
    let mut qb = filtered(state, auth, query, Select::Rows)?;
    let (after, order) = if query.descending {
        (" < (", " ORDER BY a.start_at DESC, a.id DESC LIMIT ")
    } else {
        (" > (", " ORDER BY a.start_at, a.id LIMIT ")
    };
    if let Some((start, id)) = paging.after {
        qb.push(" AND (a.start_at, a.id)")
            .push(after)
            .push_bind(start)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    qb.push(order).push_bind(paging.limit + 1);
    let rows: Vec<AppointmentRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let page = paging.page(rows, |r| (r.start_at, r.id));
    let mut items = Vec::with_capacity(page.items.len());
    let mut log = AccessLog::new(AppointmentRow::RESOURCE.resource_type);
    for row in &page.items {
        let Some(access) = access::visible(auth, row.patient_id, row.in_care_team, Need::Record)
        else {
            continue;
        };
        items.push(row.to_api(&state.keys, access)?);
        log = log.add(auth, actions::LIST, row.id, row.patient_id, access);
    }
    log.or_action(auth, actions::LIST).write(state).await?;
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// How many appointments [`search`] finds for `query` over all its pages: a count over the same
/// scoped and filtered query ([`access::count_visible`]: the rows [`access::visible`] opens, no
/// row decrypted), audited like the list it counts (`appointment.list` on the resource type,
/// fail closed).
pub async fn count(
    state: &AppState,
    auth: &AuthUser,
    query: &AppointmentQuery,
) -> Result<i64, Error> {
    auth.require(state, Permission::AppointmentRead).await?;
    let qb = filtered(state, auth, query, Select::Count)?;
    access::count_visible(state, auth, &AppointmentRow::RESOURCE, qb, actions::LIST).await
}

/// The query of [`search`] and [`count`]: the caller's scope ([`access::scoped_query`] selecting
/// `select`; break-glass opens only one patient's appointments) narrowed by `query`'s filters,
/// without order and paging. The one place both take their filters from.
fn filtered(
    state: &AppState,
    auth: &AuthUser,
    query: &AppointmentQuery,
    select: Select,
) -> Result<QueryBuilder<Postgres>, Error> {
    if let (Some(from), Some(to)) = (query.ends_after, query.starts_before) {
        if to <= from {
            return Err(Error::validation("to", "must be after from"));
        }
    }
    let target = match query.patient_id {
        Some(_) => access::ListTarget::OnePatient,
        None => access::ListTarget::Many,
    };
    let mut qb = access::scoped_query(state, auth, &AppointmentRow::RESOURCE, target, select);
    if let Some(p) = query.patient_id {
        qb.push(" AND a.patient_id = ").push_bind(p);
    }
    if let Some(p) = query.practitioner_id {
        qb.push(" AND a.practitioner_id = ").push_bind(p);
    }
    if let Some(from) = query.ends_after {
        qb.push(" AND a.end_at > ").push_bind(from);
    }
    if let Some(to) = query.starts_before {
        qb.push(" AND a.start_at < ").push_bind(to);
    }
    if let Some(from) = query.starts_from {
        qb.push(" AND a.start_at >= ").push_bind(from);
    }
    if !query.statuses.is_empty() {
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        qb.push(" AND a.status = ANY(")
            .push_bind(statuses)
            .push(")");
    }
    Ok(qb)
}

/// Every appointment of patient `patient` the caller's access opens (the scope of [`search`]
/// narrowed to that patient, [`access::visible`]), in start order, NOT audited: for a route that
/// admitted the caller to the patient and audits its access as one (FHIR `Patient/$everything`).
pub async fn of_patient(
    state: &AppState,
    auth: &AuthUser,
    patient: Uuid,
) -> Result<Vec<Appointment>, Error> {
    let mut qb = access::list_query(
        state,
        auth,
        &AppointmentRow::RESOURCE,
        access::ListTarget::OnePatient,
    );
    qb.push(" AND a.patient_id = ")
        .push_bind(patient)
        .push(" ORDER BY a.start_at, a.id");
    let rows: Vec<AppointmentRow> = qb.build_query_as().fetch_all(&state.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(access) = access::visible(auth, row.patient_id, row.in_care_team, Need::Record)
        {
            out.push(row.to_api(&state.keys, access)?);
        }
    }
    Ok(out)
}
