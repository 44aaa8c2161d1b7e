//! The OpenAPI 3.1 document of the FHIR interface, served (public, like `metadata`) at
//! `GET /fhir/R4/openapi.json`. It is generated from the declarations that route the requests
//! and parse the searches ([`super::RESOURCES`]: interactions, search parameters with their
//! types and meaning, sorts, operations; [`super::search::RESULT_PARAMS`]), like the
//! CapabilityStatement, so it cannot drift from what is served. Each resource type has a minimal
//! schema (`resourceType`, `id`, `meta`) pointing to the HL7 R4 JSON schema for the rest; every
//! error is an `OperationOutcome`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::external_docs::ExternalDocsBuilder;
use utoipa::openapi::path::{
    Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, KnownFormat, SchemaFormat};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    Components, ComponentsBuilder, Content, ContentBuilder, ExternalDocs, Header, HeaderBuilder,
    HttpMethod, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder, PathItem, Paths, Ref, RefOr,
    Required, ResponseBuilder, Schema, SecurityRequirement, ServerBuilder, Type,
};

use super::capability::{
    Interaction, Operation as FhirOperation, ParamType, ResourceCapability, SearchParam,
};
use super::search::RESULT_PARAMS;
use super::wire::FHIR_JSON;
use crate::pagination::{DEFAULT_LIMIT, MAX_LIMIT};

/// The HL7 R4 JSON schema, which defines every resource in full.
pub const HL7_SCHEMA: &str = "https://hl7.org/fhir/R4/fhir.schema.json";
/// The FHIR RESTful API.
const REST_DOCS: &str = "https://hl7.org/fhir/R4/http.html";
/// The bearer scheme's name (the `/api/v1` document's).
const BEARER: &str = "bearer";
/// Tag of the routes that describe the server.
const SERVER_TAG: &str = "server";
/// A FHIR logical id.
const ID_PATTERN: &str = r"^[A-Za-z0-9\-\.]{1,64}$";
/// What [`super::search::DateParam::parse`] accepts.
const DATE_PATTERN: &str = r"^(eq|ge|le|gt|lt)?[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?$";

/// The document as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        build(super::RESOURCES)
            .to_json()
            .unwrap_or_else(|_| "{}".into())
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// What a route is, for the errors it answers ([`ERRORS`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Public,
    Search,
    Read,
    /// A read of a type that deletes (a deleted resource is `410`).
    ReadGone,
    Create,
    Update,
    Delete,
    Op,
}

use Kind::*;

const ALL: &[Kind] = &[Public, Search, Read, ReadGone, Create, Update, Delete, Op];
const PROTECTED: &[Kind] = &[Search, Read, ReadGone, Create, Update, Delete, Op];
const INSTANCE: &[Kind] = &[Read, ReadGone, Update, Delete, Op];
const WRITES: &[Kind] = &[Create, Update];

/// Every error status (an `OperationOutcome`), the routes that answer it, and why.
const ERRORS: &[(&str, &[Kind], &str)] = &[
    ("400", &[Search], "a search parameter is unknown (unless `Prefer: handling=lenient`), unsupported, repeated or not valid"),
    ("400", &[Op], "a parameter was given (unless `Prefer: handling=lenient`)"),
    ("400", WRITES, "the body is not JSON"),
    ("401", PROTECTED, "missing, invalid or expired bearer token"),
    ("403", PROTECTED, "the caller's role or care-team scope does not allow it"),
    ("404", INSTANCE, "no such resource, or one the caller may not know exists"),
    ("406", ALL, "a format other than JSON was asked for (`Accept`, `_format`)"),
    ("409", WRITES, "refused by a rule of the domain (duplicate, double booking, interaction, status change)"),
    ("410", &[ReadGone], "deleted (to callers who could read it while it existed)"),
    ("412", &[Update], "`If-Match` names another version"),
    ("413", WRITES, "the body is too large"),
    ("415", WRITES, "the body is not application/fhir+json or application/json"),
    ("422", WRITES, "the resource does not fit the FHIR model or our rules (`expression` names the element)"),
    ("429", ALL, "rate-limited (`Retry-After` says when to retry)"),
];

