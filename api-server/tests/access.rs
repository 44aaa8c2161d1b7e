//! The access module: one refusal wording on every patient-scoped route, and the decision API
//! ([`caduceus_api::access::check`]) that any route (FHIR next) calls with the caller and the
//! patient.

mod common;

use axum::http::StatusCode;
use caduceus_api::access::{self, Need, Target, OUTSIDE_CARE_TEAM};
use caduceus_api::auth::AuthUser;
use caduceus_api::error::Error;
use caduceus_api::middleware::RequestMeta;
use caduceus_api::rbac::{PatientAccess, Role};
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{Duration, Utc};
use common::{assert_problem, audit_count, create_patient};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const WITH_HINT: &str =
    "not in this patient's care team; a physician may break the glass with an X-Break-Glass-Reason header";

fn refused(r: &TestResponse, detail: &str) {
    assert_problem(r, 403);
    assert_eq!(r.json["detail"], detail, "{}", r.text);
}

#[sqlx::test]
async fn every_route_refuses_outside_the_care_team_in_one_wording(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let other_doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let id = create_patient(&app, &rec, "one-wording").await;
    let url = format!("/api/v1/patients/{id}");

    // reads that break-glass would open: the hint for those who may break the glass
    refused(&app.get(&url, &doc.token).await, WITH_HINT);
    refused(&app.get(&url, &nurse.token).await, OUTSIDE_CARE_TEAM);
    let start = Utc::now() + Duration::days(1);
    let booking = |practitioner: &TestUser| {
        json!({"patient_id": id, "practitioner_id": practitioner.id,
               "start": start.to_rfc3339(), "end": (start + Duration::minutes(30)).to_rfc3339(),
               "reason": "check-up"})
    };
    let r = app
        .post("/api/v1/appointments", &rec.token, booking(&other_doc))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let appointment = format!("/api/v1/appointments/{}", r.json["id"].as_str().unwrap());
    refused(&app.get(&appointment, &doc.token).await, WITH_HINT);
    refused(
        &app.get(&appointment, &nurse.token).await,
        OUTSIDE_CARE_TEAM,
    );
    let rx = json!({"patient_id": id, "medication": {"name": "aspirin"}, "dose": "5 mg",
                    "route": "oral", "frequency": "once daily", "duration_days": 30});
    refused(
        &app.post("/api/v1/prescriptions", &doc.token, rx).await,
        WITH_HINT,
    );

    // actions that break-glass never allows: the same wording, without the hint
    refused(
        &app.post("/api/v1/appointments", &nurse.token, booking(&nurse))
            .await,
        OUTSIDE_CARE_TEAM,
    );
    refused(
        &app.post(
            &format!("{url}/care-team"),
            &doc.token,
            json!({"user_id": doc.id}),
        )
        .await,
        OUTSIDE_CARE_TEAM,
    );
    refused(
        &app.patch(&url, &admin.token, json!({"allergies": ["latex"]}))
            .await,
        OUTSIDE_CARE_TEAM,
    );
    refused(
        &app.patch(&appointment, &rec.token, json!({"reason": "other"}))
            .await,
        OUTSIDE_CARE_TEAM,
    );
    // every refusal above was audited as a denial naming the patient
    assert_eq!(audit_count(&app, "access.denied", Some(&id)).await, 9);
}

fn caller(user: &TestUser, own_patient: Option<Uuid>, glass: Option<&str>) -> AuthUser {
    AuthUser {
        user_id: user.id,
        role: user.role,
        session_id: user.session_id,
        patient_id: own_patient,
        meta: RequestMeta {
            request_id: "test".into(),
            client_ip: "127.0.0.1".into(),
            user_agent: None,
        },
        break_glass_reason: glass.map(str::to_string),
        mfa_enrollment_only: false,
    }
}

fn status(e: Error) -> StatusCode {
    use axum::response::IntoResponse;
    e.into_response().status()
}

#[sqlx::test]
async fn check_decides_for_a_caller_and_a_patient(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let own_doc = app.user(Role::Physician).await;
    let mine: Uuid = create_patient(&app, &own_doc, "check-mine")
        .await
        .parse()
        .unwrap();
    let other: Uuid = create_patient(&app, &rec, "check-other")
        .await
        .parse()
        .unwrap();
    let account = app.patient_user(mine).await;
    let target = |patient| Target {
        resource_type: "patient",
        resource_id: Some(patient),
        patient,
    };
    let check = |auth: AuthUser, patient: Uuid, need: Need| {
        let state = app.state.clone();
        async move { access::check(&state, &auth, &target(patient), need).await }
    };

    let full = check(caller(&own_doc, None, None), mine, Need::Clinical).await;
    assert_eq!(full.unwrap(), PatientAccess::Full);
    let own = check(caller(&account, Some(mine), None), mine, Need::Record).await;
    assert_eq!(own.unwrap(), PatientAccess::Full);
    let demographics = check(caller(&rec, None, None), other, Need::Record).await;
    assert_eq!(demographics.unwrap(), PatientAccess::Demographics);
    let clinical = check(caller(&rec, None, None), other, Need::Clinical).await;
    assert_eq!(status(clinical.unwrap_err()), StatusCode::FORBIDDEN);
    let outside = check(caller(&nurse, None, None), other, Need::Record).await;
    assert_eq!(status(outside.unwrap_err()), StatusCode::FORBIDDEN);
    let glass = check(caller(&doc, None, Some("ER")), other, Need::Clinical).await;
    assert_eq!(glass.unwrap(), PatientAccess::BreakGlass);
    // a patient account learns nothing about another record; a missing record is 404 too
    let hidden = check(caller(&account, Some(mine), None), other, Need::Record).await;
    assert_eq!(status(hidden.unwrap_err()), StatusCode::NOT_FOUND);
    let missing = check(caller(&doc, None, None), Uuid::now_v7(), Need::Record).await;
    assert_eq!(status(missing.unwrap_err()), StatusCode::NOT_FOUND);
    // the three refusals were audited
    let denied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'access.denied'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(denied, 3);
}
