//! Patient endpoints: CRUD, search, care team, self-scope, break-glass, encryption at rest.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use common::{assert_problem, audit_count, create_patient, patient_body};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn create_read_update_delete(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let id = create_patient(&app, &doc, "crud1").await;

    let r = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["given_name"],
        "Givenamecrud1".replace("Givename", "Givenname")
    );
    assert_eq!(r.json["allergies"], json!(["Allergencrud1"]));
    assert_eq!(r.json["access"], "full");
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = app
        .patch(
            &format!("/api/v1/patients/{id}"),
            &doc.token,
            json!({"phone": "+1 555 0111", "conditions": ["Asthma"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["phone"], "+1 555 0111");
    assert_eq!(r.json["conditions"], json!(["Asthma"]));
    assert_eq!(r.json["mrn"], "MRN-crud1");

    // physicians cannot delete; admins can (soft delete)
    assert_problem(
        &app.delete(&format!("/api/v1/patients/{id}"), &doc.token)
            .await,
        403,
    );
    let r = app
        .delete(&format!("/api/v1/patients/{id}"), &admin.token)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_problem(
        &app.get(&format!("/api/v1/patients/{id}"), &doc.token).await,
        404,
    );
    assert_problem(
        &app.delete(&format!("/api/v1/patients/{id}"), &admin.token)
            .await,
        404,
    );
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM patients WHERE id = $1::uuid AND deleted_at IS NOT NULL",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, 1, "soft delete keeps the row for retention");

    // unknown id
    assert_problem(
        &app.get(
            &format!("/api/v1/patients/{}", uuid::Uuid::now_v7()),
            &doc.token,
        )
        .await,
        404,
    );
}

#[sqlx::test]
async fn duplicate_mrn_conflicts_and_validation(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    create_patient(&app, &rec, "dup").await;
    let mut body = patient_body("dup2");
    body["mrn"] = json!("mrn dup"); // normalises to the same MRN
    assert_problem(&app.post("/api/v1/patients", &rec.token, body).await, 409);

    let mut bad = patient_body("bad");
    bad["given_name"] = json!("");
    bad["birth_date"] = json!("2999-01-01");
    let r = app.post("/api/v1/patients", &rec.token, bad).await;
    assert_problem(&r, 422);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"given_name") && fields.contains(&"birth_date"),
        "{fields:?}"
    );
    let mut bad = patient_body("bad2");
    bad["sex"] = json!("Givenname-secret");
    let r = app.post("/api/v1/patients", &rec.token, bad).await;
    assert_problem(&r, 422);
    assert!(
        !r.text.contains("Givenname-secret"),
        "problem must not echo input: {}",
        r.text
    );
}

/// Creates are grouped into one statement per batch (`patients::PatientInsert`): concurrent
/// registrations each get their own answer, and of many concurrent requests for one MRN — most
/// of them in the same batch — exactly one wins and the rest get 409.
#[sqlx::test]
async fn concurrent_creates_are_grouped_and_exactly_one_wins_an_mrn(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let rec = app.user(Role::Receptionist).await;
    let mut requests = Vec::new();
    for i in 0..40 {
        // even requests all want MRN-race; odd ones each have their own MRN
        let tag = if i % 2 == 0 {
            "race".to_string()
        } else {
            format!("own{i}")
        };
        let mut body = patient_body(&tag);
        body["given_name"] = json!(format!("Given{i}"));
        requests.push(app.post("/api/v1/patients", &rec.token, body));
    }
    let answers = futures::future::join_all(requests).await;
    let mut created = 0;
    for (i, r) in answers.iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(r.status, 201, "request {i}: {}", r.text);
            assert_eq!(r.json["given_name"], format!("Given{i}"), "request {i}");
            assert_eq!(r.json["mrn"], format!("MRN-own{i}"), "request {i}");
        } else if r.status == 201 {
            created += 1;
            assert_eq!(r.json["mrn"], "MRN-race");
        } else {
            assert_problem(r, 409);
        }
    }
    assert_eq!(created, 1, "exactly one request may register MRN-race");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 21);
    // every stored record reads back as the one its request was told about
    for r in answers.iter().filter(|r| r.status == 201) {
        let id = r.json["id"].as_str().expect("id");
        let got = app.get(&format!("/api/v1/patients/{id}"), &rec.token).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(got.json["given_name"], r.json["given_name"]);
        assert_eq!(got.json["created_at"], r.json["created_at"]);
    }
    assert_eq!(audit_count(&app, "patient.create", None).await, 21);
}