/// The document of `resources`, paths relative to the server `/fhir/R4`.
pub fn build(resources: &[ResourceCapability]) -> OpenApi {
    let mut routes: BTreeMap<String, Vec<(HttpMethod, Operation)>> = BTreeMap::new();
    let capabilities = ResponseBuilder::new()
        .description("the CapabilityStatement")
        .content(FHIR_JSON, content("CapabilityStatement"));
    let this = ResponseBuilder::new()
        .description("this document")
        .content("application/json", ContentBuilder::new().build());
    let metadata = (
        "The CapabilityStatement",
        capabilities,
        vec![format_param()],
    );
    let openapi = ("This OpenAPI document", this, Vec::new());
    for (path, id, (summary, ok, params)) in [
        ("/metadata", "capabilities", metadata),
        ("/openapi.json", "openapi", openapi),
    ] {
        let op = operation(SERVER_TAG, id, summary, Public, ("200", ok), params);
        routes.insert(path.into(), vec![(HttpMethod::Get, op.build())]);
    }
    for cap in resources {
        for (path, method, op) in resource_routes(cap) {
            routes.entry(path).or_default().push((method, op));
        }
    }
    let mut paths = Paths::new();
    for (path, ops) in routes {
        let item = ops
            .into_iter()
            .map(|(m, o)| PathItem::new(m, o))
            .reduce(|mut a, b| {
                a.merge_operations(b);
                a
            });
        paths.paths.extend(item.map(|item| (path, item)));
    }
    let server_tag = TagBuilder::new()
        .name(SERVER_TAG)
        .description(Some("The server's own description"));
    let tags = std::iter::once(server_tag.build()).chain(resources.iter().map(|cap| {
        let page = format!(
            "https://hl7.org/fhir/R4/{}.html",
            cap.type_name.to_lowercase()
        );
        TagBuilder::new()
            .name(cap.type_name)
            .description(Some(cap.doc))
            .external_docs(Some(docs(&page, &format!("{} in FHIR R4", cap.type_name))))
            .build()
    }));
    let description = format!(
        "HL7 FHIR R4 (4.0.1) over the same data, accounts, access decisions and audit trail as \
         /api/v1. Generated, like the CapabilityStatement (GET {base}/metadata), from the \
         declarations that route the requests and parse the searches. Responses are \
         application/fhir+json (`_format=json` is accepted, XML is 406); request bodies \
         application/fhir+json or application/json. Every error is an OperationOutcome; a method \
         not listed for a path is 405. Resources are sketched here (resourceType, id, meta) and \
         defined in full by the HL7 R4 JSON schema ({HL7_SCHEMA}). Bearer access tokens come \
         from POST /api/v1/auth/login.",
        base = super::BASE
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Caduceus FHIR R4 API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(description))
                .build(),
        )
        .servers(Some([ServerBuilder::new()
            .url(super::BASE)
            .description(Some("the FHIR base URL"))
            .build()]))
        .external_docs(Some(docs(REST_DOCS, "The FHIR R4 RESTful API")))
        .paths(paths)
        .components(Some(components(resources)))
        .tags(Some(tags.collect::<Vec<_>>()))
        .build()
}

fn docs(url: &str, description: &str) -> ExternalDocs {
    ExternalDocsBuilder::new()
        .url(url)
        .description(Some(description))
        .build()
}

/// JSON Schema keywords utoipa's `Object` has no field for (`const`, `externalDocs`) and
/// `x-` extensions: its extensions are serialised as they are, beside the other keywords.
fn keywords<const N: usize>(pairs: [(&str, Value); N]) -> Option<Extensions> {
    Some(pairs.into_iter().collect())
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
}

fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

fn uri() -> ObjectBuilder {
    string().format(Some(SchemaFormat::Custom("uri".into())))
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// `application/fhir+json` content: the component schema `name`.
fn content(name: &str) -> Content {
    ContentBuilder::new().schema(Some(schema_ref(name))).build()
}

fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(string()))
        .description(Some(description))
        .build()
}

