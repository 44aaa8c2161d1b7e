//! The FHIR RBAC matrix (#16): every route served under `/fhir/R4` × every kind of caller, one
//! expected status per cell ([`MATRIX`]). Where a route has a JSON twin under `/api/v1`, the same
//! caller on the same record gets the same decision there (allowed, 401, 403 or 404) and the
//! request writes the same audit events (action, outcome, whether they name the record and a
//! resource), except in the cells docs/fhir.md names as deliberately different ([`BY_DESIGN`]).
//! FHIR errors are OperationOutcomes; every refusal is audited as one `access.denied`; what a
//! patient may open of their own record, another patient's answers `404`.
//! The rows are checked against the CapabilityStatement: a route added without a row fails.
mod common;
mod fhir_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{DateTime, Duration, DurationRound, Utc};
use fhir_support::{assert_outcome, fhir, get, medication_request, patient_with};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const MRN_SYSTEM: &str = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;

/// The callers: the matrix's columns, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Admin,
    DoctorInTeam,
    DoctorOutside,
    NurseInTeam,
    NurseOutside,
    Receptionist,
    /// The patient account of the record asked about.
    PatientSelf,
    /// The patient account of another record.
    PatientOther,
}
use Who::*;

#[rustfmt::skip]
const CALLERS: [Who; 9] = [Anonymous, Admin, DoctorInTeam, DoctorOutside, NurseInTeam, NurseOutside, Receptionist, PatientSelf, PatientOther];

