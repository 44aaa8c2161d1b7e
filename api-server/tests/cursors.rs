//! List cursors are opaque and authenticated: every list pages through each row exactly once,
//! and a cursor that was tampered with, belongs to another caller, another list or other
//! filters, or has the old raw-key form is a `400` naming `cursor` (never a first page, never a
//! 500).

mod common;

use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{assert_problem, create_patient};
use serde_json::json;
use sqlx::PgPool;

/// Every page of `url` (which has a `?`), `limit` 2: the ids in order and the cursors issued.
async fn page_all(app: &TestApp, user: &TestUser, url: &str) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut cursors) = (Vec::new(), Vec::new());
    let mut next = format!("{url}&limit=2");
    loop {
        let r = app.get(&next, &user.token).await;
        assert_eq!(r.status, 200, "{next}: {}", r.text);
        for item in r.json["items"].as_array().expect("items") {
            ids.push(item["id"].to_string());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(c.to_string());
                next = format!("{url}&limit=2&cursor={c}");
            }
            None => break,
        }
        assert!(cursors.len() < 100, "{url}: the pages never end");
    }
    (ids, cursors)
}

/// A `400` problem naming `cursor` that does not echo it.
fn assert_cursor_refused(r: &TestResponse, cursor: &str) {
    assert_problem(r, 400);
    assert_eq!(r.json["errors"][0]["field"], "cursor", "{}", r.text);
    assert!(r.json.get("items").is_none());
    if !cursor.is_empty() {
        assert!(!r.text.contains(cursor), "{}", r.text);
    }
}

/// `cursor` with one character replaced by another base64url character.
fn flip_one(cursor: &str, at: usize) -> String {
    let mut chars: Vec<char> = cursor.chars().collect();
    chars[at] = if chars[at] == 'Q' { 'R' } else { 'Q' };
    chars.into_iter().collect()
}

fn assert_each_once(ids: &[String], expected: usize) {
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a row came twice: {ids:?}");
    assert_eq!(ids.len(), expected, "{ids:?}");
}