fn param(name: &str, place: ParameterIn, schema: ObjectBuilder, description: &str) -> Parameter {
    // `required` after `parameter_in`: the builder makes a path parameter required (only)
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(Required::False)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn format_param() -> Parameter {
    let formats = string().enum_values(Some(["json", "application/json", FHIR_JSON]));
    param(
        "_format",
        ParameterIn::Query,
        formats,
        "JSON only (else 406)",
    )
}

fn lenient_param() -> Parameter {
    let prefer = string().examples(["handling=lenient"]);
    let why = "`handling=lenient`: unknown parameters are ignored instead of refused (400)";
    param("Prefer", ParameterIn::Header, prefer, why)
}

fn id_param() -> Parameter {
    let id = string().pattern(Some(ID_PATTERN));
    param("id", ParameterIn::Path, id, "the logical id")
}

/// A query parameter of the type's own search, typed by its declaration.
fn search_param(p: &SearchParam) -> Parameter {
    let (name, kind, doc) = (p.name, p.kind, p.doc);
    let (schema, form) = match kind {
        ParamType::Token => (string(), "`[system|]code`"),
        ParamType::String => (string(), "text"),
        ParamType::Date => (string().pattern(Some(DATE_PATTERN)), "[prefix]date[time]"),
        ParamType::Reference => (string(), "`Type/<id>` or the id"),
    };
    let description = format!("{doc} (a {} parameter: {form})", kind.code());
    let mut p = param(name, ParameterIn::Query, schema, &description);
    p.extensions = keywords([("x-fhir-search-type", json!(kind.code()))]);
    p
}

/// A result parameter every search has (`None` for `_sort` where nothing sorts).
fn result_param(name: &str, cap: &ResourceCapability) -> Option<Parameter> {
    let sorts = cap
        .sorts
        .iter()
        .flat_map(|s| [s.to_string(), format!("-{s}")]);
    let (schema, description) = match name {
        "_count" => (
            integer().maximum(Some(MAX_LIMIT)),
            format!("matches per page (at most {MAX_LIMIT}; default {DEFAULT_LIMIT})"),
        ),
        "_summary" => (
            string().enum_values(Some(["count", "false"])),
            "`count`: the total only, no entries".into(),
        ),
        "_sort" if cap.sorts.is_empty() => return None,
        "_sort" => (
            string().enum_values(Some(sorts)),
            format!("the order (`-` for descending): {}", cap.sorts.join(", ")),
        ),
        "_format" => return Some(format_param()),
        "_cursor" => (string(), "the opaque paging token of a `next` link".into()),
        _ => (string(), "a result parameter".into()),
    };
    Some(param(name, ParameterIn::Query, schema, &description))
}

/// An operation: its success response, the [`ERRORS`] of `kind`, the bearer unless public.
fn operation(
    tag: &str,
    id: &str,
    summary: &str,
    kind: Kind,
    (status, ok): (&str, ResponseBuilder),
    parameters: Vec<Parameter>,
) -> OperationBuilder {
    let mut op = OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(id))
        .summary(Some(summary))
        .parameters(Some(parameters))
        .response(status, ok);
    for (status, _, description) in ERRORS.iter().filter(|(_, kinds, _)| kinds.contains(&kind)) {
        let mut r = ResponseBuilder::new()
            .description(*description)
            .content(FHIR_JSON, content("OperationOutcome"));
        match *status {
            "401" => r = r.header("WWW-Authenticate", string_header("`Bearer`")),
            "429" => r = r.header("Retry-After", string_header("seconds to wait")),
            _ => {}
        }
        op = op.response(*status, r);
    }
    if kind != Public {
        op = op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
    }
    op
}

/// A resource answer: the resource, its `ETag` and `Last-Modified`.
fn resource_response(description: &str, type_name: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(FHIR_JSON, content(type_name))
        .header("ETag", string_header("`W/\"<meta.versionId>\"`"))
        .header(
            "Last-Modified",
            string_header("`meta.lastUpdated` as an HTTP date"),
        )
}

/// The type a FHIR operation answers (Patient-everything: a Bundle; otherwise Parameters).
fn operation_result(op: &FhirOperation) -> &'static str {
    match op.name {
        "everything" => "Bundle",
        _ => "Parameters",
    }
}

