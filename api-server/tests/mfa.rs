//! MFA (TOTP, RFC 6238): enrolment with an otpauth URI, the login's second step, replay and
//! lockout, recovery codes, the enrolment-only session of a role that must use MFA, disabling,
//! the admin reset, the `disabled` policy, and the secret at rest (PHI key ring, rotation).

mod common;

use axum::http::Method;
use caduceus_api::auth::mfa::{code_at, STEP_SECS};
use caduceus_api::config::MfaPolicy;
use caduceus_api::rbac::Role;
use caduceus_api::testing::{test_config, TestApp, TestResponse, TestUser, TEST_PASSWORD};
use common::{assert_problem, audit_count, revoked_reason};
use serde_json::json;
use sqlx::PgPool;

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

/// The current time step, waiting for the next one when fewer than 8 s are left in this one
/// (a test uses the codes of the steps before, at and after it).
async fn fresh_step() -> u64 {
    let left = STEP_SECS - now() % STEP_SECS;
    if left < 8 {
        tokio::time::sleep(std::time::Duration::from_secs(left + 1)).await;
    }
    now() / STEP_SECS
}

fn code(secret: &[u8], step: u64) -> String {
    code_at(secret, step * STEP_SECS).unwrap()
}

fn decode_base32(s: &str) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(s)
        .expect("base32 secret")
        .as_bytes()
        .to_vec()
}

async fn login_mfa(app: &TestApp, token: &str, code: &str) -> TestResponse {
    app.call(
        Method::POST,
        "/api/v1/auth/login/mfa",
        None,
        Some(json!({"mfa_token": token, "code": code})),
    )
    .await
}

/// `POST /auth/mfa/enroll` with the session `token` and the test password.
async fn start_enrol(app: &TestApp, token: &str) -> TestResponse {
    app.call(
        Method::POST,
        "/api/v1/auth/mfa/enroll",
        Some(token),
        Some(json!({"password": TEST_PASSWORD})),
    )
    .await
}

/// `POST /auth/mfa/confirm` with the session `token` and `code`.
async fn confirm(app: &TestApp, token: &str, code: &str) -> TestResponse {
    app.post("/api/v1/auth/mfa/confirm", token, json!({ "code": code }))
        .await
}

