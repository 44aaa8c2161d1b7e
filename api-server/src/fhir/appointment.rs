//! FHIR `Appointment` over the appointments: the handlers call the same domain entry points as
//! `/api/v1/appointments` ([`crate::appointments`]: access decisions, audit, encryption of the
//! reason, the double-booking constraint, the status transitions), and only translate between
//! the FHIR model and ours.
//!
//! Mapping: `participant` = one `Patient/<id>` and one `Practitioner/<id>` actor (both
//! `required`, `accepted`), `start`/`end`, `reasonCode[0].text` = the reason (PHI: present only
//! when the caller may see it, as `reason` on the JSON route), `created`, `status` = ours, which
//! are FHIR AppointmentStatus codes (`booked`, `arrived`, `fulfilled`, `cancelled`, `noshow`).
//! A PUT changes the status along the JSON API's transitions (`cancelled` is the cancellation
//! of `POST /appointments/{id}/cancel`), reschedules a booked appointment (`start`, `end`, the
//! practitioner) or changes the reason, exactly as `PATCH /appointments/{id}` would.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use fhir_r4::r4::resources::appointment::{Appointment as FhirAppointment, AppointmentParticipant};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;
use uuid::Uuid;

use super::capability::{coded, Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{reference_id, DateParam, Match, Search};
use super::wire::{self, FhirBody, Version};
use crate::appointments::{
    self, Appointment, AppointmentPatch, AppointmentQuery, NewAppointment, Status,
};
use crate::auth::Authorized;
use crate::error::{ApiJson, Error, FieldError, Validate};
use crate::pagination::ListScope;
use crate::rbac::perm;
use crate::state::AppState;

/// What `/fhir/R4/Appointment` serves.
pub const CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "Appointment",
    interactions: &[
        Interaction::Read,
        Interaction::SearchType,
        Interaction::Create,
        Interaction::Update,
    ],
    search: &[
        SearchParam {
            name: "patient",
            kind: ParamType::Reference,
            doc: "the patient participant (`Patient/<id>`)",
        },
        SearchParam {
            name: "practitioner",
            kind: ParamType::Reference,
            doc: "the practitioner participant (`Practitioner/<id>`)",
        },
        SearchParam {
            name: "actor",
            kind: ParamType::Reference,
            doc: "a participant: `Patient/<id>` or `Practitioner/<id>`",
        },
        SearchParam {
            name: "date",
            kind: ParamType::Date,
            doc: "the start, with the prefixes eq (default), ge, le, gt, lt; a date or an RFC 3339 date-time; repeat to give a range",
        },
        SearchParam {
            name: "status",
            kind: ParamType::Token,
            doc: "booked | arrived | fulfilled | cancelled | noshow; comma-separated for any of them",
        },
    ],
    sorts: &["date"],
    operations: &[],
    doc: "Appointments between one patient and one practitioner (an active physician or nurse). The reason is `reasonCode[0].text`, shown only to the care team and the patient. Double booking of a practitioner is refused (409), also between concurrent requests. PUT changes the status along booked → arrived | cancelled | noshow, arrived → fulfilled | cancelled (409 otherwise), reschedules a booked appointment or changes the reason; If-Match on meta.versionId (412).",
};

fn invalid(field: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError::new(field, message)])
}

/// The FHIR element of a field of the JSON API's errors.
fn element(field: &str) -> String {
    match field {
        "patient_id" => "Appointment.participant.actor (Patient)".into(),
        "practitioner_id" => "Appointment.participant.actor (Practitioner)".into(),
        "reason" => "Appointment.reasonCode.text".into(),
        "start" | "end" | "status" => format!("Appointment.{field}"),
        "" => "Appointment".into(),
        other => other.to_string(),
    }
}

/// The domain's field errors named by FHIR element.
fn fhir_fields(e: Error) -> Error {
    match e {
        Error::Validation(errs) => Error::Validation(
            errs.into_iter()
                .map(|f| FieldError::new(element(&f.field), f.message))
                .collect(),
        ),
        other => other,
    }
}

