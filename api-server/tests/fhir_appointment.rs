//! FHIR R4 Appointment at `/fhir/R4` through the real router and Postgres: create / read /
//! search (patient, actor, practitioner, date prefixes, status, _sort, paging) / status changes
//! (transitions, cancel, If-Match), double booking (also concurrent), the same access decisions
//! and audit events as `/api/v1/appointments`. Practitioner read and search:
//! `fhir_practitioner.rs`; exact totals over pages and `_summary=count`: `fhir_totals.rs`.

mod common;
mod fhir_support;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{DateTime, Duration};
use common::{audit_count, create_patient};
use fhir_support::{appointment, assert_outcome, book, fhir, get, ids, search, tomorrow};
use serde_json::{json, Value};
use sqlx::PgPool;

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
    let r = get(&app, &url, &doc).await;
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
    let r = get(&app, path, &doc).await;
    assert_eq!(ids(&r.json), [id.as_str()], "{}", r.text);
    // _summary=count
    let r = search(&app, &doc, "status=booked&_summary=count").await;
    assert_eq!(r.json["total"], 2);
    assert!(r.json.get("entry").is_none());
    assert!(audit_count(&app, "appointment.list", Some(&patient)).await >= 2);

    // status changes along the transitions, with If-Match
    let current = get(&app, &url, &doc).await.json;
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
    let arrived = get(&app, &url, &doc).await.json;
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
    let seen = get(&app, &format!("/fhir/R4/Appointment/{later_id}"), &rec)
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
        let r = get(&app, &format!("/fhir/R4/Appointment/{id}"), who).await;
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
    let r = get(&app, &format!("/fhir/R4/Appointment/{id}"), &stranger).await;
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
