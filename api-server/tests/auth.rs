//! Auth: login, refresh rotation, reuse detection, idle timeout, logout, lockout, users admin.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp, TEST_PASSWORD};
use common::{assert_problem, audit_count, revoked_reason};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn login_refresh_logout(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let r = app.login(&nurse.email.to_uppercase(), TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 900);
    let access = r.json["access_token"].as_str().unwrap().to_string();
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    let me = app.get("/api/v1/me", &access).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["role"], "nurse");
    assert!(me.json.get("password_hash").is_none());
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&refresh_token)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "refresh tokens are stored hashed only");

    // refresh rotates
    let r2 = refresh(&app, &refresh_token).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    let refresh2 = r2.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh_token, refresh2);
    let access2 = r2.json["access_token"].as_str().unwrap().to_string();

    // logout revokes at once, access token included
    let out = app
        .call(
            axum::http::Method::POST,
            "/api/v1/auth/logout",
            Some(&access2),
            None,
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert_problem(&app.get("/api/v1/me", &access2).await, 401);
    assert_problem(&app.get("/api/v1/me", &access).await, 401);
    let r3 = refresh(&app, &refresh2).await;
    assert_problem(&r3, 401);
    assert_eq!(audit_count(&app, "auth.login", None).await, 1);
    assert_eq!(audit_count(&app, "auth.refresh", None).await, 1);
    assert_eq!(audit_count(&app, "auth.logout", None).await, 1);

    // bad credentials, unknown user, missing/garbage token
    assert_problem(&app.login(&nurse.email, "wrong password!!").await, 401);
    assert_problem(&app.login("nobody@test.example", TEST_PASSWORD).await, 401);
    assert_problem(
        &app.call(axum::http::Method::GET, "/api/v1/me", None, None)
            .await,
        401,
    );
    assert_problem(&app.get("/api/v1/me", "not.a.jwt").await, 401);
}

