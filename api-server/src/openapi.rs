//! OpenAPI 3.1 document generated from the handlers' `#[utoipa::path]` annotations, served at
//! `/api/v1/openapi.json`, and a self-contained docs page at `/api/v1/docs` (inline HTML+JS that
//! renders the document; no external assets, nothing downloaded at build or run time).
//!
//! A new resource module adds its handlers to `paths(...)` and its types to `schemas(...)`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response as DocResponse};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Declares what every route can answer besides what its handler documents, as the server
/// really answers it: every error is `application/problem+json`; a protected route answers 401
/// without a valid token; a route with a body answers 400 (not JSON), 413 (too large), 415
/// (not `application/json`) and 422 (invalid fields); a route with query parameters answers
/// 422 naming the parameter; a list (a `cursor` query parameter) answers 400 naming `cursor` for
/// a cursor it did not issue to the caller for the same filters; a route with a path parameter
/// answers 400 when it does not parse; every `/api/v1` route answers 429 when rate-limited.
struct ProblemResponses;

const PROBLEM_JSON: &str = "application/problem+json";

fn problem(description: &str) -> RefOr<DocResponse> {
    let mut r = DocResponse::new(description);
    r.content.insert(
        PROBLEM_JSON.into(),
        RefOr::T(Content::new(Some(RefOr::Ref(Ref::from_schema_name(
            "Problem",
        ))))),
    );
    RefOr::T(r)
}

/// The operations of a path item that the API serves (GET, PUT, POST, DELETE, PATCH).
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in operations(item) {
                let responses = &mut op.responses.responses;
                for (status, response) in responses.iter_mut() {
                    if !(status.starts_with('4') || status.starts_with('5')) {
                        continue;
                    }
                    if let RefOr::T(r) = response {
                        if let Some(content) = r.content.shift_remove("application/json") {
                            r.content.insert(PROBLEM_JSON.into(), content);
                        }
                    }
                }
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem(description));
                };
                let params = op.parameters.iter().flatten().filter_map(|p| match p {
                    RefOr::T(p) => Some((p.parameter_in.clone(), p.name == "cursor")),
                    RefOr::Ref(_) => None,
                });
                let (mut query, mut path_param, mut cursor) = (false, false, false);
                for (location, is_cursor) in params {
                    query |= matches!(location, ParameterIn::Query);
                    path_param |= matches!(location, ParameterIn::Path);
                    cursor |= is_cursor && matches!(location, ParameterIn::Query);
                }
                if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add("401", "missing, invalid or expired bearer token");
                    // a session restricted to MFA enrolment (`mfa-enrollment-required`), on
                    // every protected route but enrolment, /me and logout
                    add("403", "not permitted (`type` …/mfa-enrollment-required: the session may only enrol in MFA)");
                }
                if op.request_body.is_some() {
                    add("400", "the body is not well-formed JSON");
                    add("413", "the body is too large");
                    add("415", "the body is not application/json");
                    add("422", "a field is not valid (`errors` names it)");
                }
                if query {
                    add("422", "a query parameter is not valid (`errors` names it)");
                }
                if cursor {
                    add("400", "`cursor` is not a cursor of this list for this caller and these filters, or has expired (`errors` names it)");
                }
                if path_param {
                    add("400", "a path parameter does not parse");
                }
                if path.starts_with("/api/v1/") {
                    add("429", "rate-limited (`Retry-After` says when to retry)");
                }
            }
        }
    }
}

/// Declares the NUL rule of [`crate::error::ApiJson`] and [`crate::error::ApiQuery`] (a NUL
/// character in any string of a body or a query parameter is a 422): every string of a schema
/// gets a pattern without NUL. A string without a pattern gets `^[^\x00]*$`; the not-blank
/// pattern of the text fields (a class of one character) becomes the same class anchored between
/// NUL-free runs; the other patterns are anchored ASCII or e-mail classes that exclude NUL
/// already.
struct NoNul;

const NUL_FREE: &str = r"^[^\x00]*$";

