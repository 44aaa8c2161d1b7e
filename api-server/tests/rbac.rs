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
