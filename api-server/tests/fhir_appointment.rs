//! FHIR R4 Appointment and Practitioner at `/fhir/R4` through the real router and Postgres:
//! create / read / search (patient, actor, practitioner, date prefixes, status, _sort, paging) /
//! status changes (transitions, cancel, If-Match), double booking (also concurrent), the same
//! access decisions and audit events as `/api/v1/appointments`; Practitioner read and search for
//! active clinicians only, the e-mail for admins only; both searches' exact `total` over all
//! pages and `_summary=count` (access-scoped, audited).

mod common;
mod fhir_support;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{audit_count, create_patient};
use fhir_support::{assert_outcome, fhir};
use serde_json::{json, Value};
use sqlx::PgPool;

/// Tomorrow 00:00 UTC.
fn tomorrow() -> DateTime<Utc> {
    (Utc::now() + Duration::days(1))
        .duration_trunc(Duration::days(1))
        .expect("trunc")
}

/// A FHIR Appointment of `patient` with `practitioner`, `h` hours after tomorrow 00:00 UTC,
/// 30 minutes long.
fn appointment(patient: &str, practitioner: &TestUser, h: i64, reason: &str) -> Value {
    let start = tomorrow() + Duration::hours(h);
    json!({
        "resourceType": "Appointment",
        "status": "booked",
        "start": start.to_rfc3339(),
        "end": (start + Duration::minutes(30)).to_rfc3339(),
        "reasonCode": [{"text": reason}],
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{}", practitioner.id)}, "status": "accepted"}
        ]
    })
}