#[sqlx::test]
async fn refresh_reuse_revokes_the_family(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let r = app.login(&doc.email, TEST_PASSWORD).await;
    let first = r.json["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&app, &first).await;
    assert_eq!(r.status, 200);
    let second = r.json["refresh_token"].as_str().unwrap().to_string();
    let access = r.json["access_token"].as_str().unwrap().to_string();
    // replaying the rotated token (stolen) revokes the whole session
    let replay = refresh(&app, &first).await;
    assert_problem(&replay, 401);
    assert!(replay.json["detail"].as_str().unwrap().contains("reuse"));
    let legit = refresh(&app, &second).await;
    assert_problem(&legit, 401);
    assert_problem(&app.get("/api/v1/me", &access).await, 401);
    assert_eq!(audit_count(&app, "auth.refresh_reuse", None).await, 1);
    assert_eq!(
        revoked_reason(&app, doc.id).await.as_deref(),
        Some("refresh_reuse")
    );
}

#[sqlx::test]
async fn idle_session_cannot_refresh(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let r = app.login(&doc.email, TEST_PASSWORD).await;
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    let access = r.json["access_token"].as_str().unwrap().to_string();
    // the session has been idle longer than the 15 minute timeout
    sqlx::query(
        "UPDATE sessions SET last_seen_at = now() - interval '16 minutes' WHERE user_id = $1",
    )
    .bind(doc.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = refresh(&app, &refresh_token).await;
    assert_problem(&r, 401);
    assert!(r.json["detail"].as_str().unwrap().contains("inactivity"));
    assert_problem(&app.get("/api/v1/me", &access).await, 401);

    // activity within the timeout keeps the session alive
    let r = app.login(&doc.email, TEST_PASSWORD).await;
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    sqlx::query("UPDATE sessions SET last_seen_at = now() - interval '14 minutes' WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(doc.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = refresh(&app, &refresh_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The parts of a problem that do not change per request (no `request_id`, `instance`).
fn problem_body(r: &caduceus_api::testing::TestResponse) -> serde_json::Value {
    let mut v = r.json.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
        o.remove("instance");
    }
    v
}

#[sqlx::test]
async fn lockout_after_five_failures(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let wrong = app.login(&rec.email, "definitely wrong").await;
    assert_problem(&wrong, 401);
    for _ in 1..5 {
        assert_problem(&app.login(&rec.email, "definitely wrong").await, 401);
    }
    // locked: even the right password is refused, with exactly the answer of a wrong password
    let r = app.login(&rec.email, TEST_PASSWORD).await;
    assert_problem(&r, 401);
    assert_eq!(problem_body(&r), problem_body(&wrong));
    assert!(!r.text.contains("lock"), "{}", r.text);
    // audited: 5 failures, the lock, the attempt while locked
    assert_eq!(audit_count(&app, "auth.login_failed", None).await, 5);
    assert_eq!(audit_count(&app, "auth.lockout", None).await, 2);
    // a window older than 15 minutes no longer counts
    sqlx::query("UPDATE login_attempts SET window_start = now() - interval '16 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.login(&rec.email, TEST_PASSWORD).await.status, 200);
    // and a successful login starts the count over
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// An unknown e-mail gets the same status and problem body as a wrong password, its failures are
/// counted under its blind index exactly like a known account's, and it locks the same way.
#[sqlx::test]
async fn unknown_emails_are_counted_and_answered_like_known_ones(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let known = app.login(&nurse.email, "definitely wrong").await;
    let unknown = app.login("Nobody@Test.Example", "definitely wrong").await;
    assert_problem(&unknown, 401);
    assert_eq!(problem_body(&unknown), problem_body(&known));
    for _ in 1..5 {
        assert_problem(
            &app.login(" nobody@test.example", "definitely wrong").await,
            401,
        );
    }
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM login_attempts WHERE email_bidx = $1")
            .bind(caduceus_api::users::email_index(
                &app.state.keys,
                "nobody@test.example",
            ))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 5, "one counter for the e-mail, whatever its case");
    let locked = app.login("nobody@test.example", "definitely wrong").await;
    assert_eq!(problem_body(&locked), problem_body(&known));
    // the lock of the unknown e-mail is audited like a known account's, without an actor
    assert_eq!(audit_count(&app, "auth.lockout", None).await, 2);
}

/// Parallel guesses are counted one by one (one statement per attempt): of 12 concurrent wrong
/// passwords only the first 5 are checked, the other 7 are refused as locked; with a
/// read-then-check count all 12 would be tested.
#[sqlx::test]
async fn parallel_guesses_are_counted_atomically(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let guesses = (0..12).map(|i| {
        let app = app.clone();
        let email = doc.email.clone();
        async move { app.login(&email, &format!("guess number {i}")).await }
    });
    for r in futures::future::join_all(guesses).await {
        assert_problem(&r, 401);
    }
    assert_eq!(audit_count(&app, "auth.login_failed", None).await, 5);
    assert_eq!(audit_count(&app, "auth.lockout", None).await, 1 + 7);
    assert_problem(&app.login(&doc.email, TEST_PASSWORD).await, 401);
}

/// Each failure makes the next attempt of the same e-mail wait longer (capped); other e-mails
/// are not slowed down.
#[sqlx::test]
async fn failures_slow_down_the_next_attempts(pool: PgPool) {
    use caduceus_api::auth::routes::login_delay;
    use std::time::{Duration, Instant};
    assert_eq!(login_delay(1), Duration::ZERO);
    assert_eq!(login_delay(2), Duration::from_millis(100));
    assert_eq!(login_delay(4), Duration::from_millis(400));
    assert_eq!(login_delay(6), Duration::from_millis(1600));
    assert_eq!(login_delay(7), Duration::from_secs(2));
    assert_eq!(login_delay(1000), Duration::from_secs(2));
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    for _ in 0..3 {
        app.login(&doc.email, "definitely wrong").await;
    }
    let t = Instant::now();
    assert_eq!(app.login(&doc.email, TEST_PASSWORD).await.status, 200);
    let slow = t.elapsed();
    assert!(slow >= Duration::from_millis(400), "{slow:?}");
    // the success reset the count: no delay any more
    let t = Instant::now();
    assert_eq!(app.login(&doc.email, TEST_PASSWORD).await.status, 200);
    let fast = t.elapsed();
    assert!(
        slow >= fast + Duration::from_millis(300),
        "{slow:?} vs {fast:?}"
    );
}

#[sqlx::test]
async fn users_admin_and_deactivation(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let r = app
        .post("/api/v1/users", &admin.token, json!({"email": "new.doc@test.example", "password": "a long enough password", "role": "physician", "display_name": "Dr New"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(r.json.get("password").is_none() && r.json.get("password_hash").is_none());
    let r = app
        .post("/api/v1/users", &admin.token, json!({"email": "NEW.doc@test.example", "password": "a long enough password", "role": "nurse", "display_name": "x"}))
        .await;
    assert_problem(&r, 409);
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "bad", "password": "short", "role": "nurse", "display_name": ""}),
        )
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"].as_array().unwrap().len(), 3, "{}", r.text);
    let r = app
        .post("/api/v1/users", &admin.token, json!({"email": "x@test.example", "password": "a long enough password", "role": "wizard", "display_name": "x"}))
        .await;
    assert_problem(&r, 422);

    assert_eq!(
        app.get(&format!("/api/v1/users/{id}"), &admin.token)
            .await
            .json["email"],
        "new.doc@test.example"
    );
    let list = app.get("/api/v1/users?limit=1", &admin.token).await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
    assert!(list.json["next_cursor"].is_string());

    // deactivation ends sessions and blocks login
    let login = app
        .login("new.doc@test.example", "a long enough password")
        .await;
    let token = login.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &token).await.status, 200);
    let r = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin.token,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["active"], false);
    assert_problem(&app.get("/api/v1/me", &token).await, 401);
    assert_problem(
        &app.login("new.doc@test.example", "a long enough password")
            .await,
        401,
    );
    assert_problem(
        &app.patch(
            &format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
            &admin.token,
            json!({"active": false}),
        )
        .await,
        404,
    );
    assert_problem(
        &app.patch(
            &format!("/api/v1/users/{}", admin.id),
            &admin.token,
            json!({"active": false}),
        )
        .await,
        409,
    );
    assert!(
        audit_count(&app, "user.create", None).await == 1
            && audit_count(&app, "user.update", None).await == 1
    );
}

#[sqlx::test]
async fn self_registration_only_when_enabled(pool: PgPool) {
    let off = TestApp::new(pool.clone()).await;
    let body = json!({"email": "pat@test.example", "password": "patient password 1", "display_name": "Pat"});
    assert_problem(
        &off.call(
            axum::http::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(body.clone()),
        )
        .await,
        404,
    );
    let mut cfg = test_config();
    cfg.self_registration = true;
    let on = TestApp::with_config(pool, cfg).await;
    let r = on
        .call(
            axum::http::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["role"], "patient");
    let short = json!({"email": "pat2@test.example", "password": "short", "display_name": "Pat"});
    assert_problem(
        &on.call(
            axum::http::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(short),
        )
        .await,
        422,
    );
    // the new account sees no patient records until linked
    let login = on.login("pat@test.example", "patient password 1").await;
    let token = login.json["access_token"].as_str().unwrap();
    assert_eq!(
        on.get("/api/v1/patients", token).await.json["items"],
        json!([])
    );
}

#[sqlx::test]
async fn auth_failure_paths(pool: PgPool) {
    let mut cfg = test_config();
    cfg.self_registration = true;
    let app = TestApp::with_config(pool, cfg).await;
    let admin = app.user(Role::Admin).await;
    let post = |uri: &'static str, body: serde_json::Value| {
        app.call(axum::http::Method::POST, uri, None, Some(body))
    };
    // refresh with an unknown token, an empty token, a missing field
    assert_problem(
        &post("/api/v1/auth/refresh", json!({"refresh_token": "nope"})).await,
        401,
    );
    assert_problem(
        &post("/api/v1/auth/refresh", json!({"refresh_token": ""})).await,
        422,
    );
    assert_problem(&post("/api/v1/auth/refresh", json!({})).await, 422);
    // login with missing fields
    assert_problem(
        &post("/api/v1/auth/login", json!({"email": "", "password": ""})).await,
        422,
    );
    // logout needs a live session
    assert_problem(
        &app.call(axum::http::Method::POST, "/api/v1/auth/logout", None, None)
            .await,
        401,
    );
    // register: duplicate email, bad email
    let body =
        json!({"email": admin.email, "password": "long enough password", "display_name": "X"});
    assert_problem(&post("/api/v1/auth/register", body).await, 409);
    let body =
        json!({"email": "not-an-email", "password": "long enough password", "display_name": "X"});
    let r = post("/api/v1/auth/register", body).await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "email");
    // users: unknown id, patient_id on a non-patient account, linking a missing record
    assert_problem(
        &app.get(
            &format!("/api/v1/users/{}", uuid::Uuid::now_v7()),
            &admin.token,
        )
        .await,
        404,
    );
    let body = json!({"email": "n@test.example", "password": "long enough password", "role": "nurse", "display_name": "N", "patient_id": uuid::Uuid::now_v7()});
    assert_problem(&app.post("/api/v1/users", &admin.token, body).await, 422);
    let body = json!({"email": "p@test.example", "password": "long enough password", "role": "patient", "display_name": "P", "patient_id": uuid::Uuid::now_v7()});
    assert_problem(&app.post("/api/v1/users", &admin.token, body).await, 422);
    // a token signed with another key is refused
    let other = caduceus_api::auth::tokens::issue_access(
        &[1u8; 64],
        admin.id,
        admin.session_id,
        "admin",
        600,
    )
    .unwrap();
    assert_problem(&app.get("/api/v1/me", &other).await, 401);
}

