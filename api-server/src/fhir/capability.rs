//! What the FHIR endpoint supports, declared once per resource: the interactions its router
//! serves, its search parameters (accepted by [`super::search::Search::parse`]), what it sorts
//! by, its operations. `GET /metadata` is generated from the same declarations
//! ([`capability_statement`]), so it cannot drift from what is served.

use fhir_r4::r4::coded::Coded;
use fhir_r4::r4::resources::capability_statement::{
    CapabilityStatement, CapabilityStatementImplementation, CapabilityStatementRest,
    CapabilityStatementRestResource, CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceOperation, CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity, CapabilityStatementSoftware,
};
use fhir_r4::r4::types;
use serde::de::DeserializeOwned;

/// When the declarations below last changed (`CapabilityStatement.date`): update it with them.
const PUBLISHED: &str = "2026-12-07";

/// A FHIR interaction of a resource type (`TypeRestfulInteraction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Read,
    SearchType,
    Create,
    Update,
    Delete,
}

impl Interaction {
    /// The code (`read`, `search-type`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::SearchType => "search-type",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// The type of a search parameter (`SearchParamType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Token,
    String,
    Date,
    Reference,
}

impl ParamType {
    /// The code (`token`, `string`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::String => "string",
            Self::Date => "date",
            Self::Reference => "reference",
        }
    }
}

/// One search parameter of a resource type.
#[derive(Debug, Clone, Copy)]
pub struct SearchParam {
    pub name: &'static str,
    pub kind: ParamType,
    /// What it matches and how (stated in the CapabilityStatement).
    pub doc: &'static str,
}

/// An operation on a resource instance (e.g. `$everything`).
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub definition: &'static str,
    pub doc: &'static str,
}

/// Everything served for one resource type.
#[derive(Debug, Clone, Copy)]
pub struct ResourceCapability {
    pub type_name: &'static str,
    pub interactions: &'static [Interaction],
    pub search: &'static [SearchParam],
    /// Parameters `_sort` accepts (`-name` for descending).
    pub sorts: &'static [&'static str],
    pub operations: &'static [Operation],
    pub doc: &'static str,
}

/// A code of a FHIR value set from its wire form (an unknown code is kept as it is).
pub fn coded<E: DeserializeOwned>(code: &str) -> Coded<E> {
    serde_json::from_value(serde_json::Value::String(code.to_string()))
        .unwrap_or_else(|_| Coded::Unknown(code.to_string()))
}

fn markdown(text: &str) -> Option<types::Markdown> {
    Some(types::Markdown(text.to_string()))
}

fn rest_resource(cap: &ResourceCapability) -> CapabilityStatementRestResource {
    CapabilityStatementRestResource {
        r#type: coded(cap.type_name),
        profile: Some(types::Canonical(format!(
            "http://hl7.org/fhir/StructureDefinition/{}",
            cap.type_name
        ))),
        documentation: markdown(cap.doc),
        interaction: cap
            .interactions
            .iter()
            .map(|i| CapabilityStatementRestResourceInteraction {
                code: types::Code(i.code().to_string()),
                ..Default::default()
            })
            .collect(),
        versioning: cap
            .interactions
            .contains(&Interaction::Update)
            .then(|| coded("versioned-update")),
        read_history: Some(types::Boolean(false)),
        update_create: cap
            .interactions
            .contains(&Interaction::Update)
            .then_some(types::Boolean(false)),
        search_param: cap
            .search
            .iter()
            .map(|p| CapabilityStatementRestResourceSearchParam {
                name: types::String(p.name.to_string()),
                r#type: coded(p.kind.code()),
                documentation: markdown(p.doc),
                ..Default::default()
            })
            .collect(),
        operation: cap
            .operations
            .iter()
            .map(|o| CapabilityStatementRestResourceOperation {
                name: types::String(o.name.to_string()),
                definition: types::Canonical(o.definition.to_string()),
                documentation: markdown(o.doc),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The server's CapabilityStatement: R4 4.0.1, JSON, SMART-style bearer tokens, and exactly
/// the declared resources.
pub fn capability_statement(
    base: &str,
    resources: &[ResourceCapability],
) -> Result<CapabilityStatement, fhir_r4::r4::builder::BuilderError> {
    let version = env!("CARGO_PKG_VERSION");
    CapabilityStatement::builder()
        .url(types::Uri(format!("{base}/metadata")))
        .version(types::String(version.to_string()))
        .name(types::String("CaduceusFhirServer".into()))
        .title(types::String("Caduceus FHIR R4 server".into()))
        .status(coded("active"))
        .date(types::DateTime(PUBLISHED.to_string()))
        .publisher(types::String("Caduceus".into()))
        .kind(coded("instance"))
        .software(CapabilityStatementSoftware {
            name: types::String("caduceus-api".into()),
            version: Some(types::String(version.to_string())),
            ..Default::default()
        })
        .implementation(CapabilityStatementImplementation {
            description: types::String("Caduceus API FHIR R4 endpoint".into()),
            url: Some(types::Url(base.to_string())),
            ..Default::default()
        })
        .fhir_version(coded("4.0.1"))
        .format(vec1::vec1![
            types::Code("json".into()),
            types::Code(super::wire::FHIR_JSON.into())
        ])
        .rest(vec![CapabilityStatementRest {
            mode: coded("server"),
            documentation: markdown(
                "Same accounts, access decisions, audit trail and field encryption as /api/v1. \
                 Searches return searchset Bundles with total and self/next links (opaque \
                 `_cursor`); `_count` at most 100; an unknown search parameter is refused \
                 (400) unless `Prefer: handling=lenient`.",
            ),
            security: Some(CapabilityStatementRestSecurity {
                cors: Some(types::Boolean(true)),
                description: markdown(
                    "Bearer access tokens from POST /api/v1/auth/login (with MFA where \
                     required); role-based access and care-team scope as on /api/v1; every \
                     access audited.",
                ),
                ..Default::default()
            }),
            resource: resources.iter().map(rest_resource).collect(),
            ..Default::default()
        }])
        .build()
}