async fn book(app: &TestApp, by: &TestUser, body: Value) -> Value {
    let r = fhir(
        app,
        Method::POST,
        "/fhir/R4/Appointment",
        Some(&by.token),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

async fn search(app: &TestApp, by: &TestUser, query: &str) -> TestResponse {
    let r = fhir(
        app,
        Method::GET,
        &format!("/fhir/R4/Appointment?{query}"),
        Some(&by.token),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    assert_eq!(r.json["type"], "searchset");
    r
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
/// The path (from `/fhir/R4/`) of a searchset's `next` link.
fn next_path(bundle: &Value) -> Option<String> {
    let url = bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?["url"]
        .as_str()?;
    url.find("/fhir/R4/").map(|i| url[i..].to_string())
}

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

/// PUT `body` with its status set to `status`, `If-Match` the given version.
async fn put_status(
    app: &TestApp,
    by: &TestUser,
    current: &Value,
    status: &str,
    version: Option<&str>,
) -> TestResponse {
    let mut body = current.clone();
    body["status"] = json!(status);
    let id = current["id"].as_str().expect("id");
    let tag = version.map(|v| format!("W/\"{v}\""));
    let headers: Vec<(&str, &str)> = tag.iter().map(|t| ("if-match", t.as_str())).collect();
    fhir(
        app,
        Method::PUT,
        &format!("/fhir/R4/Appointment/{id}"),
        Some(&by.token),
        Some(body),
        &headers,
    )
    .await
}

fn version(resource: &Value) -> String {
    resource["meta"]["versionId"]
        .as_str()
        .expect("versionId")
        .to_string()
}

#[sqlx::test]
async fn appointment_create_read_search_and_status_changes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "fa1").await;

    // a receptionist books with the physician: the reason is PHI she does not see
    let created = book(&app, &rec, appointment(&patient, &doc, 9, "Reasonfa1 knee")).await;
    assert_eq!(created["resourceType"], "Appointment");
    assert_eq!(created["status"], "booked");
    assert!(created.get("reasonCode").is_none(), "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        audit_count(&app, "appointment.create", Some(&patient)).await,
        1
    );
    let participants: Vec<&str> = created["participant"]
        .as_array()
        .expect("participants")
        .iter()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .collect();
    assert_eq!(
        participants,
        [
            format!("Patient/{patient}"),
            format!("Practitioner/{}", doc.id)
        ]
    );

    // the practitioner (now in the care team) reads it with the reason, as on /api/v1
    let url = format!("/fhir/R4/Appointment/{id}");
    let r = fhir(&app, Method::GET, &url, Some(&doc.token), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reasonCode"][0]["text"], "Reasonfa1 knee");
    let v = version(&r.json);
    assert_eq!(r.header("etag"), Some(format!("W/\"{v}\"").as_str()));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        audit_count(&app, "appointment.read", Some(&patient)).await,
        1
    );
    let json = app
        .get(&format!("/api/v1/appointments/{id}"), &doc.token)
        .await;
    assert_eq!(json.json["reason"], "Reasonfa1 knee");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(json.json["start"].as_str().expect("start"))
            .expect("start"),
        chrono::DateTime::parse_from_rfc3339(r.json["start"].as_str().expect("start"))
            .expect("start")
    );

    // a second, later one the same day
    let later = book(
        &app,
        &doc,
        appointment(&patient, &doc, 11, "Reasonfa1 later"),
    )
    .await;
    let later_id = later["id"].as_str().expect("id").to_string();
    let day = tomorrow().format("%Y-%m-%d").to_string();
    let at_nine = (tomorrow() + Duration::hours(9)).to_rfc3339();
    let both = [id.clone(), later_id.clone()];
    for (q, expected) in [
        (format!("patient=Patient/{patient}"), both.to_vec()),
        (format!("patient={patient}"), both.to_vec()),
        (format!("actor=Practitioner/{}", doc.id), both.to_vec()),
        (format!("actor=Patient/{patient}"), both.to_vec()),
        (
            format!("practitioner=Practitioner/{}", doc.id),
            both.to_vec(),
        ),
        ("status=booked".into(), both.to_vec()),
        ("status=cancelled,noshow".into(), vec![]),
        (format!("date={day}"), both.to_vec()),
        (format!("date=ge{day}"), both.to_vec()),
        (format!("date=lt{day}"), vec![]),
        (format!("date=gt{day}"), vec![]),
        (format!("date=le{day}"), both.to_vec()),
        (
            format!("date={}", at_nine.replace('+', "%2B")),
            vec![id.clone()],
        ),
        (
            format!("date=gt{}", at_nine.replace('+', "%2B")),
            vec![later_id.clone()],
        ),
        (
            format!("date=ge{day}&date=lt{}", at_nine.replace('+', "%2B")),
            vec![],
        ),
        ("_sort=date".into(), both.to_vec()),
        ("_sort=-date".into(), vec![later_id.clone(), id.clone()]),
    ] {
        let r = search(&app, &doc, &q).await;
        assert_eq!(ids(&r.json), expected, "{q}: {}", r.text);
        assert_eq!(r.json["total"], expected.len(), "{q}");
    }
    // paging: one per page, newest first, through the opaque cursor of the next link
    let r = search(&app, &doc, "_sort=-date&_count=1").await;
    assert_eq!(ids(&r.json), [later_id.as_str()]);
    let next = r.json["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .expect("next link")
        .to_string();
    let path = &next[next.find("/fhir/R4/").expect("base")..];
    let r = fhir(&app, Method::GET, path, Some(&doc.token), None, &[]).await;
    assert_eq!(ids(&r.json), [id.as_str()], "{}", r.text);
    // _summary=count
    let r = search(&app, &doc, "status=booked&_summary=count").await;
    assert_eq!(r.json["total"], 2);
    assert!(r.json.get("entry").is_none());
    assert!(audit_count(&app, "appointment.list", Some(&patient)).await >= 2);

    // status changes along the transitions, with If-Match
    let current = fhir(&app, Method::GET, &url, Some(&doc.token), None, &[])
        .await
        .json;
    let r = put_status(&app, &doc, &current, "arrived", Some(&version(&current))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "arrived");
    assert_ne!(version(&r.json), version(&current));
    assert_eq!(
        audit_count(&app, "appointment.update", Some(&patient)).await,
        1
    );
    // the old version: 412, nothing changed
    let r = put_status(&app, &doc, &current, "fulfilled", Some(&version(&current))).await;
    assert_outcome(&r, 412, "conflict");
    let arrived = fhir(&app, Method::GET, &url, Some(&doc.token), None, &[])
        .await
        .json;
    assert_eq!(arrived["status"], "arrived");
    // back to booked is no transition: 409, as on /api/v1
    let r = put_status(&app, &doc, &arrived, "booked", None).await;
    assert_outcome(&r, 409, "conflict");
    let j = app
        .patch(
            &format!("/api/v1/appointments/{id}"),
            &doc.token,
            json!({"status": "booked"}),
        )
        .await;
    assert_eq!(j.status, 409);
    let r = put_status(&app, &doc, &arrived, "fulfilled", Some(&version(&arrived))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "fulfilled");
    let r = put_status(&app, &doc, &r.json, "cancelled", None).await;
    assert_outcome(&r, 409, "conflict");
    // unknown status code: 422
    let r = put_status(&app, &doc, &later, "waitlist", None).await;
    assert_outcome(&r, 422, "invalid");

    // cancel = status cancelled: the cancellation of the JSON route, and the slot is free
    // (the receptionist's view, without the reason she may not see or change)
    let seen = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Appointment/{later_id}"),
        Some(&rec.token),
        None,
        &[],
    )
    .await
    .json;
    assert!(seen.get("reasonCode").is_none(), "{seen}");
    let r = put_status(&app, &rec, &seen, "cancelled", Some(&version(&seen))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(
        audit_count(&app, "appointment.cancel", Some(&patient)).await,
        1
    );
    let j = app
        .get(&format!("/api/v1/appointments/{later_id}"), &doc.token)
        .await;
    assert_eq!(j.json["status"], "cancelled");
    book(
        &app,
        &rec,
        appointment(&patient, &doc, 11, "Reasonfa1 again"),
    )
    .await;

    // a reschedule through PUT: a new start and end
    let again = search(&app, &doc, "status=booked").await.json["entry"][0]["resource"].clone();
    let mut moved = again.clone();
    let start = tomorrow() + Duration::hours(14);
    moved["start"] = json!(start.to_rfc3339());
    moved["end"] = json!((start + Duration::minutes(45)).to_rfc3339());
    let r = fhir(
        &app,
        Method::PUT,
        &format!("/fhir/R4/Appointment/{}", again["id"].as_str().expect("id")),
        Some(&doc.token),
        Some(moved),
        &[("if-match", &format!("W/\"{}\"", version(&again)))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        DateTime::parse_from_rfc3339(r.json["start"].as_str().expect("start")).expect("start"),
        start
    );
}

#[sqlx::test]
async fn double_booking_is_refused_also_concurrently(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let p1 = create_patient(&app, &rec, "fa2a").await;
    let p2 = create_patient(&app, &rec, "fa2b").await;
    book(&app, &rec, appointment(&p1, &doc, 9, "Reasonfa2 one")).await;
    // another patient, overlapping slot of the same practitioner: 409, no PHI in the outcome
    let mut overlapping = appointment(&p2, &doc, 9, "Reasonfa2 two");
    overlapping["start"] = json!((tomorrow() + Duration::minutes(9 * 60 + 15)).to_rfc3339());
    overlapping["end"] = json!((tomorrow() + Duration::minutes(10 * 60)).to_rfc3339());
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/Appointment",
        Some(&rec.token),
        Some(overlapping),
        &[],
    )
    .await;
    assert_outcome(&r, 409, "conflict");
    assert!(!r.text.contains("Reasonfa2"), "{}", r.text);

    // many concurrent bookings of one free slot: exactly one wins
    let attempts = (0..8).map(|i| {
        let patient = if i % 2 == 0 { &p1 } else { &p2 };
        fhir(
            &app,
            Method::POST,
            "/fhir/R4/Appointment",
            Some(&rec.token),
            Some(appointment(patient, &doc, 13, "Reasonfa2 race")),
            &[],
        )
    });
    let results = futures::future::join_all(attempts).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    for r in results.iter().filter(|r| r.status != 201) {
        assert_outcome(r, 409, "conflict");
    }
    let booked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM appointments WHERE practitioner_id = $1 AND status = 'booked'",
    )
    .bind(doc.id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(booked, 2);
}

#[sqlx::test]
async fn appointment_errors_are_operation_outcomes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "fa3").await;
    let t = Some(rec.token.as_str());
    let post = |body: Value| {
        let app = &app;
        async move {
            fhir(
                app,
                Method::POST,
                "/fhir/R4/Appointment",
                t,
                Some(body),
                &[],
            )
            .await
        }
    };
    assert_outcome(
        &fhir(&app, Method::GET, "/fhir/R4/Appointment", None, None, &[]).await,
        401,
        "login",
    );
    // no practitioner participant
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["participant"] =
        json!([{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]);
    let r = post(b).await;
    assert_outcome(&r, 422, "invalid");
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Appointment.participant"
    );
    // a Device participant
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["participant"][1]["actor"]["reference"] = json!("Device/1");
    assert_outcome(&post(b).await, 422, "invalid");
    // a new appointment is booked, not proposed
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["status"] = json!("proposed");
    assert_outcome(&post(b).await, 422, "invalid");
    // end before start: the domain's rule, named by FHIR element
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["end"] = json!((tomorrow() + Duration::hours(8)).to_rfc3339());
    let r = post(b).await;
    assert_outcome(&r, 422, "invalid");
    assert_eq!(r.json["issue"][0]["expression"][0], "Appointment.end");
    // the practitioner must be a physician or nurse
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["participant"][1]["actor"]["reference"] = json!(format!("Practitioner/{}", rec.id));
    let r = post(b).await;
    assert_outcome(&r, 422, "invalid");
    assert!(!r.text.contains("Reasonfa3"), "{}", r.text);
    // an unknown patient
    let b = appointment(&uuid::Uuid::new_v4().to_string(), &doc, 9, "Reasonfa3");
    assert_outcome(&post(b).await, 422, "invalid");
    // the reason goes in reasonCode.text, not description
    let mut b = appointment(&patient, &doc, 9, "Reasonfa3");
    b["description"] = json!("Reasonfa3");
    assert_outcome(&post(b).await, 422, "invalid");
    // not an Appointment at all
    assert_outcome(
        &post(json!({"resourceType": "Patient"})).await,
        422,
        "invalid",
    );
    assert_outcome(
        &post(json!({"resourceType": "Appointment", "status": "booked"})).await,
        422,
        "invalid",
    );
    // 404 for ids that are not ours, 405 for DELETE, 400 for unknown or bad search parameters
    for url in [
        "/fhir/R4/Appointment/not-an-id".to_string(),
        format!("/fhir/R4/Appointment/{}", uuid::Uuid::new_v4()),
    ] {
        assert_outcome(
            &fhir(&app, Method::GET, &url, t, None, &[]).await,
            404,
            "not-found",
        );
    }
    let created = book(&app, &rec, appointment(&patient, &doc, 9, "Reasonfa3")).await;
    let url = format!(
        "/fhir/R4/Appointment/{}",
        created["id"].as_str().expect("id")
    );
    assert_outcome(
        &fhir(&app, Method::DELETE, &url, t, None, &[]).await,
        405,
        "not-supported",
    );
    let mut wrong_id = created.clone();
    wrong_id["id"] = json!(uuid::Uuid::new_v4().to_string());
    assert_outcome(
        &fhir(&app, Method::PUT, &url, t, Some(wrong_id), &[]).await,
        422,
        "invalid",
    );
    let mut other_patient = created.clone();
    other_patient["participant"][0]["actor"]["reference"] =
        json!(format!("Patient/{}", uuid::Uuid::new_v4()));
    assert_outcome(
        &fhir(&app, Method::PUT, &url, t, Some(other_patient), &[]).await,
        422,
        "invalid",
    );
    for q in [
        "location=x",
        "date=tomorrow",
        "actor=Device/1",
        "patient=Practitioner/1",
        "status=unknown",
        "_sort=status",
        "status=booked&status=noshow",
    ] {
        let r = fhir(
            &app,
            Method::GET,
            &format!("/fhir/R4/Appointment?{q}"),
            t,
            None,
            &[],
        )
        .await;
        assert_outcome(&r, 400, "invalid");
    }
    let r = fhir(
        &app,
        Method::GET,
        "/fhir/R4/Appointment?location=x",
        t,
        None,
        &[("prefer", "handling=lenient")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/fhir/R4/Appointment")
        .header("authorization", format!("Bearer {}", rec.token))
        .header("content-type", "text/plain")
        .body(Body::from("booked"))
        .expect("request");
    assert_outcome(&app.send(req).await, 415, "not-supported");
}

/// The same decisions as `/api/v1/appointments` for every role, with the same statuses.
#[sqlx::test]
async fn appointment_access_is_the_json_routes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "fa4").await;
    let created = book(&app, &rec, appointment(&patient, &doc, 9, "Reasonfa4")).await;
    let id = created["id"].as_str().expect("id").to_string();
    let other_doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;
    let other_patient = create_patient(&app, &rec, "fa4b").await;
    let stranger = app.patient_user(other_patient.parse().expect("uuid")).await;
    let admin = app.user(Role::Admin).await;
    for (who, reason_visible) in [
        (&doc, Some(true)),
        (&own, Some(true)),
        (&rec, Some(false)),
        (&admin, Some(false)),
        (&other_doc, None),
        (&nurse, None),
        (&stranger, None),
    ] {
        let json = app
            .get(&format!("/api/v1/appointments/{id}"), &who.token)
            .await;
        let r = fhir(
            &app,
            Method::GET,
            &format!("/fhir/R4/Appointment/{id}"),
            Some(&who.token),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, json.status, "{:?}: {}", who.role, r.text);
        match reason_visible {
            Some(visible) => {
                assert_eq!(r.json["reasonCode"].is_array(), visible, "{:?}", who.role);
                assert_eq!(json.json.get("reason").is_some(), visible);
            }
            None => assert_eq!(r.json["resourceType"], "OperationOutcome"),
        }
        // searches return what the JSON list returns
        let list = app.get("/api/v1/appointments", &who.token).await;
        let r = search(&app, who, "").await;
        assert_eq!(
            r.json["total"],
            list.json["items"].as_array().map_or(0, |a| a.len()),
            "{:?}",
            who.role
        );
    }
    // a patient from another record: 404 as for a record they may not know exists
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Appointment/{id}"),
        Some(&stranger.token),
        None,
        &[],
    )
    .await;
    assert_outcome(&r, 404, "not-found");
    // booking: patients may not (403); a nurse outside the care team may not book for herself
    for who in [&own, &nurse] {
        let body = appointment(&patient, &nurse, 15, "Reasonfa4 nurse");
        let r = fhir(
            &app,
            Method::POST,
            "/fhir/R4/Appointment",
            Some(&who.token),
            Some(body),
            &[],
        )
        .await;
        let plain = json!({"patient_id": patient, "practitioner_id": nurse.id,
            "start": (tomorrow() + Duration::hours(15)).to_rfc3339(),
            "end": (tomorrow() + Duration::minutes(15 * 60 + 30)).to_rfc3339()});
        let j = app.post("/api/v1/appointments", &who.token, plain).await;
        assert_eq!(r.status, j.status, "{:?}: {}", who.role, r.text);
        assert_outcome(&r, 403, "forbidden");
    }
    // changes: a physician outside the care team gets the JSON route's status
    let r = put_status(&app, &other_doc, &created, "arrived", None).await;
    let j = app
        .patch(
            &format!("/api/v1/appointments/{id}"),
            &other_doc.token,
            json!({"status": "arrived"}),
        )
        .await;
    assert_eq!(r.status, j.status, "{}", r.text);
    assert_outcome(&r, 403, "forbidden");
    // a receptionist may not change the (clinical) reason she cannot see
    let mut edited = created.clone();
    edited["reasonCode"] = json!([{"text": "Reasonfa4 changed"}]);
    let r = fhir(
        &app,
        Method::PUT,
        &format!("/fhir/R4/Appointment/{id}"),
        Some(&rec.token),
        Some(edited),
        &[],
    )
    .await;
    assert_outcome(&r, 403, "forbidden");
    // the denials are audited as on the JSON routes
    assert!(audit_count(&app, "access.denied", None).await >= 1);
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
    // break-glass opens one patient's count, audited as a break-glass opening of that patient
    let glass = audit_count(&app, "patient.break_glass", Some(&patient)).await;
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Appointment?patient={patient}&_summary=count"),
        Some(&other_doc.token),
        None,
        &[("x-break-glass-reason", "unconscious patient in ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 3, "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&patient)).await,
        glass + 1
    );
    // the JSON list is unchanged
    let json = app.get("/api/v1/appointments?limit=2", &doc.token).await;
    assert_eq!(json.json["items"].as_array().map(Vec::len), Some(2));
    assert!(json.json["next_cursor"].is_string(), "{}", json.text);
}