fn reference(type_name: &str, id: Uuid) -> types::Reference {
    types::Reference {
        reference: Some(types::String(format!("{type_name}/{id}"))),
        r#type: Some(types::Uri(type_name.to_string())),
        ..Default::default()
    }
}

fn instant(at: DateTime<Utc>) -> types::Instant {
    types::Instant(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// The FHIR Appointment of one of ours, with `meta.versionId`/`lastUpdated`.
pub fn to_fhir(a: &Appointment) -> Result<(FhirAppointment, Version), Error> {
    let version = Version(a.updated_at);
    let participant = |type_name: &str, id: Uuid| AppointmentParticipant {
        actor: Some(reference(type_name, id)),
        required: Some(coded("required")),
        status: coded("accepted"),
        ..Default::default()
    };
    let built = FhirAppointment::builder()
        .id(types::String(a.id.to_string()))
        .meta(version.meta())
        .status(coded(a.status.as_str()))
        .reason_code(
            a.reason
                .iter()
                .map(|r| types::CodeableConcept {
                    text: Some(types::String(r.clone())),
                    ..Default::default()
                })
                .collect(),
        )
        .start(instant(a.start))
        .end(instant(a.end))
        .created(types::DateTime(
            a.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ))
        .participant(vec1::vec1![
            participant("Patient", a.patient_id),
            participant("Practitioner", a.practitioner_id)
        ])
        .build()
        .map_err(|e| Error::internal(anyhow::anyhow!("incomplete Appointment: {e}")))?;
    Ok((built, version))
}

/// The JSON of an Appointment with its `resourceType`.
fn json(a: FhirAppointment) -> Result<serde_json::Value, Error> {
    serde_json::to_value(Resource::Appointment(Box::new(a)))
        .map_err(|e| Error::internal(anyhow::Error::new(e)))
}

fn respond(
    status: StatusCode,
    a: &Appointment,
    location: Option<String>,
) -> Result<Response, Error> {
    let (fhir, version) = to_fhir(a)?;
    Ok(wire::resource(status, &json(fhir)?, version, location))
}

/// What a client's Appointment says, in our terms.
#[derive(Debug)]
struct Wanted {
    status: Status,
    patient_id: Uuid,
    practitioner_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    reason: Option<String>,
}

fn parse_instant(field: &str, value: Option<&types::Instant>) -> Result<DateTime<Utc>, Error> {
    let value = value.ok_or_else(|| invalid(field, "is required"))?;
    DateTime::parse_from_rfc3339(&value.0)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid(field, "must be an instant (RFC 3339 with a time zone)"))
}

/// Read a client's Appointment (create, update). What Caduceus does not keep is refused rather
/// than silently dropped, except `meta`, `text` and `id`.
fn wanted(a: &FhirAppointment) -> Result<Wanted, Error> {
    let status = Status::parse(&a.status.code()).ok_or_else(|| {
        invalid(
            "Appointment.status",
            "must be booked, arrived, fulfilled, cancelled or noshow",
        )
    })?;
    let mut patient = None;
    let mut practitioner = None;
    for p in a.participant.iter() {
        let actor = p
            .actor
            .as_ref()
            .and_then(|r| r.reference.as_ref())
            .map(|r| r.0.as_str())
            .ok_or_else(|| {
                invalid(
                    "Appointment.participant.actor",
                    "each participant needs an actor reference",
                )
            })?;
        let kind = actor.rsplit('/').nth(1).unwrap_or_default();
        let (slot, type_name) = match kind {
            "Patient" => (&mut patient, "Patient"),
            "Practitioner" => (&mut practitioner, "Practitioner"),
            _ => {
                return Err(invalid(
                    "Appointment.participant.actor",
                    "participants are one Patient and one Practitioner",
                ))
            }
        };
        let id = reference_id("actor", actor, type_name).map_err(|_| {
            invalid(
                "Appointment.participant.actor",
                &format!("must reference a {type_name} by id"),
            )
        })?;
        if slot.replace(id).is_some() {
            return Err(invalid(
                "Appointment.participant",
                "participants are one Patient and one Practitioner",
            ));
        }
    }
    let (Some(patient_id), Some(practitioner_id)) = (patient, practitioner) else {
        return Err(invalid(
            "Appointment.participant",
            "needs one Patient and one Practitioner participant",
        ));
    };
    let reason = match a.reason_code.as_slice() {
        [] => None,
        [c] if c.coding.is_empty() => Some(
            c.text
                .as_ref()
                .map(|t| t.0.clone())
                .ok_or_else(|| invalid("Appointment.reasonCode.text", "is required"))?,
        ),
        _ => {
            return Err(invalid(
                "Appointment.reasonCode",
                "at most one, as text (the reason for the visit)",
            ))
        }
    };
    if a.description.is_some() || a.comment.is_some() || a.patient_instruction.is_some() {
        return Err(invalid(
            "Appointment",
            "description, comment and patientInstruction are not kept by this server; the reason goes in reasonCode.text",
        ));
    }
    if !a.slot.is_empty() || !a.reason_reference.is_empty() || !a.based_on.is_empty() {
        return Err(invalid(
            "Appointment",
            "slot, reasonReference and basedOn are not kept by this server",
        ));
    }
    Ok(Wanted {
        status,
        patient_id,
        practitioner_id,
        start: parse_instant("Appointment.start", a.start.as_ref())?,
        end: parse_instant("Appointment.end", a.end.as_ref())?,
        reason,
    })
}

/// Parse an Appointment body and check its `resourceType`.
fn body(value: serde_json::Value) -> Result<FhirAppointment, Error> {
    if value.get("resourceType").and_then(|t| t.as_str()) != Some("Appointment") {
        return Err(invalid("resourceType", "must be Appointment"));
    }
    serde_json::from_value(value)
        .map_err(|_| invalid("Appointment", "is not a valid FHIR R4 Appointment"))
}

/// `GET /Appointment/{id}`.
pub async fn read(
    State(state): State<AppState>,
    authorized: Authorized<perm::AppointmentRead>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = wire::path_id(&id)?;
    let axum::Json(a) = appointments::read(State(state), authorized, Path(id)).await?;
    respond(StatusCode::OK, &a, None)
}

/// `POST /Appointment`: a booking (status `booked`).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    authorized: Authorized<perm::AppointmentBook>,
    FhirBody(value): FhirBody<serde_json::Value>,
) -> Result<Response, Error> {
    let w = wanted(&body(value)?)?;
    if w.status != Status::Booked {
        return Err(invalid("Appointment.status", "a new appointment is booked"));
    }
    let new = NewAppointment {
        patient_id: w.patient_id,
        practitioner_id: w.practitioner_id,
        start: w.start,
        end: w.end,
        reason: w.reason,
    };
    new.validate()
        .map_err(|e| fhir_fields(Error::Validation(e)))?;
    let (_, axum::Json(a)) = appointments::create(State(state.clone()), authorized, ApiJson(new))
        .await
        .map_err(fhir_fields)?;
    let base = wire::base_url(&headers, state.config.tls.is_some());
    let loc = format!(
        "{base}/Appointment/{}/_history/{}",
        a.id,
        Version(a.updated_at).id()
    );
    respond(StatusCode::CREATED, &a, Some(loc))
}

