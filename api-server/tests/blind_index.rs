//! Rotation of the blind-index key (issue #15): rows written under key A (a one-key ring), the
//! ring switched to A + B with B active, `rotate-blind-index`, then A removed. Searches by MRN
//! and by name + birth date, login, failure counters and duplicate checks (MRN and e-mail, also
//! under concurrency) work at every step; the audit chain verifies and list cursors decode with
//! every ring.

mod common;

use std::sync::Arc;

use caduceus_api::crypto::KeyRing;
use caduceus_api::rbac::Role;
use caduceus_api::rotate;
use caduceus_api::testing::{test_config, TestApp, TestUser, TEST_PASSWORD};
use caduceus_contract::key_files::encode_key;
use common::{assert_problem, patient_body};
use serde_json::{json, Value};
use sqlx::PgPool;

const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];
const PATIENTS: &str = "/api/v1/patients";

/// A ring with one data key and the given blind-index fields.
fn ring(blind: Value) -> KeyRing {
    let mut j =
        json!({"version": 1, "active_key_id": "k-1", "keys": {"k-1": encode_key(&[0x11; 32])}});
    for (k, v) in blind.as_object().expect("object") {
        j[k] = v.clone();
    }
    KeyRing::from_json(&j.to_string()).expect("ring parses")
}

/// Today's one-key ring: A is `legacy`.
fn ring_a() -> KeyRing {
    ring(json!({"blind_index_key": encode_key(&KEY_A)}))
}

/// A and B, `active` active; the audit key stays A's value.
fn ring_ab(active: &str) -> KeyRing {
    ring(json!({
        "blind_index_keys": {"legacy": encode_key(&KEY_A), "b-2": encode_key(&KEY_B)},
        "active_blind_index_key_id": active,
        "audit_key": encode_key(&KEY_A),
    }))
}

/// B alone, after the rotation.
fn ring_b() -> KeyRing {
    ring(json!({
        "blind_index_keys": {"b-2": encode_key(&KEY_B)},
        "active_blind_index_key_id": "b-2",
        "audit_key": encode_key(&KEY_A),
    }))
}

/// The same app (same JWT key, so the same tokens) with another key ring.
async fn app_with(pool: &PgPool, keys: KeyRing, like: Option<&TestApp>) -> TestApp {
    let mut config = test_config();
    config.phi_keys = Arc::new(keys);
    if let Some(other) = like {
        config.jwt_key = other.state.config.jwt_key.clone();
    }
    TestApp::with_config(pool.clone(), config).await
}

fn patient(tag: &str, family: &str) -> Value {
    let mut body = patient_body(tag);
    body["family_name"] = json!(family);
    body["birth_date"] = json!("1961-07-08");
    body
}

/// Ids found by `GET /patients?<query>`.
async fn search(app: &TestApp, by: &TestUser, query: &str) -> Vec<String> {
    let r = app
        .get(&format!("/api/v1/patients?{query}"), &by.token)
        .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect()
}

async fn create_user(app: &TestApp, admin: &TestUser, email: &str) -> u16 {
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": email, "password": TEST_PASSWORD, "role": "nurse", "display_name": "N"}),
        )
        .await;
    if r.status != 201 {
        assert_problem(&r, r.status);
    }
    r.status
}

/// What was written under key A: the patient `id` (MRN `MRN-<tag>`, family name `family`) and
/// an account's e-mail, with the users who look them up.
#[derive(Clone, Copy)]
struct Known<'a> {
    rec: &'a TestUser,
    admin: &'a TestUser,
    id: &'a str,
    tag: &'a str,
    family: &'a str,
    email: &'a str,
}

