//! Exact `Bundle.total` on every page and `_summary=count` for the Appointment, Practitioner and
//! MedicationRequest searches through the real router and Postgres: the total is the same on the
//! first and the next page and narrowed by the search's filters; a count carries no entries and
//! no next link; counts are access-scoped like the lists (admins, the care team, a patient's own,
//! another patient's or another team's none, refused roles still refused, break-glass opening
//! one patient) and audited like the list they count (once on the type, not per record;
//! break-glass as a break-glass opening of that patient); the JSON lists are unchanged.

mod common;
mod fhir_support;

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::Duration;
use common::{audit_count, create_patient};
use fhir_support::{
    appointment, assert_outcome, book, fhir, get, ids, next_path, patient_with, search, tomorrow,
};
use serde_json::{json, Value};
use sqlx::PgPool;

/// `GET path` by `who`, which must answer 200.
async fn fhir_ok(app: &TestApp, who: &TestUser, path: &str) -> TestResponse {
    let r = fhir(app, Method::GET, path, Some(&who.token), None, &[]).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r
}

/// A Practitioner search by `who`, which must answer 200.
async fn practitioners(app: &TestApp, who: &TestUser, query: &str) -> TestResponse {
    fhir_ok(app, who, &format!("/fhir/R4/Practitioner?{query}")).await
}

/// Audit events of `action` that name no record (a count's, or an empty list's).
async fn unnamed_events(app: &TestApp, action: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = $1 AND resource_id IS NULL",
    )
    .bind(action)
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

/// Prescribe `name` (an unknown medication: no interactions) for `patient` on the JSON route.
async fn prescribe(app: &TestApp, by: &TestUser, patient: &str, name: &str) -> String {
    let r = app
        .post(
            "/api/v1/prescriptions",
            &by.token,
            json!({"patient_id": patient, "medication": {"name": name}, "dose": "1 tablet",
                   "route": "oral", "frequency": "once daily", "duration_days": 10}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().expect("id").to_string()
}

/// A MedicationRequest search by `who`, which must answer 200.
async fn medication_requests(app: &TestApp, who: &TestUser, query: &str) -> TestResponse {
    let r = get(app, &format!("/fhir/R4/MedicationRequest?{query}"), who).await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r
}

/// The number of a Bundle's entries.
fn entries(bundle: &Value) -> usize {
    bundle["entry"].as_array().map_or(0, Vec::len)
}

#[sqlx::test]
async fn appointment_totals_are_exact_over_pages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &doc, "fa6").await;
    for h in [9, 10, 11] {
        book(&app, &doc, appointment(&patient, &doc, h, "Reasonfa6")).await;
    }
    let other_doc = app.user(Role::Physician).await;
    let other = create_patient(&app, &other_doc, "fa6b").await;
    book(
        &app,
        &other_doc,
        appointment(&other, &other_doc, 12, "Reasonfa6b"),
    )
    .await;

    // two per page: the first and the second page carry the exact total of the caller's scope
    let first = search(&app, &doc, "_count=2").await;
    assert_eq!(ids(&first.json).len(), 2);
    assert_eq!(first.json["total"], 3, "{}", first.text);
    let next = next_path(&first.json).expect("next link");
    let second = fhir_ok(&app, &doc, &next).await;
    assert_eq!(ids(&second.json).len(), 1);
    assert_eq!(second.json["total"], 3, "{}", second.text);
    assert!(next_path(&second.json).is_none());
    // the list's filters narrow the count too
    let after_nine = (tomorrow() + Duration::hours(9))
        .to_rfc3339()
        .replace('+', "%2B");
    for (q, n) in [
        (format!("date=gt{after_nine}&_count=1"), 2),
        (
            format!("patient={patient}&status=booked,noshow&_count=1"),
            3,
        ),
        ("status=cancelled&_count=1".to_string(), 0),
        ("_sort=-date&_count=1".to_string(), 3),
    ] {
        let r = search(&app, &doc, &q).await;
        assert_eq!(r.json["total"], n, "{q}: {}", r.text);
    }

    // _summary=count: the total alone, no entries, nothing listed; audited once on the type
    let listed = audit_count(&app, "appointment.list", Some(&patient)).await;
    let counts = unnamed_events(&app, "appointment.list").await;
    let r = search(&app, &doc, "_summary=count").await;
    assert_eq!(r.json["total"], 3, "{}", r.text);
    assert!(r.json.get("entry").is_none(), "{}", r.text);
    assert!(next_path(&r.json).is_none());
    assert_eq!(unnamed_events(&app, "appointment.list").await, counts + 1);
    assert_eq!(
        audit_count(&app, "appointment.list", Some(&patient)).await,
        listed
    );

    // totals respect access: everything for admins, the care team's, a patient's own
    let admin = app.user(Role::Admin).await;
    let nurse = app.user(Role::Nurse).await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;
    let other_own = app.patient_user(other.parse().expect("uuid")).await;
    for (who, n) in [
        (&admin, 4),
        (&nurse, 0),
        (&other_doc, 1),
        (&own, 3),
        (&other_own, 1),
    ] {
        for q in ["_summary=count", "_count=1"] {
            let r = search(&app, who, q).await;
            assert_eq!(r.json["total"], n, "{:?} {q}: {}", who.role, r.text);
        }
    }
    let r = search(&app, &own, &format!("patient={other}&_summary=count")).await;
    assert_eq!(r.json["total"], 0, "another patient's: {}", r.text);
    let r = search(
        &app,
        &other_doc,
        &format!("patient={patient}&_summary=count"),
    )
    .await;
    assert_eq!(r.json["total"], 0, "outside the care team: {}", r.text);
    break_glass_count_and_json_list(
        &app,
        "Appointment",
        "appointments",
        &patient,
        &doc,
        &other_doc,
    )
    .await;
}

