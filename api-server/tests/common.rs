//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use caduceus_api::testing::{TestApp, TestUser};
use serde_json::{json, Value};

/// A patient body with recognisable PHI strings (unique per call).
pub fn patient_body(tag: &str) -> Value {
    json!({
        "mrn": format!("MRN-{tag}"),
        "given_name": format!("Givenname{tag}"),
        "family_name": format!("Familyname{tag}"),
        "birth_date": "1970-03-04",
        "sex": "female",
        "phone": "+1 555 0100",
        "email": format!("patient{tag}@mail.example"),
        "address": format!("{tag} Secret Street, Springfield"),
        "allergies": [format!("Allergen{tag}")],
        "medications": [format!("Medication{tag}")],
        "conditions": [format!("Condition{tag}")],
        "emergency_contact": {"name": format!("Contact{tag}"), "relationship": "sister", "phone": "+1 555 0199"}
    })
}

/// Create a patient as `by`; returns the id.
pub async fn create_patient(app: &TestApp, by: &TestUser, tag: &str) -> String {
    let r = app
        .post("/api/v1/patients", &by.token, patient_body(tag))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().expect("id").to_string()
}

/// Assert an RFC 9457 problem with the given status.
pub fn assert_problem(r: &caduceus_api::testing::TestResponse, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text
    );
    assert_eq!(r.json["status"], status);
    assert!(
        r.json["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://")),
        "{}",
        r.text
    );
    assert!(r.json["title"].is_string());
    assert!(r.json["request_id"].is_string(), "{}", r.text);
    assert!(r.json["instance"].is_string(), "{}", r.text);
    assert_eq!(r.header("x-request-id"), r.json["request_id"].as_str());
}

/// Audit rows matching an action and patient.
pub async fn audit_count(app: &TestApp, action: &str, patient: Option<&str>) -> i64 {
    let patient: Option<uuid::Uuid> = patient.map(|p| p.parse().expect("uuid"));
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = $1 AND ($2::uuid IS NULL OR patient_id = $2)",
    )
    .bind(action)
    .bind(patient)
    .fetch_one(&app.pool)
    .await
    .expect("count")
}

/// Why the revoked session of `user` was revoked (`revoked_reason`); the user must have exactly
/// one revoked session.
pub async fn revoked_reason(app: &TestApp, user: uuid::Uuid) -> Option<String> {
    sqlx::query_scalar(
        "SELECT revoked_reason FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(user)
    .fetch_one(&app.pool)
    .await
    .expect("one revoked session")
}

/// Runs `statements` in one transaction with the audit trail's append-only trigger disabled: a
/// superuser editing the trail behind the API's back.
pub async fn behind_the_apis_back(pool: &sqlx::PgPool, statements: &[&str]) {
    let mut tx = pool.begin().await.expect("begin");
    let disable = ["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete"];
    let enable = ["ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete"];
    for sql in disable.iter().chain(statements).chain(&enable) {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    tx.commit().await.expect("commit");
}
