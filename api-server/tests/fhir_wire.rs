//! FHIR R4 errors raised around the handlers (the API's rate limit, unknown paths, methods a
//! route does not serve, the common layers' body limit and timeout) are OperationOutcomes with
//! the request id, like the handlers' own, with the headers that tell a client what to do next
//! (`Retry-After`, `RateLimit-*`, `Allow`); the JSON routes keep problem+json.

mod common;
mod fhir_support;

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp};
use common::assert_problem;
use fhir_support::{assert_outcome, fhir, get};
use sqlx::PgPool;

#[sqlx::test]
async fn the_rate_limit_answers_with_an_operation_outcome(pool: PgPool) {
    let mut cfg = test_config();
    cfg.rate_limit_per_minute = 3;
    let app = TestApp::with_config(pool, cfg).await;
    let doc = app.user(Role::Physician).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = get(&app, "/fhir/R4/Patient?_summary=count", &doc).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_outcome(&r, 429, "throttled");
            let retry: u64 = r
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=60).contains(&retry), "{retry}");
            assert_eq!(r.header("ratelimit-limit"), Some("3"));
        } else {
            assert_eq!(r.json["resourceType"], "Bundle", "{}", r.text);
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    assert_eq!(app.state.metrics.rate_limited_total.get(), 1);
}

#[sqlx::test]
async fn unknown_paths_and_methods_answer_with_an_operation_outcome(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let r = get(&app, "/fhir/R4/Observation", &doc).await;
    assert_outcome(&r, 404, "not-found");
    let r = fhir(
        &app,
        Method::DELETE,
        &format!("/fhir/R4/Appointment/{}", uuid::Uuid::new_v4()),
        Some(&doc.token),
        None,
        &[],
    )
    .await;
    assert_outcome(&r, 405, "not-supported");
    let allow = r.header("allow").expect("Allow");
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
}

#[sqlx::test]
async fn the_common_layers_answer_fhir_requests_with_an_operation_outcome(pool: PgPool) {
    let mut cfg = test_config();
    cfg.body_limit_bytes = 1024;
    let app = TestApp::with_config(pool.clone(), cfg).await;
    let doc = app.user(Role::Physician).await;
    let big = serde_json::json!({"resourceType": "Patient", "text": {"div": "x".repeat(4096)}});
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/Patient",
        Some(&doc.token),
        Some(big.clone()),
        &[("content-length", &big.to_string().len().to_string())],
    )
    .await;
    assert_outcome(&r, 413, "too-long");
    // the JSON routes keep problem+json
    let r = app.post("/api/v1/patients", &doc.token, big).await;
    assert_problem(&r, 413);

    // a request still waiting on Postgres when the timeout strikes
    let mut cfg = test_config();
    cfg.request_timeout = std::time::Duration::from_nanos(1);
    let app = TestApp::with_config(pool, cfg).await;
    let r = get(&app, "/fhir/R4/Patient?_summary=count", &doc).await;
    assert_outcome(&r, 408, "timeout");
}
