//! Audit trail: a record for every PHI access, hash chain verification, append-only trigger,
//! fail-closed behaviour, group commit, no PHI in the database dump.

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use common::{assert_problem, audit_count, behind_the_apis_back, create_patient, patient_body};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn every_phi_access_is_audited_without_phi(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let id = create_patient(&app, &doc, "aud1").await;
    let url = format!("/api/v1/patients/{id}");
    assert_eq!(app.get(&url, &doc.token).await.status, 200);
    assert_eq!(app.get("/api/v1/patients", &doc.token).await.status, 200);
    assert_eq!(
        app.get("/api/v1/patients?mrn=MRN-aud1", &doc.token)
            .await
            .status,
        200
    );
    assert_eq!(
        app.patch(&url, &doc.token, json!({"phone": "+1 555 0142"}))
            .await
            .status,
        200
    );
    assert_eq!(app.delete(&url, &admin.token).await.status, 204);
    for action in [
        "patient.create",
        "patient.read",
        "patient.list",
        "patient.search",
        "patient.update",
        "patient.delete",
    ] {
        assert_eq!(audit_count(&app, action, Some(&id)).await, 1, "{action}");
    }
    let row: (Option<uuid::Uuid>, Option<String>, String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT actor_id, actor_role, outcome, client_ip, request_id FROM audit_events WHERE action = 'patient.read'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.0, Some(doc.id));
    assert_eq!(row.1.as_deref(), Some("physician"));
    assert_eq!(row.2, "success");
    assert_eq!(row.3.as_deref(), Some("127.0.0.1"));
    assert!(row.4.is_some());
    // denials are audited too
    let nurse = app.user(Role::Nurse).await;
    let other = create_patient(&app, &admin, "aud2").await;
    assert_problem(
        &app.get(&format!("/api/v1/patients/{other}"), &nurse.token)
            .await,
        403,
    );
    let denied: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'access.denied' AND outcome = 'denied' AND actor_id = $1")
        .bind(nurse.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(denied, 1);
    // no PHI anywhere in the audit table
    let all: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM audit_events a")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for r in all {
        for phi in ["aud1", "Givenname", "Familyname", "Secret Street", "+1 555"] {
            assert!(!r.contains(phi), "audit row contains PHI {phi:?}: {r}");
        }
    }

    // admin API: filters and pagination
    let r = app
        .get(
            &format!("/api/v1/audit-events?patient_id={id}&limit=2"),
            &admin.token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let cursor = r.json["next_cursor"].as_str().unwrap().to_string();
    let r2 = app
        .get(
            &format!("/api/v1/audit-events?patient_id={id}&limit=100&cursor={cursor}"),
            &admin.token,
        )
        .await;
    assert_eq!(r2.json["items"].as_array().unwrap().len(), 4, "{}", r2.text);
    let r = app
        .get("/api/v1/audit-events?action=patient.read", &admin.token)
        .await;
    assert!(r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "patient.read"));
    let r = app
        .get(
            &format!("/api/v1/audit-events?actor={}", nurse.id),
            &admin.token,
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = app
        .get(
            "/api/v1/audit-events?from=2999-01-01T00:00:00Z",
            &admin.token,
        )
        .await;
    assert_eq!(r.json["items"], json!([]));
    assert_problem(&app.get("/api/v1/audit-events", &doc.token).await, 403);
    assert_problem(
        &app.get("/api/v1/audit-events/verify", &doc.token).await,
        403,
    );
}

#[sqlx::test]
async fn chain_verification_detects_edits(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    for i in 0..3 {
        create_patient(&app, &admin, &format!("chain{i}")).await;
    }
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], true);
    assert_eq!(r.json["checked"], 3);
    assert!(r.json.get("first_invalid_id").is_none());

    // the API's role cannot change history
    for sql in [
        "UPDATE audit_events SET outcome = 'denied' WHERE id = 2",
        "DELETE FROM audit_events WHERE id = 2",
        "TRUNCATE audit_events",
    ] {
        let err = sqlx::query(sql).execute(&app.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }

    // a superuser edits a row behind the API's back
    behind_the_apis_back(
        &app.pool,
        &["UPDATE audit_events SET actor_role = 'physician' WHERE id = 2"],
    )
    .await;
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.json["valid"], false, "{}", r.text);
    assert_eq!(r.json["first_invalid_id"], 2);
    assert_eq!(r.json["checked"], 2);

    // deleting a row (after restoring) is detected as well
    behind_the_apis_back(
        &app.pool,
        &[
            "UPDATE audit_events SET actor_role = 'admin' WHERE id = 2",
            "DELETE FROM audit_events WHERE id = 3",
        ],
    )
    .await;
    let v = caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
        .await
        .unwrap();
    assert!(!v.valid);
    assert_eq!(v.first_invalid_id, Some(4));
}

