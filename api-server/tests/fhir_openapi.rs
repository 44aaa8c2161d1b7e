//! The OpenAPI document of the FHIR interface (`GET /fhir/R4/openapi.json`): public, served as
//! generated, valid OpenAPI 3.1 for `openapi-spec-validator` (PyPI, installed into `.tools/venv`
//! by `scripts/tools.sh`; without it the validation prints `SKIPPED` and passes, except under
//! `CI=true`, where it fails), and saying what the declarations say: every search parameter with
//! its type, the result parameters, FHIR JSON answers referencing the resource types,
//! OperationOutcome errors, the bearer scheme of `/api/v1`; and its routes are exactly the
//! router's (that they are exactly the declarations' is the unit test in `fhir::openapi`).

mod common;
mod fhir_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use caduceus_api::fhir::capability::Interaction;
use caduceus_api::fhir::search::RESULT_PARAMS;
use caduceus_api::fhir::{openapi, RESOURCES};
use caduceus_api::testing::TestApp;
use fhir_support::{fhir, get};
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

const FHIR_JSON: &str = "application/fhir+json";

fn doc() -> Value {
    serde_json::from_str(openapi::document()).expect("json")
}

/// The pinned `openapi-spec-validator` of `.tools/venv` (`scripts/tools.sh`), or `None` after
/// saying why the validation is skipped (a panic under CI).
fn validator() -> Option<PathBuf> {
    let bin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/openapi-spec-validator");
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("openapi-spec-validator is not installed (scripts/tools.sh installs it into .tools/venv); CI must run this test");
    }
    eprintln!("fhir_openapi: validation SKIPPED (openapi-spec-validator not installed; run scripts/tools.sh)");
    None
}

/// `openapi-spec-validator --schema 3.1` on `doc`: whether it accepts it, and its output.
fn validate(bin: &Path, dir: &Path, name: &str, doc: &Value) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec(doc).expect("json")).expect("write");
    let out = std::process::Command::new(bin)
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .env("NO_COLOR", "1")
        .output()
        .expect("run openapi-spec-validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Served without a token (a token changes nothing), as generated, valid OpenAPI 3.1; the
/// validator refuses a broken copy (it is not vacuous).
#[sqlx::test]
async fn the_document_is_public_and_valid_openapi_3_1(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let r = fhir(&app, Method::GET, "/fhir/R4/openapi.json", None, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json, doc());
    assert_eq!(r.json["openapi"], "3.1.0");
    let user = app.user(caduceus_api::rbac::Role::Nurse).await;
    let with_token = get(&app, "/fhir/R4/openapi.json", &user).await;
    assert_eq!((with_token.status, &with_token.json), (200, &r.json));
    // the main document and its docs page link it
    let main = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let description = main.json["info"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.contains("/fhir/R4/openapi.json"),
        "{description}"
    );
    let page = app.call(Method::GET, "/api/v1/docs", None, None).await;
    assert!(page.text.contains("fhir/R4/openapi.json"));

    let Some(bin) = validator() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out) = validate(&bin, dir.path(), "fhir-openapi.json", &r.json);
    assert!(
        ok,
        "openapi-spec-validator refuses the FHIR document:\n{out}"
    );
    let mut broken = r.json.clone();
    broken["paths"]["/Patient/{id}"]["get"]["parameters"] = json!([]);
    broken["paths"]["/Patient"]["get"]["responses"]["200"]["content"][FHIR_JSON]["schema"]
        ["$ref"] = json!("#/components/schemas/Nothing");
    let (ok, out) = validate(&bin, dir.path(), "broken.json", &broken);
    assert!(
        !ok,
        "the validator accepts an undeclared path parameter and a dangling $ref:\n{out}"
    );
}

