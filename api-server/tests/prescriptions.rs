//! Prescription endpoints: prescribing, reading, listing, discontinuing, the interaction check
//! (active prescriptions, the record's medication list, allergies, RxNorm codes), override
//! auditing, concurrency, RBAC for every role, patient self-scope, validation, encryption.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use common::{assert_problem, audit_count, patient_body};
use serde_json::{json, Value};
use sqlx::PgPool;

fn rx(patient: &str, name: &str) -> Value {
    json!({"patient_id": patient, "medication": {"name": name}, "dose": "5 mg", "route": "oral",
           "frequency": "once daily", "duration_days": 30, "notes": format!("notes for {name}")})
}

/// A patient registered by `by` (so a physician/nurse `by` is in the care team).
async fn patient_with(
    app: &TestApp,
    by: &TestUser,
    tag: &str,
    allergies: &[&str],
    medications: &[&str],
) -> String {
    let mut body = patient_body(tag);
    body["allergies"] = json!(allergies);
    body["medications"] = json!(medications);
    let r = app.post("/api/v1/patients", &by.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

async fn prescribe(app: &TestApp, by: &TestUser, body: Value) -> Value {
    let r = app.post("/api/v1/prescriptions", &by.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

#[sqlx::test]
async fn prescribe_read_list_discontinue(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx1", &[], &[]).await;
    let mut body = rx(&patient, "Metformin 500 mg tablet");
    body["medication"]["code"] = json!("6809");
    let created = prescribe(&app, &doc, body).await;
    assert_eq!(created["status"], "active");
    assert_eq!(created["medication"]["name"], "Metformin 500 mg tablet");
    assert_eq!(created["medication"]["code"], "6809");
    assert_eq!(created["route"], "oral");
    assert_eq!(created["interactions"], json!([]));
    assert_eq!(created["prescriber_id"], json!(doc.id));
    assert_eq!(app.state.metrics.prescriptions_created_total.get(), 1);
    let id = created["id"].as_str().unwrap().to_string();

    let r = app
        .get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["dose"], "5 mg");
    assert_eq!(r.json["notes"], "notes for Metformin 500 mg tablet");
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let second = prescribe(&app, &doc, rx(&patient, "Atorvastatin 20 mg")).await;
    let r = app
        .get(
            &format!("/api/v1/prescriptions?patient_id={patient}"),
            &doc.token,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let r = app.get("/api/v1/prescriptions?limit=1", &doc.token).await;
    assert_eq!(r.json["items"][0]["id"], json!(id));
    let cursor = r.json["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/api/v1/prescriptions?limit=1&cursor={cursor}"),
            &doc.token,
        )
        .await;
    assert_eq!(r.json["items"][0]["id"], second["id"]);
    assert!(r.json.get("next_cursor").is_none());

    let r = app
        .post(
            &format!("/api/v1/prescriptions/{id}/discontinue"),
            &doc.token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "discontinued");
    assert_eq!(r.json["discontinued_by"], json!(doc.id));
    assert_problem(
        &app.post(
            &format!("/api/v1/prescriptions/{id}/discontinue"),
            &doc.token,
            json!({}),
        )
        .await,
        409,
    );
    let r = app
        .get("/api/v1/prescriptions?status=active", &doc.token)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["items"][0]["id"], second["id"]);
    let r = app
        .get("/api/v1/prescriptions?status=discontinued", &doc.token)
        .await;
    assert_eq!(r.json["items"][0]["id"], json!(id));

    // an elapsed prescription is completed: cannot be discontinued, no longer checked
    sqlx::query("UPDATE prescriptions SET starts_at = now() - interval '40 days', ends_at = now() - interval '10 days' WHERE id = $1::uuid")
        .bind(second["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .get(
            &format!("/api/v1/prescriptions/{}", second["id"].as_str().unwrap()),
            &doc.token,
        )
        .await;
    assert_eq!(r.json["status"], "completed");
    assert_problem(
        &app.post(
            &format!(
                "/api/v1/prescriptions/{}/discontinue",
                second["id"].as_str().unwrap()
            ),
            &doc.token,
            json!({}),
        )
        .await,
        409,
    );
    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        &app.get(&format!("/api/v1/prescriptions/{unknown}"), &doc.token)
            .await,
        404,
    );
    assert_problem(
        &app.post(
            &format!("/api/v1/prescriptions/{unknown}/discontinue"),
            &doc.token,
            json!({}),
        )
        .await,
        404,
    );
}

#[sqlx::test]
async fn major_interaction_is_refused_then_overridden_with_audit(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx2", &[], &[]).await;
    let warfarin = prescribe(&app, &doc, rx(&patient, "Warfarin sodium 5 mg")).await;

    let r = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            rx(&patient, "Aspirin 81 mg"),
        )
        .await;
    assert_problem(&r, 409);
    let found = r.json["interactions"].as_array().expect("interactions");
    assert_eq!(found.len(), 1, "{}", r.text);
    assert_eq!(found[0]["interaction_id"], 1);
    assert_eq!(found[0]["severity"], "major");
    assert_eq!(found[0]["kind"], "drug");
    assert_eq!(found[0]["terms"], json!(["aspirin", "warfarin"]));
    assert_eq!(found[0]["source"], "prescription");
    assert_eq!(found[0]["prescription_id"], warfarin["id"]);
    // the free text of the record is never echoed
    assert!(!r.text.contains("Warfarin sodium"), "{}", r.text);
    let refused: (String, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT outcome, patient_id FROM audit_events WHERE action = 'prescription.interaction_refused'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused.0, "denied");
    assert_eq!(refused.1.map(|p| p.to_string()), Some(patient.clone()));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM prescriptions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "nothing was created");

    // ibuprofen via the NSAID class and a brand name
    let r = app
        .post("/api/v1/prescriptions", &doc.token, rx(&patient, "Advil"))
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.json["interactions"][0]["interaction_id"], 2);

    // override
    let mut body = rx(&patient, "Aspirin 81 mg");
    body["override_reason"] = json!("post-stent; INR monitored weekly");
    let created = prescribe(&app, &doc, body).await;
    assert_eq!(
        created["override_reason"],
        "post-stent; INR monitored weekly"
    );
    assert_eq!(created["interactions"][0]["interaction_id"], 1);
    let id = created["id"].as_str().unwrap();
    let (purpose, resource): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT purpose, resource_id FROM audit_events WHERE action = 'prescription.interaction_override'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(purpose.as_deref(), Some("post-stent; INR monitored weekly"));
    assert_eq!(resource.as_deref(), Some(id));
    let create_purpose: Option<String> = sqlx::query_scalar(
        "SELECT purpose FROM audit_events WHERE action = 'prescription.create' AND resource_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        create_purpose.as_deref(),
        Some("post-stent; INR monitored weekly")
    );
    // stored with the prescription
    let r = app
        .get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    assert_eq!(
        r.json["override_reason"],
        "post-stent; INR monitored weekly"
    );
    assert_eq!(r.json["interactions"][0]["severity"], "major");

    // once warfarin is discontinued, ibuprofen no longer conflicts with it
    let r = app
        .post(
            &format!(
                "/api/v1/prescriptions/{}/discontinue",
                warfarin["id"].as_str().unwrap()
            ),
            &doc.token,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let created = prescribe(&app, &doc, rx(&patient, "Ibuprofen 400 mg")).await;
    assert_eq!(created["interactions"], json!([]));
}