#[sqlx::test]
async fn fail_closed_when_audit_cannot_be_written(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "closed").await;
    sqlx::query("ALTER TABLE audit_events ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_problem(&r, 503);
    assert!(
        !r.text.contains("closed"),
        "no PHI in the refusal: {}",
        r.text
    );
    let r = app.get("/api/v1/patients", &doc.token).await;
    assert_problem(&r, 503);
    assert!(app.state.metrics.audit_write_failures_total.get() >= 2);
    let metrics = app.admin_get("/metrics").await;
    assert!(
        metrics.text.contains("audit_write_failures_total 2"),
        "{}",
        metrics.text
    );
    // a create whose audit record cannot be written is not committed: no PHI stored unaudited
    let r = app
        .post("/api/v1/patients", &doc.token, patient_body("unaudited"))
        .await;
    assert_problem(&r, 503);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the patient created before the outage");
    // an update or a delete whose audit record cannot be written is not committed
    let url = format!("/api/v1/patients/{id}");
    let r = app
        .patch(&url, &doc.token, json!({"phone": "+1 555 0777"}))
        .await;
    assert_problem(&r, 503);
    let admin = app.user(Role::Admin).await;
    assert_problem(&app.delete(&url, &admin.token).await, 503);
    // recovers once the audit trail is writable again
    sqlx::query("ALTER TABLE audit_events DROP CONSTRAINT refuse_all")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/patients/{id}"), &doc.token)
            .await
            .status,
        200
    );
    let r = app.get(&url, &doc.token).await;
    assert_eq!(
        r.status, 200,
        "the refused delete was not committed: {}",
        r.text
    );
    assert_eq!(
        r.json["phone"], "+1 555 0100",
        "the refused update was not committed"
    );
    // and the client's retries succeed (the MRN is free; the record is where it was)
    create_patient(&app, &doc, "unaudited").await;
    let r = app
        .patch(&url, &doc.token, json!({"phone": "+1 555 0777"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A change and its audit record commit together, even when the client goes away while the
/// record is being written and the write then fails: nothing is left committed without its
/// record (before, the change committed first, and the undo after a failed audit write never ran
/// once the request was abandoned). The audit insert is made slow and then refused by a trigger
/// for the actions under test; each request is abandoned (client time-out) while it waits.
#[sqlx::test]
async fn an_abandoned_change_whose_audit_write_fails_is_not_committed(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let id = create_patient(&app, &doc, "abandoned").await;
    let url = format!("/api/v1/patients/{id}");
    sqlx::raw_sql(
        "CREATE FUNCTION slow_refusal() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF NEW.action IN ('patient.create', 'patient.update', 'patient.delete', 'user.create') THEN \
             PERFORM pg_sleep(1); \
             RAISE EXCEPTION 'audit trail refused'; \
           END IF; \
           RETURN NEW; \
         END $$; \
         CREATE TRIGGER slow_refusal BEFORE INSERT ON audit_events \
           FOR EACH ROW EXECUTE FUNCTION slow_refusal()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let abandon = std::time::Duration::from_millis(300);
    let gone = tokio::time::timeout(
        abandon,
        app.patch(&url, &doc.token, json!({"phone": "+1 555 0999"})),
    )
    .await;
    assert!(gone.is_err(), "the update waited for its audit record");
    let gone = tokio::time::timeout(
        abandon,
        app.post(
            "/api/v1/patients",
            &doc.token,
            patient_body("abandoned-new"),
        ),
    )
    .await;
    assert!(gone.is_err(), "the create waited for its audit record");
    let gone = tokio::time::timeout(abandon, app.delete(&url, &admin.token)).await;
    assert!(gone.is_err(), "the delete waited for its audit record");
    let account = json!({"email": "abandoned@example.org", "password": "a long enough password",
                         "role": "nurse", "display_name": "Abandoned"});
    let gone = tokio::time::timeout(
        std::time::Duration::from_millis(800), // after the password hashing
        app.post("/api/v1/users", &admin.token, account),
    )
    .await;
    assert!(
        gone.is_err(),
        "the account creation waited for its audit record"
    );
    // every refused audit insert has failed by now
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    sqlx::query("DROP TRIGGER slow_refusal ON audit_events")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.get(&url, &doc.token).await;
    assert_eq!(r.status, 200, "the delete was not committed: {}", r.text);
    assert_eq!(
        r.json["phone"], "+1 555 0100",
        "the update was not committed"
    );
    let patients: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(patients, 1, "the new patient was not committed");
    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE display_name = 'Abandoned'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(accounts, 0, "the new account was not committed");
    for action in ["patient.update", "patient.delete"] {
        assert_eq!(audit_count(&app, action, Some(&id)).await, 0, "{action}");
    }
}

/// Appointment bookings, prescriptions and care-team grants are audited in their own
/// transaction: when the audit record cannot be written the change is rolled back (no unaudited booking holds
/// the practitioner's slot, no unaudited prescription takes part in interaction checks), and
/// the client's retry succeeds once the audit trail is writable again.
#[sqlx::test]
async fn writes_whose_audit_fails_are_rolled_back(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let id = create_patient(&app, &doc, "rollback").await;
    let start = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT10:00:00Z")
        .to_string();
    let end = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%dT10:30:00Z")
        .to_string();
    let booking = json!({"patient_id": id, "practitioner_id": doc.id, "start": start, "end": end,
                         "reason": "follow-up"});
    let rx = json!({"patient_id": id, "medication": {"name": "Amoxicillin"}, "dose": "500 mg",
                    "route": "oral", "frequency": "three times daily", "duration_days": 7});
    let grant = json!({"user_id": nurse.id});
    let care_team = format!("/api/v1/patients/{id}/care-team");
    let count = |table: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table}"
            )))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let team_before = count("care_team").await;
    // existing records to change while the audit trail refuses writes
    let day3 = chrono::Utc::now() + chrono::Duration::days(3);
    let earlier = json!({"patient_id": id, "practitioner_id": doc.id,
                         "start": day3.format("%Y-%m-%dT09:00:00Z").to_string(),
                         "end": day3.format("%Y-%m-%dT09:30:00Z").to_string(), "reason": "intake"});
    let r = app.post("/api/v1/appointments", &doc.token, earlier).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let appt = format!("/api/v1/appointments/{}", r.json["id"].as_str().unwrap());
    let mut first_rx = rx.clone();
    first_rx["medication"]["name"] = json!("Paracetamol");
    let r = app
        .post("/api/v1/prescriptions", &doc.token, first_rx)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let presc = format!("/api/v1/prescriptions/{}", r.json["id"].as_str().unwrap());
    let admin = app.user(Role::Admin).await;
    let account = format!("/api/v1/users/{}", nurse.id);
    let appointments_before = count("appointments").await;
    let users_before = count("users").await;

    sqlx::query("ALTER TABLE audit_events ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .patch(&appt, &doc.token, json!({"reason": "changed"}))
        .await;
    assert_problem(&r, 503);
    assert_problem(
        &app.post(&format!("{appt}/cancel"), &doc.token, json!({}))
            .await,
        503,
    );
    assert_problem(
        &app.post(&format!("{presc}/discontinue"), &doc.token, json!({}))
            .await,
        503,
    );
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "unaudited@example.org", "password": "a long enough password",
                   "role": "nurse", "display_name": "Unaudited"}),
        )
        .await;
    assert_problem(&r, 503);
    assert_problem(
        &app.patch(&account, &admin.token, json!({"active": false}))
            .await,
        503,
    );
    assert_eq!(
        count("users").await,
        users_before,
        "the new account was not committed"
    );
    let r = app
        .post("/api/v1/appointments", &doc.token, booking.clone())
        .await;
    assert_problem(&r, 503);
    let r = app
        .post("/api/v1/prescriptions", &doc.token, rx.clone())
        .await;
    assert_problem(&r, 503);
    let r = app.post(&care_team, &doc.token, grant.clone()).await;
    assert_problem(&r, 503);
    assert_eq!(count("appointments").await, appointments_before);
    assert_eq!(count("prescriptions").await, 1);
    assert_eq!(count("care_team").await, team_before);

    sqlx::query("ALTER TABLE audit_events DROP CONSTRAINT refuse_all")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app.post("/api/v1/appointments", &doc.token, booking).await;
    assert_eq!(r.status, 201, "the slot is free: {}", r.text);
    let r = app.post("/api/v1/prescriptions", &doc.token, rx).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.post(&care_team, &doc.token, grant).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(count("care_team").await, team_before + 1);
    // the refused changes were rolled back
    let r = app.get(&appt, &doc.token).await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["reason"].as_str()),
        (Some("booked"), Some("intake"))
    );
    let r = app.get(&presc, &doc.token).await;
    assert_eq!(r.json["status"], "active");
    let r = app.get(&account, &admin.token).await;
    assert_eq!(r.json["active"], true);
}

