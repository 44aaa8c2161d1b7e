//! The RBAC matrix: every role × every route, against the table in `src/rbac.rs` / README.

mod common;

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use common::{create_patient, patient_body};
use serde_json::{json, Value};
use sqlx::PgPool;

struct Fixture {
    users: Vec<TestUser>,
    /// registered by the receptionist; no clinician in its care team
    outside: String,
    /// care team: the physician and nurse are assigned
    team: String,
    /// record linked to the patient account
    own: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let admin = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let outside = create_patient(app, &rec, "rbac-out").await;
    let team = create_patient(app, &rec, "rbac-team").await;
    let own = create_patient(app, &rec, "rbac-own").await;
    for u in [&doc, &nurse] {
        let r = app
            .post(
                &format!("/api/v1/patients/{team}/care-team"),
                &rec.token,
                json!({"user_id": u.id}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let patient = app.patient_user(own.parse().unwrap()).await;
    Fixture {
        users: vec![admin, doc, nurse, rec, patient],
        outside,
        team,
        own,
    }
}

fn code(role: Role, expect: [u16; 5]) -> u16 {
    let i = Role::ALL.iter().position(|r| *r == role).unwrap();
    expect[i]
}

#[sqlx::test]
async fn every_role_on_every_route(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let f = fixture(&app).await;
    let some_user = f.users[1].id;
    let clinician = f.users[2].id;
    //                                   admin physician nurse recept. patient
    let cases: Vec<(Method, String, Option<Value>, [u16; 5])> = vec![
        (
            Method::GET,
            "/api/v1/me".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            [200, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/users/{some_user}"),
            None,
            [200, 403, 403, 403, 403],
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{some_user}"),
            Some(json!({"display_name": "Renamed"})),
            [200, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/v1/audit-events".into(),
            None,
            [200, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/v1/audit-events/verify".into(),
            None,
            [200, 403, 403, 403, 403],
        ),
        (
            Method::GET,
            "/api/v1/patients".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/patients/{}", f.outside),
            None,
            [200, 403, 403, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/patients/{}", f.team),
            None,
            [200, 200, 200, 200, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/patients/{}", f.own),
            None,
            [200, 403, 403, 200, 200],
        ),
        (
            Method::PATCH,
            format!("/api/v1/patients/{}", f.outside),
            Some(json!({"phone": "+1 555 0000"})),
            [200, 403, 403, 200, 403],
        ),
        (
            Method::PATCH,
            format!("/api/v1/patients/{}", f.team),
            Some(json!({"conditions": ["Flu"]})),
            [403, 200, 200, 403, 403],
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{}/care-team", f.outside),
            Some(json!({"user_id": clinician})),
            [201, 403, 403, 201, 403],
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{}/care-team", f.team),
            Some(json!({"user_id": clinician})),
            [201, 201, 403, 201, 403],
        ),
    ];
    for (method, uri, body, expect) in &cases {
        for u in &f.users {
            let r = app
                .call(method.clone(), uri, Some(&u.token), body.clone())
                .await;
            assert_eq!(
                r.status,
                code(u.role, *expect),
                "{} {method} {uri}: {}",
                u.role.as_str(),
                r.text
            );
        }
    }
    // creating patients: everyone but patients
    for (i, u) in f.users.iter().enumerate() {
        let r = app
            .post(
                "/api/v1/patients",
                &u.token,
                patient_body(&format!("rbac-new{i}")),
            )
            .await;
        assert_eq!(
            r.status,
            code(u.role, [201, 201, 201, 201, 403]),
            "{}: {}",
            u.role.as_str(),
            r.text
        );
    }
    // creating users: admins only
    for (i, u) in f.users.iter().enumerate() {
        let body = json!({"email": format!("made{i}@test.example"), "password": "long enough password", "role": "nurse", "display_name": "N"});
        let r = app.post("/api/v1/users", &u.token, body).await;
        assert_eq!(
            r.status,
            code(u.role, [201, 403, 403, 403, 403]),
            "{}: {}",
            u.role.as_str(),
            r.text
        );
    }
    // deleting patients: admins only (each role tries its own fresh record)
    let rec = f.users[3].clone();
    for u in &f.users {
        let id = create_patient(&app, &rec, &format!("rbac-del-{}", u.role.as_str())).await;
        let r = app
            .delete(&format!("/api/v1/patients/{id}"), &u.token)
            .await;
        assert_eq!(
            r.status,
            code(u.role, [204, 403, 403, 403, 403]),
            "{}: {}",
            u.role.as_str(),
            r.text
        );
    }
    // clinical fields: only the care team (full access) sees them
    for u in &f.users {
        let r = app
            .get(&format!("/api/v1/patients/{}", f.team), &u.token)
            .await;
        if r.status == 200 {
            let full = matches!(u.role, Role::Physician | Role::Nurse);
            assert_eq!(
                r.json.get("allergies").is_some(),
                full,
                "{}",
                u.role.as_str()
            );
        }
    }
    // logout works for every role
    for u in &f.users {
        let r = app
            .call(Method::POST, "/api/v1/auth/logout", Some(&u.token), None)
            .await;
        assert_eq!(r.status, 204, "{}", u.role.as_str());
    }
}

/// 401 before 403 before 400/415/422 on every write route that takes a body: the permission is
/// checked while the request head is extracted, before the body is read (`auth::Authorized`).
#[sqlx::test]
async fn permission_is_checked_before_the_body(pool: PgPool) {
    use caduceus_api::rbac::{allows, Permission};
    let app = TestApp::new(pool).await;
    let f = fixture(&app).await;
    let user = f.users[2].id;
    let patient = &f.team;
    // an appointment to PATCH
    let start = chrono::Utc::now() + chrono::Duration::days(3);
    let r = app
        .post(
            "/api/v1/appointments",
            &f.users[0].token,
            json!({"patient_id": patient, "practitioner_id": f.users[1].id,
                   "start": start.to_rfc3339(), "end": (start + chrono::Duration::minutes(30)).to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let appointment = r.json["id"].as_str().unwrap().to_string();
    // route, permission, a body that is invalid for it
    let routes: Vec<(Method, String, Permission, Value)> = vec![
        (
            Method::POST,
            "/api/v1/users".into(),
            Permission::UsersManage,
            json!({"email": "x"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{user}"),
            Permission::UsersManage,
            json!({"role": "wizard"}),
        ),
        (
            Method::POST,
            "/api/v1/patients".into(),
            Permission::PatientCreate,
            json!({"mrn": 5}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/patients/{patient}"),
            Permission::PatientUpdate,
            json!({"sex": "robot"}),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{patient}/care-team"),
            Permission::CareTeamAssign,
            json!({"user_id": "nope"}),
        ),
        (
            Method::POST,
            "/api/v1/appointments".into(),
            Permission::AppointmentBook,
            json!({"patient_id": 1}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/appointments/{appointment}"),
            Permission::AppointmentUpdate,
            json!({"status": "teleported"}),
        ),
        (
            Method::POST,
            "/api/v1/prescriptions".into(),
            Permission::PrescriptionCreate,
            json!({"duration_days": 0}),
        ),
    ];
    for (method, uri, perm, body) in routes {
        let r = app
            .call(method.clone(), &uri, None, Some(body.clone()))
            .await;
        common::assert_problem(&r, 401);
        let mut saw_denied = false;
        let mut saw_allowed = false;
        for u in &f.users {
            let before = denials(&app, u.id).await;
            let r = app
                .call(method.clone(), &uri, Some(&u.token), Some(body.clone()))
                .await;
            if allows(u.role, perm) {
                saw_allowed = true;
                common::assert_problem(&r, 422);
                assert!(
                    !r.json["errors"].as_array().unwrap().is_empty(),
                    "{}",
                    r.text
                );
                assert_eq!(
                    denials(&app, u.id).await,
                    before,
                    "{method} {uri} {:?}",
                    u.role
                );
            } else {
                saw_denied = true;
                common::assert_problem(&r, 403);
                assert_eq!(
                    denials(&app, u.id).await,
                    before + 1,
                    "{method} {uri} {:?}",
                    u.role
                );
                // malformed JSON and a missing content type are refused with 403 too
                let r = app
                    .send(
                        axum::http::Request::builder()
                            .method(method.clone())
                            .uri(&uri)
                            .header("authorization", format!("Bearer {}", u.token))
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from("{not json"))
                            .unwrap(),
                    )
                    .await;
                common::assert_problem(&r, 403);
                let r = app
                    .send(
                        axum::http::Request::builder()
                            .method(method.clone())
                            .uri(&uri)
                            .header("authorization", format!("Bearer {}", u.token))
                            .body(axum::body::Body::from("{}"))
                            .unwrap(),
                    )
                    .await;
                common::assert_problem(&r, 403);
            }
        }
        assert!(
            saw_denied && saw_allowed,
            "{method} {uri}: both kinds of role exercised"
        );
    }
}

async fn denials(app: &TestApp, actor: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'access.denied' AND outcome = 'denied' AND actor_id = $1",
    )
    .bind(actor)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}