#[sqlx::test]
async fn allergies_medication_list_codes_and_moderate_warnings(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(
        &app,
        &doc,
        "rx3",
        &["Penicillin (hives)"],
        &["Sildenafil 50mg as needed", "Lisinopril 10 mg"],
    )
    .await;
    // penicillin allergy: amoxicillin is a penicillin
    let r = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            rx(&patient, "Amoxicillin 500 mg"),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.json["interactions"][0]["kind"], "allergy");
    assert_eq!(r.json["interactions"][0]["source"], "allergy");
    assert_eq!(r.json["interactions"][0]["terms"][0], "class:penicillin");
    // cephalosporin: moderate cross-reactivity warning, not blocking
    let created = prescribe(&app, &doc, rx(&patient, "Cephalexin 250 mg")).await;
    assert_eq!(created["interactions"][0]["severity"], "moderate");
    assert_eq!(created["interactions"][0]["interaction_id"], 14);
    // the record's medication list: sildenafil + a nitrate
    let r = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            rx(&patient, "Glyceryl trinitrate spray"),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.json["interactions"][0]["source"], "medication_list");
    assert_eq!(
        r.json["interactions"][0]["terms"],
        json!(["class:nitrate", "class:pde5_inhibitor"])
    );
    // ACE inhibitor + potassium-sparing diuretic: moderate only
    let created = prescribe(&app, &doc, rx(&patient, "Spironolactone 25 mg")).await;
    assert_eq!(created["interactions"][0]["severity"], "moderate");
    assert_eq!(created["interactions"][0]["interaction_id"], 6);

    // matching by RxNorm code when the name is unknown
    let other = patient_with(&app, &doc, "rx3b", &[], &[]).await;
    prescribe(&app, &doc, rx(&other, "Simvastatin 40 mg")).await;
    let mut body = rx(&other, "Brand X");
    body["medication"]["code"] = json!("21212"); // clarithromycin
    let r = app.post("/api/v1/prescriptions", &doc.token, body).await;
    assert_problem(&r, 409);
    assert_eq!(r.json["interactions"][0]["interaction_id"], 3);
    // combination product maps to both ingredients: methotrexate + co-trimoxazole
    prescribe(&app, &doc, rx(&other, "Methotrexate 2.5 mg weekly")).await;
    let r = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            rx(&other, "Co-trimoxazole 960 mg"),
        )
        .await;
    assert_problem(&r, 409);
    assert_eq!(r.json["interactions"][0]["interaction_id"], 7);
}