#[sqlx::test]
async fn concurrent_reads_share_audit_commits(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "group").await;
    let url = format!("/api/v1/patients/{id}");
    let reads = (0..40).map(|_| app.get(&url, &doc.token));
    let results = futures::future::join_all(reads).await;
    assert!(results.iter().all(|r| r.status == 200));
    let (events, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT occurred_at) FROM audit_events WHERE action = 'patient.read'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(events, 40);
    assert!(
        commits < events,
        "expected batched commits, got {commits} for {events} events"
    );
    assert!(
        caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
            .await
            .unwrap()
            .valid
    );
}

#[sqlx::test]
async fn pg_dump_contains_no_phi(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let mut phi = Vec::new();
    for tag in ["dumpAlpha", "dumpBravo"] {
        let body = patient_body(tag);
        let r = app.post("/api/v1/patients", &rec.token, body.clone()).await;
        assert_eq!(r.status, 201);
        let id = r.json["id"].as_str().unwrap().to_string();
        let p = app
            .patch(
                &format!("/api/v1/patients/{id}"),
                &rec.token,
                json!({"address": format!("{tag} Updated Avenue")}),
            )
            .await;
        assert_eq!(p.status, 200);
        app.post(
            &format!("/api/v1/patients/{id}/care-team"),
            &rec.token,
            json!({"user_id": doc.id}),
        )
        .await;
        assert_eq!(
            app.get(&format!("/api/v1/patients/{id}"), &doc.token)
                .await
                .status,
            200
        );
        for key in ["mrn", "given_name", "family_name", "email", "address"] {
            phi.push(body[key].as_str().unwrap().to_string());
        }
        phi.push(format!("Allergen{tag}"));
        phi.push(format!("Medication{tag}"));
        phi.push(format!("Condition{tag}"));
        phi.push(format!("Contact{tag}"));
        phi.push(format!("{tag} Updated Avenue"));
    }
    // account e-mails are PHI too (a patient's login e-mail identifies the patient)
    let admin = app.user(Role::Admin).await;
    let r = app
        .post(
            "/api/v1/users",
            &admin.token,
            json!({"email": "Dump.Patient.Account@Mail.Example", "password": "patient password long enough",
                   "role": "patient", "display_name": "P"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["email"], "Dump.Patient.Account@Mail.Example");
    for u in [&rec, &doc, &admin] {
        phi.push(u.email.clone());
    }
    phi.push("Dump.Patient.Account@Mail.Example".into());
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // The server the test database lives on (DATABASE_URL: often a throw-away instance on a
    // free port).
    let opts = app.pool.connect_options();
    let port = opts.get_port().to_string();
    let out = std::process::Command::new("pg_dump")
        .args([
            "-h",
            opts.get_host(),
            "-p",
            &port,
            "-U",
            opts.get_username(),
            "--no-password",
            "-d",
            &db,
        ])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        dump.contains("CREATE TABLE public.patients"),
        "dump has the schema"
    );
    assert!(dump.contains("COPY public.patients"), "dump has the data");
    assert!(dump.contains("COPY public.users"), "dump has the accounts");
    let dump_lower = dump.to_lowercase();
    for s in &phi {
        assert!(
            !dump_lower.contains(&s.to_lowercase()),
            "PHI {s:?} found in pg_dump output"
        );
        // bytea is dumped as hex: make sure the plaintext is not stored as raw bytes either
        let hex = hex::encode(s.as_bytes());
        assert!(
            !dump_lower.contains(&hex),
            "PHI {s:?} found hex-encoded in pg_dump output"
        );
    }
}

#[sqlx::test]
async fn retention_purges_only_expired_prefix(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    for i in 0..4 {
        create_patient(&app, &admin, &format!("ret{i}")).await;
    }
    // nothing is old enough yet
    assert_eq!(
        caduceus_api::audit::purge_expired(&app.pool, 2190)
            .await
            .unwrap(),
        0
    );
    let err = sqlx::query("DELETE FROM audit_events WHERE id = 1")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // age the first two rows past six years (superuser, behind the API's back)
    behind_the_apis_back(
        &app.pool,
        &["UPDATE audit_events SET occurred_at = now() - interval '7 years' WHERE id <= 2"],
    )
    .await;
    // a configured retention below six years is raised to the floor; rows 1-2 go
    assert_eq!(
        caduceus_api::audit::purge_expired(&app.pool, 30)
            .await
            .unwrap(),
        2
    );
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_events ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![3, 4]);
    let v = caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, 2);
    // the purge log is append-only too
    assert!(sqlx::query("DELETE FROM audit_purges")
        .execute(&app.pool)
        .await
        .is_err());

    // deleting the oldest remaining row is still detected
    behind_the_apis_back(&app.pool, &["DELETE FROM audit_events WHERE id = 3"]).await;
    let v = caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
        .await
        .unwrap();
    assert!(!v.valid);
    assert_eq!(v.first_invalid_id, Some(4));
}

