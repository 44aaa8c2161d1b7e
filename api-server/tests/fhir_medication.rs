//! FHIR R4 MedicationRequest through the real router and Postgres: the mapping to and from
//! prescriptions, the interaction check (409 OperationOutcome, override extension),
//! discontinue by PUT, and the same access decisions and audit events as the JSON routes (the
//! search's exact totals over pages and `_summary=count`: `fhir_totals.rs`).

mod common;
mod fhir_support;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestUser};
use common::audit_count;
use fhir_support::{assert_outcome, fhir, get, medication_request, patient_with, OVERRIDE, RXNORM};
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test]
async fn medication_request_create_read_search_discontinue(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "fm1", &[], &[]).await;
    let t = Some(doc.token.as_str());

    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/MedicationRequest",
        t,
        Some(medication_request(
            &patient,
            "Metformin 500 mg tablet",
            Some("6809"),
        )),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let version = r.json["meta"]["versionId"]
        .as_str()
        .expect("version")
        .to_string();
    assert!(r.header("location").is_some_and(|l| l.contains(&format!(
        "/fhir/R4/MedicationRequest/{id}/_history/{version}"
    ))));
    assert_eq!(r.header("etag"), Some(format!("W/\"{version}\"").as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["intent"], "order");
    assert_eq!(
        r.json["medicationCodeableConcept"]["coding"][0]["system"],
        RXNORM
    );
    assert_eq!(
        r.json["medicationCodeableConcept"]["coding"][0]["code"],
        "6809"
    );
    assert_eq!(
        r.json["requester"]["reference"],
        format!("Practitioner/{}", doc.id)
    );
    assert_eq!(
        r.json["dosageInstruction"][0]["text"],
        "500 mg oral twice daily"
    );
    assert_eq!(
        r.json["dosageInstruction"][0]["route"]["coding"][0]["code"],
        "26643006"
    );
    assert_eq!(
        r.json["dispenseRequest"]["expectedSupplyDuration"]["value"],
        30
    );
    assert_eq!(
        audit_count(&app, "prescription.create", Some(&patient)).await,
        1
    );
    // the same prescription on the JSON route
    let j = app
        .get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    assert_eq!(j.status, 200, "{}", j.text);
    assert_eq!(j.json["medication"]["name"], "Metformin 500 mg tablet");
    assert_eq!(j.json["dose"], "500 mg");
    assert_eq!(j.json["route"], "oral");
    assert_eq!(j.json["frequency"], "twice daily");
    assert_eq!(j.json["duration_days"], 30);
    assert_eq!(j.json["notes"], "notes for Metformin 500 mg tablet");

    let url = format!("/fhir/R4/MedicationRequest/{id}");
    let read = get(&app, &url, &doc).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(
        read.header("etag"),
        Some(format!("W/\"{version}\"").as_str())
    );
    assert_eq!(
        audit_count(&app, "prescription.read", Some(&patient)).await,
        2
    );
    let r = get(&app, "/fhir/R4/MedicationRequest/not-an-id", &doc).await;
    assert_outcome(&r, 404, "not-found");

    // searches through the JSON list (same filters, same audit action)
    for (q, total) in [
        (format!("patient=Patient/{patient}"), 1),
        (format!("patient={patient}&status=active&intent=order"), 1),
        (format!("patient={patient}&status=stopped"), 0),
        (format!("patient={patient}&status=on-hold"), 0),
        (format!("patient={patient}&intent=plan"), 0),
        ("status=active".to_string(), 1),
    ] {
        let r = get(&app, &format!("/fhir/R4/MedicationRequest?{q}"), &doc).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(r.json["type"], "searchset");
        assert_eq!(r.json["total"], total, "{q}: {}", r.text);
    }
    assert!(audit_count(&app, "prescription.list", Some(&patient)).await >= 3);
    for q in [
        "status=paused",
        "intent=wish",
        "patient=Practitioner/x",
        "dose=1",
    ] {
        let r = get(&app, &format!("/fhir/R4/MedicationRequest?{q}"), &doc).await;
        assert_outcome(&r, 400, "invalid");
    }

    // discontinue: PUT the resource as read with status stopped
    let mut changed = read.json.clone();
    changed["dosageInstruction"][0]["timing"]["code"]["text"] = json!("once daily");
    changed["status"] = json!("stopped");
    let r = fhir(&app, Method::PUT, &url, t, Some(changed), &[]).await;
    assert_outcome(&r, 422, "invalid");
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "MedicationRequest.dosageInstruction"
    );
    let r = fhir(&app, Method::PUT, &url, t, Some(read.json.clone()), &[]).await;
    assert_outcome(&r, 422, "invalid");
    let mut stop = read.json.clone();
    stop["status"] = json!("stopped");
    let r = fhir(
        &app,
        Method::PUT,
        &url,
        t,
        Some(stop.clone()),
        &[("if-match", "W/\"1\"")],
    )
    .await;
    assert_outcome(&r, 412, "conflict");
    let nurse = app.user(Role::Nurse).await;
    let r = fhir(
        &app,
        Method::PUT,
        &url,
        Some(&nurse.token),
        Some(stop.clone()),
        &[],
    )
    .await;
    assert_outcome(&r, 403, "forbidden");
    assert_eq!(
        audit_count(&app, "prescription.discontinue", Some(&patient)).await,
        0
    );
    let r = fhir(
        &app,
        Method::PUT,
        &url,
        t,
        Some(stop.clone()),
        &[("if-match", &format!("W/\"{version}\""))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "stopped");
    assert_ne!(r.json["meta"]["versionId"], version.as_str());
    assert_eq!(
        audit_count(&app, "prescription.discontinue", Some(&patient)).await,
        1
    );
    let j = app
        .get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    assert_eq!(j.json["status"], "discontinued");
    // again: already discontinued, as on the JSON route
    let r = fhir(&app, Method::PUT, &url, t, Some(stop), &[]).await;
    assert_outcome(&r, 409, "conflict");
    let r = get(
        &app,
        &format!("/fhir/R4/MedicationRequest?patient={patient}&status=stopped"),
        &doc,
    )
    .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
}