/// The recovery codes of a successful confirmation.
fn recovery_codes(confirmed: &TestResponse) -> Vec<String> {
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    confirmed.json["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Enrol `user` and confirm with the code of `step - 1`; the secret and the recovery codes.
async fn enrol(app: &TestApp, user: &TestUser, step: u64) -> (Vec<u8>, Vec<String>) {
    let r = start_enrol(app, &user.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = decode_base32(r.json["secret"].as_str().unwrap());
    let codes = recovery_codes(&confirm(app, &user.token, &code(&secret, step - 1)).await);
    (secret, codes)
}

/// The login's answer must be a challenge: no tokens, a single-use mfa_token.
fn challenge(r: &TestResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["mfa_required"], true, "{}", r.text);
    assert!(r.json.get("access_token").is_none(), "{}", r.text);
    assert_eq!(r.json["expires_in"], 300);
    r.json["mfa_token"].as_str().unwrap().to_string()
}

#[sqlx::test]
async fn enrol_confirm_and_log_in_with_a_second_step(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let step = fresh_step().await;

    // enrolment: otpauth URI with issuer Caduceus and the e-mail as account
    let r = start_enrol(&app, &nurse.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b32 = r.json["secret"].as_str().unwrap().to_string();
    let uri = r.json["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!(
            "otpauth://totp/Caduceus:{}?",
            nurse.email.replace('@', "%40")
        )),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={b32}")) && uri.contains("issuer=Caduceus"));
    assert_eq!(r.json["account"], nurse.email.as_str());
    assert_eq!(
        (r.json["digits"].as_u64(), r.json["period"].as_u64()),
        (Some(6), Some(30))
    );
    let secret = decode_base32(&b32);
    assert_eq!(secret.len(), 20);

    // at rest: encrypted with the PHI key ring, never the plaintext
    let (enc, key_id): (Vec<u8>, String) =
        sqlx::query_as("SELECT secret_enc, phi_key_id FROM user_mfa WHERE id = $1")
            .bind(nurse.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!enc.windows(secret.len()).any(|w| w == secret.as_slice()));
    assert_eq!(key_id, app.state.keys.active_key_id());

    // not active before confirmation: login gives tokens
    let r = app.login(&nurse.email, TEST_PASSWORD).await;
    assert!(r.json["access_token"].is_string(), "{}", r.text);

    // a wrong code does not confirm (and is audited)
    let wrong = format!(
        "{:06}",
        (code(&secret, step).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let bad = confirm(&app, &nurse.token, &wrong).await;
    assert_problem(&bad, 422);
    assert_eq!(audit_count(&app, "auth.mfa_failed", None).await, 1);
    // a code that is not six digits is a validation error naming the field
    let bad = confirm(&app, &nurse.token, "12345").await;
    assert_problem(&bad, 422);
    assert_eq!(bad.json["errors"][0]["field"], "code");

    // confirmation with the previous step's code (±1 step): 10 recovery codes, stored hashed
    let codes = recovery_codes(&confirm(&app, &nurse.token, &code(&secret, step - 1)).await);
    assert_eq!(codes.len(), 10);
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT code_hash FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(nurse.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 10);
    for c in &codes {
        assert!(!stored.iter().any(|h| h == c.as_bytes()));
    }
    // enrolling again while active is refused
    let again = start_enrol(&app, &nurse.token).await;
    assert_problem(&again, 409);

    // login now answers a challenge, which is not an access token
    let token = challenge(&app.login(&nurse.email, TEST_PASSWORD).await);
    assert_problem(&app.get("/api/v1/me", &token).await, 401);
    // the code confirmation used (step - 1) is spent: replay refused
    assert_problem(
        &login_mfa(&app, &token, &code(&secret, step - 1)).await,
        401,
    );
    let ok = login_mfa(&app, &token, &code(&secret, step)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let access = ok.json["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", access).await.status, 200);
    // the challenge is single use
    assert_problem(
        &login_mfa(&app, &token, &code(&secret, step + 1)).await,
        401,
    );

    // the same code again on a new challenge: refused (each step once)
    let token = challenge(&app.login(&nurse.email, TEST_PASSWORD).await);
    assert_problem(&login_mfa(&app, &token, &code(&secret, step)).await, 401);
    // the next step's code is still good
    let ok = login_mfa(&app, &token, &code(&secret, step + 1)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    for action in [
        "auth.mfa_enroll",
        "auth.mfa_confirm",
        "auth.mfa_challenge",
        "auth.login",
    ] {
        assert!(audit_count(&app, action, None).await >= 1, "{action}");
    }
    // no secret, code or recovery code in the audit trail
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', action, resource_id, purpose, user_agent) FROM audit_events",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for row in rows {
        assert!(!row.contains(&b32), "{row}");
        assert!(!codes.iter().any(|c| row.contains(c.as_str())), "{row}");
    }
}

#[sqlx::test]
async fn recovery_codes_work_once(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let step = fresh_step().await;
    let (_, codes) = enrol(&app, &doc, step).await;
    let token = challenge(&app.login(&doc.email, TEST_PASSWORD).await);
    // either case, with or without the dash
    let typed = codes[0].to_uppercase().replace('-', "");
    let ok = login_mfa(&app, &token, &typed).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(audit_count(&app, "auth.mfa_recovery_used", None).await, 1);
    let token = challenge(&app.login(&doc.email, TEST_PASSWORD).await);
    assert_problem(&login_mfa(&app, &token, &codes[0]).await, 401);
    assert_eq!(login_mfa(&app, &token, &codes[1]).await.status, 200);
    let used: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NOT NULL",
    )
    .bind(doc.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(used, 2);
}

#[sqlx::test]
async fn wrong_codes_count_with_failed_passwords_and_lock(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let step = fresh_step().await;
    let (secret, _) = enrol(&app, &nurse, step).await;
    // the password step counted 1; four wrong codes make 5: the e-mail is locked
    let token = challenge(&app.login(&nurse.email, TEST_PASSWORD).await);
    for _ in 0..4 {
        assert_problem(&login_mfa(&app, &token, "000000").await, 401);
    }
    assert!(audit_count(&app, "auth.lockout", None).await >= 1);
    // now even the right code is refused, like a right password would be
    let r = login_mfa(&app, &token, &code(&secret, step)).await;
    assert_problem(&r, 401);
    assert_eq!(
        r.json["detail"],
        login_mfa(&app, &token, "000000").await.json["detail"]
    );
    assert_problem(&app.login(&nurse.email, TEST_PASSWORD).await, 401);
    // a spent or expired challenge
    sqlx::query("DELETE FROM login_attempts")
        .execute(&app.pool)
        .await
        .unwrap();
    let token = challenge(&app.login(&nurse.email, TEST_PASSWORD).await);
    sqlx::query("UPDATE mfa_challenges SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_problem(&login_mfa(&app, &token, &code(&secret, step)).await, 401);
}

#[sqlx::test]
async fn a_role_that_must_use_mfa_gets_an_enrolment_only_session(pool: PgPool) {
    let mut config = test_config();
    config.mfa = MfaPolicy::Required;
    config.mfa_required_roles = vec![Role::Admin, Role::Physician];
    let app = TestApp::with_config(pool, config).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;

    // a nurse need not: a normal session
    let r = app.login(&nurse.email, TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json.get("mfa_enrollment_required").is_none(),
        "{}",
        r.text
    );
    assert_eq!(
        app.get("/api/v1/patients", r.json["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );

    let r = app.login(&doc.email, TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["mfa_enrollment_required"], true);
    let access = r.json["access_token"].as_str().unwrap().to_string();
    // every other route: 403 problem saying enrolment is required, audited as a denial
    let denied = app.get("/api/v1/patients", &access).await;
    assert_problem(&denied, 403);
    assert_eq!(
        denied.json["type"],
        "https://caduceus.io/problems/mfa-enrollment-required"
    );
    assert!(denied.json["detail"]
        .as_str()
        .unwrap()
        .contains("/auth/mfa/enroll"));
    assert_problem(
        &app.post("/api/v1/patients", &access, common::patient_body("x"))
            .await,
        403,
    );
    assert!(audit_count(&app, "access.denied", None).await >= 2);
    // what it may do: /me, enrol, confirm
    assert_eq!(app.get("/api/v1/me", &access).await.status, 200);
    let step = fresh_step().await;
    let e = start_enrol(&app, &access).await;
    assert_eq!(e.status, 200, "{}", e.text);
    let secret = decode_base32(e.json["secret"].as_str().unwrap());
    let c = confirm(&app, &access, &code(&secret, step)).await;
    assert_eq!(c.status, 200, "{}", c.text);
    // confirmed: the same session is a full one
    assert_eq!(app.get("/api/v1/patients", &access).await.status, 200);
    // a physician cannot turn it off while the policy requires it
    let off = app
        .call(
            Method::DELETE,
            "/api/v1/auth/mfa",
            Some(&access),
            Some(json!({"code": code(&secret, step + 1)})),
        )
        .await;
    assert_problem(&off, 409);
    // and the next login asks for a code
    challenge(&app.login(&doc.email, TEST_PASSWORD).await);
}

#[sqlx::test]
async fn disabling_needs_a_current_code(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let step = fresh_step().await;
    let (secret, _) = enrol(&app, &nurse, step).await;
    let off = |code: String| {
        let app = app.clone();
        let token = nurse.token.clone();
        async move {
            app.call(
                Method::DELETE,
                "/api/v1/auth/mfa",
                Some(&token),
                Some(json!({"code": code})),
            )
            .await
        }
    };
    assert_problem(&off("000000".into()).await, 422);
    // the confirmation's code is spent
    assert_problem(&off(code(&secret, step - 1)).await, 422);
    let r = off(code(&secret, step)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(audit_count(&app, "auth.mfa_disable", None).await, 1);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM user_mfa WHERE id = $1) + \
                (SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1)",
    )
    .bind(nurse.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    // no second step any more
    let r = app.login(&nurse.email, TEST_PASSWORD).await;
    assert!(r.json["access_token"].is_string(), "{}", r.text);
    assert_problem(&off(code(&secret, step + 1)).await, 409);
}

#[sqlx::test]
async fn admin_reset_is_audited_and_ends_the_sessions(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let doc = app.user(Role::Physician).await;
    let step = fresh_step().await;
    enrol(&app, &doc, step).await;
    let url = format!("/api/v1/users/{}/mfa/reset", doc.id);
    // only admins; not their own
    assert_problem(&app.post(&url, &doc.token, json!(null)).await, 403);
    let own = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{}/mfa/reset", admin.id),
            Some(&admin.token),
            None,
        )
        .await;
    assert_problem(&own, 409);
    let missing = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{}/mfa/reset", uuid::Uuid::new_v4()),
            Some(&admin.token),
            None,
        )
        .await;
    assert_problem(&missing, 404);

    let r = app.call(Method::POST, &url, Some(&admin.token), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (actor, resource): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT actor_id, resource_id FROM audit_events WHERE action = 'user.mfa_reset'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((actor, resource), (admin.id, doc.id.to_string()));
    // the account's sessions ended; its next login has no second step
    assert_problem(&app.get("/api/v1/me", &doc.token).await, 401);
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM sessions WHERE id = $1")
        .bind(doc.session_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reason, "mfa_reset");
    let r = app.login(&doc.email, TEST_PASSWORD).await;
    assert!(r.json["access_token"].is_string(), "{}", r.text);
}

#[sqlx::test]
async fn disabled_policy_refuses_enrolment_and_keeps_asking_enrolled_accounts(pool: PgPool) {
    let pool2 = pool.clone();
    let app = TestApp::new(pool).await;
    let nurse = app.user(Role::Nurse).await;
    let step = fresh_step().await;
    enrol(&app, &nurse, step).await;
    let mut config = test_config();
    config.mfa = MfaPolicy::Disabled;
    config.phi_keys = app.state.config.phi_keys.clone();
    config.jwt_key = app.state.config.jwt_key.clone();
    let off = TestApp::with_config(pool2, config).await;
    let other = off.user(Role::Receptionist).await;
    let r = start_enrol(&off, &other.token).await;
    assert_problem(&r, 409);
    // an account that uses MFA is still asked for it (no downgrade by configuration)
    challenge(&off.login(&nurse.email, TEST_PASSWORD).await);
}

#[sqlx::test]
async fn rotate_keys_re_encrypts_totp_secrets(pool: PgPool) {
    let old_json = caduceus_api::crypto::generate_key_ring_json();
    let mut config = test_config();
    config.phi_keys =
        std::sync::Arc::new(caduceus_api::crypto::KeyRing::from_json(&old_json).unwrap());
    let jwt = config.jwt_key.clone();
    let app = TestApp::with_config(pool, config).await;
    let nurse = app.user(Role::Nurse).await;
    let step = fresh_step().await;
    let (secret, _) = enrol(&app, &nurse, step).await;
    // a ring with a new active key that still holds the old one
    let old: serde_json::Value = serde_json::from_str(&old_json).unwrap();
    let mut ring: serde_json::Value =
        serde_json::from_str(&caduceus_api::crypto::generate_key_ring_json()).unwrap();
    for (id, key) in old["keys"].as_object().unwrap() {
        ring["keys"][id] = key.clone();
    }
    ring["blind_index_key"] = old["blind_index_key"].clone();
    let keys = caduceus_api::crypto::KeyRing::from_json(&ring.to_string()).unwrap();
    assert_ne!(keys.active_key_id(), app.state.keys.active_key_id());
    caduceus_api::rotate::rotate_keys(&app.pool, &keys, 100, |_, _| {})
        .await
        .unwrap();
    let key_id: String = sqlx::query_scalar("SELECT phi_key_id FROM user_mfa WHERE id = $1")
        .bind(nurse.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(key_id, keys.active_key_id());
    // the secret still works under the new ring
    let mut config = test_config();
    config.phi_keys = std::sync::Arc::new(keys);
    config.jwt_key = jwt;
    let rotated = TestApp::with_config(app.pool.clone(), config).await;
    let token = challenge(&rotated.login(&nurse.email, TEST_PASSWORD).await);
    assert_eq!(
        login_mfa(&rotated, &token, &code(&secret, step))
            .await
            .status,
        200
    );
}

#[sqlx::test]
async fn enrolment_needs_the_password_and_confirming_ends_the_other_sessions(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    // A second session of the same account (another device, or a stolen token).
    let (_, other_token) = app.session_for(doc.id, Role::Physician).await;
    assert_eq!(app.get("/api/v1/me", &other_token).await.status, 200);

    // Without the password, or with a wrong one: no secret, and the failure is counted.
    let none = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/enroll",
            Some(&doc.token),
            None,
        )
        .await;
    assert!([400, 415, 422].contains(&none.status), "{}", none.text);
    let wrong = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/enroll",
            Some(&doc.token),
            Some(json!({"password": "not-the-password-1"})),
        )
        .await;
    assert_problem(&wrong, 422);
    assert!(wrong.json.get("secret").is_none());
    assert!(wrong.text.contains("password"), "{}", wrong.text);
    assert!(audit_count(&app, "auth.mfa_failed", None).await >= 1);

    // With it: enrol and confirm; every other session of the account ends.
    let step = fresh_step().await;
    enrol(&app, &doc, step).await;
    assert_eq!(app.get("/api/v1/me", &doc.token).await.status, 200);
    let ended = app.get("/api/v1/me", &other_token).await;
    assert_problem(&ended, 401);
    assert_eq!(
        revoked_reason(&app, doc.id).await.as_deref(),
        Some("mfa_enabled")
    );
}