#[sqlx::test]
async fn practitioner_totals_are_exact_over_pages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let docs = [
        app.user(Role::Physician).await,
        app.user(Role::Physician).await,
        app.user(Role::Nurse).await,
    ];
    let nurse = app.user(Role::Nurse).await;
    let rec = app.user(Role::Receptionist).await;
    let patient = create_patient(&app, &rec, "fa7").await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;

    // two per page: both pages carry the total of the four active clinicians
    let first = practitioners(&app, &rec, "_count=2").await;
    assert_eq!(ids(&first.json).len(), 2);
    assert_eq!(first.json["total"], 4, "{}", first.text);
    let second = fhir_ok(&app, &rec, &next_path(&first.json).expect("next link")).await;
    assert_eq!(ids(&second.json).len(), 2);
    assert_eq!(second.json["total"], 4, "{}", second.text);
    // the search's filters narrow the count (the receptionist is no practitioner)
    let some = format!("{},{},{}", docs[0].id, nurse.id, rec.id);
    let r = practitioners(&app, &rec, &format!("_id={some}&_count=1")).await;
    assert_eq!(r.json["total"], 2, "{}", r.text);

    // _summary=count: the total alone, audited as the list
    let lists = audit_count(&app, "user.list", None).await;
    for who in [&rec, &own, &nurse] {
        let r = practitioners(&app, who, "_summary=count").await;
        assert_eq!(r.json["total"], 4, "{:?}: {}", who.role, r.text);
        assert!(r.json.get("entry").is_none(), "{}", r.text);
    }
    assert_eq!(audit_count(&app, "user.list", None).await, lists + 3);
    let r = practitioners(&app, &own, &format!("_id={some}&_summary=count")).await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
}

