//! Appointment endpoints: booking, reading, listing, rescheduling, status transitions, cancel,
//! double booking (also concurrent), RBAC for every role, patient self-scope, audit, encryption.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{assert_problem, audit_count, create_patient};
use serde_json::{json, Value};
use sqlx::PgPool;

/// A slot `h` hours after tomorrow 00:00 UTC, `minutes` long.
fn slot(h: i64, minutes: i64) -> (String, String) {
    let base: DateTime<Utc> = (Utc::now() + Duration::days(1))
        .duration_trunc(Duration::days(1))
        .expect("trunc");
    let start = base + Duration::hours(h);
    (
        start.to_rfc3339(),
        (start + Duration::minutes(minutes)).to_rfc3339(),
    )
}

fn booking(patient: &str, practitioner: &TestUser, h: i64, reason: &str) -> Value {
    let (start, end) = slot(h, 30);
    json!({"patient_id": patient, "practitioner_id": practitioner.id, "start": start, "end": end, "reason": reason})
}

async fn book(app: &TestApp, by: &TestUser, body: Value) -> String {
    let r = app.post("/api/v1/appointments", &by.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().expect("id").to_string()
}

#[sqlx::test]
async fn book_read_update_and_cancel(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ap1").await;

    let r = app
        .post(
            "/api/v1/appointments",
            &rec.token,
            booking(&patient, &doc, 9, "Chest pain follow-up"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["status"], "booked");
    // receptionists schedule but do not see the (clinical) reason
    assert_eq!(r.json["access"], "demographics");
    assert!(r.json.get("reason").is_none());
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(app.state.metrics.appointment_bookings_total.get(), 1);

    // the practitioner is now in the care team and sees the reason
    let r = app
        .get(&format!("/api/v1/appointments/{id}"), &doc.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reason"], "Chest pain follow-up");
    assert_eq!(r.json["access"], "full");
    assert_eq!(r.json["practitioner_id"], json!(doc.id));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = app
        .get(&format!("/api/v1/patients/{patient}"), &doc.token)
        .await;
    assert_eq!(
        r.status, 200,
        "appointment puts the practitioner in the care team"
    );

    // reschedule + new reason by the physician
    let (start, end) = slot(10, 45);
    let r = app
        .patch(
            &format!("/api/v1/appointments/{id}"),
            &doc.token,
            json!({"start": start, "end": end, "reason": "Chest pain, ECG review"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reason"], "Chest pain, ECG review");
    assert_eq!(
        r.json["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        start.parse::<DateTime<Utc>>().unwrap()
    );
    // receptionists may not change the reason
    assert_problem(
        &app.patch(
            &format!("/api/v1/appointments/{id}"),
            &rec.token,
            json!({"reason": "x"}),
        )
        .await,
        403,
    );
    // booked -> arrived -> fulfilled
    for status in ["arrived", "fulfilled"] {
        let r = app
            .patch(
                &format!("/api/v1/appointments/{id}"),
                &rec.token,
                json!({"status": status}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["status"], status);
    }
    // fulfilled is final
    let r = app
        .post(
            &format!("/api/v1/appointments/{id}/cancel"),
            &rec.token,
            json!({}),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.json["from"], "fulfilled");
    assert_eq!(r.json["allowed"], json!([]));

    // a fresh booking can be cancelled (no body needed)
    let id2 = book(&app, &rec, booking(&patient, &doc, 12, "Flu shot")).await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/appointments/{id2}/cancel"),
            Some(&doc.token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(r.json["reason"], "Flu shot");

    // unknown ids
    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        &app.get(&format!("/api/v1/appointments/{unknown}"), &doc.token)
            .await,
        404,
    );
    assert_problem(
        &app.call(
            Method::POST,
            &format!("/api/v1/appointments/{unknown}/cancel"),
            Some(&doc.token),
            None,
        )
        .await,
        404,
    );
    assert_problem(
        &app.patch(
            &format!("/api/v1/appointments/{unknown}"),
            &doc.token,
            json!({"status": "arrived"}),
        )
        .await,
        404,
    );
}

#[sqlx::test]
async fn invalid_transitions_are_conflicts(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &doc, "ap2").await;
    let set = |id: String, status: &'static str| {
        let app = app.clone();
        let token = doc.token.clone();
        async move {
            app.patch(
                &format!("/api/v1/appointments/{id}"),
                &token,
                json!({"status": status}),
            )
            .await
        }
    };
    // booked -> fulfilled is not allowed
    let a = book(&app, &doc, booking(&patient, &doc, 1, "r")).await;
    let r = set(a.clone(), "fulfilled").await;
    assert_problem(&r, 409);
    assert_eq!(r.json["from"], "booked");
    assert_eq!(r.json["to"], "fulfilled");
    assert_eq!(r.json["allowed"], json!(["arrived", "cancelled", "noshow"]));
    // booked -> noshow, then nothing
    assert_eq!(set(a.clone(), "noshow").await.status, 200);
    for s in ["booked", "arrived", "fulfilled", "cancelled"] {
        assert_problem(&set(a.clone(), s).await, 409);
    }
    // arrived: can be cancelled, can no longer be rescheduled or go back to booked
    let b = book(&app, &doc, booking(&patient, &doc, 2, "r")).await;
    assert_eq!(set(b.clone(), "arrived").await.status, 200);
    assert_problem(&set(b.clone(), "booked").await, 409);
    assert_problem(&set(b.clone(), "noshow").await, 409);
    let (start, end) = slot(3, 30);
    let r = app
        .patch(
            &format!("/api/v1/appointments/{b}"),
            &doc.token,
            json!({"start": start, "end": end}),
        )
        .await;
    assert_problem(&r, 409);
    let r = app
        .post(
            &format!("/api/v1/appointments/{b}/cancel"),
            &doc.token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // cancelled twice
    assert_problem(
        &app.post(
            &format!("/api/v1/appointments/{b}/cancel"),
            &doc.token,
            json!({}),
        )
        .await,
        409,
    );
    assert_problem(&set(b, "arrived").await, 409);
}

#[sqlx::test]
async fn overlapping_bookings_are_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let p1 = create_patient(&app, &rec, "ap3a").await;
    let p2 = create_patient(&app, &rec, "ap3b").await;
    let (start, end) = slot(9, 60);
    let first = book(
        &app,
        &rec,
        json!({"patient_id": p1, "practitioner_id": doc.id, "start": start, "end": end}),
    )
    .await;
    // overlap by 15 minutes, another patient, same practitioner
    let (s2, e2) = (
        (start.parse::<DateTime<Utc>>().unwrap() + Duration::minutes(45)).to_rfc3339(),
        (start.parse::<DateTime<Utc>>().unwrap() + Duration::minutes(90)).to_rfc3339(),
    );
    let r = app
        .post(
            "/api/v1/appointments",
            &rec.token,
            json!({"patient_id": p2, "practitioner_id": doc.id, "start": s2, "end": e2}),
        )
        .await;
    assert_problem(&r, 409);
    assert!(r.json["detail"].as_str().unwrap().contains("overlaps"));
    // same time with another practitioner is fine; back-to-back ([start, end)) is fine
    book(
        &app,
        &rec,
        json!({"patient_id": p2, "practitioner_id": nurse.id, "start": s2, "end": e2}),
    )
    .await;
    let (s3, e3) = slot(10, 30);
    let adjacent = book(
        &app,
        &rec,
        json!({"patient_id": p2, "practitioner_id": doc.id, "start": s3, "end": e3}),
    )
    .await;
    // rescheduling into an occupied slot is refused too
    let r = app
        .patch(
            &format!("/api/v1/appointments/{adjacent}"),
            &rec.token,
            json!({"start": start, "end": end}),
        )
        .await;
    assert_problem(&r, 409);
    // moving the practitioner onto a busy one as well
    let nurse_appt = book(&app, &rec, booking(&p1, &nurse, 9, "x")).await;
    let r = app
        .patch(
            &format!("/api/v1/appointments/{nurse_appt}"),
            &rec.token,
            json!({"practitioner_id": doc.id}),
        )
        .await;
    assert_problem(&r, 409);
    // cancelling frees the slot
    let r = app
        .post(
            &format!("/api/v1/appointments/{first}/cancel"),
            &rec.token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    book(&app, &rec, booking(&p2, &doc, 9, "after cancel")).await;
}

#[sqlx::test]
async fn concurrent_double_booking_exactly_one_wins(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let mut patients = Vec::new();
    for i in 0..4 {
        patients.push(create_patient(&app, &rec, &format!("ap4-{i}")).await);
    }
    let (start, end) = slot(14, 30);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        let token = rec.token.clone();
        let body = json!({"patient_id": patients[i % 4], "practitioner_id": doc.id,
                          "start": start, "end": end, "reason": format!("race {i}")});
        tasks.push(tokio::spawn(async move {
            app.post("/api/v1/appointments", &token, body).await
        }));
    }
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            201 => created += 1,
            409 => {
                assert_problem(&r, 409);
                conflicts += 1
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!((created, conflicts), (1, 23));
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM appointments WHERE practitioner_id = $1 AND status <> 'cancelled'",
    )
    .bind(doc.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, 1);
}

#[sqlx::test]
async fn validation_and_malformed_input(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ap5").await;
    let (start, end) = slot(9, 30);
    let cases = [
        (
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": end, "end": start}),
            "end",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": start,
                   "end": (start.parse::<DateTime<Utc>>().unwrap() + Duration::hours(13)).to_rfc3339()}),
            "end",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": doc.id,
                   "start": (Utc::now() - Duration::hours(3)).to_rfc3339(),
                   "end": (Utc::now() - Duration::hours(2)).to_rfc3339()}),
            "end",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": start, "end": end, "reason": "  "}),
            "reason",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": rec.id, "start": start, "end": end}),
            "practitioner_id",
        ),
        (
            json!({"patient_id": uuid::Uuid::now_v7(), "practitioner_id": doc.id, "start": start, "end": end}),
            "patient_id",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": "tomorrow", "end": end}),
            "start",
        ),
        (
            json!({"practitioner_id": doc.id, "start": start, "end": end}),
            "patient_id",
        ),
        (
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": start, "end": end, "room": 4}),
            "room",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/appointments", &rec.token, body).await;
        assert_problem(&r, 422);
        assert!(
            r.json["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {}",
            r.text
        );
    }
    // malformed JSON, wrong content type, bad path, bad query
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/appointments")
        .header("authorization", format!("Bearer {}", rec.token))
        .header("content-type", "application/json")
        .body(Body::from("{\"patient_id\": "))
        .unwrap();
    assert_problem(&app.send(req).await, 400);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/appointments")
        .header("authorization", format!("Bearer {}", rec.token))
        .header("content-type", "text/plain")
        .body(Body::from("hello"))
        .unwrap();
    assert_problem(&app.send(req).await, 415);
    assert_problem(
        &app.get("/api/v1/appointments/not-a-uuid", &rec.token).await,
        400,
    );
    // A query parameter that does not parse is a 422 naming it (as one the handler refuses).
    let r = app
        .get("/api/v1/appointments?from=yesterday", &rec.token)
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "from", "{}", r.text);
    let (s, e) = slot(1, 30);
    assert_problem(
        &app.get(
            &format!(
                "/api/v1/appointments?from={}&to={}",
                urlencode(&e),
                urlencode(&s)
            ),
            &rec.token,
        )
        .await,
        422,
    );
    // A query parameter the handler refuses and one that does not even parse get the same
    // answer, naming the parameter (never echoing the value).
    for query in [
        "limit=0",
        "limit=101",
        "limit=9223372036854775808",
        "limit=ten",
    ] {
        let r = app
            .get(&format!("/api/v1/appointments?{query}"), &rec.token)
            .await;
        assert_problem(&r, 422);
        assert_eq!(r.json["errors"][0]["field"], "limit", "{query}: {}", r.text);
        assert!(
            !r.text.contains("922337") && !r.text.contains("ten"),
            "{}",
            r.text
        );
    }
    let r = app.get("/api/v1/appointments?cursor=%%%", &rec.token).await;
    assert_problem(&r, 400);
    assert_eq!(r.json["errors"][0]["field"], "cursor", "{}", r.text);
    let id = book(&app, &rec, booking(&patient, &doc, 9, "r")).await;
    for body in [json!({}), json!({"status": "done"}), json!({"end": 5})] {
        assert_problem(
            &app.patch(&format!("/api/v1/appointments/{id}"), &rec.token, body)
                .await,
            422,
        );
    }
    // rescheduling that makes end <= start
    let (s, _) = slot(11, 30);
    assert_problem(
        &app.patch(
            &format!("/api/v1/appointments/{id}"),
            &rec.token,
            json!({"start": s}),
        )
        .await,
        422,
    );
    // no token
    assert_problem(
        &app.call(Method::GET, "/api/v1/appointments", None, None)
            .await,
        401,
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[sqlx::test]
async fn patients_see_only_their_own(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let mine = create_patient(&app, &rec, "ap6a").await;
    let other = create_patient(&app, &rec, "ap6b").await;
    let me = app.patient_user(mine.parse().unwrap()).await;
    let my_appt = book(&app, &rec, booking(&mine, &doc, 9, "My visit")).await;
    let other_appt = book(&app, &rec, booking(&other, &doc, 10, "Their visit")).await;

    let r = app
        .get(&format!("/api/v1/appointments/{my_appt}"), &me.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reason"], "My visit");
    let r = app
        .get(&format!("/api/v1/appointments/{other_appt}"), &me.token)
        .await;
    assert_problem(&r, 404);
    assert_eq!(r.json["detail"], "no such resource", "same as a missing id");
    let r = app.get("/api/v1/appointments", &me.token).await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![my_appt.as_str()]);
    // filtering on someone else yields nothing
    let r = app
        .get(
            &format!("/api/v1/appointments?patient_id={other}"),
            &me.token,
        )
        .await;
    assert_eq!(r.json["items"], json!([]));
    // patients do not book, reschedule or cancel
    assert_problem(
        &app.post(
            "/api/v1/appointments",
            &me.token,
            booking(&mine, &doc, 11, "x"),
        )
        .await,
        403,
    );
    assert_problem(
        &app.post(
            &format!("/api/v1/appointments/{my_appt}/cancel"),
            &me.token,
            json!({}),
        )
        .await,
        403,
    );
    // the denied read was audited
    let denied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'access.denied' AND actor_id = $1 AND resource_id = $2",
    )
    .bind(me.id)
    .bind(&other_appt)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(denied, 1);
}

#[sqlx::test]
async fn every_role_on_every_appointment_route(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let admin = app.user(Role::Admin).await;
    // "own" belongs to the patient account; the physician and nurse have no relation to it
    let own = create_patient(&app, &rec, "ap7-own").await;
    let patient = app.patient_user(own.parse().unwrap()).await;
    let other_doc = app.user(Role::Physician).await;
    let users = [&admin, &doc, &nurse, &rec, &patient];
    //                                 admin physician nurse recept. patient
    let read_expect = [200, 403, 403, 200, 200];
    let mut h = 0;
    let mut next_booking = |who: &TestUser| {
        h += 1;
        booking(&own, who, h, "rbac")
    };
    // create (the booked practitioner is another physician, so nobody joins the care team);
    // physicians and nurses outside the care team may not book for the patient at all
    let create_expect = [201, 403, 403, 201, 403];
    let mut created = Vec::new();
    for (u, want) in users.iter().zip(create_expect) {
        let r = app
            .post("/api/v1/appointments", &u.token, next_booking(&other_doc))
            .await;
        assert_eq!(r.status, want, "create as {}: {}", u.role.as_str(), r.text);
        if r.status == 201 {
            created.push(r.json["id"].as_str().unwrap().to_string());
        }
    }
    // booking themselves would have put them in the care team: refused as well
    let r = app
        .post(
            "/api/v1/appointments",
            &doc.token,
            booking(&own, &doc, 20, "self"),
        )
        .await;
    assert_problem(&r, 403);
    let id = created[0].clone();
    for (u, want) in users.iter().zip(read_expect) {
        let r = app
            .get(&format!("/api/v1/appointments/{id}"), &u.token)
            .await;
        assert_eq!(r.status, want, "read as {}: {}", u.role.as_str(), r.text);
        let r = app.get("/api/v1/appointments", &u.token).await;
        assert_eq!(r.status, 200, "list as {}", u.role.as_str());
        let n = r.json["items"].as_array().unwrap().len();
        let expect_n = if matches!(u.role, Role::Physician | Role::Nurse) {
            0
        } else {
            created.len()
        };
        assert_eq!(n, expect_n, "list size as {}", u.role.as_str());
    }
    //                                    admin physician nurse recept. patient
    let update_expect = [200, 403, 403, 200, 403];
    for (i, (u, want)) in users.iter().zip(update_expect).enumerate() {
        let r = app
            .patch(
                &format!("/api/v1/appointments/{}", created[i % created.len()]),
                &u.token,
                json!({"status": "arrived"}),
            )
            .await;
        assert_eq!(r.status, want, "patch as {}: {}", u.role.as_str(), r.text);
    }
    let cancel_expect = [200, 403, 403, 200, 403];
    for (i, (u, want)) in users.iter().zip(cancel_expect).enumerate() {
        let r = app
            .post(
                &format!("/api/v1/appointments/{}/cancel", created[i % created.len()]),
                &u.token,
                json!({}),
            )
            .await;
        assert_eq!(r.status, want, "cancel as {}: {}", u.role.as_str(), r.text);
    }
    // inside the care team, physician and nurse get full access
    let r = app
        .post(
            &format!("/api/v1/patients/{own}/care-team"),
            &rec.token,
            json!({"user_id": nurse.id}),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = created[1].clone();
    let r = app
        .get(&format!("/api/v1/appointments/{id}"), &nurse.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reason"], "rbac");
    let r = app
        .patch(
            &format!("/api/v1/appointments/{id}"),
            &nurse.token,
            json!({"reason": "rbac 2"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[sqlx::test]
async fn break_glass_is_audited_and_counted(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let other = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ap8").await;
    let id = book(&app, &rec, booking(&patient, &other, 9, "Emergency")).await;
    let glass = |token: &str| {
        Request::builder()
            .uri(format!("/api/v1/appointments/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-break-glass-reason", "unconscious patient in ER")
            .body(Body::empty())
            .unwrap()
    };
    let r = app.send(glass(&doc.token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["reason"], "Emergency");
    assert_eq!(
        app.state
            .metrics
            .break_glass_access_total
            .with_label_values(&["physician"])
            .get(),
        1
    );
    let purpose: Option<String> = sqlx::query_scalar(
        "SELECT purpose FROM audit_events WHERE action = 'patient.break_glass' AND resource_type = 'appointment' AND actor_id = $1",
    )
    .bind(doc.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(purpose.as_deref(), Some("unconscious patient in ER"));
    // nurses cannot break the glass
    assert_problem(&app.send(glass(&nurse.token)).await, 403);
}

#[sqlx::test]
async fn list_filters_order_and_pagination(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let p1 = create_patient(&app, &rec, "ap9a").await;
    let p2 = create_patient(&app, &rec, "ap9b").await;
    // booked out of order; listed by start time
    let a5 = book(&app, &rec, booking(&p1, &doc, 5, "a5")).await;
    let a1 = book(&app, &rec, booking(&p1, &doc, 1, "a1")).await;
    let a3 = book(&app, &rec, booking(&p2, &doc, 3, "a3")).await;
    let n2 = book(&app, &rec, booking(&p2, &nurse, 2, "n2")).await;
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = app.get("/api/v1/appointments", &rec.token).await;
    assert_eq!(
        ids(&r.json),
        vec![a1.clone(), n2.clone(), a3.clone(), a5.clone()]
    );
    let r = app
        .get(
            &format!("/api/v1/appointments?practitioner_id={}", doc.id),
            &rec.token,
        )
        .await;
    assert_eq!(ids(&r.json), vec![a1.clone(), a3.clone(), a5.clone()]);
    let r = app
        .get(&format!("/api/v1/appointments?patient_id={p2}"), &rec.token)
        .await;
    assert_eq!(ids(&r.json), vec![n2.clone(), a3.clone()]);
    let (from, _) = slot(2, 0);
    let (to, _) = slot(4, 0);
    let r = app
        .get(
            &format!(
                "/api/v1/appointments?from={}&to={}",
                urlencode(&from),
                urlencode(&to)
            ),
            &rec.token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r.json), vec![n2.clone(), a3.clone()]);
    // pages of 3 then 1
    let r = app.get("/api/v1/appointments?limit=3", &rec.token).await;
    assert_eq!(ids(&r.json), vec![a1.clone(), n2.clone(), a3.clone()]);
    let cursor = r.json["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/api/v1/appointments?limit=3&cursor={cursor}"),
            &rec.token,
        )
        .await;
    assert_eq!(ids(&r.json), vec![a5.clone()]);
    assert!(r.json.get("next_cursor").is_none());
    // the nurse sees only her own patient's appointments (care team via appointment)
    let r = app.get("/api/v1/appointments", &nurse.token).await;
    assert_eq!(ids(&r.json), vec![n2, a3]);
}

#[sqlx::test]
async fn every_access_is_audited_and_reason_is_encrypted(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ap10").await;
    let secret = "Recurring migraine with aura SECRETREASON";
    let id = book(&app, &rec, booking(&patient, &doc, 9, secret)).await;
    assert_eq!(
        audit_count(&app, "appointment.create", Some(&patient)).await,
        1
    );
    app.get(&format!("/api/v1/appointments/{id}"), &doc.token)
        .await;
    assert_eq!(
        audit_count(&app, "appointment.read", Some(&patient)).await,
        1
    );
    app.get("/api/v1/appointments", &doc.token).await;
    assert_eq!(
        audit_count(&app, "appointment.list", Some(&patient)).await,
        1
    );
    app.patch(
        &format!("/api/v1/appointments/{id}"),
        &doc.token,
        json!({"status": "arrived"}),
    )
    .await;
    assert_eq!(
        audit_count(&app, "appointment.update", Some(&patient)).await,
        1
    );
    app.post(
        &format!("/api/v1/appointments/{id}/cancel"),
        &doc.token,
        json!({}),
    )
    .await;
    assert_eq!(
        audit_count(&app, "appointment.cancel", Some(&patient)).await,
        1
    );
    // each event names the appointment and the actor
    let (resource, actor, role): (Option<String>, Option<uuid::Uuid>, Option<String>) =
        sqlx::query_as(
            "SELECT resource_id, actor_id, actor_role FROM audit_events WHERE action = 'appointment.read'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(resource.as_deref(), Some(id.as_str()));
    assert_eq!(actor, Some(doc.id));
    assert_eq!(role.as_deref(), Some("physician"));
    // the reason is stored as ciphertext under the active key and appears in no audit row
    let (ct, key): (Vec<u8>, String) =
        sqlx::query_as("SELECT reason, phi_key_id FROM appointments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!ct
        .windows(b"SECRETREASON".len())
        .any(|w| w == b"SECRETREASON"));
    assert_eq!(key, app.state.keys.active_key_id());
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE concat_ws('|', action, resource_id, purpose, user_agent) LIKE '%SECRETREASON%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    // and the audit chain is still valid
    let admin = app.user(Role::Admin).await;
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.json["valid"], true, "{}", r.text);
}