/// Every declared search parameter is a query parameter of its type's search, with its type
/// and meaning, beside the result parameters and `Prefer`; nothing else is.
#[test]
fn every_search_parameter_is_documented() {
    let doc = doc();
    let searched = RESOURCES
        .iter()
        .filter(|c| c.interactions.contains(&Interaction::SearchType));
    for cap in searched {
        let search = &doc["paths"][format!("/{}", cap.type_name)]["get"];
        let params = search["parameters"].as_array().expect("parameters");
        let named = |name: &str, place: &str| {
            params
                .iter()
                .find(|p| p["name"] == name && p["in"] == place)
                .unwrap_or_else(|| panic!("{} {name} in {place}", cap.type_name))
        };
        for sp in cap.search {
            let p = named(sp.name, "query");
            assert_eq!(p["x-fhir-search-type"], sp.kind.code(), "{}", sp.name);
            let description = p["description"].as_str().expect("description");
            assert!(description.contains(sp.doc), "{description}");
            assert_eq!(p["schema"]["type"], "string");
        }
        let mut result: Vec<&str> = RESULT_PARAMS.to_vec();
        if cap.sorts.is_empty() {
            result.retain(|p| *p != "_sort");
        }
        for s in cap.sorts {
            let values = named("_sort", "query")["schema"]["enum"].clone();
            assert!(values
                .as_array()
                .is_some_and(|v| v.contains(&json!(s)) && v.contains(&json!(format!("-{s}")))));
        }
        for r in &result {
            named(r, "query");
        }
        assert_eq!(named("_count", "query")["schema"]["maximum"], 100);
        named("Prefer", "header");
        for p in params {
            assert_ne!(p["required"], json!(true), "{}: {p}", cap.type_name);
        }
        let expected = cap.search.len() + result.len() + 1;
        assert_eq!(params.len(), expected, "{}: {params:?}", cap.type_name);
        assert_eq!(
            search["responses"]["400"]["content"][FHIR_JSON]["schema"]["$ref"],
            "#/components/schemas/OperationOutcome"
        );
    }
    let update = doc["paths"]["/Patient/{id}"]["put"]["parameters"].clone();
    let update = update.as_array().expect("parameters");
    let find = |name: &str| update.iter().find(|p| p["name"] == name).expect(name);
    assert_eq!(
        (&find("If-Match")["in"], &find("If-Match")["required"]),
        (&json!("header"), &json!(false))
    );
    assert_eq!(
        (&find("id")["in"], &find("id")["required"]),
        (&json!("path"), &json!(true))
    );
}

