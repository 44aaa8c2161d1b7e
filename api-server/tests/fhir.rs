//! FHIR R4 at `/fhir/R4` through the real router and Postgres: metadata, Patient create / read /
//! search / update (If-Match) / delete, OperationOutcome errors, format negotiation, the same
//! access decisions and audit events as the JSON routes.

mod common;
mod fhir_support;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use common::{audit_count, create_patient};
use fhir_support::{assert_outcome, fhir, get};
use serde_json::{json, Value};
use sqlx::PgPool;

const MRN_SYSTEM: &str = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;

fn patient(mrn: &str, family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"use": "official", "family": family, "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1980-05-06",
        "telecom": [{"system": "phone", "value": "+1 555 0123"}],
        "address": [{"text": "1 Fhir Street"}],
        "contact": [{"name": {"text": "Bob"}, "relationship": [{"text": "brother"}],
                     "telecom": [{"system": "phone", "value": "+1 555 0124"}]}]
    })
}

#[sqlx::test]
async fn metadata_states_what_is_served(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let r = fhir(&app, Method::GET, "/fhir/R4/metadata", None, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "CapabilityStatement");
    assert_eq!(r.json["fhirVersion"], "4.0.1");
    let resources = r.json["rest"][0]["resource"].as_array().expect("resources");
    let patient = resources
        .iter()
        .find(|x| x["type"] == "Patient")
        .expect("Patient");
    let interactions: Vec<&str> = patient["interaction"]
        .as_array()
        .expect("interactions")
        .iter()
        .filter_map(|i| i["code"].as_str())
        .collect();
    assert_eq!(
        interactions,
        ["read", "search-type", "create", "update", "delete"]
    );
    // XML is not served; unknown types and paths are OperationOutcomes too
    let xml: &[(&str, &str)] = &[("accept", "application/fhir+xml")];
    for (uri, headers, status, code) in [
        ("/fhir/R4/metadata", xml, 406, "not-supported"),
        ("/fhir/R4/metadata?_format=xml", &[], 406, "not-supported"),
        ("/fhir/R4/Observation", &[], 404, "not-found"),
    ] {
        let r = fhir(&app, Method::GET, uri, None, None, headers).await;
        assert_outcome(&r, status, code);
    }
    let r = fhir(
        &app,
        Method::GET,
        "/fhir/R4/metadata?_format=json",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[sqlx::test]
async fn patient_create_read_search_update_delete(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let admin = app.user(Role::Admin).await;
    let t = Some(doc.token.as_str());

    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/Patient",
        t,
        Some(patient("FH-1", "Lovelace")),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().expect("id").to_string();
    let version = r.json["meta"]["versionId"]
        .as_str()
        .expect("version")
        .to_string();
    assert!(r
        .header("location")
        .is_some_and(|l| l.contains(&format!("/fhir/R4/Patient/{id}/_history/{version}"))));
    assert_eq!(r.header("etag"), Some(format!("W/\"{version}\"").as_str()));
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json["identifier"][0]["value"], "FH-1");
    assert_eq!(r.json["contact"][0]["name"]["text"], "Bob");
    // the same record on the JSON route, audited as the same action
    let json = app.get(&format!("/api/v1/patients/{id}"), &doc.token).await;
    assert_eq!(json.json["family_name"], "Lovelace");
    assert_eq!(audit_count(&app, "patient.create", Some(&id)).await, 1);

    let url = format!("/fhir/R4/Patient/{id}");
    let r = get(&app, &url, &doc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"][0]["family"], "Lovelace");
    assert_eq!(r.json["birthDate"], "1980-05-06");
    assert_eq!(audit_count(&app, "patient.read", Some(&id)).await, 2);

    // searches through the blind indexes
    for q in [
        format!("identifier={MRN_SYSTEM}|FH-1"),
        "identifier=FH-1".to_string(),
        "family=lovelace&birthdate=1980-05-06".to_string(),
        "name=Lovelace&birthdate=eq1980-05-06&given=ada".to_string(),
        format!("_id={id}&gender=female"),
    ] {
        let r = get(&app, &format!("/fhir/R4/Patient?{q}"), &doc).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(r.json["resourceType"], "Bundle");
        assert_eq!(r.json["type"], "searchset");
        assert_eq!(r.json["total"], 1, "{q}: {}", r.text);
        assert_eq!(r.json["entry"][0]["resource"]["id"], id.as_str());
        assert_eq!(r.json["entry"][0]["search"]["mode"], "match");
        assert!(r.json["entry"][0]["fullUrl"]
            .as_str()
            .is_some_and(|u| u.ends_with(&url)));
        assert!(r.json["link"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("/fhir/R4/Patient?")));
    }
    let r = get(&app, "/fhir/R4/Patient?identifier=NOPE", &doc).await;
    assert_eq!(r.json["total"], 0, "{}", r.text);
    for q in ["gender=female&given=ada", "telecom=x"] {
        let r = get(&app, &format!("/fhir/R4/Patient?{q}"), &doc).await;
        assert_outcome(&r, 400, "invalid");
    }
    let r = fhir(
        &app,
        Method::GET,
        "/fhir/R4/Patient?telecom=x&identifier=FH-1",
        t,
        None,
        &[("prefer", "handling=lenient")],
    )
    .await;
    assert_eq!(
        r.json["total"], 1,
        "unknown parameters ignored when lenient: {}",
        r.text
    );
    assert!(!r.json["link"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .contains("telecom"));

    // update with If-Match: the current version, then a stale one
    let mut changed = patient("FH-1", "Lovelace");
    changed["id"] = json!(id);
    changed["telecom"] = json!([]);
    let r = fhir(
        &app,
        Method::PUT,
        &url,
        t,
        Some(changed.clone()),
        &[("if-match", &format!("W/\"{version}\""))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json.get("telecom").is_none(),
        "PUT replaces: the phone is removed: {}",
        r.text
    );
    let r = fhir(
        &app,
        Method::PUT,
        &url,
        t,
        Some(changed.clone()),
        &[("if-match", &format!("W/\"{version}\""))],
    )
    .await;
    assert_outcome(&r, 412, "conflict");
    let mut wrong = changed.clone();
    wrong["id"] = json!("someone-else");
    assert_outcome(
        &fhir(&app, Method::PUT, &url, t, Some(wrong), &[]).await,
        422,
        "invalid",
    );

    // delete (admin), then the record is gone: 410 to its care team (404 on JSON)
    let nurse = app.user(Role::Nurse).await;
    assert_outcome(
        &fhir(&app, Method::DELETE, &url, Some(&nurse.token), None, &[]).await,
        403,
        "forbidden",
    );
    let r = fhir(&app, Method::DELETE, &url, Some(&admin.token), None, &[]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_outcome(&get(&app, &url, &doc).await, 410, "deleted");
    assert_eq!(
        app.get(&format!("/api/v1/patients/{id}"), &doc.token)
            .await
            .status,
        404
    );
}

#[sqlx::test]
async fn fhir_errors_are_operation_outcomes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let t = Some(doc.token.as_str());
    let bad_type = json!({"resourceType": "Observation"});
    // no token, a body of another type, a method the type does not serve, a page too large
    for (method, uri, token, body, status, code) in [
        (Method::GET, "/fhir/R4/Patient", None, None, 401, "login"),
        (
            Method::POST,
            "/fhir/R4/Patient",
            t,
            Some(bad_type),
            422,
            "invalid",
        ),
        (
            Method::PATCH,
            "/fhir/R4/Patient",
            t,
            None,
            405,
            "not-supported",
        ),
        (
            Method::GET,
            "/fhir/R4/Patient?_count=1000",
            t,
            None,
            400,
            "invalid",
        ),
    ] {
        let r = fhir(&app, method, uri, token, body, &[]).await;
        assert_outcome(&r, status, code);
    }
    let mut no_mrn = patient("X", "Y");
    no_mrn["identifier"] = json!([]);
    let r = fhir(&app, Method::POST, "/fhir/R4/Patient", t, Some(no_mrn), &[]).await;
    assert_outcome(&r, 422, "invalid");
    assert_eq!(r.json["issue"][0]["expression"][0], "Patient.identifier");
    // a duplicate MRN: 409
    let first = fhir(
        &app,
        Method::POST,
        "/fhir/R4/Patient",
        t,
        Some(patient("DUP-1", "A")),
        &[],
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let r = fhir(
        &app,
        Method::POST,
        "/fhir/R4/Patient",
        t,
        Some(patient("DUP-1", "B")),
        &[],
    )
    .await;
    assert_outcome(&r, 409, "conflict");
    assert!(!r.text.contains("DUP-1"), "no PHI in errors: {}", r.text);
    // not JSON: 415; not parseable: 400
    for (content_type, body, status, code) in [
        ("application/xml", "<Patient/>", 415, "not-supported"),
        ("application/fhir+json", "{not json", 400, "invalid"),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/fhir/R4/Patient")
            .header("authorization", format!("Bearer {}", doc.token))
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        assert_outcome(&app.send(req).await, status, code);
    }
}

/// The access rules of the JSON routes hold: a nurse outside the care team gets 404 for a
/// record she may not know exists (as on /api/v1), a receptionist sees demographics.
#[sqlx::test]
async fn the_same_access_decisions_as_the_json_routes(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let id = create_patient(&app, &doc, "fhiraccess").await;
    let other_doc = app.user(Role::Physician).await;
    let url = format!("/fhir/R4/Patient/{id}");
    let json = app
        .get(&format!("/api/v1/patients/{id}"), &other_doc.token)
        .await;
    let r = get(&app, &url, &other_doc).await;
    assert_eq!(r.status, json.status, "{}", r.text);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    // searches see only the caller's scope
    for (who, total) in [(&other_doc, 0), (&doc, 1)] {
        let r = get(&app, "/fhir/R4/Patient", who).await;
        assert_eq!(r.json["total"], total, "{}", r.text);
    }
    let rec = app.user(Role::Receptionist).await;
    let r = get(&app, &url, &rec).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"][0]["family"], "Familynamefhiraccess");
}
