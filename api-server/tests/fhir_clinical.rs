//! FHIR R4 AllergyIntolerance and Condition through the real router and Postgres: derived from
//! the patient record's lists, with the access decisions and audit events of
//! `GET /api/v1/patients/{id}`.

mod common;
mod fhir_support;

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use common::audit_count;
use fhir_support::{assert_outcome, fhir, get, patient_with};
use sqlx::PgPool;

#[sqlx::test]
async fn allergies_and_conditions_from_the_record(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let patient = patient_with(
        &app,
        &doc,
        "fm6",
        &["Penicillin (hives)", "Latex"],
        &["Asthma"],
    )
    .await;
    let reads = || audit_count(&app, "patient.read", Some(&patient));
    let before = reads().await;

    let r = get(
        &app,
        &format!("/fhir/R4/AllergyIntolerance?patient=Patient/{patient}"),
        &doc,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["type"], "searchset");
    assert_eq!(r.json["total"], 2);
    assert_eq!(r.json["entry"][0]["resource"]["id"], format!("{patient}-0"));
    assert_eq!(
        r.json["entry"][0]["resource"]["code"]["text"],
        "Penicillin (hives)"
    );
    assert_eq!(r.json["entry"][1]["resource"]["code"]["text"], "Latex");
    assert_eq!(
        r.json["entry"][1]["resource"]["patient"]["reference"],
        format!("Patient/{patient}")
    );
    assert_eq!(
        reads().await,
        before + 1,
        "audited as the JSON read of the record"
    );
    let r = get(
        &app,
        &format!("/fhir/R4/AllergyIntolerance?patient={patient}&_count=1"),
        &doc,
    )
    .await;
    assert_eq!(r.json["total"], 2);
    assert_eq!(r.json["entry"].as_array().map(Vec::len), Some(1));

    let r = get(
        &app,
        &format!("/fhir/R4/AllergyIntolerance/{patient}-1"),
        &doc,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "AllergyIntolerance");
    assert_eq!(r.json["code"]["text"], "Latex");
    assert_eq!(r.json["clinicalStatus"]["coding"][0]["code"], "active");
    assert!(r.header("etag").is_some());
    let r = get(&app, &format!("/fhir/R4/Condition/{patient}-0"), &doc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "Condition");
    assert_eq!(r.json["code"]["text"], "Asthma");
    assert_eq!(r.json["subject"]["reference"], format!("Patient/{patient}"));
    assert_eq!(r.json["clinicalStatus"]["coding"][0]["code"], "active");
    let r = get(&app, &format!("/fhir/R4/Condition?patient={patient}"), &doc).await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    assert_eq!(reads().await, before + 5);

    for bad in [
        format!("{patient}-1"),
        format!("{patient}-x"),
        "nope".into(),
    ] {
        let r = get(&app, &format!("/fhir/R4/Condition/{bad}"), &doc).await;
        assert_outcome(&r, 404, "not-found");
    }
    for q in [
        String::new(),
        "patient=Practitioner/1".into(),
        format!("patient={patient}&code=x"),
        format!("patient={patient}&_cursor=abc"),
    ] {
        let r = get(&app, &format!("/fhir/R4/AllergyIntolerance?{q}"), &doc).await;
        assert_outcome(&r, 400, "invalid");
    }
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/Condition/{patient}-0"),
        None,
        None,
        &[],
    )
    .await;
    assert_outcome(&r, 401, "login");

    // the same decisions as GET /api/v1/patients/{id}; demographics-only access is refused
    let other = patient_with(&app, &doc, "fm7", &[], &[]).await;
    let cases = [
        (
            app.patient_user(patient.parse().expect("uuid")).await,
            200,
            200,
        ),
        (
            app.patient_user(other.parse().expect("uuid")).await,
            404,
            404,
        ),
        (app.user(Role::Nurse).await, 403, 403),
        (app.user(Role::Physician).await, 403, 403),
        (app.user(Role::Receptionist).await, 200, 403),
        (app.user(Role::Admin).await, 200, 403),
    ];
    for (user, json_status, fhir_status) in cases {
        let j = app
            .get(&format!("/api/v1/patients/{patient}"), &user.token)
            .await;
        assert_eq!(j.status, json_status, "{}", j.text);
        for url in [
            format!("/fhir/R4/AllergyIntolerance/{patient}-0"),
            format!("/fhir/R4/Condition?patient={patient}"),
        ] {
            let r = get(&app, &url, &user).await;
            assert_eq!(r.status, fhir_status, "{url}: {}", r.text);
            if fhir_status != 200 {
                assert_eq!(r.json["resourceType"], "OperationOutcome");
                assert!(!r.text.contains("Penicillin") && !r.text.contains("Asthma"));
            }
        }
    }
    // break-glass opens the record as on the JSON route
    let outsider = app.user(Role::Physician).await;
    let r = fhir(
        &app,
        Method::GET,
        &format!("/fhir/R4/AllergyIntolerance/{patient}-0"),
        Some(&outsider.token),
        None,
        &[("x-break-glass-reason", "unconscious in the ER")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(audit_count(&app, "patient.break_glass", Some(&patient)).await >= 1);

    // the CapabilityStatement states the three types
    let r = fhir(&app, Method::GET, "/fhir/R4/metadata", None, None, &[]).await;
    let resources = r.json["rest"][0]["resource"].as_array().expect("resources");
    for (name, interactions) in [
        (
            "MedicationRequest",
            vec!["read", "search-type", "create", "update"],
        ),
        ("AllergyIntolerance", vec!["read", "search-type"]),
        ("Condition", vec!["read", "search-type"]),
    ] {
        let res = resources.iter().find(|x| x["type"] == name).expect(name);
        let got: Vec<&str> = res["interaction"]
            .as_array()
            .expect("interactions")
            .iter()
            .filter_map(|i| i["code"].as_str())
            .collect();
        assert_eq!(got, interactions);
        assert_eq!(res["searchParam"][0]["name"], "patient");
    }
}