/// The routes of one resource type, one per declared interaction and operation:
/// `GET`/`POST /T` (search, create), `GET`/`PUT`/`DELETE /T/{id}` (read, update, delete),
/// `GET /T/{id}/$op`.
fn resource_routes(cap: &ResourceCapability) -> Vec<(String, HttpMethod, Operation)> {
    use HttpMethod::{Delete as DELETE, Get as GET, Post as POST, Put as PUT};
    let t = cap.type_name;
    let (all, one) = (format!("/{t}"), format!("/{t}/{{id}}"));
    let body = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(FHIR_JSON, content(t))
        .content("application/json", content(t))
        .build();
    let mut out = Vec::new();
    for interaction in cap.interactions {
        let verb = match interaction {
            Interaction::SearchType => "search",
            other => other.code(),
        };
        let (id, summary) = (format!("{verb}{t}"), format!("{verb} {t}"));
        let op = |kind, ok, params| operation(t, &id, &summary, kind, ok, params);
        let (ids, format) = (vec![id_param(), format_param()], format_param());
        let (path, method, op) = match interaction {
            Interaction::SearchType => {
                let mut params: Vec<Parameter> = cap.search.iter().map(search_param).collect();
                params.extend(RESULT_PARAMS.iter().filter_map(|n| result_param(n, cap)));
                params.push(lenient_param());
                let ok = ResponseBuilder::new()
                    .description(format!(
                        "a searchset Bundle of {t} (`total`, `self`, `next`)"
                    ))
                    .content(FHIR_JSON, content("Bundle"));
                (&all, GET, op(Search, ("200", ok), params))
            }
            Interaction::Create => {
                let ok = resource_response(&format!("the created {t}"), t)
                    .header("Location", string_header("the URL of the created version"));
                let create = op(Create, ("201", ok), vec![format]);
                (&all, POST, create.request_body(Some(body.clone())))
            }
            Interaction::Read => {
                let deletes = cap.interactions.contains(&Interaction::Delete);
                let ok = resource_response(&format!("the {t}"), t);
                (
                    &one,
                    GET,
                    op(if deletes { ReadGone } else { Read }, ("200", ok), ids),
                )
            }
            Interaction::Update => {
                let ok = resource_response(&format!("the updated {t}"), t);
                let why = "the version the change is based on (`W/\"<meta.versionId>\"`; else 412)";
                let params = [
                    ids,
                    vec![param("If-Match", ParameterIn::Header, string(), why)],
                ];
                let update = op(Update, ("200", ok), params.concat());
                (&one, PUT, update.request_body(Some(body.clone())))
            }
            Interaction::Delete => {
                let ok = ResponseBuilder::new().description("deleted");
                (&one, DELETE, op(Delete, ("204", ok), vec![id_param()]))
            }
        };
        out.push((path.clone(), method, op.build()));
    }
    for o in cap.operations {
        let result = operation_result(o);
        let ok = ResponseBuilder::new()
            .description(format!("the result ({result})"))
            .content(FHIR_JSON, content(result));
        let path = format!("{one}/${}", o.name);
        let params = vec![id_param(), format_param(), lenient_param()];
        let mut op = operation(t, &format!("{}{t}", o.name), &path, Op, ("200", ok), params)
            .description(Some(o.doc))
            .build();
        op.external_docs = Some(docs(o.definition, "the OperationDefinition"));
        out.push((path, GET, op));
    }
    out
}

/// A minimal schema of resource type `name`: `resourceType` (the constant `name`), `id`,
/// `meta`; every other element is allowed, and defined by the HL7 R4 JSON schema.
fn resource_schema(name: &str, description: &str) -> ObjectBuilder {
    let instant = string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    let meta = object()
        .property("versionId", string())
        .property("lastUpdated", instant);
    let hl7 = docs(
        &format!("{HL7_SCHEMA}#/definitions/{name}"),
        &format!("{name} in the HL7 FHIR R4 JSON schema"),
    );
    object()
        .title(Some(name))
        .description(Some(description))
        .property(
            "resourceType",
            string().extensions(keywords([("const", json!(name))])),
        )
        .required("resourceType")
        .property("id", string().pattern(Some(ID_PATTERN)))
        .property("meta", meta)
        .extensions(keywords([(
            "externalDocs",
            serde_json::to_value(hl7).unwrap_or(Value::Null),
        )]))
}