#[sqlx::test]
async fn every_list_pages_each_row_exactly_once(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let others = [app.user(Role::Physician).await, app.user(Role::Nurse).await];
    let mut patients = Vec::new();
    for i in 0..5 {
        patients.push(create_patient(&app, &doc, &format!("cur{i}")).await);
    }
    let (ids, cursors) = page_all(&app, &rec, "/api/v1/patients?").await;
    assert_each_once(&ids, 5);
    assert_eq!(cursors.len(), 2);

    // appointments sort by start time then id: three at the same instant (three practitioners)
    let base = (Utc::now() + Duration::days(1))
        .duration_trunc(Duration::days(1))
        .expect("trunc");
    let at = |h: i64| -> (DateTime<Utc>, DateTime<Utc>) {
        let s = base + Duration::hours(h);
        (s, s + Duration::minutes(30))
    };
    let practitioners = [&doc, &others[0], &others[1]];
    for (i, (h, who)) in [(9, 0), (9, 1), (9, 2), (8, 0), (10, 1)].iter().enumerate() {
        let (start, end) = at(*h);
        let body = json!({"patient_id": patients[i], "practitioner_id": practitioners[*who].id,
            "start": start.to_rfc3339(), "end": end.to_rfc3339(), "reason": "check-up"});
        let r = app.post("/api/v1/appointments", &rec.token, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let (ids, _) = page_all(&app, &rec, "/api/v1/appointments?").await;
    assert_each_once(&ids, 5);

    for p in &patients {
        let body = json!({"patient_id": p, "medication": {"name": "Metformin 500 mg tablet"},
            "dose": "5 mg", "route": "oral", "frequency": "once daily", "duration_days": 30});
        let r = app.post("/api/v1/prescriptions", &doc.token, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let (ids, _) = page_all(&app, &doc, "/api/v1/prescriptions?").await;
    assert_each_once(&ids, 5);

    let (ids, _) = page_all(&app, &admin, "/api/v1/users?").await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_each_once(&ids, users as usize);

    // the audit trail, newest first, for one patient (the listing adds no rows of that patient)
    let url = format!("/api/v1/audit-events?patient_id={}", patients[0]);
    let (ids, _) = page_all(&app, &admin, &url).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE patient_id = $1")
        .bind(patients[0].parse::<uuid::Uuid>().expect("uuid"))
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!(rows >= 3, "{rows}");
    assert_each_once(&ids, rows as usize);
    let seqs: Vec<i64> = ids.iter().map(|i| i.parse().expect("id")).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
}

#[sqlx::test]
async fn refused_cursors_are_a_400_naming_cursor(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let admin2 = app.user(Role::Admin).await;
    let rec = app.user(Role::Receptionist).await;
    let rec2 = app.user(Role::Receptionist).await;
    let doc = app.user(Role::Physician).await;
    let mut patients = Vec::new();
    for i in 0..3 {
        patients.push(create_patient(&app, &doc, &format!("ref{i}")).await);
    }
    let r = app.get("/api/v1/patients?limit=1", &rec.token).await;
    let cursor = r.json["next_cursor"].as_str().expect("cursor").to_string();
    let next = |c: &str| format!("/api/v1/patients?limit=1&cursor={c}");
    assert_eq!(app.get(&next(&cursor), &rec.token).await.status, 200);

    // one changed character, wherever it is
    for at in [0, cursor.len() / 2, cursor.len() - 1] {
        let flipped = flip_one(&cursor, at);
        assert_cursor_refused(&app.get(&next(&flipped), &rec.token).await, &flipped);
    }
    // cut short, too long, not base64url, empty
    for bad in [
        &cursor[..cursor.len() - 2],
        format!("{cursor}AA").as_str(),
        "@@@",
        "%%%",
        "",
        "A".repeat(200).as_str(),
    ] {
        assert_cursor_refused(&app.get(&next(bad), &rec.token).await, bad);
    }
    // another caller with the same role and the same list
    assert_cursor_refused(&app.get(&next(&cursor), &rec2.token).await, &cursor);
    // the same caller on another list with the same key type
    let r = app
        .get(&format!("/api/v1/appointments?cursor={cursor}"), &rec.token)
        .await;
    assert_cursor_refused(&r, &cursor);
    // the same list with other filters (or filters where there were none)
    let r = app
        .get(
            &format!("/api/v1/patients?limit=1&mrn=MRN-ref1&cursor={cursor}"),
            &rec.token,
        )
        .await;
    assert_cursor_refused(&r, &cursor);
    // the old form: the raw key of the last item
    let r = app
        .get(&next("0190b8c4-1f2a-7c3b-9d4e-5f6a7b8c9d0e"), &rec.token)
        .await;
    assert_cursor_refused(&r, "");
    for p in &patients {
        assert_cursor_refused(&app.get(&next(p), &rec.token).await, "");
    }

    // the admin's lists: users ~ audit events ~ patients, two admins, filters
    let r = app.get("/api/v1/users?limit=1", &admin.token).await;
    let users_cursor = r.json["next_cursor"].as_str().expect("cursor").to_string();
    let ok = app
        .get(
            &format!("/api/v1/users?cursor={users_cursor}"),
            &admin.token,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let r = app
        .get(
            &format!("/api/v1/users?cursor={users_cursor}"),
            &admin2.token,
        )
        .await;
    assert_cursor_refused(&r, &users_cursor);
    let r = app
        .get(
            &format!("/api/v1/patients?cursor={users_cursor}"),
            &admin.token,
        )
        .await;
    assert_cursor_refused(&r, &users_cursor);
    let url = format!("/api/v1/audit-events?patient_id={}&limit=1", patients[0]);
    let r = app.get(&url, &admin.token).await;
    let audit_cursor = r.json["next_cursor"].as_str().expect("cursor").to_string();
    let r = app
        .get(&format!("{url}&cursor={audit_cursor}"), &admin.token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for other in [
        format!("/api/v1/audit-events?limit=1&cursor={audit_cursor}"),
        format!(
            "/api/v1/audit-events?patient_id={}&limit=1&cursor={audit_cursor}",
            patients[1]
        ),
        format!("/api/v1/users?cursor={audit_cursor}"),
    ] {
        assert_cursor_refused(&app.get(&other, &admin.token).await, &audit_cursor);
    }
    assert_cursor_refused(
        &app.get(&format!("{url}&cursor={audit_cursor}"), &admin2.token)
            .await,
        &audit_cursor,
    );
    // a raw sequence number, the audit trail's old cursor
    let r = app.get(&format!("{url}&cursor=12345"), &admin.token).await;
    assert_cursor_refused(&r, "");

    // prescriptions: a filter's value is bound too
    for p in &patients {
        let body = json!({"patient_id": p, "medication": {"name": "Metformin 500 mg tablet"},
            "dose": "5 mg", "route": "oral", "frequency": "once daily", "duration_days": 30});
        assert_eq!(
            app.post("/api/v1/prescriptions", &doc.token, body)
                .await
                .status,
            201
        );
    }
    let r = app
        .get("/api/v1/prescriptions?limit=1&status=active", &doc.token)
        .await;
    let rx_cursor = r.json["next_cursor"].as_str().expect("cursor").to_string();
    let ok = app
        .get(
            &format!("/api/v1/prescriptions?limit=1&status=active&cursor={rx_cursor}"),
            &doc.token,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    for other in ["status=completed", "status=discontinued", "limit=1"] {
        let r = app
            .get(
                &format!("/api/v1/prescriptions?{other}&cursor={rx_cursor}"),
                &doc.token,
            )
            .await;
        assert_cursor_refused(&r, &rx_cursor);
    }
}