#[sqlx::test]
async fn concurrent_interacting_prescriptions_cannot_both_pass(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx4", &[], &[]).await;
    let mut tasks = Vec::new();
    for name in [
        "Warfarin 5 mg",
        "Aspirin 75 mg",
        "Warfarin 3 mg",
        "Aspirin 100 mg",
    ] {
        let app = app.clone();
        let token = doc.token.clone();
        let body = rx(&patient, name);
        tasks.push(tokio::spawn(async move {
            app.post("/api/v1/prescriptions", &token, body).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status);
    }
    let created = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!(created + refused, 4, "{statuses:?}");
    // whichever drug came first, the other one was refused every time
    let names: Vec<Vec<u8>> = sqlx::query_scalar("SELECT medication_name FROM prescriptions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(names.len(), created);
    assert_eq!(created, 2, "{statuses:?}");
    let r = app.get("/api/v1/prescriptions", &doc.token).await;
    let kinds: Vec<bool> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["medication"]["name"]
                .as_str()
                .unwrap()
                .starts_with("Warfarin")
        })
        .collect();
    assert!(
        kinds.iter().all(|k| *k) || kinds.iter().all(|k| !*k),
        "{kinds:?}"
    );
}

#[sqlx::test]
async fn every_role_on_every_prescription_route(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let rec = app.user(Role::Receptionist).await;
    let outsider_doc = app.user(Role::Physician).await;
    let outsider_nurse = app.user(Role::Nurse).await;
    let own = patient_with(&app, &doc, "rx5", &[], &[]).await;
    let other = patient_with(&app, &doc, "rx5b", &[], &[]).await;
    let patient = app.patient_user(own.parse().unwrap()).await;
    let r = app
        .post(
            &format!("/api/v1/patients/{own}/care-team"),
            &doc.token,
            json!({"user_id": nurse.id}),
        )
        .await;
    assert_eq!(r.status, 201);
    let users = [&admin, &doc, &nurse, &rec, &patient];
    //                                admin physician nurse recept. patient
    let create_expect = [403, 201, 403, 403, 403];
    for (u, want) in users.iter().zip(create_expect) {
        let r = app
            .post("/api/v1/prescriptions", &u.token, rx(&own, "Metformin"))
            .await;
        assert_eq!(r.status, want, "create as {}: {}", u.role.as_str(), r.text);
    }
    let id = app.get("/api/v1/prescriptions", &doc.token).await.json["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_id = prescribe(&app, &doc, rx(&other, "Metformin")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read_expect = [403, 200, 200, 403, 200];
    for (u, want) in users.iter().zip(read_expect) {
        let r = app
            .get(&format!("/api/v1/prescriptions/{id}"), &u.token)
            .await;
        assert_eq!(r.status, want, "read as {}: {}", u.role.as_str(), r.text);
        let r = app.get("/api/v1/prescriptions", &u.token).await;
        assert_eq!(
            r.status,
            if want == 200 { 200 } else { 403 },
            "list as {}",
            u.role.as_str()
        );
    }
    // scopes: the patient sees only their own; the nurse only her care team
    for (u, n) in [(&patient, 1), (&nurse, 1), (&doc, 2)] {
        let r = app.get("/api/v1/prescriptions", &u.token).await;
        assert_eq!(
            r.json["items"].as_array().unwrap().len(),
            n,
            "{}",
            u.role.as_str()
        );
    }
    let r = app
        .get(&format!("/api/v1/prescriptions/{other_id}"), &patient.token)
        .await;
    assert_problem(&r, 404);
    // outside the care team
    assert_problem(
        &app.get(
            &format!("/api/v1/prescriptions/{id}"),
            &outsider_nurse.token,
        )
        .await,
        403,
    );
    assert_problem(
        &app.get(&format!("/api/v1/prescriptions/{id}"), &outsider_doc.token)
            .await,
        403,
    );
    assert_problem(
        &app.post(
            "/api/v1/prescriptions",
            &outsider_doc.token,
            rx(&own, "Metformin"),
        )
        .await,
        403,
    );
    let glass = Request::builder()
        .uri(format!("/api/v1/prescriptions/{id}"))
        .header("authorization", format!("Bearer {}", outsider_doc.token))
        .header(
            "x-break-glass-reason",
            "ER: unconscious, medication history needed",
        )
        .body(Body::empty())
        .unwrap();
    let r = app.send(glass).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&own)).await,
        1
    );
    // discontinue: physicians only
    let discontinue_expect = [403, 200, 403, 403, 403];
    for (u, want) in users.iter().zip(discontinue_expect) {
        let r = app
            .post(
                &format!("/api/v1/prescriptions/{id}/discontinue"),
                &u.token,
                json!({}),
            )
            .await;
        assert_eq!(
            r.status,
            want,
            "discontinue as {}: {}",
            u.role.as_str(),
            r.text
        );
    }
}

