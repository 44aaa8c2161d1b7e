//! FHIR R4 Practitioner at `/fhir/R4` (the clinicians an Appointment is booked with) through
//! the real router and Postgres: read and search (name, _id, paging) for active physicians and
//! nurses only, the e-mail for admins only, audited as `user.read` / `user.list`; unknown or
//! unsupported search parameters are 400 OperationOutcomes.

mod common;
mod fhir_support;

use axum::http::Method;
use caduceus_api::rbac::Role;
use caduceus_api::testing::TestApp;
use common::{audit_count, create_patient};
use fhir_support::{assert_outcome, fhir, get, ids};
use sqlx::PgPool;

#[sqlx::test]
async fn practitioners_are_active_clinicians(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let nurse = app.user(Role::Nurse).await;
    let rec = app.user(Role::Receptionist).await;
    let admin = app.user(Role::Admin).await;
    let gone = app.user(Role::Nurse).await;
    sqlx::query("UPDATE users SET display_name = 'Grace Hopper' WHERE id = $1")
        .bind(doc.id)
        .execute(&app.pool)
        .await
        .expect("rename");
    sqlx::query("UPDATE users SET active = false WHERE id = $1")
        .bind(gone.id)
        .execute(&app.pool)
        .await
        .expect("deactivate");
    let url = format!("/fhir/R4/Practitioner/{}", doc.id);
    let r = get(&app, &url, &rec).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["resourceType"], "Practitioner");
    assert_eq!(r.json["name"][0]["text"], "Grace Hopper");
    assert_eq!(r.json["qualification"][0]["code"]["text"], "physician");
    assert_eq!(r.json["active"], true);
    assert!(
        r.json.get("telecom").is_none(),
        "no e-mail for a receptionist: {}",
        r.text
    );
    assert!(!r.text.contains(&doc.email));
    assert!(r.header("etag").is_some());
    assert_eq!(audit_count(&app, "user.read", None).await, 1);
    // admins may see account data
    let r = get(&app, &url, &admin).await;
    assert_eq!(
        r.json["telecom"][0]["value"],
        doc.email.as_str(),
        "{}",
        r.text
    );
    // a patient sees the name of who they are booked with
    let patient = create_patient(&app, &rec, "fa5").await;
    let own = app.patient_user(patient.parse().expect("uuid")).await;
    let r = get(&app, &url, &own).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("telecom").is_none());
    // other roles' accounts and deactivated ones are not practitioners
    for who in [&rec, &admin, &gone, &own] {
        let r = get(&app, &format!("/fhir/R4/Practitioner/{}", who.id), &doc).await;
        assert_outcome(&r, 404, "not-found");
    }
    assert_outcome(
        &get(&app, "/fhir/R4/Practitioner/x", &doc).await,
        404,
        "not-found",
    );
    assert_outcome(
        &fhir(&app, Method::GET, &url, None, None, &[]).await,
        401,
        "login",
    );

    // searches
    let all = get(&app, "/fhir/R4/Practitioner", &rec).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let mut found = ids(&all.json);
    found.sort();
    let mut expected = vec![doc.id.to_string(), nurse.id.to_string()];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(all.json["total"], 2);
    assert!(!all.text.contains("@test.example"), "{}", all.text);
    for (q, expected) in [
        ("name=grace".to_string(), vec![doc.id.to_string()]),
        ("name=HOP".to_string(), vec![doc.id.to_string()]),
        ("name=race".to_string(), vec![]),
        ("name=%25".to_string(), vec![]),
        (format!("_id={}", nurse.id), vec![nurse.id.to_string()]),
        (
            format!("_id={},{}", rec.id, doc.id),
            vec![doc.id.to_string()],
        ),
    ] {
        let r = get(&app, &format!("/fhir/R4/Practitioner?{q}"), &rec).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(ids(&r.json), expected, "{q}: {}", r.text);
    }
    let r = get(&app, "/fhir/R4/Practitioner?_count=1", &admin).await;
    assert_eq!(ids(&r.json).len(), 1);
    assert!(r.json["entry"][0]["resource"]["telecom"][0]["value"]
        .as_str()
        .is_some_and(|e| e.ends_with("@test.example")));
    assert!(r.json["link"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x["relation"] == "next")));
    assert!(audit_count(&app, "user.list", None).await >= 1);
    for q in ["identifier=x", "_id=nope", "_sort=name"] {
        let r = get(&app, &format!("/fhir/R4/Practitioner?{q}"), &rec).await;
        assert_outcome(&r, 400, "invalid");
    }
}
