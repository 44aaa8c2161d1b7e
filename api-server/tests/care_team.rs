//! The care team: booking (or moving) an appointment for another practitioner needs the right to
//! assign the care team; access derived from an appointment ends `CADUCEUS_CARE_TEAM_ACCESS_DAYS`
//! after it, and cancelled or no-show appointments grant nothing;
//! `DELETE /patients/{id}/care-team/{user}` revokes an assignment.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use chrono::{Duration, Utc};
use common::{assert_problem, audit_count, create_patient};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn booking(patient: &str, practitioner: &TestUser, hours: i64) -> Value {
    let start = Utc::now() + Duration::hours(hours);
    json!({"patient_id": patient, "practitioner_id": practitioner.id,
           "start": start.to_rfc3339(), "end": (start + Duration::minutes(30)).to_rfc3339()})
}

async fn book(app: &TestApp, by: &TestUser, body: Value) -> String {
    let r = app.post("/api/v1/appointments", &by.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

/// The status `GET /patients/{id}` answers `user`.
async fn reads(app: &TestApp, user: &TestUser, patient: &str) -> u16 {
    app.get(&format!("/api/v1/patients/{patient}"), &user.token)
        .await
        .status
}

/// Move appointment `id` so that it ended `days_ago` days ago.
async fn ended_days_ago(app: &TestApp, id: &str, days_ago: i64) {
    let end = Utc::now() - Duration::days(days_ago);
    sqlx::query("UPDATE appointments SET start_at = $2, end_at = $3 WHERE id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .bind(end - Duration::minutes(30))
        .bind(end)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[sqlx::test]
async fn booking_for_another_practitioner_needs_the_assign_permission(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let nurse = app.user(Role::Nurse).await;
    let doc = app.user(Role::Physician).await;
    let outsider = app.user(Role::Physician).await;
    let patient = create_patient(&app, &nurse, "ct-book").await;

    // a nurse of the care team books for themselves, never for someone else
    let own = book(&app, &nurse, booking(&patient, &nurse, 10)).await;
    let r = app
        .post(
            "/api/v1/appointments",
            &nurse.token,
            booking(&patient, &outsider, 11),
        )
        .await;
    assert_problem(&r, 403);
    let r = app
        .patch(
            &format!("/api/v1/appointments/{own}"),
            &nurse.token,
            json!({"practitioner_id": outsider.id}),
        )
        .await;
    assert_problem(&r, 403);
    // so the outsider did not become part of the care team
    assert_eq!(reads(&app, &outsider, &patient).await, 403);
    assert_eq!(
        audit_count(&app, "access.denied", Some(&patient)).await,
        3,
        "both refusals and the read were audited"
    );

    // receptionists schedule anyone; a physician of the care team may assign, so may book
    book(&app, &rec, booking(&patient, &doc, 12)).await;
    assert_eq!(reads(&app, &doc, &patient).await, 200);
    book(&app, &doc, booking(&patient, &nurse, 13)).await;
}

#[sqlx::test]
async fn appointment_access_expires_and_cancelled_or_noshow_grants_nothing(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let rec = app.user(Role::Receptionist).await;
    let noshow = app.user(Role::Physician).await;
    let cancelled = app.user(Role::Nurse).await;
    let seen = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ct-expiry").await;

    let a = book(&app, &rec, booking(&patient, &noshow, 1)).await;
    assert_eq!(reads(&app, &noshow, &patient).await, 200);
    let r = app
        .patch(
            &format!("/api/v1/appointments/{a}"),
            &rec.token,
            json!({"status": "noshow"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(reads(&app, &noshow, &patient).await, 403, "no-show");

    let b = book(&app, &rec, booking(&patient, &cancelled, 2)).await;
    let r = app
        .post(
            &format!("/api/v1/appointments/{b}/cancel"),
            &rec.token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(reads(&app, &cancelled, &patient).await, 403, "cancelled");

    // a fulfilled appointment counts until 30 days (the default) after its end
    let c = book(&app, &rec, booking(&patient, &seen, 3)).await;
    for status in ["arrived", "fulfilled"] {
        let r = app
            .patch(
                &format!("/api/v1/appointments/{c}"),
                &rec.token,
                json!({"status": status}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    ended_days_ago(&app, &c, 29).await;
    assert_eq!(reads(&app, &seen, &patient).await, 200, "29 days after");
    let lists = |app: &TestApp| {
        let app = app.clone();
        let token = seen.token.clone();
        async move {
            let r = app.get("/api/v1/patients", &token).await;
            r.json["items"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(lists(&app).await, 1);
    ended_days_ago(&app, &c, 31).await;
    assert_eq!(reads(&app, &seen, &patient).await, 403, "31 days after");
    assert_eq!(lists(&app).await, 0);
    let r = app
        .get(&format!("/api/v1/appointments/{c}"), &seen.token)
        .await;
    assert_problem(&r, 403);

    // the window is CADUCEUS_CARE_TEAM_ACCESS_DAYS
    let mut config = (*app.state.config).clone();
    config.care_team_access_days = 60;
    let longer = TestApp::with_config(pool, config).await;
    assert_eq!(reads(&longer, &seen, &patient).await, 200, "60-day window");
}

#[sqlx::test]
async fn an_assignment_can_be_revoked(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let nurse = app.user(Role::Nurse).await;
    let outsider = app.user(Role::Physician).await;
    let patient = create_patient(&app, &rec, "ct-revoke").await;
    let r = app
        .post(
            &format!("/api/v1/patients/{patient}/care-team"),
            &rec.token,
            json!({"user_id": nurse.id}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(reads(&app, &nurse, &patient).await, 200);
    let uri = format!("/api/v1/patients/{patient}/care-team/{}", nurse.id);

    // who may assign may revoke: not the nurse, not a physician outside the care team
    assert_problem(&app.delete(&uri, &nurse.token).await, 403);
    assert_problem(&app.delete(&uri, &outsider.token).await, 403);
    let r = app.delete(&uri, &rec.token).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(reads(&app, &nurse, &patient).await, 403);
    assert_eq!(
        audit_count(&app, "patient.care_team_remove", Some(&patient)).await,
        1
    );
    let resource: Option<String> = sqlx::query_scalar(
        "SELECT resource_id FROM audit_events WHERE action = 'patient.care_team_remove'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(resource, Some(nurse.id.to_string()));
    // nothing left to revoke; no such patient
    assert_problem(&app.delete(&uri, &rec.token).await, 404);
    let missing = format!("/api/v1/patients/{}/care-team/{}", Uuid::now_v7(), nurse.id);
    assert_problem(&app.delete(&missing, &rec.token).await, 404);
}