/// A change to a valid body that makes it invalid.
type Change = Box<dyn Fn(&mut Value)>;

#[sqlx::test]
async fn create_is_validated_and_physicians_only(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let patient = patient_with(&app, &doc, "fm2", &[], &[]).await;
    let post = |user: &TestUser, body: Value| {
        let token = user.token.clone();
        let app = &app;
        async move {
            fhir(
                app,
                Method::POST,
                "/fhir/R4/MedicationRequest",
                Some(&token),
                Some(body),
                &[],
            )
            .await
        }
    };
    let good = medication_request(&patient, "Metformin 500 mg", None);
    assert_outcome(&post(&nurse, good.clone()).await, 403, "forbidden");
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/MedicationRequest",
        None,
        Some(good.clone()),
        &[],
    )
    .await;
    assert_outcome(&r, 401, "login");
    let cases: Vec<(&str, Change)> = vec![
        (
            "MedicationRequest.intent",
            Box::new(|m| m["intent"] = json!("plan")),
        ),
        (
            "MedicationRequest.status",
            Box::new(|m| m["status"] = json!("draft")),
        ),
        (
            "MedicationRequest.reasonCode",
            Box::new(|m| m["reasonCode"] = json!([{"text": "x"}])),
        ),
        (
            "MedicationRequest.dosageInstruction.doseAndRate.doseQuantity",
            Box::new(|m| m["dosageInstruction"][0]["doseAndRate"] = json!([])),
        ),
        (
            "MedicationRequest.dosageInstruction.route",
            Box::new(|m| m["dosageInstruction"][0]["route"] = json!({"text": "by magic"})),
        ),
        (
            "MedicationRequest.dispenseRequest.expectedSupplyDuration",
            Box::new(|m| m["dispenseRequest"]["expectedSupplyDuration"]["code"] = json!("wk")),
        ),
        (
            "MedicationRequest.dispenseRequest.expectedSupplyDuration",
            Box::new(|m| m["dispenseRequest"]["expectedSupplyDuration"]["value"] = json!(400)),
        ),
        (
            "MedicationRequest.medicationCodeableConcept.coding.code",
            Box::new(|m| {
                m["medicationCodeableConcept"]["coding"] =
                    json!([{"system": RXNORM, "code": "12 34"}])
            }),
        ),
        (
            "MedicationRequest.requester",
            Box::new(|m| {
                m["requester"] =
                    json!({"reference": "Practitioner/0190d5c4-0000-7000-8000-000000000000"})
            }),
        ),
        (
            "MedicationRequest.subject",
            Box::new(|m| m["subject"] = json!({"reference": "Group/1"})),
        ),
    ];
    for (field, change) in cases {
        let mut body = good.clone();
        change(&mut body);
        let r = post(&doc, body).await;
        assert_outcome(&r, 422, "invalid");
        assert_eq!(r.json["issue"][0]["expression"][0], field, "{}", r.text);
    }
    let mut body = good.clone();
    body["resourceType"] = json!("Patient");
    assert_outcome(&post(&doc, body).await, 422, "invalid");
    // an unknown patient, as the JSON route says it
    let r = post(
        &doc,
        medication_request("0190d5c4-0000-7000-8000-000000000000", "Metformin", None),
    )
    .await;
    assert_outcome(&r, 422, "invalid");
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "MedicationRequest.subject"
    );
    // not JSON
    let req = Request::builder()
        .method(Method::POST)
        .uri("/fhir/R4/MedicationRequest")
        .header("authorization", format!("Bearer {}", doc.token))
        .header("content-type", "text/plain")
        .body(Body::from("x"))
        .expect("request");
    assert_outcome(&app.send(req).await, 415, "not-supported");
    assert_eq!(audit_count(&app, "prescription.create", None).await, 0);
    // a physician outside the care team: 403 as on the JSON route, and with break-glass 201
    let other = app.user(Role::Physician).await;
    assert_outcome(&post(&other, good.clone()).await, 403, "forbidden");
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/MedicationRequest",
        Some(&other.token),
        Some(good),
        &[("x-break-glass-reason", "emergency")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        audit_count(&app, "patient.break_glass", Some(&patient)).await,
        1
    );
}

