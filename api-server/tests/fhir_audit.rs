//! FHIR R4 AuditEvent (admins), `Patient/{id}/$everything`, `410 Gone` for deleted patients and
//! the exact `total` of Patient searches, through the real router and Postgres, with the same
//! access decisions and audit events as the JSON routes.

mod common;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse};
use common::{audit_count, create_patient};
use serde_json::Value;
use sqlx::PgPool;

async fn get(
    app: &TestApp,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut b = Request::builder().method(Method::GET).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    app.send(b.body(Body::empty()).expect("request")).await
}

/// An OperationOutcome with `code` and the request id in its diagnostics.
fn assert_outcome(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{}", r.text);
    assert_eq!(r.json["issue"][0]["code"], code, "{}", r.text);
    let id = r.header("x-request-id").expect("request id");
    assert!(
        r.json["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains(id)),
        "{}",
        r.text
    );
}

/// The resources of a Bundle.
fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| &x["resource"]).collect())
        .unwrap_or_default()
}

#[sqlx::test]
async fn audit_events_for_admins_by_patient_agent_date_action_and_type(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let admin = app.user(Role::Admin).await;
    let doc = app.user(Role::Physician).await;
    let a = create_patient(&app, &doc, "auditfa").await;
    let b = create_patient(&app, &doc, "auditfb").await;
    assert_eq!(
        app.get(&format!("/api/v1/patients/{a}"), &doc.token)
            .await
            .status,
        200
    );
    let t = Some(admin.token.as_str());

    // by patient: the create and the read of `a`, nothing of `b`
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient=Patient/{a}"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["type"], "searchset");
    assert_eq!(r.json["total"], 2, "{}", r.text);
    let events = resources(&r.json);
    let read = events
        .iter()
        .find(|e| e["subtype"][0]["code"] == "patient.read")
        .expect("the read");
    assert_eq!(read["resourceType"], "AuditEvent");
    assert_eq!(read["action"], "R");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["type"]["code"], "110110");
    assert_eq!(
        read["subtype"][0]["system"],
        "https://caduceus.io/fhir/CodeSystem/audit-action"
    );
    assert_eq!(
        read["agent"][0]["who"]["reference"],
        format!("Practitioner/{}", doc.id)
    );
    assert_eq!(read["agent"][0]["requestor"], true);
    assert_eq!(
        read["entity"][0]["what"]["reference"],
        format!("Patient/{a}")
    );
    assert_eq!(read["entity"][0]["role"]["code"], "1");
    assert!(read["source"]["observer"]["display"].is_string());
    assert!(read["recorded"].is_string() && read["meta"]["versionId"].is_string());
    assert!(!r.text.contains(&b), "nothing of the other patient");
    assert!(
        !r.text.contains("auditfa"),
        "no PHI in audit events: {}",
        r.text
    );
    let create = events
        .iter()
        .find(|e| e["subtype"][0]["code"] == "patient.create")
        .expect("the create");
    assert_eq!(create["action"], "C");

    // read by id, with ETag
    let id = read["id"].as_str().expect("id");
    let one = get(&app, &format!("/fhir/R4/AuditEvent/{id}"), t, &[]).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["id"], id);
    assert!(one.header("etag").is_some());
    assert_outcome(
        &get(&app, "/fhir/R4/AuditEvent/99999999", t, &[]).await,
        404,
        "not-found",
    );
    assert_outcome(
        &get(&app, "/fhir/R4/AuditEvent/nope", t, &[]).await,
        404,
        "not-found",
    );

    // by agent (reference or user id), action, type, subtype, date
    let by_doc = format!("/fhir/R4/AuditEvent?agent=Practitioner/{}&action=C", doc.id);
    let r = get(&app, &by_doc, t, &[]).await;
    assert_eq!(r.json["total"], 2, "the two creates: {}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?agent={}&subtype=patient.read", doc.id),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={b}&type=http://dicom.nema.org/resources/ontology/DCM|110110"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={b}&type=110114"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 0, "{}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={a}&action=E"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 0, "{}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={a}&action=C,R"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    let today = chrono::Utc::now().date_naive();
    let r = get(
        &app,
        &format!(
            "/fhir/R4/AuditEvent?patient={a}&date=ge{today}&date=lt{}",
            today + chrono::Days::new(1)
        ),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={a}&date=lt{today}"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 0, "{}", r.text);

    // paging: total over all pages, next link with an opaque cursor
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={a}&_count=1"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    assert_eq!(resources(&r.json).len(), 1);
    assert_eq!(resources(&r.json)[0]["subtype"][0]["code"], "patient.read");
    let next = r.json["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .expect("next link");
    let path = &next[next.find("/fhir/R4").expect("path")..];
    let r = get(&app, path, t, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second = resources(&r.json);
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0]["subtype"][0]["code"], "patient.create",
        "newest first: the read, then the create"
    );
    let r = get(
        &app,
        &format!("/fhir/R4/AuditEvent?patient={a}&_summary=count"),
        t,
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    assert!(r.json.get("entry").is_none(), "{}", r.text);

    // bad parameters: 400 naming them
    for q in [
        "action=X",
        "type=999",
        "date=yesterday",
        "agent=Patient/x",
        "patient=Practitioner/1",
        "subtype=http://other|x",
        "foo=1",
    ] {
        let r = get(&app, &format!("/fhir/R4/AuditEvent?{q}"), t, &[]).await;
        assert_outcome(&r, 400, "invalid");
    }

    // every read of the trail is audited as on the JSON route
    let reads = audit_count(&app, "audit.read", None).await;
    get(&app, "/fhir/R4/AuditEvent", t, &[]).await;
    assert_eq!(audit_count(&app, "audit.read", None).await, reads + 1);

    // non-admins: 403 as on /api/v1/audit-events; no token: 401
    for role in [Role::Physician, Role::Nurse, Role::Receptionist] {
        let u = app.user(role).await;
        let json = app.get("/api/v1/audit-events", &u.token).await;
        let r = get(&app, "/fhir/R4/AuditEvent", Some(&u.token), &[]).await;
        assert_eq!(r.status, json.status, "{role:?}");
        assert_outcome(&r, 403, "forbidden");
        assert_outcome(
            &get(
                &app,
                &format!("/fhir/R4/AuditEvent/{id}"),
                Some(&u.token),
                &[],
            )
            .await,
            403,
            "forbidden",
        );
    }
    let own = app.patient_user(a.parse().expect("uuid")).await;
    assert_outcome(
        &get(&app, "/fhir/R4/AuditEvent", Some(&own.token), &[]).await,
        403,
        "forbidden",
    );
    assert_outcome(
        &get(&app, "/fhir/R4/AuditEvent", None, &[]).await,
        401,
        "login",
    );
}

#[sqlx::test]
async fn everything_is_the_compartment_of_one_patient_audited_once(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let a = create_patient(&app, &doc, "everya").await;
    let b = create_patient(&app, &doc, "everyb").await;
    let url = format!("/fhir/R4/Patient/{a}/$everything");
    for (patient, hour) in [(&a, 9), (&b, 10)] {
        let start = chrono::Utc::now().date_naive() + chrono::Days::new(3);
        let at = |h: u32| format!("{start}T{h:02}:00:00Z");
        let body = serde_json::json!({"patient_id": patient, "practitioner_id": doc.id,
            "start": at(hour), "end": at(hour + 1), "reason": "check-up"});
        let r = app.post("/api/v1/appointments", &doc.token, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for (patient, drug) in [(&a, "Lisinopril"), (&b, "Metformin")] {
        let rx = serde_json::json!({"patient_id": patient, "medication": {"name": drug},
            "dose": "5 mg", "route": "oral", "frequency": "once daily", "duration_days": 30});
        let r = app.post("/api/v1/prescriptions", &doc.token, rx).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    // the patient themselves (right of access)
    let own = app.patient_user(a.parse().expect("uuid")).await;
    let r = get(&app, &url, Some(&own.token), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "Bundle");
    assert_eq!(r.json["type"], "searchset");
    let found = resources(&r.json);
    assert_eq!(r.json["total"], found.len());
    assert_eq!(found[0]["resourceType"], "Patient");
    assert_eq!(found[0]["id"], a.as_str());
    assert!(
        !r.text.contains(&b) && !r.text.contains("everyb"),
        "nothing of the other patient"
    );
    for x in &found[1..] {
        let refs = x.to_string();
        assert!(
            refs.contains(&a),
            "every other resource is the patient's: {refs}"
        );
    }
    let types: Vec<&str> = found
        .iter()
        .filter_map(|x| x["resourceType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Patient",
            "Appointment",
            "MedicationRequest",
            "AllergyIntolerance",
            "Condition"
        ],
        "{}",
        r.text
    );
    assert!(
        !r.text.contains("Metformin"),
        "not the other patient's prescription"
    );
    assert_eq!(
        audit_count(&app, "patient.everything", Some(&a)).await,
        1,
        "one access, one event"
    );
    assert_eq!(audit_count(&app, "patient.read", Some(&a)).await, 0);

    // the care team
    let r = get(&app, &url, Some(&doc.token), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(audit_count(&app, "patient.everything", Some(&a)).await, 2);

    // another patient: 404 (as the JSON read); a physician outside the care team: 403 (as the
    // JSON read), break-glass opens it (audited); an admin (demographics only): 403
    let other = app.patient_user(b.parse().expect("uuid")).await;
    let json = app
        .get(&format!("/api/v1/patients/{a}"), &other.token)
        .await;
    let r = get(&app, &url, Some(&other.token), &[]).await;
    assert_eq!(r.status, json.status);
    assert_outcome(&r, 404, "not-found");
    let stranger = app.user(Role::Physician).await;
    let json = app
        .get(&format!("/api/v1/patients/{a}"), &stranger.token)
        .await;
    let r = get(&app, &url, Some(&stranger.token), &[]).await;
    assert_eq!(r.status, json.status);
    assert_outcome(&r, 403, "forbidden");
    let r = get(
        &app,
        &url,
        Some(&stranger.token),
        &[("x-break-glass-reason", "unconscious patient in ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(audit_count(&app, "patient.break_glass", Some(&a)).await, 1);
    assert_eq!(audit_count(&app, "patient.everything", Some(&a)).await, 3);
    let admin = app.user(Role::Admin).await;
    assert_outcome(
        &get(&app, &url, Some(&admin.token), &[]).await,
        403,
        "forbidden",
    );
    assert_eq!(audit_count(&app, "patient.everything", Some(&a)).await, 3);

    // no parameters served; a missing record is 404; no token 401
    assert_outcome(
        &get(
            &app,
            &format!("{url}?_since=2020-01-01"),
            Some(&doc.token),
            &[],
        )
        .await,
        400,
        "invalid",
    );
    let missing = uuid::Uuid::new_v4();
    assert_outcome(
        &get(
            &app,
            &format!("/fhir/R4/Patient/{missing}/$everything"),
            Some(&doc.token),
            &[],
        )
        .await,
        404,
        "not-found",
    );
    assert_outcome(&get(&app, &url, None, &[]).await, 401, "login");

    // the operation is declared
    let meta = get(&app, "/fhir/R4/metadata", None, &[]).await;
    let patient = meta.json["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "Patient"))
        .expect("Patient");
    assert_eq!(patient["operation"][0]["name"], "everything");
}

#[sqlx::test]
async fn a_deleted_patient_is_gone_to_those_who_could_see_it(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let id = create_patient(&app, &doc, "gone").await;
    let own = app.patient_user(id.parse().expect("uuid")).await;
    let stranger = app.user(Role::Physician).await;
    let other_record = create_patient(&app, &doc, "goneother").await;
    let other = app.patient_user(other_record.parse().expect("uuid")).await;
    let url = format!("/fhir/R4/Patient/{id}");
    // before: the stranger is refused (403), the other patient account sees nothing (404)
    assert_eq!(
        get(&app, &url, Some(&stranger.token), &[]).await.status,
        403
    );
    assert_eq!(get(&app, &url, Some(&other.token), &[]).await.status, 404);
    assert_eq!(
        app.delete(&format!("/api/v1/patients/{id}"), &admin.token)
            .await
            .status,
        204
    );
    for (who, token) in [
        ("admin", &admin.token),
        ("care team", &doc.token),
        ("the patient", &own.token),
    ] {
        let r = get(&app, &url, Some(token), &[]).await;
        assert_outcome(&r, 410, "deleted");
        assert!(
            !r.text.contains("Familynamegone"),
            "{who}: no PHI: {}",
            r.text
        );
    }
    for token in [&stranger.token, &other.token] {
        assert_outcome(&get(&app, &url, Some(token), &[]).await, 404, "not-found");
    }
    // a record that never existed: 404 for everyone
    let never = format!("/fhir/R4/Patient/{}", uuid::Uuid::new_v4());
    assert_outcome(
        &get(&app, &never, Some(&admin.token), &[]).await,
        404,
        "not-found",
    );
    // the JSON route keeps its 404
    assert_eq!(
        app.get(&format!("/api/v1/patients/{id}"), &admin.token)
            .await
            .status,
        404
    );
}

#[sqlx::test]
async fn patient_search_totals_are_exact_over_pages(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let ids = [
        create_patient(&app, &doc, "tota").await,
        create_patient(&app, &doc, "totb").await,
        create_patient(&app, &doc, "totc").await,
    ];
    let other_doc = app.user(Role::Physician).await;
    create_patient(&app, &other_doc, "totd").await;
    let t = Some(doc.token.as_str());

    let r = get(&app, "/fhir/R4/Patient?_count=1", t, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["total"], 3,
        "the care team's scope over every page: {}",
        r.text
    );
    assert_eq!(resources(&r.json).len(), 1);
    let mut seen = vec![resources(&r.json)[0]["id"]
        .as_str()
        .expect("id")
        .to_string()];
    let mut bundle = r.json;
    while let Some(next) = bundle["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
    {
        let r = get(&app, &next[next.find("/fhir/R4").expect("path")..], t, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["total"], 3, "{}", r.text);
        seen.extend(
            resources(&r.json)
                .iter()
                .filter_map(|x| x["id"].as_str().map(str::to_string)),
        );
        bundle = r.json;
    }
    seen.sort();
    let mut expect = ids.to_vec();
    expect.sort();
    assert_eq!(seen, expect);

    // _summary=count: the total, no entries; audited as a list of the resource type
    let lists = audit_count(&app, "patient.list", None).await;
    let r = get(&app, "/fhir/R4/Patient?_summary=count", t, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["total"], 3);
    assert!(r.json.get("entry").is_none(), "{}", r.text);
    assert_eq!(audit_count(&app, "patient.list", None).await, lists + 1);
    let r = get(
        &app,
        "/fhir/R4/Patient?_summary=count",
        Some(&other_doc.token),
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 1);
    let admin = app.user(Role::Admin).await;
    let r = get(
        &app,
        "/fhir/R4/Patient?_summary=count",
        Some(&admin.token),
        &[],
    )
    .await;
    assert_eq!(r.json["total"], 4);
    // with narrowing on the decrypted record
    for (q, n) in [
        ("identifier=MRN-tota&given=Givennametota&_summary=count", 1),
        ("identifier=MRN-tota&given=someoneelse&_summary=count", 0),
        ("identifier=MRN-tota&gender=male&_summary=count", 0),
        ("identifier=MRN-tota&gender=female", 1),
    ] {
        let r = get(&app, &format!("/fhir/R4/Patient?{q}"), t, &[]).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(r.json["total"], n, "{q}: {}", r.text);
    }
    let r = get(
        &app,
        "/fhir/R4/Patient?identifier=MRN-tota&gender=robot",
        t,
        &[],
    )
    .await;
    assert_outcome(&r, 400, "invalid");
    // the JSON list is unchanged: the same ids for the same caller
    let json = app.get("/api/v1/patients?limit=100", &doc.token).await;
    assert_eq!(json.json["items"].as_array().map(Vec::len), Some(3));
}