/// `PUT /Appointment/{id}`: the change from the stored appointment to the one sent, made as
/// `PATCH /appointments/{id}` (or, for a cancellation alone, `POST .../cancel`) would; with
/// `If-Match` on `meta.versionId` (`412` when the appointment changed since).
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authorized(auth, _): Authorized<perm::AppointmentUpdate>,
    Path(id): Path<String>,
    FhirBody(value): FhirBody<serde_json::Value>,
) -> Result<Response, Error> {
    let id = wire::path_id(&id)?;
    let fhir = body(value)?;
    if fhir.id.as_ref().map(|i| i.0.as_str()) != Some(id.to_string().as_str()) {
        return Err(invalid("Appointment.id", "must be the id in the URL"));
    }
    let w = wanted(&fhir)?;
    let current = appointments::current(&state, &auth, id).await?;
    let expected = match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        Some(if_match) if !Version(current.updated_at).matches(if_match) => {
            return Err(Error::PreconditionFailed(
                "the appointment changed since that version; read it again".into(),
            ))
        }
        Some(_) => Some(current.updated_at),
        None => None,
    };
    if w.patient_id != current.patient_id {
        return Err(invalid(
            "Appointment.participant.actor (Patient)",
            "the patient of an appointment cannot change; cancel it and book another",
        ));
    }
    let differs = |now: DateTime<Utc>, then: DateTime<Utc>| (now != then).then_some(now);
    let patch = AppointmentPatch {
        practitioner_id: (w.practitioner_id != current.practitioner_id)
            .then_some(w.practitioner_id),
        start: differs(w.start, current.start),
        end: differs(w.end, current.end),
        reason: w
            .reason
            .filter(|r| Some(r.trim()) != current.reason.as_deref()),
        status: (w.status != current.status).then_some(w.status),
    };
    let only_cancel = patch.status == Some(Status::Cancelled) && !edits(&patch);
    let a = if only_cancel {
        appointments::cancel_one(&state, &auth, id, expected).await?
    } else if patch.status.is_none() && !edits(&patch) {
        // nothing changes: the stored appointment, read (and audited) as a read
        let axum::Json(a) = appointments::read(
            State(state.clone()),
            Authorized(auth, std::marker::PhantomData),
            Path(id),
        )
        .await?;
        a
    } else {
        patch
            .validate()
            .map_err(|e| fhir_fields(Error::Validation(e)))?;
        appointments::change(&state, &auth, id, patch, expected)
            .await
            .map_err(fhir_fields)?
    };
    respond(StatusCode::OK, &a, None)
}