fn components(resources: &[ResourceCapability]) -> Components {
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .build();
    let mut c = ComponentsBuilder::new().security_scheme(BEARER, SecurityScheme::Http(bearer));
    let mut any = AnyOfBuilder::new();
    for cap in resources {
        c = c.schema(cap.type_name, resource_schema(cap.type_name, cap.doc));
        any = any.item(schema_ref(cap.type_name));
    }
    let link = object()
        .property("relation", string().enum_values(Some(["self", "next"])))
        .property("url", uri());
    let mode = object().property("mode", string().enum_values(Some(["match", "include"])));
    let entry = object()
        .property("fullUrl", uri())
        .property("resource", any)
        .property("search", mode);
    let bundle = resource_schema(
        "Bundle",
        "A searchset Bundle: `total`, `self` and `next` links, an entry per resource",
    )
    .property("type", string().enum_values(Some(["searchset"])))
    .required("type")
    .property("total", integer())
    .property("link", ArrayBuilder::new().items(link))
    .property("entry", ArrayBuilder::new().items(entry));
    let issue = object()
        .property(
            "severity",
            string().enum_values(Some(["fatal", "error", "warning", "information"])),
        )
        .required("severity")
        .property("code", string())
        .required("code")
        .property(
            "diagnostics",
            string().description(Some("what went wrong and the request id (never PHI)")),
        )
        .property("expression", ArrayBuilder::new().items(string()));
    let outcome = resource_schema("OperationOutcome", "An error: one issue per problem")
        .property("issue", ArrayBuilder::new().items(issue).min_items(Some(1)))
        .required("issue");
    c = c
        .schema("Bundle", bundle)
        .schema("OperationOutcome", outcome)
        .schema(
            "CapabilityStatement",
            resource_schema("CapabilityStatement", "What the server serves"),
        );
    let served: BTreeSet<&str> = resources
        .iter()
        .map(|r| r.type_name)
        .chain(["Bundle"])
        .collect();
    let results: BTreeSet<&str> = resources
        .iter()
        .flat_map(|r| r.operations.iter().map(operation_result))
        .collect();
    for t in results.difference(&served) {
        c = c.schema(*t, resource_schema(t, "The result of an operation"));
    }
    c.build()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::super::{capability::Interaction, RESOURCES};

    fn doc() -> Value {
        serde_json::from_str(super::document()).expect("json")
    }

    type Routes = BTreeMap<String, BTreeSet<String>>;

    /// The routes the declarations call for (path → methods), derived here on its own.
    fn declared() -> Routes {
        let mut want = Routes::new();
        let mut add = |path: String, method: &str| {
            want.entry(path).or_default().insert(method.to_string());
        };
        add("/metadata".into(), "GET");
        add("/openapi.json".into(), "GET");
        for cap in RESOURCES {
            let t = cap.type_name;
            for i in cap.interactions {
                match i {
                    Interaction::SearchType => add(format!("/{t}"), "GET"),
                    Interaction::Create => add(format!("/{t}"), "POST"),
                    Interaction::Read => add(format!("/{t}/{{id}}"), "GET"),
                    Interaction::Update => add(format!("/{t}/{{id}}"), "PUT"),
                    Interaction::Delete => add(format!("/{t}/{{id}}"), "DELETE"),
                }
            }
            for o in cap.operations {
                add(format!("/{t}/{{id}}/${}", o.name), "GET");
            }
        }
        want
    }

    /// The document's routes (path → methods).
    fn documented(doc: &Value) -> Routes {
        let paths = doc["paths"].as_object().expect("paths");
        let methods = |item: &Value| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(|(m, _)| m.to_uppercase())
                .collect()
        };
        paths
            .iter()
            .map(|(p, item)| (p.clone(), methods(item)))
            .collect()
    }

    /// The document has exactly the routes the declarations call for, with their methods (that
    /// the router serves exactly these is `tests/fhir_openapi.rs`, which probes it).
    #[test]
    fn the_paths_are_the_declarations() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], super::super::BASE);
        let routes = documented(&doc);
        assert_eq!(routes, declared());
        let methods = |p: &str| {
            routes
                .get(p)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(methods("/Patient/{id}/$everything"), ["GET"]);
        assert_eq!(methods("/Patient"), ["GET", "POST"]);
        assert_eq!(methods("/Patient/{id}"), ["DELETE", "GET", "PUT"]);
        assert_eq!(methods("/AuditEvent/{id}"), ["GET"]);
        assert_eq!(methods("/Appointment/{id}"), ["GET", "PUT"]);
        assert!(methods("/Observation").is_empty());
    }
}
