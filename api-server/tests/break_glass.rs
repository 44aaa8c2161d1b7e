//! Break-glass (`X-Break-Glass-Reason`) opens single records only: a record read by id, an
//! exact-MRN lookup and the appointments or prescriptions of one `patient_id`; every other list
//! or search keeps the care team's scope. Openings are limited per user and hour (`429` with
//! `Retry-After`, audited and counted), an interaction refusal (`409`) through break-glass is
//! audited as break-glass, and an appointment list's cursor is good only for the caller and
//! the list (filters included) it was issued for.

mod common;

use axum::body::Body;
use axum::http::Request;
use caduceus_api::ratelimit::BREAK_GLASS_PER_HOUR;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{Duration, Utc};
use common::{assert_problem, audit_count, create_patient, patient_body};
use serde_json::{json, Value};
use sqlx::PgPool;

const REASON: &str = "unconscious patient in the ER";

/// GET `uri` as `user` with a break-glass reason.
async fn glass(app: &TestApp, uri: &str, user: &TestUser) -> TestResponse {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {}", user.token))
        .header("x-break-glass-reason", REASON)
        .body(Body::empty())
        .unwrap();
    app.send(req).await
}

fn ids(r: &TestResponse) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

fn booking(patient: &str, practitioner: &TestUser, hours: i64) -> Value {
    let start = Utc::now() + Duration::hours(hours);
    json!({"patient_id": patient, "practitioner_id": practitioner.id,
           "start": start.to_rfc3339(), "end": (start + Duration::minutes(30)).to_rfc3339(),
           "reason": "follow-up of the fracture"})
}

fn rx(patient: &str, medication: &str) -> Value {
    json!({"patient_id": patient, "medication": {"name": medication}, "dose": "5 mg",
           "route": "oral", "frequency": "once daily", "duration_days": 30})
}

fn opened(app: &TestApp) -> u64 {
    app.state
        .metrics
        .break_glass_access_total
        .with_label_values(&["physician"])
        .get()
}