#[sqlx::test]
async fn practitioners_are_active_clinicians(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let rec = app.user(Role::Receptionist).await;
    let admin = app.user(Role::Admin).await;
    let gone = app.user(Role::Nurse).await;
    sqlx::query("UPDATE users SET display_name = 'Grace Hopper' WHERE id = $1")
        .bind(doc.id)
        .execute(&app.pool)
        .await
        .expect("rename");
    sqlx::query("UPDATE users SET active = false WHERE id = $1")
        .bind(gone.id)
        .execute(&app.pool)
        .await
        .expect("deactivate");
    let url = format!("/fhir/R4/Practitioner/{}", doc.id);
    let r = fhir(&app, Method::GET, &url, Some(&rec.token), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "Practitioner");
    assert_eq!(r.json["name"][0]["text"], "Grace Hopper");
    assert_eq!(r.json["qualification"][0]["code"]["text"], "physician");
    assert_eq!(r.json["active"], true);
    assert!(
        r.json.get("telecom").is_none(),
        "no e-mail for a receptionist: {}",
        r.text
    );
    assert!(!r.text.contains(&doc.email));
    assert!(r.header("etag").is_some());
    assert_eq!(audit_count(&app, "user.read", None).await, 1);
    // admins may see account data
    let r = fhir(&app, Method::GET, &url, Some(&admin.token), None, &[]).await;
    assert_eq!(
        r.json["telecom"][0]["value"],
        doc.email.as_str(),
        "{}",
        r.text
    );
    // a patient sees the name of who they are booked with
    let patient = create_patient(&app, &rec, "fa5").await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;
    let r = fhir(&app, Method::GET, &url, Some(&own.token), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("telecom").is_none());
    // other roles' accounts and deactivated ones are not practitioners
    for who in [&rec, &admin, &gone, &own] {
        let r = fhir(
            &app,
            Method::GET,
            &format!("/fhir/R4/Practitioner/{}", who.id),
            Some(&doc.token),
            None,
            &[],
        )
        .await;
        assert_outcome(&r, 404, "not-found");
    }
    assert_outcome(
        &fhir(
            &app,
            Method::GET,
            "/fhir/R4/Practitioner/x",
            Some(&doc.token),
            None,
            &[],
        )
        .await,
        404,
        "not-found",
    );
    assert_outcome(
        &fhir(&app, Method::GET, &url, None, None, &[]).await,
        401,
        "login",
    );

    // searches
    let all = fhir(
        &app,
        Method::GET,
        "/fhir/R4/Practitioner",
        Some(&rec.token),
        None,
        &[],
    )
    .await;
    assert_eq!(all.status, 200, "{}", all.text);
    let mut found = ids(&all.json);
    found.sort();
    let mut expected = vec![doc.id.to_string(), nurse.id.to_string()];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(all.json["total"], 2);
    assert!(!all.text.contains("@test.example"), "{}", all.text);
    for (q, expected) in [
        ("name=grace".to_string(), vec![doc.id.to_string()]),
        ("name=HOP".to_string(), vec![doc.id.to_string()]),
        ("name=race".to_string(), vec![]),
        ("name=%25".to_string(), vec![]),
        (format!("_id={}", nurse.id), vec![nurse.id.to_string()]),
        (
            format!("_id={},{}", rec.id, doc.id),
            vec![doc.id.to_string()],
        ),
    ] {
        let r = fhir(
            &app,
            Method::GET,
            &format!("/fhir/R4/Practitioner?{q}"),
            Some(&rec.token),
            None,
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(ids(&r.json), expected, "{q}: {}", r.text);
    }
    let r = fhir(
        &app,
        Method::GET,
        "/fhir/R4/Practitioner?_count=1",
        Some(&admin.token),
        None,
        &[],
    )
    .await;
    assert_eq!(ids(&r.json).len(), 1);
    assert!(r.json["entry"][0]["resource"]["telecom"][0]["value"]
        .as_str()
        .is_some_and(|e| e.ends_with("@test.example")));
    assert!(r.json["link"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x["relation"] == "next")));
    assert!(audit_count(&app, "user.list", None).await >= 1);
    for q in ["identifier=x", "_id=nope", "_sort=name"] {
        let r = fhir(
            &app,
            Method::GET,
            &format!("/fhir/R4/Practitioner?{q}"),
            Some(&rec.token),
            None,
            &[],
        )
        .await;
        assert_outcome(&r, 400, "invalid");
    }
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