#[sqlx::test]
async fn admin_links_patient_account(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let pid = common::create_patient(&app, &rec, "link").await;
    let body = json!({"email": "linked@test.example", "password": "long enough password", "role": "patient", "display_name": "P"});
    let r = app.post("/api/v1/users", &admin.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let uid = r.json["id"].as_str().unwrap().to_string();
    let login = app
        .login("linked@test.example", "long enough password")
        .await;
    let token = login.json["access_token"].as_str().unwrap().to_string();
    assert_problem(
        &app.get(&format!("/api/v1/patients/{pid}"), &token).await,
        404,
    );
    let r = app
        .patch(
            &format!("/api/v1/users/{uid}"),
            &admin.token,
            json!({"patient_id": pid}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["patient_id"], pid.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/patients/{pid}"), &token)
            .await
            .status,
        200
    );
    // a record links to one account only
    let body = json!({"email": "second@test.example", "password": "long enough password", "role": "patient", "display_name": "P", "patient_id": pid});
    assert_problem(&app.post("/api/v1/users", &admin.token, body).await, 409);
}

/// Account e-mails are stored encrypted with a unique, case-insensitive blind index; login and
/// the duplicate check go through the index.
#[sqlx::test]
async fn account_emails_are_encrypted_and_looked_up_by_blind_index(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "Nurse.Joy@Clinic.Example", "password": "nurse password long enough",
                   "role": "nurse", "display_name": "Joy"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id: uuid::Uuid = r.json["id"].as_str().unwrap().parse().unwrap();
    let (plain, enc, bidx, key): (Option<String>, Vec<u8>, Vec<u8>, String) =
        sqlx::query_as("SELECT email, email_enc, email_bidx, phi_key_id FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(plain, None, "no plaintext e-mail");
    assert!(!String::from_utf8_lossy(&enc).to_lowercase().contains("joy"));
    assert_eq!(key, app.state.keys.active_key_id());
    assert_eq!(
        bidx,
        caduceus_api::users::email_index(&app.state.keys, " nurse.joy@clinic.example ")
    );
    // the ciphertext is bound to its row: copied to another account it does not decrypt
    let other = app.user(Role::Nurse).await;
    sqlx::query("UPDATE users SET email_enc = $1 WHERE id = $2")
        .bind(&enc)
        .bind(other.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .get(&format!("/api/v1/users/{}", other.id), &admin.token)
        .await;
    assert_problem(&r, 500);
    // case-insensitive login and duplicate check
    let r = app
        .login("nurse.joy@clinic.example", "nurse password long enough")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .get("/api/v1/me", r.json["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.json["email"], "Nurse.Joy@Clinic.Example");
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "NURSE.JOY@clinic.example", "password": "nurse password long enough",
                   "role": "nurse", "display_name": "Joy 2"}),
        )
        .await;
    assert_problem(&r, 409);
    assert!(!r.text.to_lowercase().contains("joy"), "{}", r.text);
}

/// Rows from before migration 0102 (plaintext e-mail) keep working and are converted in
/// resumable batches; the plaintext is gone afterwards.
#[sqlx::test]
async fn legacy_plaintext_emails_are_converted(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let hash = caduceus_api::auth::password::hash(TEST_PASSWORD.into())
        .await
        .unwrap();
    for i in 0..3 {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, display_name) VALUES ($1, $2, $3, 'nurse', 'Old')",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(format!("Legacy{i}@Old.Example"))
        .bind(&hash)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    // before conversion: login finds the plaintext row, and a new account cannot take its e-mail
    assert_eq!(
        app.login("legacy0@old.example", TEST_PASSWORD).await.status,
        200
    );
    let err = caduceus_api::users::insert(
        &app.pool,
        &app.state.keys,
        "LEGACY1@old.example",
        TEST_PASSWORD.into(),
        Role::Nurse,
        "Dup",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 409);
    // a half-converted row is refused by the database
    let half = sqlx::query("UPDATE users SET email = NULL WHERE email = 'Legacy2@Old.Example'")
        .execute(&app.pool)
        .await;
    assert!(half.is_err());

    let n = caduceus_api::users::encrypt_legacy_emails(&app.pool, &app.state.keys, 2)
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        caduceus_api::users::encrypt_legacy_emails(&app.pool, &app.state.keys, 2)
            .await
            .unwrap(),
        0,
        "nothing left: re-running is a no-op"
    );
    let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(plain, 0);
    let r = app.login("LEGACY2@old.example", TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let me = app
        .get("/api/v1/me", r.json["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.json["email"], "Legacy2@Old.Example");
    let err = caduceus_api::users::insert(
        &app.pool,
        &app.state.keys,
        "legacy1@OLD.example",
        TEST_PASSWORD.into(),
        Role::Nurse,
        "Dup",
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 409);
}

/// POST /auth/refresh with `token`.
async fn refresh(app: &TestApp, token: &str) -> caduceus_api::testing::TestResponse {
    app.call(
        axum::http::Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

/// A password change or reset (admin `PATCH /users/{id} {password}`) and a deactivation end
/// every session of the account: access tokens and refresh tokens alike.
#[sqlx::test]
async fn password_change_and_deactivation_end_every_session(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let nurse = app.user(Role::Nurse).await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let r = app.login(&nurse.email, TEST_PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text);
        sessions.push((
            r.json["access_token"].as_str().unwrap().to_string(),
            r.json["refresh_token"].as_str().unwrap().to_string(),
        ));
    }
    let r = app
        .patch(
            &format!("/api/v1/users/{}", nurse.id),
            &admin.token,
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (access, refresh_token) in &sessions {
        assert_problem(&app.get("/api/v1/me", access).await, 401);
        assert_problem(&refresh(&app, refresh_token).await, 401);
    }
    assert_problem(&app.get("/api/v1/me", &nurse.token).await, 401);
    let reasons: Vec<Option<String>> =
        sqlx::query_scalar("SELECT revoked_reason FROM sessions WHERE user_id = $1")
            .bind(nurse.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons
            .iter()
            .all(|r| r.as_deref() == Some("password_changed")),
        "{reasons:?}"
    );
    // the new password works; the admin's own session is untouched
    let r = app.login(&nurse.email, "a brand new password").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &admin.token).await.status, 200);
    // deactivation: the refresh token of the new session stops working too
    let r = app
        .patch(
            &format!("/api/v1/users/{}", nurse.id),
            &admin.token,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_problem(&refresh(&app, &refresh_token).await, 401);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(nurse.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(live, 0);
}

/// A session ends `CADUCEUS_MAX_SESSION_HOURS` after its login, however active it is: refresh
/// is refused (refreshing does not extend it) and its access tokens stop working.
#[sqlx::test]
async fn sessions_end_at_the_maximum_age(pool: PgPool) {
    let mut cfg = test_config();
    cfg.max_session_age = std::time::Duration::from_secs(3600);
    let app = TestApp::with_config(pool, cfg).await;
    let doc = app.user(Role::Physician).await;
    let r = app.login(&doc.email, TEST_PASSWORD).await;
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    // logged in 50 minutes ago, active all along: still fine
    sqlx::query(
        "UPDATE sessions SET created_at = now() - interval '50 minutes' WHERE user_id = $1",
    )
    .bind(doc.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = refresh(&app, &refresh_token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let refresh_token = r.json["refresh_token"].as_str().unwrap().to_string();
    let access = r.json["access_token"].as_str().unwrap().to_string();
    // 61 minutes after the login, although it was just refreshed and used
    sqlx::query(
        "UPDATE sessions SET created_at = now() - interval '61 minutes', last_seen_at = now() \
         WHERE user_id = $1",
    )
    .bind(doc.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = refresh(&app, &refresh_token).await;
    assert_problem(&r, 401);
    assert!(
        r.json["detail"].as_str().unwrap().contains("maximum age"),
        "{}",
        r.text
    );
    assert_problem(&app.get("/api/v1/me", &access).await, 401);
    assert_eq!(
        revoked_reason(&app, doc.id).await.as_deref(),
        Some("max_age")
    );
    // the access check ends an old session by itself too
    sqlx::query("UPDATE sessions SET created_at = now() - interval '2 hours' WHERE id = $1")
        .bind(doc.session_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get("/api/v1/me", &doc.token).await;
    assert_problem(&r, 401);
    assert!(
        r.json["detail"].as_str().unwrap().contains("maximum age"),
        "{}",
        r.text
    );
}

#[sqlx::test]
async fn changing_ones_own_password_keeps_this_session_and_ends_the_others(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let (_, elsewhere) = app.session_for(admin.id, Role::Admin).await;
    let r = app
        .patch(
            &format!("/api/v1/users/{}", admin.id),
            &admin.token,
            json!({"password": "my own new password"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/api/v1/me", &admin.token).await.status, 200);
    assert_problem(&app.get("/api/v1/me", &elsewhere).await, 401);
}
