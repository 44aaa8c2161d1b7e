//! Password hashing is bounded per process: a login that cannot get a hashing permit in time
//! answers `503` with `Retry-After`; one that gets it late still succeeds. Its own test binary:
//! it saturates the process-wide semaphore, which would slow the logins of other tests.

mod common;

use std::time::{Duration, Instant};

use caduceus_api::auth::password;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TEST_PASSWORD};
use common::assert_problem;
use sqlx::PgPool;

#[sqlx::test]
async fn argon2_runs_behind_a_semaphore(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let sem = password::semaphore();
    let all = u32::try_from(password::permits()).unwrap();

    // saturated for longer than a login waits: 503 problem with Retry-After, after the wait
    let held = sem.acquire_many(all).await.unwrap();
    let t = Instant::now();
    let r = app.login(&nurse.email, TEST_PASSWORD).await;
    assert_problem(&r, 503);
    assert!(t.elapsed() >= password::PERMIT_WAIT, "{:?}", t.elapsed());
    assert_eq!(
        r.header("retry-after"),
        Some(password::BUSY_RETRY_AFTER_SECS.to_string().as_str())
    );
    assert!(
        r.json["type"].as_str().unwrap().ends_with("/busy"),
        "{}",
        r.text
    );

    // freed within the wait: the login waits for its permit, then succeeds
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);
    });
    let t = Instant::now();
    let r = app.login(&nurse.email, TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    release.await.unwrap();
    assert_eq!(sem.available_permits(), password::permits());
}