/// The patch changes more than the status.
fn edits(p: &AppointmentPatch) -> bool {
    p.practitioner_id.is_some() || p.start.is_some() || p.end.is_some() || p.reason.is_some()
}

/// `GET /Appointment?...`: a searchset through the same list as `GET /api/v1/appointments`,
/// with the exact `total` over all pages (`appointments::search::count`, the same scoped query);
/// `_summary=count` answers the total alone, without listing.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Authorized(auth, _): Authorized<perm::AppointmentRead>,
) -> Result<Response, Error> {
    let search = Search::parse(&CAPABILITY, uri.query(), &headers)?;
    let query = query(&search)?;
    let base = wire::base_url(&headers, state.config.tls.is_some());
    if search.summary_count {
        let total = appointments::search::count(&state, &auth, &query).await?;
        return Ok(super::search::respond_count(
            &base,
            "Appointment",
            &search,
            total,
        ));
    }
    let mut scope = ListScope::new("/fhir/R4/Appointment", auth.user_id);
    for (name, value) in &search.params {
        scope = scope.filter(name, Some(value));
    }
    let scope = scope.filter("_sort", search.sort.as_ref().map(|(_, desc)| desc));
    let page = appointments::search::search(&state, &auth, &query, &search.page(), scope).await?;
    let mut matches = Vec::with_capacity(page.items.len());
    for a in &page.items {
        let (fhir, _) = to_fhir(a)?;
        matches.push(Match {
            id: a.id.to_string(),
            resource: json(fhir)?,
        });
    }
    let count = appointments::search::count(&state, &auth, &query);
    let total = search
        .total(page.next_cursor.as_ref(), matches.len(), count)
        .await?;
    Ok(super::search::respond(
        &base,
        "Appointment",
        &search,
        Some(total),
        matches,
        page.next_cursor,
    ))
}

/// One id for a participant role from every parameter naming it (`400` for two different ones).
fn same_id(name: &str, slot: &mut Option<Uuid>, id: Uuid) -> Result<(), Error> {
    match slot {
        Some(other) if *other != id => Err(Error::bad_parameter(
            name,
            "one patient and one practitioner at most",
        )),
        _ => {
            *slot = Some(id);
            Ok(())
        }
    }
}