/// Changes append their audit rows in their own transactions (under the chain lock, held to
/// their COMMIT) while the group-commit writer appends reads' rows on its fast path: every
/// request succeeds (no change is aborted by a clash on the chain), ids stay contiguous and the
/// chain verifies. A transaction holding the chain lock keeps the writer's fast path out.
#[sqlx::test]
async fn changes_and_reads_interleaved_keep_one_valid_chain(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "interleaved").await;
    let url = format!("/api/v1/patients/{id}");
    // the writer knows the head (fast path) ...
    assert_eq!(app.get(&url, &doc.token).await.status, 200);
    // ... and a change's transaction holds the chain lock with an uncommitted row
    let mut tx = app.pool.begin().await.unwrap();
    let event = caduceus_api::audit::AuditEvent::cli("test.change", "test");
    app.state
        .audit
        .write_in(&mut tx, std::slice::from_ref(&event))
        .await
        .unwrap();
    let read = tokio::spawn({
        let (app, url, token) = (app.clone(), url.clone(), doc.token.clone());
        async move { app.get(&url, &token).await.status }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "the read's audit row waits for the lock"
    );
    tx.commit().await.unwrap();
    assert_eq!(read.await.unwrap(), 200);
    // many changes and reads at once
    let work = (0..40).map(|i| {
        let (app, url, token) = (app.clone(), url.clone(), doc.token.clone());
        async move {
            let r = match i % 4 {
                0 => {
                    app.patch(&url, &token, json!({"phone": format!("+1 555 01{i:02}")}))
                        .await
                }
                1 => {
                    app.post("/api/v1/patients", &token, patient_body(&format!("il{i}")))
                        .await
                }
                _ => app.get(&url, &token).await,
            };
            (i, r.status)
        }
    });
    for (i, status) in futures::future::join_all(work).await {
        // a concurrent PATCH may lose the optimistic check (409); nothing else may fail
        assert!(matches!(status, 200 | 201 | 409), "request {i}: {status}");
    }
    let (n, max): (i64, i64) = sqlx::query_as("SELECT count(*), max(id) FROM audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, max, "ids are contiguous");
    let v = caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, n);
}