/// A FHIR route (under `/fhir/R4`), its JSON twin (under `/api/v1`, `""`: none) and the status
/// each caller of [`CALLERS`] gets. Placeholders: `{patient}` the shared record (care team: the
/// physician and nurse "in team"), `{tag}` its tag (`MRN-<tag>`), `{prescription}` and
/// `{appointment}` its prescription and appointment, `{doc}` the physician in the care team,
/// `{event}` an audit event; `{fresh_…}` one made anew for each request (it is changed or
/// deleted). Bodies: [`body`].
type Row = (&'static str, &'static str, [u16; 9]);

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    // FHIR route                                   JSON twin                                                anon adm  doc  doc  nurs nurs rec  pat  pat
    //                                                                                                                 team out  team out       self oth
    ("GET /metadata",                               "",                                                     [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /openapi.json",                           "",                                                     [200, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /Patient?identifier=MRN-{tag}",           "GET /patients?mrn=MRN-{tag}",                          [401, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("POST /Patient",                               "POST /patients",                                       [401, 201, 201, 201, 201, 201, 201, 403, 403]),
    ("GET /Patient/{patient}",                      "GET /patients/{patient}",                              [401, 200, 200, 403, 200, 403, 200, 200, 404]),
    ("PUT /Patient/{patient}",                      "PATCH /patients/{patient}",                            [401, 200, 200, 403, 200, 403, 200, 403, 403]),
    ("DELETE /Patient/{fresh_patient}",             "DELETE /patients/{fresh_patient}",                     [401, 204, 403, 403, 403, 403, 403, 403, 403]),
    ("GET /Patient/{patient}/$everything",          "",                                                     [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("GET /AuditEvent?patient={patient}",           "GET /audit-events?patient_id={patient}",               [401, 200, 403, 403, 403, 403, 403, 403, 403]),
    ("GET /AuditEvent/{event}",                     "GET /audit-events?patient_id={patient}",               [401, 200, 403, 403, 403, 403, 403, 403, 403]),
    ("GET /MedicationRequest?patient={patient}",    "GET /prescriptions?patient_id={patient}",              [401, 403, 200, 200, 200, 200, 403, 200, 200]),
    ("POST /MedicationRequest",                     "POST /prescriptions",                                  [401, 403, 201, 403, 403, 403, 403, 403, 403]),
    ("GET /MedicationRequest/{prescription}",       "GET /prescriptions/{prescription}",                    [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("PUT /MedicationRequest/{fresh_prescription}", "POST /prescriptions/{fresh_prescription}/discontinue", [401, 403, 200, 403, 403, 403, 403, 403, 403]),
    ("GET /AllergyIntolerance?patient={patient}",   "GET /patients/{patient}",                              [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("GET /AllergyIntolerance/{patient}-0",         "GET /patients/{patient}",                              [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("GET /Condition?patient={patient}",            "GET /patients/{patient}",                              [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("GET /Condition/{patient}-0",                  "GET /patients/{patient}",                              [401, 403, 200, 403, 200, 403, 403, 200, 404]),
    ("GET /Practitioner?_id={doc}",                 "GET /users",                                           [401, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /Practitioner/{doc}",                     "GET /users/{doc}",                                     [401, 200, 200, 200, 200, 200, 200, 200, 200]),
    ("GET /Appointment?patient={patient}",          "GET /appointments?patient_id={patient}",               [401, 200, 200, 200, 200, 200, 200, 200, 200]),
    // booked with the physician of the care team: a nurse books only for herself
    ("POST /Appointment",                           "POST /appointments",                                   [401, 201, 201, 403, 403, 403, 201, 403, 403]),
    ("GET /Appointment/{appointment}",              "GET /appointments/{appointment}",                      [401, 200, 200, 403, 200, 403, 200, 200, 404]),
    ("PUT /Appointment/{fresh_appointment}",        "PATCH /appointments/{fresh_appointment}",              [401, 200, 200, 403, 200, 403, 200, 403, 403]),
];

/// Callers whom a FHIR resource type answers otherwise than its JSON twin, by design
/// (docs/fhir.md): AllergyIntolerance and Condition are clinical data only, so the admins and
/// receptionists whom `GET /api/v1/patients/{id}` answers with the demographics get `403`;
/// Practitioner is open to every role, the account routes of `/api/v1` to admins only.
const BY_DESIGN: &[(&str, &[Who])] = &[
    ("AllergyIntolerance", &[Admin, Receptionist]),
    ("Condition", &[Admin, Receptionist]),
    // every caller after the anonymous one and the admin
    ("Practitioner", CALLERS.split_at(2).1),
];

/// What each request is about.
struct Ids {
    /// The record and the tag it was made with.
    patient: String,
    tag: String,
    /// A tag of its own for what the request creates (an MRN, a medication).
    new: String,
    prescription: String,
    /// The prescription as a MedicationRequest (read by its prescriber).
    medication_request: Value,
    appointment: String,
    /// The appointment's start (fresh appointments), else a slot free for a new booking.
    start: DateTime<Utc>,
    /// The physician in the care team (the practitioner of the appointments).
    doc: Uuid,
    event: i64,
}

/// What a route's requests act on: the shared ids, or something made anew per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    No,
    Patient,
    Prescription,
    Appointment,
}

fn fresh(route: &str) -> Fresh {
    [
        ("{fresh_patient}", Fresh::Patient),
        ("{fresh_prescription}", Fresh::Prescription),
        ("{fresh_appointment}", Fresh::Appointment),
    ]
    .into_iter()
    .find_map(|(p, f)| route.contains(p).then_some(f))
    .unwrap_or(Fresh::No)
}

/// The method and path of `route` for `x`.
fn resolve(route: &str, x: &Ids) -> (Method, String) {
    let (method, path) = route.split_once(' ').expect("METHOD /path");
    let mut path = path.to_string();
    for (k, v) in [
        ("patient", &x.patient),
        ("tag", &x.tag),
        ("prescription", &x.prescription),
        ("appointment", &x.appointment),
        ("doc", &x.doc.to_string()),
        ("event", &x.event.to_string()),
    ] {
        path = path
            .replace(&format!("{{fresh_{k}}}"), v)
            .replace(&format!("{{{k}}}"), v);
    }
    (method.parse().expect("method"), path)
}

/// The resource type (`Patient`, `patients`, ...) a route is about.
fn kind(route: &str) -> &str {
    let path = route.split_once(" /").expect("METHOD /path").1;
    path.split(['/', '?']).next().unwrap_or_default()
}

/// What `metadata` calls the interaction a FHIR route serves (`Patient read`, ...).
fn serves(route: &str) -> String {
    let (method, path) = route.split_once(' ').expect("METHOD /path");
    let path = path.split('?').next().unwrap_or_default();
    let interaction = match (method, path.matches('/').count()) {
        _ if matches!(path, "/metadata" | "/openapi.json") => return path[1..].into(),
        ("GET", 1) => "search-type",
        ("POST", 1) => "create",
        ("GET", 2) => "read",
        ("PUT", 2) => "update",
        ("DELETE", 2) => "delete",
        _ => path.rsplit('/').next().unwrap_or_default(),
    };
    format!("{} {interaction}", kind(route))
}

/// The request body of `route` (FHIR or JSON) for `x`.
fn body(route: &str, x: &Ids) -> Option<Value> {
    let (start, end) = (
        x.start.to_rfc3339(),
        (x.start + Duration::minutes(30)).to_rfc3339(),
    );
    let appointment = |status: &str| {
        json!({"resourceType": "Appointment", "status": status, "start": start, "end": end,
               "participant": [
                   {"actor": {"reference": format!("Patient/{}", x.patient)}, "status": "accepted"},
                   {"actor": {"reference": format!("Practitioner/{}", x.doc)}, "status": "accepted"}]})
    };
    let method = route.split_once(' ').expect("METHOD /path").0;
    Some(match (method, kind(route)) {
        ("POST", "Patient") => fhir_patient(&x.new, None),
        ("PUT", "Patient") => fhir_patient(&x.tag, Some(&x.patient)),
        ("POST", "MedicationRequest") => {
            medication_request(&x.patient, &format!("Rbacmed{}", x.new), None)
        }
        ("PUT", "MedicationRequest") => {
            let mut stopped = x.medication_request.clone();
            stopped["status"] = json!("stopped");
            stopped
        }
        ("POST", "Appointment") => appointment("booked"),
        ("PUT", "Appointment") => {
            let mut arrived = appointment("arrived");
            arrived["id"] = json!(x.appointment);
            arrived
        }
        ("POST", "patients") => common::patient_body(&x.new),
        ("PATCH", "patients") => json!({"phone": "+1 555 0100"}),
        ("POST", "prescriptions") if !route.ends_with("/discontinue") => {
            json!({"patient_id": x.patient, "medication": {"name": format!("Rbacmed{}", x.new)},
                   "dose": "500 mg", "route": "oral", "frequency": "twice daily", "duration_days": 30})
        }
        ("POST", "appointments") => {
            json!({"patient_id": x.patient, "practitioner_id": x.doc, "start": start, "end": end})
        }
        ("PATCH", "appointments") => json!({"status": "arrived"}),
        _ => return None,
    })
}

fn fhir_patient(tag: &str, id: Option<&str>) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": format!("MRN-{tag}")}],
        "name": [{"family": format!("Familyname{tag}"), "given": [format!("Givenname{tag}")]}],
        "gender": "female",
        "birthDate": "1970-03-04",
        "telecom": [{"system": "phone", "value": "+1 555 0100"}]
    });
    if let Some(id) = id {
        p["id"] = json!(id);
    }
    p
}

struct Fixture {
    app: TestApp,
    admin: TestUser,
    doc: TestUser,
    doc_out: TestUser,
    nurse: TestUser,
    nurse_out: TestUser,
    rec: TestUser,
    /// The shared record's patient account, and one linked to another record.
    own: TestUser,
    other: TestUser,
    shared: Ids,
    /// Makes tags and appointment slots unique.
    counter: AtomicI64,
}

/// A record registered by `rec` with `team` assigned to its care team.
async fn record(app: &TestApp, rec: &TestUser, team: [&TestUser; 2], tag: &str) -> String {
    let id = patient_with(app, rec, tag, &["Latex"], &["Asthma"]).await;
    for u in team {
        let uri = format!("/api/v1/patients/{id}/care-team");
        let r = app.post(&uri, &rec.token, json!({"user_id": u.id})).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    id
}

fn uuid(id: &str) -> Uuid {
    id.parse().expect("uuid")
}

impl Fixture {
    async fn new(app: TestApp) -> Self {
        // one account per staff role, then a second physician and nurse (outside the team)
        let mut staff = Vec::new();
        for role in Role::ALL[..4].iter().chain(&Role::ALL[1..3]) {
            staff.push(app.user(*role).await);
        }
        let [admin, doc, nurse, rec, doc_out, nurse_out]: [TestUser; 6] =
            staff.try_into().expect("six accounts");
        let tag = "rbac-shared".to_string();
        let patient = record(&app, &rec, [&doc, &nurse], &tag).await;
        let own = app.patient_user(uuid(&patient)).await;
        let other_record = patient_with(&app, &rec, "rbac-other", &["Dust"], &["Gout"]).await;
        let other = app.patient_user(uuid(&other_record)).await;
        let shared = Ids {
            patient,
            tag,
            new: String::new(),
            prescription: String::new(),
            medication_request: Value::Null,
            appointment: String::new(),
            start: Utc::now(),
            doc: doc.id,
            event: 0,
        };
        let mut fx = Fixture {
            app,
            admin,
            doc,
            doc_out,
            nurse,
            nurse_out,
            rec,
            own,
            other,
            shared,
            counter: AtomicI64::new(0),
        };
        let with_rx = fx.ids(Fresh::Prescription).await;
        let with_appointment = fx.ids(Fresh::Appointment).await;
        fx.shared.prescription = with_rx.prescription;
        fx.shared.medication_request = with_rx.medication_request;
        fx.shared.appointment = with_appointment.appointment;
        fx.shared.event = sqlx::query_scalar("SELECT min(id) FROM audit_events")
            .fetch_one(&fx.app.pool)
            .await
            .expect("an audit event");
        fx
    }

    /// The ids for one request: the shared ones, with what `fresh` asks made anew, a new tag
    /// and a free appointment slot.
    async fn ids(&self, fresh: Fresh) -> Ids {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tomorrow = (Utc::now() + Duration::days(1))
            .duration_trunc(Duration::days(1))
            .expect("trunc");
        let s = &self.shared;
        let mut x = Ids {
            new: format!("rbac{n}"),
            start: tomorrow + Duration::minutes(30 * n),
            patient: s.patient.clone(),
            tag: s.tag.clone(),
            prescription: s.prescription.clone(),
            medication_request: s.medication_request.clone(),
            appointment: s.appointment.clone(),
            ..*s
        };
        match fresh {
            Fresh::No => {}
            Fresh::Patient => {
                x.tag = x.new.clone();
                x.patient = record(&self.app, &self.rec, [&self.doc, &self.nurse], &x.tag).await;
            }
            Fresh::Prescription => {
                x.prescription = self.create("POST /prescriptions", &self.doc, &x).await;
                let uri = format!("/fhir/R4/MedicationRequest/{}", x.prescription);
                x.medication_request = get(&self.app, &uri, &self.doc).await.json;
            }
            Fresh::Appointment => {
                x.appointment = self.create("POST /appointments", &self.rec, &x).await;
            }
        }
        x
    }

    /// Creates through the JSON `route` as `by`; the new id.
    async fn create(&self, route: &str, by: &TestUser, x: &Ids) -> String {
        let (_, path) = resolve(route, x);
        let body = body(route, x).expect("a body");
        let r = self
            .app
            .post(&format!("/api/v1{path}"), &by.token, body)
            .await;
        assert_eq!(r.status, 201, "{route}: {}", r.text);
        r.json["id"].as_str().expect("id").into()
    }

    /// The caller's token; `PatientSelf` is the patient account of `patient`.
    async fn token(&self, who: Who, patient: &str) -> Option<String> {
        let user = match who {
            Anonymous => return None,
            Admin => &self.admin,
            DoctorInTeam => &self.doc,
            DoctorOutside => &self.doc_out,
            NurseInTeam => &self.nurse,
            NurseOutside => &self.nurse_out,
            Receptionist => &self.rec,
            PatientSelf if patient != self.shared.patient => {
                return Some(self.app.patient_user(uuid(patient)).await.token);
            }
            PatientSelf => &self.own,
            PatientOther => &self.other,
        };
        Some(user.token.clone())
    }

    /// `route` as `who` (under `/fhir/R4` or `/api/v1`) on ids of its own, and the audit
    /// events it wrote, sorted.
    async fn send(&self, who: Who, route: &str, fhir_api: bool) -> Sent {
        let ids = self.ids(fresh(route)).await;
        let token = self.token(who, &ids.patient).await;
        let (method, path) = resolve(route, &ids);
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_events")
            .fetch_one(&self.app.pool)
            .await
            .expect("audit head");
        let body = body(route, &ids);
        let r = if fhir_api {
            let uri = format!("/fhir/R4{path}");
            fhir(&self.app, method, &uri, token.as_deref(), body, &[]).await
        } else {
            let uri = format!("/api/v1{path}");
            self.app.call(method, &uri, token.as_deref(), body).await
        };
        let events = sqlx::query_as(
            "SELECT action, outcome, patient_id IS NOT DISTINCT FROM $2, resource_id IS NOT NULL \
             FROM audit_events WHERE id > $1 ORDER BY 1, 2, 3, 4",
        )
        .bind(last)
        .bind(uuid(&ids.patient))
        .fetch_all(&self.app.pool)
        .await
        .expect("audit events");
        Sent { r, events }
    }
}

struct Sent {
    r: TestResponse,
    /// Action, outcome, whether it names the record asked about, whether it names a resource.
    events: Vec<(String, String, bool, bool)>,
}

/// The access decision a status stands for.
fn decision(status: u16) -> String {
    match status {
        200..=299 => "allowed".into(),
        s => s.to_string(),
    }
}

/// The OperationOutcome issue code of an access refusal.
fn issue_code(status: u16) -> &'static str {
    match status {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        _ => "invalid",
    }
}

/// What `metadata` declares, `<type> <interaction>` and `<type> $<operation>`, and the two
/// descriptions of the interface (`metadata`, `openapi.json`).
async fn declared(app: &TestApp) -> BTreeSet<String> {
    let r = fhir(app, Method::GET, "/fhir/R4/metadata", None, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut out = BTreeSet::from(["metadata".to_string(), "openapi.json".to_string()]);
    for res in r.json["rest"][0]["resource"].as_array().expect("resources") {
        let kind = res["type"].as_str().expect("type");
        for (field, key, prefix) in [("interaction", "code", ""), ("operation", "name", "$")] {
            for x in res[field].as_array().into_iter().flatten() {
                out.insert(format!("{kind} {prefix}{}", x[key].as_str().expect(key)));
            }
        }
    }
    out
}

#[sqlx::test]
async fn every_fhir_route_decides_and_audits_as_its_json_twin(pool: PgPool) {
    let fx = Fixture::new(TestApp::new(pool).await).await;
    let rows: BTreeSet<String> = MATRIX.iter().map(|(route, ..)| serves(route)).collect();
    assert_eq!(
        rows,
        declared(&fx.app).await,
        "one row per route metadata declares"
    );
    let mut failures = Vec::new();
    for &(route, twin, expect) in MATRIX {
        // what a patient may open of their own record, another patient's answers 404
        if decision(expect[7]) == "allowed" {
            assert_ne!(
                expect[8], 403,
                "{route}: another patient's record is 404, never 403"
            );
        }
        let by_design = BY_DESIGN
            .iter()
            .find(|(k, _)| *k == kind(route))
            .map_or(&[][..], |d| d.1);
        for (who, expected) in CALLERS.into_iter().zip(expect) {
            let f = fx.send(who, route, true).await;
            if f.r.status != expected {
                let got = f.r.status;
                failures.push(format!(
                    "{route} as {who:?}: expected {expected}, got {got}: {}",
                    f.r.text
                ));
                continue;
            }
            if expected >= 400 {
                assert_outcome(&f.r, expected, issue_code(expected));
            }
            let denial = f.events.len() == 1 && f.events[0].0 == "access.denied";
            if [403, 404].contains(&expected) && !denial {
                failures.push(format!(
                    "{route} as {who:?}: refused but audited {:?}",
                    f.events
                ));
            }
            if twin.is_empty() || by_design.contains(&who) {
                continue;
            }
            let j = fx.send(who, twin, false).await;
            if decision(f.r.status) != decision(j.r.status) {
                failures.push(format!(
                    "{route} as {who:?}: {expected}, but {twin} answers {}: {}",
                    j.r.status, j.r.text
                ));
            } else if f.events != j.events {
                failures.push(format!(
                    "{route} as {who:?}: audited {:?}, {twin} audited {:?}",
                    f.events, j.events
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells of the matrix differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