fn no_nul(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else { return };
    match schema {
        Schema::Object(o) => {
            let string = match &o.schema_type {
                SchemaType::Type(Type::String) => true,
                SchemaType::Array(types) => types.contains(&Type::String),
                _ => false,
            };
            if string {
                o.pattern = match o.pattern.take() {
                    None => Some(NUL_FREE.to_string()),
                    Some(p) if p.starts_with("[^") && p.ends_with(']') && !p.contains("\\x00") => {
                        Some(format!(r"^[^\x00]*[^\x00{}[^\x00]*$", &p[2..]))
                    }
                    Some(p) => Some(p),
                };
            }
            for property in o.properties.values_mut() {
                no_nul(property);
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                no_nul(items);
            }
        }
        Schema::OneOf(x) => x.items.iter_mut().for_each(no_nul),
        Schema::AllOf(x) => x.items.iter_mut().for_each(no_nul),
        Schema::AnyOf(x) => x.items.iter_mut().for_each(no_nul),
        _ => {}
    }
}

impl Modify for NoNul {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.schemas.values_mut().for_each(no_nul);
        }
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                for p in op.parameters.iter_mut().flatten() {
                    let RefOr::T(p) = p else { continue };
                    if matches!(p.parameter_in, ParameterIn::Query) {
                        if let Some(schema) = p.schema.as_mut() {
                            no_nul(schema);
                        }
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Caduceus clinical API", description = "Patients, appointments, prescriptions and audit trail. Errors are RFC 9457 application/problem+json. The same data is served as HL7 FHIR R4 (4.0.1) at /fhir/R4 (application/fhir+json, errors as OperationOutcome), described by its CapabilityStatement at GET /fhir/R4/metadata and by its own OpenAPI 3.1 document at GET /fhir/R4/openapi.json (both public, generated from the tables that route the FHIR requests) rather than in this document: see docs/fhir.md."),
    paths(
        crate::auth::routes::login, crate::auth::routes::refresh, crate::auth::routes::logout,
        crate::auth::routes::me, crate::auth::routes::register,
        crate::auth::routes::mfa::login_mfa, crate::auth::routes::mfa::enroll,
        crate::auth::routes::mfa::confirm, crate::auth::routes::mfa::disable,
        crate::users::create, crate::users::list, crate::users::read, crate::users::update,
        crate::users::reset_mfa,
        crate::patients::create, crate::patients::list, crate::patients::read, crate::patients::update,
        crate::patients::remove, crate::patients::add_care_team,
        crate::appointments::create, crate::appointments::list, crate::appointments::read,
        crate::appointments::update, crate::appointments::cancel,
        crate::prescriptions::create, crate::prescriptions::list, crate::prescriptions::read,
        crate::prescriptions::discontinue,
        crate::audit::routes::list, crate::audit::routes::verify,
        crate::health::live, crate::health::ready,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError, crate::rbac::Role)),
    modifiers(&BearerAuth, &ProblemResponses, &NoNul),
    tags(
        (name = "auth", description = "Login, token refresh, logout"),
        (name = "users", description = "Accounts (admin)"),
        (name = "patients", description = "Patient records (PHI, encrypted at rest, audited)"),
        (name = "appointments", description = "Scheduling; overlapping bookings per practitioner refused (409); reason encrypted"),
        (name = "prescriptions", description = "Physicians prescribe; interaction check against active prescriptions and allergies"),
        (name = "audit", description = "Hash-chained audit trail (admin)"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

/// The generated document as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        doc.to_json().unwrap_or_else(|_| "{}".into())
    })
}

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Caduceus API</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2rem}
.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.delete{color:#c22}
code,pre{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px}
pre{padding:.5rem;overflow:auto;font-size:.85em}
details summary{cursor:pointer}
</style></head>
<body><h1>Caduceus clinical API</h1>
<p>Rendered from <a href="openapi.json">openapi.json</a> (OpenAPI 3.1). Errors use
<code>application/problem+json</code> (RFC 9457). Authenticate with <code>Authorization: Bearer &lt;access_token&gt;</code>.</p>
<p>HL7 FHIR R4 (4.0.1) over the same data: <code>/fhir/R4</code>, described by its
<a href="../../fhir/R4/metadata">CapabilityStatement</a> (<code>GET /fhir/R4/metadata</code>) and its
<a href="../../fhir/R4/openapi.json">OpenAPI document</a> (<code>GET /fhir/R4/openapi.json</code>).</p>
<div id="out">Loading…</div>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
fetch('openapi.json').then(r=>r.json()).then(doc=>{
  const byTag={};
  for(const [path,item] of Object.entries(doc.paths||{})){
    for(const [method,op] of Object.entries(item)){
      const tag=(op.tags&&op.tags[0])||'other';
      (byTag[tag]=byTag[tag]||[]).push({path,method,op});
    }
  }
  let h='';
  for(const t of (doc.tags||[]).map(t=>t.name).concat(Object.keys(byTag)).filter((v,i,a)=>a.indexOf(v)===i)){
    if(!byTag[t])continue;
    h+='<h2>'+esc(t)+'</h2>';
    for(const {path,method,op} of byTag[t]){
      h+='<div class="op"><span class="m '+esc(method)+'">'+esc(method)+'</span> <code>'+esc(path)+'</code> '+esc(op.summary||op.description||'');
      const resp=Object.entries(op.responses||{}).map(([c,r])=>c+(r.description?' '+r.description:'')).join('; ');
      h+='<details><summary>details</summary>';
      if(op.parameters)h+='<p>Parameters: '+op.parameters.map(p=>'<code>'+esc(p.name)+'</code> ('+esc(p.in)+')').join(', ')+'</p>';
      if(op.requestBody)h+='<p>Request body:</p><pre>'+esc(JSON.stringify(op.requestBody.content,null,1))+'</pre>';
      h+='<p>Responses: '+esc(resp)+'</p></details></div>';
    }
  }
  h+='<h2>Schemas</h2><pre>'+esc(JSON.stringify((doc.components||{}).schemas||{},null,1))+'</pre>';
  document.getElementById('out').innerHTML=h;
}).catch(e=>{document.getElementById('out').textContent='Cannot load openapi.json: '+e});
</script></body></html>
"#;

async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                out.push((path.clone(), method.clone(), op));
            }
        }
        out
    }

    #[test]
    fn the_document_declares_the_errors_the_server_sends() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let ops = operations(&doc);
        assert!(ops.len() > 20, "{}", ops.len());
        for (path, method, op) in ops {
            let responses = op["responses"].as_object().unwrap();
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = r["content"].as_object().unwrap();
                    assert!(
                        content.keys().all(|k| k == PROBLEM_JSON),
                        "{method} {path} {status}: {content:?}"
                    );
                }
            }
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            let query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if query {
                assert!(responses.contains_key("422"), "{method} {path}: no 422");
            }
            if path.starts_with("/api/v1/") {
                assert!(responses.contains_key("429"), "{method} {path}: no 429");
            }
        }
    }

    /// Bounds the handlers enforce (`check_text`, range checks) are in the request schemas.
    #[test]
    fn enforced_field_bounds_are_in_the_schemas() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (schema, field, key, bound) in [
            ("NewPatient", "given_name", "maxLength", 100),
            ("NewPatient", "family_name", "minLength", 1),
            ("PatientPatch", "family_name", "maxLength", 100),
            ("NewPrescription", "dose", "maxLength", 100),
            ("NewPrescription", "frequency", "maxLength", 100),
            ("NewPrescription", "duration_days", "minimum", 1),
            ("NewPrescription", "duration_days", "maximum", 365),
            ("NewPrescription", "override_reason", "maxLength", 500),
            ("NewAppointment", "reason", "maxLength", 1000),
            ("AppointmentPatch", "reason", "maxLength", 1000),
            ("NewPatient", "mrn", "maxLength", 100),
            ("PatientPatch", "mrn", "maxLength", 100),
            ("NewPatient", "phone", "maxLength", 32),
            ("NewPatient", "email", "maxLength", 254),
            ("NewPatient", "address", "maxLength", 500),
            ("NewPatient", "allergies", "maxItems", 100),
            ("PatientPatch", "conditions", "maxItems", 100),
            ("ListEntry", "", "maxLength", 200),
            ("ListEntry", "", "minLength", 1),
            ("EmergencyContact", "name", "maxLength", 200),
            ("EmergencyContact", "phone", "maxLength", 32),
            ("NewPrescription", "notes", "maxLength", 2000),
            ("Medication", "name", "maxLength", 200),
            ("CreateUser", "password", "minLength", 12),
            ("CreateUser", "password", "maxLength", 256),
            ("UpdateUser", "password", "minLength", 12),
            ("CreateUser", "display_name", "maxLength", 200),
            ("CreateUser", "email", "maxLength", 254),
            ("RegisterRequest", "email", "maxLength", 254),
            ("LoginRequest", "email", "maxLength", 254),
            ("LoginRequest", "password", "maxLength", 256),
            ("RefreshRequest", "refresh_token", "maxLength", 200),
        ] {
            let property = if field.is_empty() {
                &schemas[schema]
            } else {
                &schemas[schema]["properties"][field]
            };
            assert_eq!(property[key], bound, "{schema}.{field}.{key}: {property}");
        }
    }

    fn pattern(schemas: &serde_json::Value, schema: &str, field: &str) -> regex::Regex {
        let property = if field.is_empty() {
            &schemas[schema]
        } else {
            &schemas[schema]["properties"][field]
        };
        let p = property["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{schema}.{field}: no pattern: {property}"));
        regex::Regex::new(p).unwrap()
    }

    /// The patterns in the document accept and refuse what the validators do.
    #[test]
    fn patterns_match_the_validators() {
        use crate::error::FieldError;
        let text_ok = |t: &str| {
            let mut errs = Vec::new();
            crate::error::check_text(&mut errs, "t", t, 100);
            errs.is_empty()
        };
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let email = pattern(schemas, "CreateUser", "email");
        for e in [
            "a@b.c",
            "x.y+z@mail.example.org",
            "a@b..c",
            "a@b@c.d",
            "",
            "a@b",
            "@b.c",
            "a@.b",
            "a@b.",
            " a@b.c",
            "a@b.c ",
            "a b@c.d",
            "a\u{85}@b.c",
            "a\u{3000}@b.c",
            "é@ü.de",
        ] {
            assert_eq!(
                email.is_match(e),
                crate::users::check_email(e).is_ok(),
                "e-mail {e:?}"
            );
        }
        let name = pattern(schemas, "NewPatient", "given_name");
        for t in [
            "a", " a ", " ", "\t\n", "\u{a0}", "\u{2009}", "\u{feff}", "\u{1c}", "",
        ] {
            assert_eq!(name.is_match(t), text_ok(t), "text {t:?}");
        }
        let mrn = pattern(schemas, "NewPatient", "mrn");
        let phone = pattern(schemas, "NewPatient", "phone");
        let code = pattern(schemas, "Medication", "code");
        let patient = |mrn: &str, phone: &str| crate::patients::model::NewPatient {
            mrn: mrn.into(),
            given_name: "A".into(),
            family_name: "B".into(),
            birth_date: chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap(),
            sex: crate::patients::model::Sex::Unknown,
            phone: Some(phone.into()),
            email: None,
            address: None,
            allergies: Vec::new(),
            medications: Vec::new(),
            conditions: Vec::new(),
            emergency_contact: None,
        };
        let errs = |p: &crate::patients::model::NewPatient, field: &str| {
            p.check().iter().any(|e: &FieldError| e.field == field)
        };
        for m in [
            "A1",
            "a-1 2",
            " -1- ",
            "",
            " - ",
            "A_1",
            "A\t1",
            "ß",
            &"1".repeat(64),
            &"1".repeat(65),
            &format!("{}{}", "1".repeat(64), " ".repeat(36)),
            &format!("{}{}", "1".repeat(64), " ".repeat(37)),
        ] {
            let valid = mrn.is_match(m) && m.chars().count() <= 100;
            assert_eq!(valid, !errs(&patient(m, "1"), "mrn"), "mrn {m:?}");
        }
        for p in ["+1 555 0100", "(0)1.2-3", " ", "", "1a", "+"] {
            assert_eq!(
                phone.is_match(p),
                !errs(&patient("A1", p), "phone"),
                "phone {p:?}"
            );
        }
        for c in ["1191", "abc", "", " 1", "1 ", "1-2", &"1".repeat(33)] {
            assert_eq!(
                code.is_match(c),
                c.len() <= 32 && !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()),
                "code {c:?}"
            );
        }
    }

    /// A NUL anywhere in a body or query string is refused (`ApiJson`, `ApiQuery`): no string
    /// of the document admits one.
    #[test]
    fn no_string_admits_nul() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (schema, field, ok) in [
            ("RefreshRequest", "refresh_token", "abc"),
            ("LoginRequest", "password", "pw"),
            ("NewPrescription", "notes", ""),
            ("NewPatient", "given_name", " a "),
            ("NewPatient", "mrn", "A-1"),
            ("NewPatient", "email", "a@b.c"),
            ("ListEntry", "", "x"),
        ] {
            let p = pattern(schemas, schema, field);
            assert!(p.is_match(ok), "{schema}.{field} {ok:?}");
            assert!(!p.is_match(&format!("{ok}\0")), "{schema}.{field} NUL");
        }
        let given = pattern(schemas, "NewPatient", "given_name");
        assert!(!given.is_match("\0"));
        assert!(!given.is_match(" \t"));
        let params = doc["paths"]["/api/v1/patients"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let mrn = params.iter().find(|p| p["name"] == "mrn").unwrap();
        assert!(mrn["schema"]["pattern"].is_string(), "{mrn}");
    }

    #[test]
    fn statuses_enforced_per_route_are_declared() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let paths = &doc["paths"];
        for (path, method, status) in [
            ("/api/v1/users/{id}", "patch", "409"),
            ("/api/v1/users", "post", "409"),
            ("/api/v1/patients", "post", "409"),
            ("/api/v1/patients/{id}", "patch", "409"),
            ("/api/v1/auth/register", "post", "404"),
        ] {
            assert!(
                paths[path][method]["responses"].get(status).is_some(),
                "{method} {path}: no {status}"
            );
        }
    }

    #[test]
    fn the_page_size_bounds_are_in_the_schema() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let params = doc["paths"]["/api/v1/patients"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 100);
    }

    /// The document and the docs page name the FHIR interface's own description.
    #[test]
    fn the_document_and_page_point_to_the_fhir_interface() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        let description = doc["info"]["description"].as_str().expect("description");
        for route in ["metadata", "openapi.json"] {
            let path = format!("{}/{route}", crate::fhir::BASE);
            assert!(description.contains(&path), "{description}");
            assert!(DOCS_HTML.contains(&path), "{path}");
        }
    }

    /// Every list's `cursor` is an opaque base64url string of bounded length, and a refused one
    /// is a declared 400.
    #[test]
    fn cursors_are_opaque_bounded_strings() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let lists = [
            "/api/v1/patients",
            "/api/v1/appointments",
            "/api/v1/prescriptions",
            "/api/v1/users",
            "/api/v1/audit-events",
        ];
        for path in lists {
            let op = &doc["paths"][path]["get"];
            let params = op["parameters"].as_array().unwrap();
            let cursor = params.iter().find(|p| p["name"] == "cursor").unwrap();
            let schema = &cursor["schema"];
            assert!(
                schema["type"] == "string"
                    || schema["type"]
                        .as_array()
                        .is_some_and(|t| t.contains(&"string".into())),
                "{path}: {cursor}"
            );
            assert!(schema.get("format").is_none(), "{path}: {cursor}");
            assert_eq!(
                schema["maxLength"],
                crate::pagination::CURSOR_MAX_LEN,
                "{path}"
            );
            assert_eq!(schema["pattern"], "^[A-Za-z0-9_-]+$", "{path}");
            assert!(op["responses"].get("400").is_some(), "{path}: no 400");
        }
    }
}
