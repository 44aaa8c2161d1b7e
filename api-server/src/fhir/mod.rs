//! HL7 FHIR R4 (4.0.1) at `/fhir/R4`: one more adapter over the domain, beside the JSON routes.
//! The handlers call the same domain entry points as `/api/v1` (authentication, the access
//! module, the audit trail, field encryption); they translate between the FHIR model (crate
//! `fhir-r4`, generated from the specification) and ours.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the router (from [`RESOURCES`]) and `GET /metadata` |
//! | `capability.rs` | the per-resource declarations and the CapabilityStatement built from them |
//! | `openapi.rs` | `GET /openapi.json`: the OpenAPI 3.1 document built from the same declarations |
//! | `wire.rs` | content negotiation, the FHIR error layer, versioned resource responses |
//! | `outcome.rs` | `OperationOutcome` errors and FHIR JSON responses (also used by the HTTP middleware) |
//! | `search.rs` | search parameters and `searchset` Bundles |
//! | `patient.rs` | `Patient` |
//! | `medication_request.rs` (+ `mapping.rs`, `route.rs`) | `MedicationRequest` over the prescriptions |
//! | `clinical.rs` | `AllergyIntolerance` and `Condition` from the record's lists |
//! | `practitioner.rs` | `Practitioner` |
//! | `appointment.rs` | `Appointment` |
//! | `everything.rs` | `Patient/{id}/$everything` |
//! | `audit_event.rs` | `AuditEvent` |

pub mod appointment;
pub mod audit_event;
pub mod capability;
pub mod clinical;
pub mod everything;
pub mod medication_request;
pub mod openapi;
pub mod outcome;
pub mod patient;
pub mod practitioner;
pub mod search;
pub mod wire;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;
use capability::ResourceCapability;

pub use outcome::BASE;

/// Every resource type served, in the CapabilityStatement's order.
pub const RESOURCES: &[ResourceCapability] = &[
    patient::CAPABILITY,
    audit_event::CAPABILITY,
    medication_request::CAPABILITY,
    clinical::ALLERGY_CAPABILITY,
    clinical::CONDITION_CAPABILITY,
    practitioner::CAPABILITY,
    appointment::CAPABILITY,
];

/// The FHIR router (mounted at [`BASE`]): every route of [`RESOURCES`], `GET /metadata`, the
/// API's rate limit, and the wire layer ([`wire::fhir_wire`]: negotiation) around all of them,
/// unknown paths included. Errors become OperationOutcomes in [`crate::middleware::observe`].
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/metadata", get(metadata))
        .route("/openapi.json", get(openapi::serve))
        .route("/Patient", get(patient::search).post(patient::create))
        .route(
            "/Patient/{id}",
            get(patient::read)
                .put(patient::update)
                .delete(patient::delete),
        )
        .route("/Patient/{id}/$everything", get(everything::everything))
        .route("/AuditEvent", get(audit_event::search))
        .route("/AuditEvent/{id}", get(audit_event::read))
        .route(
            "/MedicationRequest",
            get(medication_request::search).post(medication_request::create),
        )
        .route(
            "/MedicationRequest/{id}",
            get(medication_request::read).put(medication_request::update),
        )
        .route(
            "/AllergyIntolerance",
            get(clinical::search::<clinical::Allergies>),
        )
        .route(
            "/AllergyIntolerance/{id}",
            get(clinical::read::<clinical::Allergies>),
        )
        .route("/Condition", get(clinical::search::<clinical::Conditions>))
        .route(
            "/Condition/{id}",
            get(clinical::read::<clinical::Conditions>),
        )
        .route("/Practitioner", get(practitioner::search))
        .route("/Practitioner/{id}", get(practitioner::read))
        .route(
            "/Appointment",
            get(appointment::search).post(appointment::create),
        )
        .route(
            "/Appointment/{id}",
            get(appointment::read).put(appointment::update),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::rate_limit,
        ))
        .layer(axum::middleware::from_fn(wire::fhir_wire))
}

/// `GET /metadata`: the CapabilityStatement (public, like every FHIR server's).
async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = wire::base_url(&headers, state.config.tls.is_some());
    match capability::capability_statement(&base, RESOURCES) {
        Ok(statement) => wire::fhir_json(
            StatusCode::OK,
            &fhir_r4::r4::resources::Resource::CapabilityStatement(Box::new(statement)),
        ),
        Err(e) => axum::response::IntoResponse::into_response(crate::error::Error::internal(
            anyhow::anyhow!("the CapabilityStatement is incomplete: {e}"),
        )),
    }
}

async fn not_found() -> crate::error::Error {
    crate::error::Error::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CapabilityStatement lists exactly the declared resources, interactions and search
    /// parameters, and every declared search parameter is accepted by the search parser.
    #[test]
    fn the_capability_statement_is_the_declarations() {
        let cs =
            capability::capability_statement("https://h/fhir/R4", RESOURCES).expect("complete");
        let json = serde_json::to_value(fhir_r4::r4::resources::Resource::CapabilityStatement(
            Box::new(cs),
        ))
        .expect("json");
        assert_eq!(json["fhirVersion"], "4.0.1");
        let served = json["rest"][0]["resource"].as_array().expect("resources");
        assert_eq!(served.len(), RESOURCES.len());
        for (r, cap) in served.iter().zip(RESOURCES) {
            assert_eq!(r["type"], cap.type_name);
            let params: Vec<&str> = r["searchParam"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let declared: Vec<&str> = cap.search.iter().map(|p| p.name).collect();
            assert_eq!(params, declared);
            for p in &declared {
                let q = format!("{p}=x");
                let parsed = search::Search::parse(cap, Some(&q), &HeaderMap::new());
                assert!(parsed.is_ok(), "{} {p}", cap.type_name);
            }
        }
    }
}