/// Everything a blind index serves, with the app's ring: the known patient is found both ways,
/// the e-mail logs in, and a second patient with that MRN (also written differently), a PATCH
/// of another patient to it, and a second account with that e-mail are refused.
async fn lookups_work(app: &TestApp, step: &str, known: &Known<'_>) {
    let Known {
        rec,
        admin,
        id,
        tag,
        family,
        email,
    } = *known;
    assert_eq!(
        search(app, rec, &format!("mrn=mrn-{tag}")).await,
        vec![id.to_string()],
        "{step}: MRN search"
    );
    let upper = family.to_uppercase();
    assert_eq!(
        search(
            app,
            rec,
            &format!("family_name={upper}&birth_date=1961-07-08")
        )
        .await,
        vec![id.to_string()],
        "{step}: name + birth date search"
    );
    let r = app.login(email, TEST_PASSWORD).await;
    assert_eq!(r.status, 200, "{step}: login: {}", r.text);
    let r = app
        .post("/api/v1/patients", &rec.token, patient(tag, "Other"))
        .await;
    assert_problem(&r, 409);
    let mut spaced = patient(tag, "Other");
    spaced["mrn"] = json!(format!("mrn {tag}"));
    let r = app.post("/api/v1/patients", &rec.token, spaced).await;
    assert_problem(&r, 409);
    let other = format!(
        "{tag}-o-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let r = app
        .post("/api/v1/patients", &rec.token, patient(&other, "Other"))
        .await;
    assert_eq!(r.status, 201, "{step}: {}", r.text);
    let other_id = r.json["id"].as_str().expect("id").to_string();
    let r = app
        .patch(
            &format!("/api/v1/patients/{other_id}"),
            &rec.token,
            json!({"mrn": format!("MRN-{tag}")}),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(
        create_user(app, admin, &email.to_uppercase()).await,
        409,
        "{step}: duplicate e-mail"
    );
}

async fn keys_in_use(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT DISTINCT 'patients', bidx_key_id FROM patients \
         UNION SELECT 'users', bidx_key_id FROM users WHERE email_enc IS NOT NULL \
         UNION SELECT 'login_attempts', bidx_key_id FROM login_attempts \
         UNION SELECT 'mfa_recovery_codes', bidx_key_id FROM mfa_recovery_codes ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("keys in use")
}

#[sqlx::test]
async fn rotating_the_blind_index_key_keeps_every_lookup_working(pool: PgPool) {
    // written under A (today's ring)
    let a = app_with(&pool, ring_a(), None).await;
    let rec = a.user(Role::Receptionist).await;
    let admin = a.user(Role::Admin).await;
    let r = a
        .post(
            "/api/v1/patients",
            &rec.token,
            patient("rot1", "VanHelsing"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let email = "nurse.rotation@clinic.example";
    assert_eq!(create_user(&a, &admin, email).await, 201);
    let known = Known {
        rec: &rec,
        admin: &admin,
        id: &id,
        tag: "rot1",
        family: "VanHelsing",
        email,
    };
    lookups_work(&a, "ring A", &known).await;
    // a failed login of an unknown e-mail: a failure counter under A that no login clears
    assert_eq!(
        a.login("ghost@clinic.example", "wrong-password-123")
            .await
            .status,
        401
    );
    let r = a.get("/api/v1/patients?limit=1", &rec.token).await;
    let cursor = r.json["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    assert_eq!(
        keys_in_use(&pool)
            .await
            .iter()
            .map(|(_, k)| k.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["legacy"].into(),
    );

    // B added and made active: old rows still found, new ones written under B
    let ab = app_with(&pool, ring_ab("b-2"), Some(&a)).await;
    lookups_work(&ab, "ring A+B before the rotation", &known).await;
    let r = ab
        .post("/api/v1/patients", &rec.token, patient("rot2", "Harker"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id2 = r.json["id"].as_str().expect("id").to_string();
    let stored: String = sqlx::query_scalar("SELECT bidx_key_id FROM patients WHERE id = $1::uuid")
        .bind(&id2)
        .fetch_one(&pool)
        .await
        .expect("key id");
    assert_eq!(stored, "b-2");
    // a cursor of ring A decodes with ring A+B
    let r = ab
        .get(
            &format!("/api/v1/patients?limit=1&cursor={cursor}"),
            &rec.token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // the rotation (one row per batch), then again: nothing left to do
    let keys = ab.state.keys.clone();
    let before = rotate::blind_index::remaining(&pool, "b-2")
        .await
        .expect("remaining");
    assert!(
        before
            .rows
            .iter()
            .any(|(k, kind, _)| k == "legacy" && kind == "patients"),
        "{before:?}"
    );
    let report = rotate::rotate_blind_index(&pool, &keys, 1, |_, _| {})
        .await
        .expect("rotation");
    assert!(report.total() >= 4, "{report:?}");
    let again = rotate::rotate_blind_index(&pool, &keys, 1, |_, _| {})
        .await
        .expect("rotation again");
    assert_eq!(again.total(), 0, "idempotent: {again:?}");
    // the failure counter of the window under A cannot be recomputed: it is reported until its
    // window ends (here: made to end), then deleted
    assert_eq!(
        again.remaining.rows,
        vec![("legacy".to_string(), "login_attempts".to_string(), 1)],
        "{again:?}"
    );
    sqlx::query("UPDATE login_attempts SET window_start = now() - interval '1 hour' WHERE bidx_key_id = 'legacy'")
        .execute(&pool)
        .await
        .expect("end the window");
    let done = rotate::rotate_blind_index(&pool, &keys, 100, |_, _| {})
        .await
        .expect("rotation");
    assert_eq!(done.deleted, 1);
    assert_eq!(done.remaining.total(), 0, "{done:?}");
    assert!(
        keys_in_use(&pool).await.iter().all(|(_, k)| k == "b-2"),
        "{:?}",
        keys_in_use(&pool).await
    );
    lookups_work(&ab, "ring A+B after the rotation", &known).await;

    // A removed from the ring
    let b = app_with(&pool, ring_b(), Some(&a)).await;
    lookups_work(&b, "ring B", &known).await;
    assert_eq!(search(&b, &rec, "mrn=MRN-rot2").await, vec![id2]);
    let r = b
        .get(
            &format!("/api/v1/patients?limit=1&cursor={cursor}"),
            &rec.token,
        )
        .await;
    assert_eq!(
        r.status, 200,
        "a cursor of ring A decodes with ring B: {}",
        r.text
    );
    for keys in [ring_a(), ring_ab("b-2"), ring_b()] {
        let chain = caduceus_api::audit::verify_chain(&pool, keys.audit_key())
            .await
            .expect("verify");
        assert!(chain.valid, "{chain:?}");
        assert!(chain.checked > 10, "{chain:?}");
    }
    // (a ring whose audit key were B's would not verify it)
    let wrong = ring(json!({
        "blind_index_keys": {"b-2": encode_key(&KEY_B)},
        "active_blind_index_key_id": "b-2",
        "audit_key": encode_key(&KEY_B),
    }));
    let chain = caduceus_api::audit::verify_chain(&pool, wrong.audit_key())
        .await
        .expect("verify");
    assert!(!chain.valid);
}

/// Five failures lock an e-mail whichever key counted them: three under A, two under B.
#[sqlx::test]
async fn failures_counted_under_the_old_key_still_lock(pool: PgPool) {
    let a = app_with(&pool, ring_a(), None).await;
    let admin = a.user(Role::Admin).await;
    let email = "locked.rotation@clinic.example";
    assert_eq!(create_user(&a, &admin, email).await, 201);
    for _ in 0..3 {
        assert_eq!(a.login(email, "wrong-password-123").await.status, 401);
    }
    let ab = app_with(&pool, ring_ab("b-2"), Some(&a)).await;
    for _ in 0..2 {
        assert_eq!(ab.login(email, "wrong-password-123").await.status, 401);
    }
    // the sixth attempt, with the right password, is refused: the e-mail is locked
    assert_eq!(ab.login(email, TEST_PASSWORD).await.status, 401);
}

/// Replicas with different active keys (a rolling switch from A to B, both keys in every ring)
/// register the same MRNs at once: exactly one of each wins.
#[sqlx::test]
async fn replicas_with_different_active_keys_never_store_an_mrn_twice(pool: PgPool) {
    let on_a = app_with(&pool, ring_ab("legacy"), None).await;
    let on_b = app_with(&pool, ring_ab("b-2"), Some(&on_a)).await;
    let rec = on_a.user(Role::Receptionist).await;
    let admin = on_a.user(Role::Admin).await;
    let mut requests = Vec::new();
    for i in 0..12 {
        let tag = format!("race{}", i / 2);
        let app = if i % 2 == 0 { &on_a } else { &on_b };
        requests.push(app.post("/api/v1/patients", &rec.token, patient(&tag, "Race")));
    }
    let answers = futures::future::join_all(requests).await;
    for pair in answers.chunks(2) {
        let mut statuses: Vec<u16> = pair.iter().map(|r| r.status).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            vec![201, 409],
            "{:?}",
            pair.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 6);
    // the same for accounts
    let emails = [
        "race.a@clinic.example",
        "race.b@clinic.example",
        "race.c@clinic.example",
    ];
    let mut requests = Vec::new();
    for email in emails {
        requests.push(create_user(&on_a, &admin, email));
        requests.push(create_user(&on_b, &admin, email));
    }
    let answers = futures::future::join_all(requests).await;
    for pair in answers.chunks(2) {
        let mut statuses = pair.to_vec();
        statuses.sort();
        assert_eq!(statuses, vec![201, 409]);
    }
}

/// Recovery codes cannot be recomputed: one stored under A is accepted while A is in the ring,
/// is what `rotate-blind-index` reports as left under A, and goes with A.
#[sqlx::test]
async fn recovery_codes_under_the_old_key_work_while_it_is_in_the_ring(pool: PgPool) {
    use caduceus_api::auth::mfa;
    let a = app_with(&pool, ring_a(), None).await;
    let user = a.user(Role::Nurse).await;
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query(
        "INSERT INTO user_mfa (id, secret_enc, phi_key_id, confirmed_at) VALUES ($1, '\\x00', 'k-1', now())",
    )
    .bind(user.id)
    .execute(&mut *conn)
    .await
    .expect("MFA active");
    let codes = mfa::replace_recovery_codes(&mut conn, &a.state.keys, user.id)
        .await
        .expect("codes");
    let ab = ring_ab("b-2");
    let used = mfa::accept_code(&mut conn, &ab, user.id, &codes[0])
        .await
        .expect("accept");
    assert_eq!(used, Some(mfa::Factor::RecoveryCode));
    let again = mfa::accept_code(&mut conn, &ab, user.id, &codes[0])
        .await
        .expect("accept");
    assert_eq!(again, None, "a code is used once");
    let report = rotate::rotate_blind_index(&pool, &ab, 100, |_, _| {})
        .await
        .expect("rotation");
    let unused = i64::try_from(codes.len() - 1).expect("count");
    assert_eq!(
        report.remaining.rows,
        vec![(
            "legacy".to_string(),
            "mfa_recovery_codes".to_string(),
            unused
        )]
    );
    assert_eq!(report.remaining.key_ids(), vec!["legacy"]);
    // the spent code under A was deleted; the others stay until they are replaced
    assert_eq!(report.deleted, 1);
    let only_b = mfa::accept_code(&mut conn, &ring_b(), user.id, &codes[1])
        .await
        .expect("accept");
    assert_eq!(only_b, None, "without A its codes are unknown");
    let fresh = mfa::replace_recovery_codes(&mut conn, &ring_b(), user.id)
        .await
        .expect("codes");
    let remaining = rotate::blind_index::remaining(&pool, "b-2")
        .await
        .expect("remaining");
    assert_eq!(remaining.total(), 0, "{remaining:?}");
    let used = mfa::accept_code(&mut conn, &ring_b(), user.id, &fresh[0])
        .await
        .expect("accept");
    assert_eq!(used, Some(mfa::Factor::RecoveryCode));
}

/// The command line: `--check` fails while rows use another key, the run re-indexes (audited),
/// `--check` then passes; a ring whose active blind-index key is not in it is refused by name.
#[sqlx::test]
async fn the_rotate_blind_index_command(pool: PgPool) {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let a = app_with(&pool, ring_a(), None).await;
    let rec = a.user(Role::Receptionist).await;
    for tag in ["cli1", "cli2", "cli3"] {
        let r = a.post(PATIENTS, &rec.token, patient(tag, "Cli")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("database");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!("{}/{db}", base.rsplit_once('/').expect("url").0);
    let dir = tempfile::tempdir().expect("dir");
    let write_ring = |name: &str, blind: Value| {
        let mut j =
            json!({"version": 1, "active_key_id": "k-1", "keys": {"k-1": encode_key(&[0x11; 32])}});
        for (k, v) in blind.as_object().expect("object") {
            j[k] = v.clone();
        }
        let path = dir.path().join(name);
        std::fs::write(&path, j.to_string()).expect("write ring");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode");
        path
    };
    let both = write_ring(
        "ab.json",
        json!({
            "blind_index_keys": {"legacy": encode_key(&KEY_A), "b-2": encode_key(&KEY_B)},
            "active_blind_index_key_id": "b-2",
            "audit_key": encode_key(&KEY_A),
        }),
    );
    let run = |ring: &std::path::Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_caduceus-api"))
            .arg("rotate-blind-index")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .env("CADUCEUS_PHI_KEYS_FILE", ring)
            .output()
            .expect("binary runs")
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let check = run(&both, &["--check"]);
    assert!(!check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("still under blind-index key legacy: patients: 3"),
        "{}",
        text(&check)
    );
    let out = run(&both, &["--batch-size", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("re-indexing complete: 4 rows re-indexed under b-2"),
        "{}",
        text(&out)
    );
    let check = run(&both, &["--check"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("no stored blind index uses a key other than b-2"));
    let audited: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT action, resource_id FROM audit_events WHERE actor_id IS NULL")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert!(
        audited.contains(&("keys.rotate_blind_index".into(), Some("b-2".into()))),
        "{audited:?}"
    );
    let chain = caduceus_api::audit::verify_chain(&pool, ring_b().audit_key())
        .await
        .expect("verify");
    assert!(chain.valid, "{chain:?}");
    let bad = write_ring(
        "bad.json",
        json!({
            "blind_index_keys": {"b-2": encode_key(&KEY_B)},
            "active_blind_index_key_id": "legacy",
            "audit_key": encode_key(&KEY_A),
        }),
    );
    let out = run(&bad, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("active_blind_index_key_id \"legacy\" is not in blind_index_keys"),
        "{}",
        text(&out)
    );
}