#[sqlx::test]
async fn major_interaction_is_an_operation_outcome_unless_overridden(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "fm3", &[], &[]).await;
    let warfarin = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            json!({"patient_id": patient, "medication": {"name": "Warfarin sodium 5 mg"}, "dose": "5 mg",
                   "route": "oral", "frequency": "once daily", "duration_days": 30}),
        )
        .await;
    assert_eq!(warfarin.status, 201, "{}", warfarin.text);
    let warfarin_id = warfarin.json["id"].as_str().expect("id");
    let aspirin = medication_request(&patient, "Aspirin 81 mg", None);
    let json_refusal = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            json!({"patient_id": patient, "medication": {"name": "Aspirin 81 mg"}, "dose": "81 mg",
                   "route": "oral", "frequency": "once daily", "duration_days": 30}),
        )
        .await;
    assert_eq!(json_refusal.status, 409);
    let listed = json_refusal.json["interactions"]
        .as_array()
        .expect("list")
        .len();

    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/MedicationRequest",
        Some(&doc.token),
        Some(aspirin.clone()),
        &[],
    )
    .await;
    assert_outcome(&r, 409, "conflict");
    let issues = r.json["issue"].as_array().expect("issues");
    // one issue per interaction the JSON 409 lists, then how to override
    assert_eq!(issues.len(), listed + 1, "{}", r.text);
    let first = issues[0]["diagnostics"].as_str().expect("diagnostics");
    assert!(
        first.contains("major drug interaction: aspirin with warfarin"),
        "{first}"
    );
    assert!(
        first.contains(&format!("MedicationRequest/{warfarin_id}")),
        "{first}"
    );
    assert!(issues[listed]["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains(OVERRIDE)));
    // nothing of the record's free text
    assert!(!r.text.contains("Warfarin sodium"), "{}", r.text);
    assert_eq!(
        audit_count(&app, "prescription.interaction_refused", Some(&patient)).await,
        2
    );

    let mut overridden = aspirin;
    overridden["extension"] =
        json!([{"url": OVERRIDE, "valueString": "cardiology advised, INR monitored"}]);
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/MedicationRequest",
        Some(&doc.token),
        Some(overridden),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["extension"][0]["url"], OVERRIDE);
    assert_eq!(r.json["contained"][0]["resourceType"], "DetectedIssue");
    assert_eq!(r.json["contained"][0]["severity"], "high");
    assert_eq!(
        r.json["contained"][0]["implicated"][0]["reference"],
        format!("MedicationRequest/{warfarin_id}")
    );
    assert_eq!(r.json["detectedIssue"][0]["reference"], "#interaction-1");
    assert_eq!(
        audit_count(&app, "prescription.interaction_override", Some(&patient)).await,
        1
    );
    let id = r.json["id"].as_str().expect("id");
    let j = app
        .get(&format!("/api/v1/prescriptions/{id}"), &doc.token)
        .await;
    assert_eq!(
        j.json["override_reason"],
        "cardiology advised, INR monitored"
    );
}

#[sqlx::test]
async fn medication_request_access_matches_the_json_routes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(&app, &doc, "fm4", &[], &[]).await;
    let other_patient = patient_with(&app, &doc, "fm5", &[], &[]).await;
    let created = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            json!({"patient_id": patient, "medication": {"name": "Metformin"}, "dose": "1-2 tablets",
                   "route": "oral", "frequency": "once daily", "duration_days": 10}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().expect("id").to_string();
    let callers = [
        app.user(Role::Admin).await,
        app.user(Role::Receptionist).await,
        app.user(Role::Nurse).await,
        app.user(Role::Physician).await,
        app.patient_user(patient.parse().expect("uuid")).await,
        app.patient_user(other_patient.parse().expect("uuid")).await,
        doc,
    ];
    for c in &callers {
        let j = app
            .get(&format!("/api/v1/prescriptions/{id}"), &c.token)
            .await;
        let f = get(&app, &format!("/fhir/R4/MedicationRequest/{id}"), c).await;
        assert_eq!(f.status, j.status, "read: {}", f.text);
        if f.status == 200 {
            // a free-text dose stays in the text only
            assert_eq!(
                f.json["dosageInstruction"][0]["text"],
                "1-2 tablets oral once daily"
            );
            assert!(f.json["dosageInstruction"][0].get("doseAndRate").is_none());
        } else {
            assert_eq!(f.json["resourceType"], "OperationOutcome");
        }
        let j = app
            .get(
                &format!("/api/v1/prescriptions?patient_id={patient}"),
                &c.token,
            )
            .await;
        let f = get(
            &app,
            &format!("/fhir/R4/MedicationRequest?patient={patient}"),
            c,
        )
        .await;
        assert_eq!(f.status, j.status, "search: {}", f.text);
        if f.status == 200 {
            let items = j.json["items"].as_array().map_or(0, Vec::len);
            assert_eq!(f.json["total"], items, "{}", f.text);
        }
    }
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/MedicationRequest/{id}"),
        None,
        None,
        &[],
    )
    .await;
    assert_outcome(&r, 401, "login");
}
