//! Shared helpers of the FHIR integration tests (`fhir*.rs`): FHIR requests, OperationOutcome
//! checks, searchset ids and `next` links, patients with clinical lists, MedicationRequest
//! bodies, Appointment bodies, bookings and searches.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

use super::common::patient_body;

pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const OVERRIDE: &str =
    "https://caduceus.io/fhir/StructureDefinition/interaction-override-reason";

pub async fn fhir(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(v) => b
            .header("content-type", "application/fhir+json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request");
    app.send(req).await
}

pub async fn get(app: &TestApp, uri: &str, user: &TestUser) -> TestResponse {
    fhir(app, Method::GET, uri, Some(&user.token), None, &[]).await
}

/// An OperationOutcome with `code` and the request id in its diagnostics.
pub fn assert_outcome(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/fhir+json")),
        "{:?}",
        r.header("content-type")
    );
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

/// A patient registered by `by` (a physician or nurse `by` is then in the care team).
pub async fn patient_with(
    app: &TestApp,
    by: &TestUser,
    tag: &str,
    allergies: &[&str],
    conditions: &[&str],
) -> String {
    let mut body = patient_body(tag);
    body["allergies"] = json!(allergies);
    body["medications"] = json!([]);
    body["conditions"] = json!(conditions);
    let r = app.post("/api/v1/patients", &by.token, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().expect("id").to_string()
}

pub fn medication_request(patient: &str, name: &str, code: Option<&str>) -> Value {
    let mut m = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": name},
        "subject": {"reference": format!("Patient/{patient}")},
        "dosageInstruction": [{
            "timing": {"code": {"text": "twice daily"}},
            "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
            "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}]
        }],
        "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
        "note": [{"text": format!("notes for {name}")}]
    });
    if let Some(c) = code {
        m["medicationCodeableConcept"]["coding"] = json!([{"system": RXNORM, "code": c}]);
    }
    m
}

/// The path (from `/fhir/R4/`) of a searchset's `next` link.
pub fn next_path(bundle: &Value) -> Option<String> {
    let url = bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?["url"]
        .as_str()?;
    url.find("/fhir/R4/").map(|i| url[i..].to_string())
}

/// Tomorrow 00:00 UTC.
pub fn tomorrow() -> DateTime<Utc> {
    (Utc::now() + Duration::days(1))
        .duration_trunc(Duration::days(1))
        .expect("trunc")
}

/// A FHIR Appointment of `patient` with `practitioner`, `h` hours after tomorrow 00:00 UTC,
/// 30 minutes long.
pub fn appointment(patient: &str, practitioner: &TestUser, h: i64, reason: &str) -> Value {
    let start = tomorrow() + Duration::hours(h);
    json!({
        "resourceType": "Appointment",
        "status": "booked",
        "start": start.to_rfc3339(),
        "end": (start + Duration::minutes(30)).to_rfc3339(),
        "reasonCode": [{"text": reason}],
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{}", practitioner.id)}, "status": "accepted"}
        ]
    })
}

/// Book `body` (a FHIR Appointment) as `by`, which must answer 201; the created resource.
pub async fn book(app: &TestApp, by: &TestUser, body: Value) -> Value {
    let r = fhir(
        app,
        Method::POST,
        "/fhir/R4/Appointment",
        Some(&by.token),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json
}

/// An Appointment search by `by`, which must answer a 200 searchset.
pub async fn search(app: &TestApp, by: &TestUser, query: &str) -> TestResponse {
    let r = fhir(
        app,
        Method::GET,
        &format!("/fhir/R4/Appointment?{query}"),
        Some(&by.token),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    assert_eq!(r.json["type"], "searchset");
    r
}

/// The resource ids of a Bundle's entries, in order.
pub fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