/// The domain query of an Appointment search.
fn query(search: &Search) -> Result<AppointmentQuery, Error> {
    let mut q = AppointmentQuery::default();
    for v in search.all("patient") {
        same_id(
            "patient",
            &mut q.patient_id,
            reference_id("patient", v, "Patient")?,
        )?;
    }
    for v in search.all("practitioner") {
        let id = reference_id("practitioner", v, "Practitioner")?;
        same_id("practitioner", &mut q.practitioner_id, id)?;
    }
    for v in search.all("actor") {
        match v.rsplit('/').nth(1) {
            Some("Patient") => same_id(
                "actor",
                &mut q.patient_id,
                reference_id("actor", v, "Patient")?,
            )?,
            Some("Practitioner") => {
                let id = reference_id("actor", v, "Practitioner")?;
                same_id("actor", &mut q.practitioner_id, id)?
            }
            _ => {
                return Err(Error::bad_parameter(
                    "actor",
                    "must be Patient/<id> or Practitioner/<id>",
                ))
            }
        }
    }
    for v in search.all("date") {
        let (lower, upper) = DateParam::parse("date", v)?.bounds();
        if let Some(l) = lower {
            q.starts_from = Some(q.starts_from.map_or(l, |x| x.max(l)));
        }
        if let Some(u) = upper {
            q.starts_before = Some(q.starts_before.map_or(u, |x| x.min(u)));
        }
    }
    if let Some(v) = search.one("status")? {
        for code in v.split(',') {
            let s = Status::parse(code.trim()).ok_or_else(|| {
                Error::bad_parameter(
                    "status",
                    "must be booked, arrived, fulfilled, cancelled or noshow",
                )
            })?;
            if !q.statuses.contains(&s) {
                q.statuses.push(s);
            }
        }
    }
    q.descending = search.sort.as_ref().is_some_and(|(_, desc)| *desc);
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(status: Status, reason: Option<&str>) -> Appointment {
        let at = DateTime::from_timestamp(1_900_000_000, 0).expect("time");
        Appointment {
            id: Uuid::now_v7(),
            patient_id: Uuid::now_v7(),
            practitioner_id: Uuid::now_v7(),
            start: at,
            end: at + chrono::Duration::minutes(30),
            reason: reason.map(str::to_string),
            status,
            access: "full".into(),
            created_by: Uuid::now_v7(),
            created_at: at,
            updated_at: at,
        }
    }

    /// What we serve reads back as the same appointment, for every status.
    #[test]
    fn served_appointments_round_trip() {
        for status in Status::ALL {
            let a = ours(status, Some("knee"));
            let (fhir, version) = to_fhir(&a).expect("fhir");
            let value = json(fhir).expect("json");
            assert_eq!(value["resourceType"], "Appointment");
            assert_eq!(value["status"], status.as_str());
            assert_eq!(value["meta"]["versionId"], version.id());
            let w = wanted(&body(value).expect("body")).expect("wanted");
            assert_eq!(w.status, status);
            assert_eq!(
                (w.patient_id, w.practitioner_id),
                (a.patient_id, a.practitioner_id)
            );
            assert_eq!((w.start, w.end), (a.start, a.end));
            assert_eq!(w.reason.as_deref(), Some("knee"));
        }
        let (fhir, _) = to_fhir(&ours(Status::Booked, None)).expect("fhir");
        assert!(json(fhir).expect("json").get("reasonCode").is_none());
    }

    #[test]
    fn domain_fields_are_named_by_element() {
        let e = fhir_fields(Error::Validation(vec![
            FieldError::new("practitioner_id", "must be an active physician or nurse"),
            FieldError::new("end", "must be after start"),
        ]));
        let Error::Validation(fields) = e else {
            panic!("validation")
        };
        assert_eq!(
            fields[0].field,
            "Appointment.participant.actor (Practitioner)"
        );
        assert_eq!(fields[1].field, "Appointment.end");
    }
}