#[sqlx::test]
async fn two_replicas_keep_one_valid_chain(pool: PgPool) {
    // replicas share keys (same Secret) and database
    let cfg = caduceus_api::testing::test_config();
    let a = TestApp::with_config(pool.clone(), cfg.clone()).await;
    let b = TestApp::with_config(pool, cfg).await;
    let doc = a.user(Role::Physician).await;
    let id = create_patient(&a, &doc, "replicas").await;
    let url = format!("/api/v1/patients/{id}");
    let reads = (0..30).map(|i| {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (url, token) = (url.clone(), doc.token.clone());
        async move { app.get(&url, &token).await.status }
    });
    let statuses = futures::future::join_all(reads).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (n, max): (i64, i64) = sqlx::query_as("SELECT count(*), max(id) FROM audit_events")
        .fetch_one(&a.pool)
        .await
        .unwrap();
    assert_eq!(n, max, "ids are contiguous");
    assert_eq!(audit_count(&a, "patient.read", Some(&id)).await, 30);
    let v = caduceus_api::audit::verify_chain(&a.pool, a.state.keys.audit_key())
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, n);
}

#[sqlx::test]
async fn writer_falls_back_to_the_lock_when_another_writer_appended(pool: PgPool) {
    // the writer appends after the head it last wrote (one statement, no lock); a row appended
    // by someone else in between (CLI, another replica) must send it back through the locked
    // path instead of forking the chain
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "stalehead").await;
    let url = format!("/api/v1/patients/{id}");
    assert_eq!(app.get(&url, &doc.token).await.status, 200);
    for _ in 0..3 {
        caduceus_api::audit::write_now(
            &app.pool,
            app.state.keys.audit_key(),
            &caduceus_api::audit::AuditEvent::cli("keys.rotate", "key_ring"),
        )
        .await
        .unwrap();
        assert_eq!(app.get(&url, &doc.token).await.status, 200);
    }
    let (n, max): (i64, i64) = sqlx::query_as("SELECT count(*), max(id) FROM audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, max, "ids are contiguous");
    assert_eq!(audit_count(&app, "patient.read", Some(&id)).await, 4);
    assert_eq!(audit_count(&app, "keys.rotate", None).await, 3);
    let v = caduceus_api::audit::verify_chain(&app.pool, app.state.keys.audit_key())
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, n);
}