#[sqlx::test]
async fn medication_request_totals_are_exact_over_pages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "fm6", &[], &[]).await;
    let mut ids = Vec::new();
    for name in ["Fmtotal one", "Fmtotal two", "Fmtotal three"] {
        ids.push(prescribe(&app, &doc, &patient, name).await);
    }
    let other_doc = app.user(Role::Physician).await;
    let other = patient_with(&app, &other_doc, "fm7", &[], &[]).await;
    prescribe(&app, &other_doc, &other, "Fmtotal four").await;

    // two per page: the first and the second page carry the exact total of the caller's scope
    let first = medication_requests(&app, &doc, "_count=2").await;
    assert_eq!(entries(&first.json), 2);
    assert_eq!(first.json["total"], 3, "{}", first.text);
    let next = next_path(&first.json).expect("next link");
    let second = get(&app, &next, &doc).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(entries(&second.json), 1);
    assert_eq!(second.json["total"], 3, "{}", second.text);
    assert!(next_path(&second.json).is_none());
    // the list's filters narrow the count too
    let stopped = app
        .post(
            &format!("/api/v1/prescriptions/{}/discontinue", ids[0]),
            &doc.token,
            json!({}),
        )
        .await;
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    for (q, n) in [
        ("status=active&_count=1".to_string(), 2),
        (format!("patient=Patient/{patient}&_count=1"), 3),
        (format!("patient={other}&_count=1"), 0),
        ("status=stopped&_summary=count".to_string(), 1),
        ("intent=plan&_summary=count".to_string(), 0),
    ] {
        let r = medication_requests(&app, &doc, &q).await;
        assert_eq!(r.json["total"], n, "{q}: {}", r.text);
    }

    // _summary=count: the total alone, no entries, nothing listed; audited once on the type
    let listed = audit_count(&app, "prescription.list", Some(&patient)).await;
    let counts = audit_count(&app, "prescription.list", None).await;
    let r = medication_requests(&app, &doc, "_summary=count").await;
    assert_eq!(r.json["total"], 3, "{}", r.text);
    assert!(r.json.get("entry").is_none(), "{}", r.text);
    assert_eq!(
        audit_count(&app, "prescription.list", None).await,
        counts + 1
    );
    assert_eq!(
        audit_count(&app, "prescription.list", Some(&patient)).await,
        listed
    );

    // totals respect access: the care team's, a patient's own; others see none
    let nurse = app.user(Role::Nurse).await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;
    let other_own = app.patient_user(other.parse().expect("uuid")).await;
    for (who, n) in [(&nurse, 0), (&other_doc, 1), (&own, 3), (&other_own, 1)] {
        for q in ["_summary=count", "_count=1"] {
            let r = medication_requests(&app, who, q).await;
            assert_eq!(r.json["total"], n, "{:?} {q}: {}", who.role, r.text);
        }
    }
    let r = medication_requests(&app, &own, &format!("patient={other}&_summary=count")).await;
    assert_eq!(r.json["total"], 0, "another patient's: {}", r.text);
    // admins and receptionists are refused as before, counts included (and the refusal audited)
    for role in [Role::Admin, Role::Receptionist] {
        let who = app.user(role).await;
        for q in ["_summary=count", "_count=2"] {
            let r = get(&app, &format!("/fhir/R4/MedicationRequest?{q}"), &who).await;
            assert_outcome(&r, 403, "forbidden");
        }
    }
    break_glass_count_and_json_list(
        &app,
        "MedicationRequest",
        "prescriptions",
        &patient,
        &doc,
        &other_doc,
    )
    .await;
}

/// A `_summary=count` through break-glass on `patient`'s `resource` (3 matches) by `other_doc`
/// (outside the care team) is audited as one break-glass opening of that patient; the JSON list
/// `json_list` still pages as before (2 of more, with a cursor) for `doc`.
async fn break_glass_count_and_json_list(
    app: &TestApp,
    resource: &str,
    json_list: &str,
    patient: &str,
    doc: &TestUser,
    other_doc: &TestUser,
) {
    let glass = audit_count(app, "patient.break_glass", Some(patient)).await;
    let r = fhir(
        app,
        Method::GET,
        &format!("/fhir/R4/{resource}?patient={patient}&_summary=count"),
        Some(&other_doc.token),
        None,
        &[("x-break-glass-reason", "unconscious patient in ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 3, "{}", r.text);
    assert_eq!(
        audit_count(app, "patient.break_glass", Some(patient)).await,
        glass + 1
    );
    let json = app
        .get(&format!("/api/v1/{json_list}?limit=2"), &doc.token)
        .await;
    assert_eq!(json.json["items"].as_array().map(Vec::len), Some(2));
    assert!(json.json["next_cursor"].is_string(), "{}", json.text);
}

#[sqlx::test]
async fn a_narrowed_patient_count_or_search_through_break_glass_is_audited(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &doc, "fa9").await;
    let stranger = app.user(Role::Physician).await;
    let system = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;
    let query = format!("identifier={system}|MRN-fa9&given=Givennamefa9&_summary=count");
    // outside the care team: the narrowed count finds nothing and opens nothing
    let r = get(&app, &format!("/fhir/R4/Patient?{query}"), &stranger).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 0, "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&patient)).await,
        0
    );
    // through break-glass it decrypts the record to check `given`: one opening, audited
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Patient?{query}"),
        Some(&stranger.token),
        None,
        &[("x-break-glass-reason", "unconscious patient in ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 1, "{}", r.text);
    assert!(r.json["entry"].is_null(), "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&patient)).await,
        1
    );
    assert_eq!(
        audit_count(&app, "patient.search", Some(&patient)).await,
        1,
        "the count's own event names the patient it opened"
    );
    // a search whose narrowing turns the opened record down still opened it: audited too
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Patient?identifier={system}|MRN-fa9&given=Someoneelse"),
        Some(&stranger.token),
        None,
        &[("x-break-glass-reason", "unconscious patient in ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 0, "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&patient)).await,
        2
    );
}