#[sqlx::test]
async fn search_by_blind_index_and_pagination(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_patient(&app, &rec, &format!("pg{i}")).await);
    }
    let r = app.get("/api/v1/patients?mrn=mrn-pg3", &rec.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[3].as_str());
    // receptionists see demographics only
    assert_eq!(items[0]["access"], "demographics");
    assert!(items[0].get("allergies").is_none());

    let r = app
        .get(
            "/api/v1/patients?family_name=FAMILYNAMEPG2&birth_date=1970-03-04",
            &rec.token,
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.json["items"][0]["id"], ids[2].as_str());
    assert_problem(
        &app.get("/api/v1/patients?family_name=x", &rec.token).await,
        422,
    );
    assert_problem(
        &app.get("/api/v1/patients?limit=101", &rec.token).await,
        422,
    );
    let r = app.get("/api/v1/patients?cursor=@@@", &rec.token).await;
    assert_problem(&r, 400);
    assert_eq!(r.json["errors"][0]["field"], "cursor", "{}", r.text);

    let mut seen = Vec::new();
    let mut url = "/api/v1/patients?limit=2".to_string();
    loop {
        let r = app.get(&url, &rec.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for p in r.json["items"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_string());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/patients?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert!(audit_count(&app, "patient.search", Some(&ids[3])).await >= 1);
    assert!(audit_count(&app, "patient.list", Some(&ids[0])).await >= 1);
}

#[sqlx::test]
async fn care_team_rules_and_break_glass(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let id = create_patient(&app, &rec, "ct").await;
    let url = format!("/api/v1/patients/{id}");

    // outside the care team
    let r = app.get(&url, &doc.token).await;
    assert_problem(&r, 403);
    assert!(r.json["detail"]
        .as_str()
        .unwrap()
        .contains("X-Break-Glass-Reason"));
    assert_problem(&app.get(&url, &nurse.token).await, 403);
    let listed = app.get("/api/v1/patients", &doc.token).await;
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 0);
    // a physician cannot bypass break-glass by assigning themselves
    let r = app
        .post(
            &format!("{url}/care-team"),
            &doc.token,
            json!({"user_id": doc.id}),
        )
        .await;
    assert_problem(&r, 403);
    assert_problem(&app.get(&url, &doc.token).await, 403);

    // break-glass: physicians only, audited as its own action and counted
    let req = axum::http::Request::builder()
        .uri(&url)
        .header("authorization", format!("Bearer {}", doc.token))
        .header("x-break-glass-reason", "unconscious patient in ER")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["access"], "full");
    assert_eq!(audit_count(&app, "patient.break_glass", Some(&id)).await, 1);
    let purpose: Option<String> =
        sqlx::query_scalar("SELECT purpose FROM audit_events WHERE action = 'patient.break_glass'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(purpose.as_deref(), Some("unconscious patient in ER"));
    assert_eq!(
        app.state
            .metrics
            .break_glass_access_total
            .with_label_values(&["physician"])
            .get(),
        1
    );
    let req = axum::http::Request::builder()
        .uri(&url)
        .header("authorization", format!("Bearer {}", nurse.token))
        .header("x-break-glass-reason", "curious")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_problem(&app.send(req).await, 403);

    // assignment puts the nurse in the care team
    let r = app
        .post(
            &format!("{url}/care-team"),
            &rec.token,
            json!({"user_id": nurse.id}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.get(&url, &nurse.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["access"], "full");
    // only clinicians can be assigned; nurses cannot assign
    let r = app
        .post(
            &format!("{url}/care-team"),
            &rec.token,
            json!({"user_id": rec.id}),
        )
        .await;
    assert_problem(&r, 422);
    assert_problem(
        &app.post(
            &format!("{url}/care-team"),
            &nurse.token,
            json!({"user_id": doc.id}),
        )
        .await,
        403,
    );

    // an appointment with the patient puts the physician in the care team
    sqlx::query(
        "INSERT INTO appointments (id, patient_id, practitioner_id, start_at, end_at, phi_key_id, created_by) \
         VALUES ($1, $2::uuid, $3, now() + interval '1 day', now() + interval '1 day 30 minutes', 'k', $4)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&id)
    .bind(doc.id)
    .bind(rec.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = app.get(&url, &doc.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = app.get("/api/v1/patients", &doc.token).await;
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 1);

    // receptionists may not change clinical fields
    let r = app
        .patch(&url, &rec.token, json!({"allergies": ["none"]}))
        .await;
    assert_problem(&r, 403);
    let r = app
        .patch(&url, &rec.token, json!({"phone": "+1 555 0123"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(app.state.metrics.phi_access_denied_total.get() >= 4);
}

#[sqlx::test]
async fn patient_self_scope(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let mine = create_patient(&app, &rec, "self1").await;
    let other = create_patient(&app, &rec, "self2").await;
    let me = app.patient_user(mine.parse().unwrap()).await;

    let r = app
        .get(&format!("/api/v1/patients/{mine}"), &me.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["access"], "full");
    // other records: 404, exactly like a record that does not exist
    let r = app
        .get(&format!("/api/v1/patients/{other}"), &me.token)
        .await;
    assert_problem(&r, 404);
    let missing = app
        .get(
            &format!("/api/v1/patients/{}", uuid::Uuid::now_v7()),
            &me.token,
        )
        .await;
    assert_eq!(r.json["detail"], missing.json["detail"]);
    let r = app.get("/api/v1/patients", &me.token).await;
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], mine.as_str());
    let r = app.get("/api/v1/patients?mrn=MRN-self2", &me.token).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 0);
    assert_problem(
        &app.patch(
            &format!("/api/v1/patients/{mine}"),
            &me.token,
            json!({"phone": "1"}),
        )
        .await,
        403,
    );
    assert_problem(
        &app.post("/api/v1/patients", &me.token, patient_body("self3"))
            .await,
        403,
    );
}

#[sqlx::test]
async fn break_glass_search_is_audited_per_record(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let id = create_patient(&app, &rec, "glass-list").await;
    let search = |token: &str, reason: Option<&str>| {
        let mut b = axum::http::Request::builder()
            .uri("/api/v1/patients?mrn=MRN-glass-list")
            .header("authorization", format!("Bearer {token}"));
        if let Some(r) = reason {
            b = b.header("x-break-glass-reason", r);
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    // without the header a physician outside the care team finds nothing
    let r = app.send(search(&doc.token, None)).await;
    assert_eq!(r.json["items"], json!([]));
    // nurses cannot break the glass
    let r = app.send(search(&nurse.token, Some("emergency"))).await;
    assert_eq!(r.json["items"], json!([]));
    let r = app.send(search(&doc.token, Some("trauma bay 2"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["items"][0]["id"], id.as_str());
    assert_eq!(r.json["items"][0]["access"], "full");
    assert_eq!(audit_count(&app, "patient.break_glass", Some(&id)).await, 1);
    assert_eq!(
        app.state
            .metrics
            .break_glass_access_total
            .with_label_values(&["physician"])
            .get(),
        1
    );
}

/// Retention: soft-deleted patients older than `CADUCEUS_PATIENT_RETENTION_DAYS` (never fewer than
/// 2190) are hard-deleted with their appointments, prescriptions and care team; recent deletions
/// and live records stay; each purge is audited without PHI.
#[sqlx::test]
async fn retention_purges_old_soft_deleted_patients(pool: PgPool) {
    use caduceus_api::retention::purge_deleted_patients;
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    // with an appointment, a prescription, a care team and a linked patient account each
    let mut ids = Vec::new();
    for (i, tag) in ["purgeOld", "purgeMid", "purgeRecent", "purgeLive"]
        .into_iter()
        .enumerate()
    {
        let id = create_patient(&app, &doc, tag).await;
        let start = chrono::Utc::now() + chrono::Duration::days(2 + i as i64);
        let r = app
            .post(
                "/api/v1/appointments",
                &admin.token,
                json!({"patient_id": id, "practitioner_id": doc.id, "start": start.to_rfc3339(),
                       "end": (start + chrono::Duration::minutes(20)).to_rfc3339(),
                       "reason": format!("Reason{tag}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = app
            .post(
                "/api/v1/prescriptions",
                &doc.token,
                json!({"patient_id": id, "medication": {"name": "Paracetamol"}, "dose": "500 mg",
                       "route": "oral", "frequency": "twice daily", "duration_days": 5}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = app
            .post(
                &format!("/api/v1/patients/{id}/care-team"),
                &admin.token,
                json!({"user_id": nurse.id}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        app.patient_user(id.parse().unwrap()).await;
        ids.push(id);
    }
    // soft-delete three of them, backdated: 4000, 3000 and 10 days ago
    for (id, days) in ids.iter().zip([4000, 3000, 10]) {
        assert_eq!(
            app.delete(&format!("/api/v1/patients/{id}"), &admin.token)
                .await
                .status,
            204
        );
        sqlx::query("UPDATE patients SET deleted_at = now() - make_interval(days => $2) WHERE id = $1::uuid")
            .bind(id)
            .bind(days)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let exists = |id: String| {
        let pool = app.pool.clone();
        async move {
            let mut counts = Vec::new();
            for table in [
                "patients",
                "appointments",
                "prescriptions",
                "care_team",
                "users",
            ] {
                let col = if table == "patients" {
                    "id"
                } else {
                    "patient_id"
                };
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {table} WHERE {col} = $1::uuid"
                )))
                .bind(&id)
                .fetch_one(&pool)
                .await
                .unwrap();
                counts.push(n);
            }
            counts
        }
    };
    for id in &ids {
        assert!(
            exists(id.clone()).await.iter().all(|n| *n > 0),
            "{id} complete before"
        );
    }

    // default retention (10 years): only the 4000-day-old deletion goes
    assert_eq!(
        purge_deleted_patients(&app.pool, app.state.keys.audit_key(), 3650)
            .await
            .unwrap(),
        1
    );
    assert_eq!(exists(ids[0].clone()).await, vec![0, 0, 0, 0, 0]);
    for id in &ids[1..] {
        assert!(exists(id.clone()).await.iter().all(|n| *n > 0), "{id} kept");
    }
    // the linked account is unlinked and deactivated, not deleted
    let (active, left): (bool, i64) = sqlx::query_as(
        "SELECT bool_or(active), count(*) FROM users WHERE role = 'patient' AND patient_id IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((active, left), (false, 1));
    assert_eq!(audit_count(&app, "patient.purge", Some(&ids[0])).await, 1);
    let (actor, outcome, purpose): (Option<uuid::Uuid>, String, String) = sqlx::query_as(
        "SELECT actor_id, outcome, purpose FROM audit_events WHERE action = 'patient.purge'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((actor, outcome.as_str()), (None, "success"));
    assert_eq!(purpose, "retention: soft-deleted more than 3650 days ago");
    // nothing left to do: a re-run purges nothing
    assert_eq!(
        purge_deleted_patients(&app.pool, app.state.keys.audit_key(), 3650)
            .await
            .unwrap(),
        0
    );

    // a retention below six years is raised to 2190 days: the 3000-day-old deletion goes, the
    // 10-day-old one and the live record stay
    assert_eq!(
        purge_deleted_patients(&app.pool, app.state.keys.audit_key(), 30)
            .await
            .unwrap(),
        1
    );
    assert_eq!(exists(ids[1].clone()).await, vec![0, 0, 0, 0, 0]);
    for id in &ids[2..] {
        assert!(exists(id.clone()).await.iter().all(|n| *n > 0), "{id} kept");
    }
    assert_eq!(audit_count(&app, "patient.purge", None).await, 2);
    assert!(
        caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
            .await
            .unwrap()
            .valid
    );
}

/// `GET` and `PATCH /patients/{id}` check the session and read the record in one grouped
/// statement: every session rule still holds there (ended, deactivated, idle → 401, also for
/// a record that exists), and a path that is not a UUID is still 401 without a token and 400
/// with one. (Missing and deleted records: `create_read_update_delete`.)
#[sqlx::test]
async fn the_record_route_checks_the_session_in_the_same_statement(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let id = create_patient(&app, &doc, "sess1").await;
    let url = format!("/api/v1/patients/{id}");
    assert_eq!(app.get(&url, &doc.token).await.status, 200);
    assert_problem(
        &app.get("/api/v1/patients/not-a-uuid", &doc.token).await,
        400,
    );
    assert_problem(
        &app.get("/api/v1/patients/not-a-uuid", "nonsense").await,
        401,
    );
    assert_problem(&app.get(&url, "nonsense").await, 401);

    // idle longer than the timeout: 401, and the session is ended for good
    let (sid, token) = app.session_for(doc.id, Role::Physician).await;
    assert_eq!(app.get(&url, &token).await.status, 200);
    sqlx::query("UPDATE sessions SET last_seen_at = now() - interval '1 hour' WHERE id = $1")
        .bind(sid)
        .execute(&pool)
        .await
        .unwrap();
    assert_problem(&app.get(&url, &token).await, 401);
    let revoked: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM sessions WHERE id = $1")
            .bind(sid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(revoked.as_deref(), Some("idle_timeout"));

    // logout ends the session at once, for reads and updates of a record
    let (_, token) = app.session_for(doc.id, Role::Physician).await;
    assert_eq!(app.get(&url, &token).await.status, 200);
    assert_eq!(
        app.post("/api/v1/auth/logout", &token, json!({}))
            .await
            .status,
        204
    );
    assert_problem(&app.get(&url, &token).await, 401);
    assert_problem(
        &app.patch(&url, &token, json!({"phone": "+1 555 0100"}))
            .await,
        401,
    );

    // a deactivated account is refused on its live session
    let (_, token) = app.session_for(doc.id, Role::Physician).await;
    assert_eq!(app.get(&url, &token).await.status, 200);
    let r = app
        .patch(
            &format!("/api/v1/users/{}", doc.id),
            &admin.token,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_problem(&app.get(&url, &token).await, 401);
    assert_problem(
        &app.patch(&url, &token, json!({"phone": "+1 555 0100"}))
            .await,
        401,
    );
    // the record itself is untouched
    assert_eq!(app.get(&url, &admin.token).await.status, 200);
}