#[sqlx::test]
async fn a_writer_started_after_a_full_purge_continues_from_the_anchor(pool: PgPool) {
    // retention may purge every row (a long-idle platform); a writer that starts then must
    // chain onto the purge anchor, not restart at id 1 with the zero hash
    let app = TestApp::new(pool.clone()).await;
    let admin = app.user(Role::Admin).await;
    create_patient(&app, &admin, "anchor").await;
    let last: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    behind_the_apis_back(
        &app.pool,
        &["UPDATE audit_events SET occurred_at = now() - interval '7 years'"],
    )
    .await;
    let purged = caduceus_api::audit::purge_expired(&app.pool, 2190)
        .await
        .unwrap();
    assert_eq!(
        i64::try_from(purged).unwrap(),
        last,
        "every row is past retention"
    );

    // a new process (fresh writer: its first batch takes the locked path and reads the head)
    let again = TestApp::new(pool).await;
    let admin = again.user(Role::Admin).await;
    create_patient(&again, &admin, "afterpurge").await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_events ORDER BY id")
        .fetch_all(&again.pool)
        .await
        .unwrap();
    assert!(!ids.is_empty(), "the new process audited something");
    assert_eq!(ids[0], last + 1, "the chain continues after the anchor");
    let v = caduceus_api::audit::verify_chain(&again.pool, again.state.keys.audit_key())
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, i64::try_from(ids.len()).unwrap());
}

/// A stored row: id, time and the event the chain hashes.
type StoredRow = (
    i64,
    chrono::DateTime<chrono::Utc>,
    caduceus_api::audit::AuditEvent,
);

/// Rows as stored, with what the chain hashes (for the owner's rewrites below).
async fn stored_rows(pool: &PgPool) -> Vec<StoredRow> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT id, occurred_at, actor_id, actor_role, action, resource_type, resource_id, patient_id, \
         outcome, client_ip, user_agent, request_id, purpose FROM audit_events ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            let outcome = match r.get::<String, _>("outcome").as_str() {
                "success" => caduceus_api::audit::Outcome::Success,
                "denied" => caduceus_api::audit::Outcome::Denied,
                _ => caduceus_api::audit::Outcome::Error,
            };
            let event = caduceus_api::audit::AuditEvent {
                actor_id: r.get("actor_id"),
                actor_role: r.get("actor_role"),
                action: r.get("action"),
                resource_type: r.get("resource_type"),
                resource_id: r.get("resource_id"),
                patient_id: r.get("patient_id"),
                outcome,
                client_ip: r.get("client_ip"),
                user_agent: r.get("user_agent"),
                request_id: r.get("request_id"),
                purpose: r.get("purpose"),
            };
            (r.get("id"), r.get("occurred_at"), event)
        })
        .collect()
}