#[sqlx::test]
async fn break_glass_opens_single_records_never_lists(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let treating = app.user(Role::Physician).await;
    let doc = app.user(Role::Physician).await;
    let p1 = create_patient(&app, &rec, "bg-one").await;
    let p2 = create_patient(&app, &rec, "bg-two").await;
    for (i, p) in [&p1, &p2].into_iter().enumerate() {
        let r = app
            .post(
                "/api/v1/appointments",
                &rec.token,
                booking(p, &treating, 24 + i as i64),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = app
            .post("/api/v1/prescriptions", &treating.token, rx(p, "Metformin"))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    // lists and searches: the header changes nothing (the physician's care team is empty)
    for uri in [
        "/api/v1/patients?limit=100",
        "/api/v1/patients?family_name=Familynamebg-one&birth_date=1970-03-04",
        "/api/v1/appointments?limit=100",
        "/api/v1/prescriptions?limit=100",
    ] {
        let r = glass(&app, uri, &doc).await;
        assert_eq!(ids(&r), Vec::<String>::new(), "{uri}: {}", r.text);
    }
    assert_eq!(audit_count(&app, "patient.break_glass", None).await, 0);
    assert_eq!(opened(&app), 0);

    // one record: the exact MRN, one patient's appointments and prescriptions, a read by id
    let r = glass(&app, "/api/v1/patients?mrn=MRN-bg-one", &doc).await;
    assert_eq!(ids(&r), vec![p1.clone()]);
    assert_eq!(r.json["items"][0]["access"], "full");
    let r = glass(&app, &format!("/api/v1/appointments?patient_id={p1}"), &doc).await;
    assert_eq!(ids(&r).len(), 1);
    assert_eq!(r.json["items"][0]["reason"], "follow-up of the fracture");
    let r = glass(
        &app,
        &format!("/api/v1/prescriptions?patient_id={p1}"),
        &doc,
    )
    .await;
    assert_eq!(ids(&r).len(), 1);
    let r = glass(&app, &format!("/api/v1/patients/{p1}"), &doc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // four openings of p1, each audited with the reason; p2 was never opened
    assert_eq!(opened(&app), 4);
    assert_eq!(audit_count(&app, "patient.break_glass", Some(&p1)).await, 4);
    assert_eq!(audit_count(&app, "patient.break_glass", Some(&p2)).await, 0);
    let purposes: Vec<Option<String>> =
        sqlx::query_scalar("SELECT purpose FROM audit_events WHERE action = 'patient.break_glass'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(purposes.iter().all(|p| p.as_deref() == Some(REASON)));
    // the metric's labels carry the role only
    let m = app.admin_get("/metrics").await;
    assert!(
        m.text
            .contains("break_glass_access_total{role=\"physician\"} 4"),
        "{}",
        m.text
    );
}

#[sqlx::test]
async fn break_glass_openings_are_limited_per_user_and_hour(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let other = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "bg-limit").await;
    let own = create_patient(&app, &doc, "bg-own").await;
    let uri = format!("/api/v1/patients/{patient}");
    for i in 0..BREAK_GLASS_PER_HOUR {
        let r = glass(&app, &uri, &doc).await;
        assert_eq!(r.status, 200, "opening {i}: {}", r.text);
    }
    let r = glass(&app, &uri, &doc).await;
    assert_problem(&r, 429);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(r.json.get("given_name").is_none(), "{}", r.text);
    // the refused attempt is audited as break-glass, denied, with the reason
    let denied: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, purpose FROM audit_events WHERE action = 'patient.break_glass' \
         AND outcome = 'denied' AND patient_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&patient).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].1.as_deref(), Some(REASON));
    assert_eq!(opened(&app), u64::from(BREAK_GLASS_PER_HOUR));
    assert_eq!(
        app.state
            .metrics
            .break_glass_refused_total
            .with_label_values(&["physician"])
            .get(),
        1
    );
    // the record of the care team is no opening: the header changes nothing there
    let r = glass(&app, &format!("/api/v1/patients/{own}"), &doc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // another physician has their own allowance
    let r = glass(&app, &uri, &other).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[sqlx::test]
async fn an_interaction_refusal_through_break_glass_is_audited_as_break_glass(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let mut body = patient_body("bg-rx");
    body["medications"] = json!(["Warfarin 5 mg"]);
    let r = app.post("/api/v1/patients", &rec.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let patient = r.json["id"].as_str().unwrap().to_string();
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/prescriptions")
        .header("authorization", format!("Bearer {}", doc.token))
        .header("content-type", "application/json")
        .header("x-break-glass-reason", REASON)
        .body(Body::from(rx(&patient, "Aspirin").to_string()))
        .unwrap();
    let r = app.send(req).await;
    assert_problem(&r, 409);
    assert!(r.json["interactions"]
        .as_array()
        .is_some_and(|i| !i.is_empty()));
    let events: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, outcome, purpose FROM audit_events WHERE patient_id = $1 \
         AND actor_id = $2 ORDER BY id",
    )
    .bind(uuid::Uuid::parse_str(&patient).unwrap())
    .bind(doc.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let reason = Some(REASON.to_string());
    assert_eq!(
        events,
        vec![
            (
                "patient.break_glass".into(),
                "denied".into(),
                reason.clone()
            ),
            (
                "prescription.interaction_refused".into(),
                "denied".into(),
                reason
            ),
        ]
    );
    assert_eq!(opened(&app), 1);
}

#[sqlx::test]
async fn the_appointment_cursor_is_the_callers_own(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let nurse = app.user(Role::Nurse).await;
    let doc = app.user(Role::Physician).await;
    let mine = create_patient(&app, &nurse, "cur-mine").await;
    let other = create_patient(&app, &rec, "cur-other").await;
    let mut own_ids = Vec::new();
    for h in [30, 31] {
        let r = app
            .post(
                "/api/v1/appointments",
                &nurse.token,
                booking(&mine, &nurse, h),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        own_ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    let r = app
        .post("/api/v1/appointments", &rec.token, booking(&other, &doc, 1))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let foreign = r.json["id"].as_str().unwrap().to_string();

    // a cursor of the caller's own list pages on
    let r = app.get("/api/v1/appointments?limit=1", &nurse.token).await;
    assert_eq!(ids(&r), vec![own_ids[0].clone()]);
    let cursor = r.json["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/api/v1/appointments?limit=1&cursor={cursor}"),
            &nurse.token,
        )
        .await;
    assert_eq!(ids(&r), vec![own_ids[1].clone()]);
    // an appointment id (the old cursor form: the caller's own, another patient's, a made-up
    // one) is the same 400 naming the cursor
    let refused = |r: &TestResponse| {
        assert_problem(r, 400);
        assert_eq!(r.json["errors"][0]["field"], "cursor", "{}", r.text);
        (r.json["errors"].clone(), r.json["detail"].clone())
    };
    let made_up = uuid::Uuid::now_v7().to_string();
    let mut answers = Vec::new();
    for id in [&own_ids[0], &foreign, &made_up] {
        let r = app
            .get(&format!("/api/v1/appointments?cursor={id}"), &nurse.token)
            .await;
        answers.push(refused(&r));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // break-glass does not open another caller's cursor, even for the practitioner
    let outsider = app.user(Role::Physician).await;
    for who in [&doc, &outsider] {
        let r = glass(&app, &format!("/api/v1/appointments?cursor={cursor}"), who).await;
        refused(&r);
    }
    // a cursor of a break-glass list of one patient is good for that list only
    let one = format!("/api/v1/appointments?patient_id={mine}&limit=1");
    let r = glass(&app, &one, &outsider).await;
    assert_eq!(ids(&r), vec![own_ids[0].clone()]);
    let glass_cursor = r.json["next_cursor"].as_str().unwrap().to_string();
    let r = glass(&app, &format!("{one}&cursor={glass_cursor}"), &outsider).await;
    assert_eq!(ids(&r), vec![own_ids[1].clone()]);
    let r = glass(
        &app,
        &format!("/api/v1/appointments?limit=1&cursor={glass_cursor}"),
        &outsider,
    )
    .await;
    refused(&r);
}