#[sqlx::test]
async fn validation_and_malformed_input(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx6", &[], &[]).await;
    let base = rx(&patient, "Metformin");
    let with = |path: &[&str], v: Value| {
        let mut b = base.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b
    };
    let cases = [
        (with(&["duration_days"], json!(0)), "duration_days"),
        (with(&["duration_days"], json!(366)), "duration_days"),
        (with(&["route"], json!("by mouth")), "route"),
        (with(&["dose"], json!(" ")), "dose"),
        (with(&["frequency"], json!("")), "frequency"),
        (with(&["medication", "name"], json!("")), "medication.name"),
        (
            with(&["medication", "code"], json!("12 34")),
            "medication.code",
        ),
        (with(&["override_reason"], json!("  ")), "override_reason"),
        (
            with(&["patient_id"], json!(uuid::Uuid::now_v7())),
            "patient_id",
        ),
        (with(&["patient_id"], json!("nope")), "patient_id"),
        (with(&["dosage"], json!("x")), "dosage"),
        (json!({"patient_id": patient}), "medication"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/prescriptions", &doc.token, body).await;
        assert_problem(&r, 422);
        assert!(
            r.json["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {}",
            r.text
        );
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/prescriptions")
        .header("authorization", format!("Bearer {}", doc.token))
        .header("content-type", "application/json")
        .body(Body::from("{\"dose\": "))
        .unwrap();
    assert_problem(&app.send(req).await, 400);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/prescriptions")
        .header("authorization", format!("Bearer {}", doc.token))
        .body(Body::from(base.to_string()))
        .unwrap();
    assert_problem(&app.send(req).await, 415);
    assert_problem(&app.get("/api/v1/prescriptions/123", &doc.token).await, 400);
    // An unknown enum value of a query parameter is a 422 naming the parameter.
    let r = app
        .get("/api/v1/prescriptions?status=paused", &doc.token)
        .await;
    assert_problem(&r, 422);
    assert_eq!(r.json["errors"][0]["field"], "status", "{}", r.text);
    assert_problem(
        &app.get("/api/v1/prescriptions?limit=101", &doc.token).await,
        422,
    );
    assert_problem(
        &app.call(Method::POST, "/api/v1/prescriptions", None, Some(base))
            .await,
        401,
    );
}

#[sqlx::test]
async fn phi_is_encrypted_and_every_access_audited(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx7", &[], &[]).await;
    let mut body = rx(&patient, "Zyloprimsecretname 100 mg");
    body["notes"] = json!("SECRETNOTE take with food");
    let created = prescribe(&app, &doc, body).await;
    let id = created["id"].as_str().unwrap().to_string();
    app.get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    app.get("/api/v1/prescriptions", &doc.token).await;
    app.post(
        &format!("/api/v1/prescriptions/{id}/discontinue"),
        &doc.token,
        json!({}),
    )
    .await;
    for action in [
        "prescription.create",
        "prescription.read",
        "prescription.list",
        "prescription.discontinue",
    ] {
        assert_eq!(
            audit_count(&app, action, Some(&patient)).await,
            1,
            "{action}"
        );
    }
    // raw columns hold ciphertext only; the audit trail holds no PHI
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(encode(medication_name, 'escape') || encode(dose, 'escape') || encode(coalesce(notes, ''::bytea), 'escape'), '|') FROM prescriptions",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!dump.contains("Zyloprimsecretname"));
    assert!(!dump.contains("SECRETNOTE"));
    let key: String =
        sqlx::query_scalar("SELECT phi_key_id FROM prescriptions WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(key, app.state.keys.active_key_id());
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE concat_ws('|', action, resource_type, resource_id, purpose) ILIKE '%zyloprim%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

#[sqlx::test]
async fn key_rotation_covers_prescriptions_and_appointments(pool: PgPool) {
    use base64::Engine as _;
    use caduceus_api::crypto::KeyRing;
    use caduceus_api::testing::test_config;
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let ring = |active: &str, keys: Value| {
        KeyRing::from_json(
            &json!({"version": 1, "active_key_id": active, "keys": keys, "blind_index_key": b64([5; 32])})
                .to_string(),
        )
        .unwrap()
    };
    let mut cfg = test_config();
    cfg.phi_keys = std::sync::Arc::new(ring("k-old", json!({"k-old": b64([1; 32])})));
    let app = TestApp::with_config(pool.clone(), cfg).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "rx8", &[], &[]).await;
    let mut body = rx(&patient, "Warfarin 5 mg");
    body["medication"]["code"] = json!("11289");
    let rx_id = prescribe(&app, &doc, body).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = chrono::Utc::now() + chrono::Duration::days(2);
    let r = app
        .post(
            "/api/v1/appointments",
            &doc.token,
            json!({"patient_id": patient, "practitioner_id": doc.id, "start": start,
                   "end": start + chrono::Duration::minutes(20), "reason": "INR check"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let appt_id = r.json["id"].as_str().unwrap().to_string();

    let both = ring(
        "k-new",
        json!({"k-old": b64([1; 32]), "k-new": b64([2; 32])}),
    );
    let report = caduceus_api::rotate::rotate_keys(&pool, &both, 10, |_, _| {})
        .await
        .unwrap();
    assert!(report.rows.contains(&("prescriptions", 1)), "{report:?}");
    assert!(report.rows.contains(&("appointments", 1)), "{report:?}");
    let (name, code): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT medication_name, medication_code FROM prescriptions WHERE id = $1::uuid",
    )
    .bind(&rx_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(KeyRing::key_id_of(&name).unwrap(), "k-new");
    assert_eq!(KeyRing::key_id_of(&code).unwrap(), "k-new");

    // only the new key left: everything still reads, and the interaction check still sees warfarin
    let mut cfg = test_config();
    cfg.phi_keys = std::sync::Arc::new(ring("k-new", json!({"k-new": b64([2; 32])})));
    let app2 = TestApp::with_config(pool, cfg).await;
    let (_, token) = app2.session_for(doc.id, Role::Physician).await;
    let r = app2
        .get(&format!("/api/v1/prescriptions/{rx_id}"), &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["medication"]["name"], "Warfarin 5 mg");
    let r = app2
        .get(&format!("/api/v1/appointments/{appt_id}"), &token)
        .await;
    assert_eq!(r.json["reason"], "INR check");
    let r = app2
        .post("/api/v1/prescriptions", &token, rx(&patient, "Aspirin"))
        .await;
    assert_problem(&r, 409);
}