/// Answers are FHIR JSON: each resource by reference to a component with its `resourceType`
/// (const) pointing to the HL7 R4 JSON schema; errors OperationOutcomes; the protected routes
/// need the `/api/v1` document's bearer scheme, `metadata` and the document none.
#[test]
fn answers_reference_the_resource_types() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let main: Value =
        serde_json::from_str(caduceus_api::openapi::document()).expect("main document");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        main["components"]["securitySchemes"]["bearer"]
    );
    let named = RESOURCES.iter().map(|c| c.type_name);
    for name in named.chain(["Bundle", "OperationOutcome", "CapabilityStatement"]) {
        assert_eq!(schemas[name]["properties"]["resourceType"]["const"], name);
        assert_eq!(schemas[name]["required"][0], "resourceType");
        assert_eq!(
            schemas[name]["externalDocs"]["url"],
            format!("{}#/definitions/{name}", openapi::HL7_SCHEMA)
        );
    }
    let schema_of = |path: &str, method: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"][FHIR_JSON]["schema"]["$ref"]
            .clone()
    };
    for cap in RESOURCES {
        let t = cap.type_name;
        let own = json!(format!("#/components/schemas/{t}"));
        let instance = format!("/{t}/{{id}}");
        for (i, path, method, status, schema) in [
            (Interaction::Read, &instance, "get", "200", &own),
            (Interaction::Update, &instance, "put", "200", &own),
            (Interaction::Create, &format!("/{t}"), "post", "201", &own),
            (
                Interaction::SearchType,
                &format!("/{t}"),
                "get",
                "200",
                &json!("#/components/schemas/Bundle"),
            ),
        ] {
            if cap.interactions.contains(&i) {
                assert_eq!(&schema_of(path, method, status), schema, "{method} {path}");
            }
        }
    }
    assert_eq!(
        schema_of("/Patient/{id}/$everything", "get", "200"),
        "#/components/schemas/Bundle"
    );
    assert_eq!(
        schema_of("/metadata", "get", "200"),
        "#/components/schemas/CapabilityStatement"
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let public = path == "/metadata" || path == "/openapi.json";
            assert_eq!(
                op["security"][0]["bearer"].is_array(),
                !public,
                "{method} {path}"
            );
            let mut errors = vec!["406", "429"];
            if !public {
                errors.extend(["401", "403"]);
            }
            for status in errors {
                assert_eq!(
                    schema_of(path, method, status),
                    "#/components/schemas/OperationOutcome",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

/// Path template → methods.
type Routes = BTreeMap<String, BTreeSet<String>>;

/// The methods of the document's route matching a concrete path, static segments first (as
/// the router matches); none when no route matches.
fn documented_methods(doc: &Value, path: &str) -> BTreeSet<String> {
    let routes: Routes = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = item.as_object().expect("item").keys();
            (p.clone(), methods.map(|m| m.to_uppercase()).collect())
        })
        .collect();
    let segments: Vec<&str> = path.split('/').collect();
    let fits = |t: &&String| {
        let ts: Vec<&str> = t.split('/').collect();
        ts.len() == segments.len()
            && ts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || t.starts_with('{'))
    };
    let statics = |t: &&String| {
        t.split('/')
            .map(|s| !s.starts_with('{'))
            .collect::<Vec<_>>()
    };
    let best = routes.keys().filter(fits).max_by_key(statics);
    best.map(|t| routes[t].clone()).unwrap_or_default()
}

/// Every path the FHIR router answers, with the methods it serves, is in the document, and
/// every route of the document is served: the router itself (no database needed) is probed with
/// `OPTIONS` (405 and `Allow` where a route matches, 404 elsewhere) on the document's paths and
/// on FHIR's URL shapes over the declared types and others.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes() {
    let mut config = caduceus_api::testing::test_config();
    config.redis_url = None;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(&config.database_url)
        .expect("lazy pool");
    let state = caduceus_api::state::AppState::new(config, pool).expect("state");
    let router = caduceus_api::fhir::router(&state).with_state(state);
    let doc = doc();
    let others = "Observation Encounter Organization Location PractitionerRole Medication Binary";
    let types = RESOURCES
        .iter()
        .map(|c| c.type_name)
        .chain(others.split(' '));
    let declared = RESOURCES
        .iter()
        .flat_map(|c| c.operations.iter().map(|o| o.name));
    let ops: BTreeSet<&str> = declared
        .chain("everything validate meta match document".split(' '))
        .collect();
    let mut probes: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|p| p.replace("{id}", "x"))
        .collect();
    probes.extend(["/", "/x", "/_history", "/metadata/x", "/openapi.json/x"].map(String::from));
    for t in types {
        for shape in [
            "",
            "/x",
            "/_search",
            "/_history",
            "/x/_history",
            "/x/_history/1",
            "/x/x",
        ] {
            probes.insert(format!("/{t}{shape}"));
        }
        for op in &ops {
            probes.extend([
                format!("/{t}/x/${op}"),
                format!("/{t}/${op}"),
                format!("/${op}"),
            ]);
        }
    }
    assert!(probes.len() > 150, "{}", probes.len());
    for path in probes {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri(&path)
            .body(Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let served: BTreeSet<String> = match resp.status() {
            StatusCode::NOT_FOUND => BTreeSet::new(),
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok());
                let allow = allow.expect("Allow");
                let methods = allow.split(',').map(|m| m.trim().to_string());
                methods.filter(|m| m != "HEAD").collect()
            }
            other => panic!("OPTIONS {path}: {other}"),
        };
        assert_eq!(served, documented_methods(&doc, &path), "{path}");
    }
}