/// What an owner without the key can do: rewrite `action` of row `target` and recompute the
/// chain from there with plain SHA-256 (the pre-0130 scheme), labelling the rows `scheme`.
async fn owner_rewrites_history(pool: &PgPool, target: i64, action: &str, scheme: i16) {
    let rows = stored_rows(pool).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut prev: Option<Vec<u8>> = None;
    for (id, at, mut event) in rows {
        if id < target {
            continue;
        }
        let prev_hash = match prev.take() {
            Some(p) => p,
            None => sqlx::query_scalar("SELECT prev_hash FROM audit_events WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .unwrap(),
        };
        if id == target {
            event.action = action.to_string();
        }
        let hash = caduceus_api::audit::chain_hash(
            &prev_hash,
            &caduceus_api::audit::canonical(id, at, &event),
        );
        sqlx::query("UPDATE audit_events SET action = $2, prev_hash = $3, hash = $4, hash_scheme = $5 WHERE id = $1")
            .bind(id)
            .bind(&event.action)
            .bind(&prev_hash)
            .bind(&hash)
            .bind(scheme)
            .execute(&mut *tx)
            .await
            .unwrap();
        prev = Some(hash);
    }
    sqlx::query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn head(pool: &PgPool) -> (i64, Vec<u8>) {
    sqlx::query_as(caduceus_api::audit::HEAD_SQL)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_chain_recomputed_without_the_key_does_not_verify(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    create_patient(&app, &admin, "keyed1").await;
    create_patient(&app, &admin, "keyed2").await;
    let key = app.state.keys.audit_key();
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert!(v.valid && v.checked >= 2, "{v:?}");
    let unkeyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE hash_scheme <> 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(unkeyed, 0, "new rows are keyed");
    // another key ring (another platform, or a guessed key) does not verify them
    let other =
        caduceus_api::crypto::KeyRing::from_json(&caduceus_api::crypto::generate_key_ring_json())
            .unwrap();
    let v = caduceus_api::audit::verify_chain(&app.pool, other.audit_key())
        .await
        .unwrap();
    assert_eq!((v.valid, v.first_invalid_id), (false, Some(1)), "{v:?}");

    // the owner rewrites row 1 and recomputes everything after it with SHA-256: labelled keyed
    // (scheme 1), the HMAC does not match
    owner_rewrites_history(&app.pool, 1, "auth.login", 1).await;
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert_eq!((v.valid, v.first_invalid_id), (false, Some(1)), "{v:?}");
}

#[sqlx::test]
async fn unkeyed_rows_after_keyed_ones_are_refused_and_older_unkeyed_rows_still_verify(
    pool: PgPool,
) {
    let app = TestApp::new(pool).await;
    let key = app.state.keys.audit_key();
    // rows of a release before the keyed chain: plain SHA-256, scheme 0
    let mut prev = vec![0u8; 32];
    for id in 1..=3i64 {
        let at =
            chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
        let event = caduceus_api::audit::AuditEvent::cli("keys.rotate", "phi_key");
        let hash =
            caduceus_api::audit::chain_hash(&prev, &caduceus_api::audit::canonical(id, at, &event));
        sqlx::query(
            "INSERT INTO audit_events (id, occurred_at, action, resource_type, outcome, user_agent, prev_hash, hash, hash_scheme) \
             VALUES ($1, $2, $3, $4, 'success', $5, $6, $7, 0)",
        )
        .bind(id)
        .bind(at)
        .bind(&event.action)
        .bind(&event.resource_type)
        .bind(&event.user_agent)
        .bind(&prev)
        .bind(&hash)
        .execute(&app.pool)
        .await
        .unwrap();
        prev = hash;
    }
    let admin = app.user(Role::Admin).await;
    create_patient(&app, &admin, "mixed").await;
    create_patient(&app, &admin, "mixed2").await;
    let schemes: Vec<i16> = sqlx::query_scalar("SELECT hash_scheme FROM audit_events ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(&schemes[..3], &[0, 0, 0]);
    assert!(schemes[3..].iter().all(|s| *s == 1), "{schemes:?}");
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checked, schemes.len() as i64);

    // the owner rewrites the second keyed row and recomputes from there the old way (scheme 0).
    // (Relabelling every keyed row too would look like an old unkeyed chain: that is what the
    // checkpoints kept outside the database catch, see verify_compares_checkpoints_...)
    owner_rewrites_history(&app.pool, 5, "patient.read", 0).await;
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert_eq!((v.valid, v.first_invalid_id), (false, Some(5)), "{v:?}");
    assert!(v.reason.unwrap().contains("unkeyed"));
}

#[sqlx::test]
async fn a_purge_anchor_past_the_rows_is_refused(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    create_patient(&app, &admin, "fakeanchor").await;
    let key = app.state.keys.audit_key();
    let (head_id, head_hash) = head(&app.pool).await;
    // the owner records an anchor at the head: nothing would be left to check
    sqlx::query(
        "INSERT INTO audit_purges (through_id, through_hash, rows_deleted, retention_days) VALUES ($1, $2, 0, 2190)",
    )
    .bind(head_id)
    .bind(&head_hash)
    .execute(&app.pool)
    .await
    .unwrap();
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert!(!v.valid, "{v:?}");
    assert_eq!(v.first_invalid_id, Some(1));
    let r = app.get("/api/v1/audit-events/verify", &admin.token).await;
    assert_eq!(r.json["valid"], false, "{}", r.text);

    // an anchor no row follows (the owner deleted every row, retention or not) is not proof
    behind_the_apis_back(&app.pool, &["DELETE FROM audit_events"]).await;
    let v = caduceus_api::audit::verify_chain(&app.pool, key)
        .await
        .unwrap();
    assert_eq!((v.valid, v.checked), (false, 0), "{v:?}");
}

#[sqlx::test]
async fn verify_compares_checkpoints_kept_outside_the_database(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    create_patient(&app, &admin, "checkpoint").await;
    let (id, hash) = head(&app.pool).await;
    let checkpoint = format!("{id}:{}", hex::encode(&hash));
    let r = app
        .get(
            &format!(
                "/api/v1/audit-events/verify?checkpoint={checkpoint}&checkpoint=0:{}",
                "0".repeat(64)
            ),
            &admin.token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["valid"], true, "{}", r.text);
    assert_eq!(
        r.json["checkpoints"],
        json!([{"id": id, "status": "match"}, {"id": 0, "status": "match"}])
    );
    // the self-report compares them too (the operator's periodic check)
    let c = app
        .admin_get(&format!("/internal/compliance?checkpoint={checkpoint}"))
        .await;
    assert_eq!(
        c.json["audit"]["checkpoints"],
        json!([{"id": id, "status": "match"}]),
        "{}",
        c.text
    );
    assert_eq!(
        app.admin_get("/internal/compliance?checkpoint=1:zz")
            .await
            .status,
        400
    );
    assert_problem(
        &app.get("/api/v1/audit-events/verify?checkpoint=12", &admin.token)
            .await,
        422,
    );

    // rewritten history and one event appended: the head moved on, the checkpoint does not match
    owner_rewrites_history(&app.pool, 1, "auth.login", 0).await;
    create_patient(&app, &admin, "afterrewrite").await;
    let r = app
        .get(
            &format!("/api/v1/audit-events/verify?checkpoint={checkpoint}"),
            &admin.token,
        )
        .await;
    assert_eq!(r.json["valid"], false, "{}", r.text);
    assert_eq!(
        r.json["checkpoints"],
        json!([{"id": id, "status": "mismatch"}])
    );
    let c = app
        .admin_get(&format!("/internal/compliance?checkpoint={checkpoint}"))
        .await;
    assert_eq!(
        c.json["audit"]["checkpoints"],
        json!([{"id": id, "status": "mismatch"}])
    );
    // a checkpoint beyond the head: rows were removed
    let beyond = format!("{}:{}", id + 1000, hex::encode(&hash));
    let r = app
        .get(
            &format!("/api/v1/audit-events/verify?checkpoint={beyond}"),
            &admin.token,
        )
        .await;
    assert_eq!(
        r.json["checkpoints"],
        json!([{"id": id + 1000, "status": "missing"}])
    );
    assert_eq!(r.json["valid"], false);
}
