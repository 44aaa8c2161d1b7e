//! FHIR `MedicationRequest` over the prescriptions: the handlers call the same domain entry
//! points as `/api/v1/prescriptions` ([`crate::prescriptions`]: physicians only prescribe and
//! discontinue, the care team and the patient read, the interaction check under the patient
//! lock, audit, encryption) and only translate ([`mapping`]).
//!
//! | FHIR | prescription |
//! |---|---|
//! | `status` `active` / `completed` / `stopped` | `active` / `completed` / `discontinued` |
//! | `intent` | always `order` |
//! | `medicationCodeableConcept` (`text`, one RxNorm `coding`) | `medication.name`, `medication.code` |
//! | `subject`, `requester` | the patient, the prescriber (`Practitioner/<user id>`) |
//! | `dosageInstruction[0]`: `text`, `doseAndRate.doseQuantity`, `route` (SNOMED CT), `timing.code.text` | dose, route, frequency |
//! | `dispenseRequest.expectedSupplyDuration` (days), `validityPeriod` | `duration_days`, `starts_at`..`ends_at` |
//! | `note[0].text` | notes |
//! | extension [`mapping::OVERRIDE_REASON_URL`] (`valueString`) | `override_reason` |
//! | `contained` `DetectedIssue`s + `detectedIssue` | the interactions found when prescribed |
//!
//! A major interaction refuses the create with `409` and one OperationOutcome issue per
//! interaction (plus one naming the override extension); discontinuing is a `PUT` of the
//! resource as read with `status: stopped` (`If-Match` honoured; any other change `422`).

pub mod mapping;
pub mod route;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use super::capability::{Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{reference_id, Match, Search};
use super::wire::{self, FhirBody, Version};
use crate::auth::Authorized;
use crate::error::{ApiJson, ApiQuery, Error, FieldError, Problem, Validate};
use crate::prescriptions::{self, interactions, Prescription, PrescriptionStatus};
use crate::rbac::perm;
use crate::state::AppState;
use mapping::{fhir_field, json, to_fhir, OVERRIDE_REASON_URL};

/// What `/fhir/R4/MedicationRequest` serves.
pub const CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "MedicationRequest",
    interactions: &[
        Interaction::Read,
        Interaction::SearchType,
        Interaction::Create,
        Interaction::Update,
    ],
    search: &[
        SearchParam {
            name: "patient",
            kind: ParamType::Reference,
            doc: "the patient (`Patient/<id>`); a physician may break the glass for one patient's list",
        },
        SearchParam {
            name: "status",
            kind: ParamType::Token,
            doc: "active | completed | stopped (other statuses are never used: no match)",
        },
        SearchParam {
            name: "intent",
            kind: ParamType::Token,
            doc: "every prescription is an `order` (other intents: no match)",
        },
    ],
    sorts: &[],
    operations: &[],
    doc: "Prescriptions. Create (physicians in the care team) runs the interaction check: a major interaction is refused (409, one OperationOutcome issue per interaction) unless the extension https://caduceus.io/fhir/StructureDefinition/interaction-override-reason (valueString) gives the reason, which is audited. Update only discontinues: PUT the resource as read with status stopped.",
};

/// FHIR statuses a prescription never has: a search for them matches nothing.
const UNUSED_STATUSES: &[&str] = &[
    "on-hold",
    "cancelled",
    "entered-in-error",
    "draft",
    "unknown",
];
/// FHIR intents a prescription never has.
const OTHER_INTENTS: &[&str] = &[
    "proposal",
    "plan",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];

/// `GET /MedicationRequest/{id}` (an id that is not ours: `404`).
pub async fn read(
    State(state): State<AppState>,
    authorized: Authorized<perm::PrescriptionRead>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = wire::path_id(&id)?;
    let Json(p) = prescriptions::read(State(state), authorized, Path(id)).await?;
    let (m, version) = to_fhir(&p);
    Ok(wire::resource(StatusCode::OK, &json(m)?, version, None))
}

fn location(headers: &HeaderMap, state: &AppState, p: &Prescription) -> String {
    let base = wire::base_url(headers, state.config.tls.is_some());
    format!(
        "{base}/MedicationRequest/{}/_history/{}",
        p.id,
        Version(p.updated_at).id()
    )
}

fn fhir_errors(errs: Vec<FieldError>) -> Error {
    Error::Validation(
        errs.into_iter()
            .map(|e| FieldError::new(fhir_field(&e.field), e.message))
            .collect(),
    )
}

/// The `409` of a major interaction: one issue per interaction (what the JSON `409` lists, no
/// free text of the record) and one naming the override extension.
fn interaction_outcome(found: &[interactions::Interaction]) -> Response {
    let mut problem = Problem::new(
        StatusCode::CONFLICT,
        "conflict",
        Some("major interaction with the patient's medications or allergies".into()),
    );
    problem.errors = found
        .iter()
        .map(|i| {
            FieldError::new(
                "MedicationRequest.medicationCodeableConcept",
                mapping::interaction_text(i),
            )
        })
        .collect();
    problem.errors.push(FieldError::new(
        "MedicationRequest.extension",
        format!(
            "to prescribe anyway, send the reason in extension {OVERRIDE_REASON_URL} (valueString); it is audited"
        ),
    ));
    problem.into_response_with(StatusCode::CONFLICT)
}

/// `POST /MedicationRequest`: prescribe through `POST /api/v1/prescriptions`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    authorized: Authorized<perm::PrescriptionCreate>,
    FhirBody(value): FhirBody<Value>,
) -> Result<Response, Error> {
    let m = mapping::body(value.clone())?;
    let new = mapping::from_fhir(&value, &m, authorized.0.user_id)?;
    new.validate().map_err(fhir_errors)?;
    match prescriptions::create(State(state.clone()), authorized, ApiJson(new)).await {
        Ok((_, Json(p))) => {
            let (m, version) = to_fhir(&p);
            let loc = location(&headers, &state, &p);
            Ok(wire::resource(
                StatusCode::CREATED,
                &json(m)?,
                version,
                Some(loc),
            ))
        }
        Err(Error::Conflict { detail, extensions }) => match extensions.get("interactions") {
            Some(list) => {
                let found: Vec<interactions::Interaction> =
                    serde_json::from_value(list.clone()).map_err(Error::internal)?;
                Ok(interaction_outcome(&found))
            }
            None => Err(Error::Conflict { detail, extensions }),
        },
        Err(Error::Validation(errs)) => Err(fhir_errors(errs)),
        Err(e) => Err(e),
    }
}

/// Elements a `PUT` may not change, and that are compared with the current resource.
const IGNORED_ON_UPDATE: &[&str] = &["meta", "text", "status"];

/// The top-level elements in which `sent` differs from `current` (besides
/// [`IGNORED_ON_UPDATE`]).
fn changed_elements(current: &Value, sent: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let a = current.as_object().unwrap_or(&empty);
    let b = sent.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !IGNORED_ON_UPDATE.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// `PUT /MedicationRequest/{id}`: discontinue (`status: stopped`) through
/// `POST /api/v1/prescriptions/{id}/discontinue`. The body is the resource as read with only
/// `status` changed; `If-Match` on `meta.versionId` (`412` when it changed since).
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authorized(auth, _): Authorized<perm::PrescriptionDiscontinue>,
    Path(id): Path<String>,
    FhirBody(value): FhirBody<Value>,
) -> Result<Response, Error> {
    let id = wire::path_id(&id)?;
    let m = mapping::body(value)?;
    if m.id.as_ref().map(|i| i.0.as_str()) != Some(id.to_string().as_str()) {
        return Err(Error::validation(
            "MedicationRequest.id",
            "must be the id in the URL",
        ));
    }
    if m.status.code() != "stopped" {
        return Err(Error::validation(
            "MedicationRequest.status",
            "only discontinuing is supported (status stopped); a changed prescription is a new MedicationRequest",
        ));
    }
    // the body as the model reads it, so that formatting does not count as a change
    let sent = json(m)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let check = move |current: &Prescription| -> Result<(), Error> {
        if let Some(tag) = &if_match {
            if !Version(current.updated_at).matches(tag) {
                return Err(Error::PreconditionFailed(
                    "the prescription changed since that version; read it again".into(),
                ));
            }
        }
        let (ours, _) = to_fhir(current);
        let changed = changed_elements(&json(ours)?, &sent);
        if changed.is_empty() {
            return Ok(());
        }
        Err(Error::Validation(
            changed
                .into_iter()
                .map(|k| {
                    FieldError::new(
                        format!("MedicationRequest.{k}"),
                        "cannot be changed: only status (to stopped) is",
                    )
                })
                .collect(),
        ))
    };
    let p = prescriptions::discontinue_checked(&state, &auth, id, Some(&check)).await?;
    let (m, version) = to_fhir(&p);
    Ok(wire::resource(StatusCode::OK, &json(m)?, version, None))
}

/// `GET /MedicationRequest?...`: a searchset through the same list as
/// `GET /api/v1/prescriptions`, with the exact `total` over all pages (`prescriptions::total`,
/// the same scoped query); `_summary=count` answers the total alone, without listing.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    authorized: Authorized<perm::PrescriptionRead>,
) -> Result<Response, Error> {
    let search = Search::parse(&CAPABILITY, uri.query(), &headers)?;
    let patient_id = search
        .one("patient")?
        .map(|v| reference_id("patient", v, "Patient"))
        .transpose()?;
    let mut none = false;
    let status = match search.one("status")? {
        None => None,
        Some("active") => Some(PrescriptionStatus::Active),
        Some("completed") => Some(PrescriptionStatus::Completed),
        Some("stopped") => Some(PrescriptionStatus::Discontinued),
        Some(s) if UNUSED_STATUSES.contains(&s) => {
            none = true;
            None
        }
        Some(_) => {
            return Err(Error::bad_parameter(
                "status",
                "must be one MedicationRequest status (active, completed, stopped, ...)",
            ))
        }
    };
    match search.one("intent")? {
        None | Some("order") => {}
        Some(i) if OTHER_INTENTS.contains(&i) => none = true,
        Some(_) => {
            return Err(Error::bad_parameter(
                "intent",
                "must be one MedicationRequest intent (order, ...)",
            ))
        }
    }
    let base = wire::base_url(&headers, state.config.tls.is_some());
    if none {
        return Ok(super::search::respond(
            &base,
            CAPABILITY.type_name,
            &search,
            Some(0),
            Vec::new(),
            None,
        ));
    }
    let filter = prescriptions::PrescriptionFilter {
        patient_id,
        prescriber_id: None,
        status,
    };
    let auth = authorized.0.clone();
    if search.summary_count {
        let total = prescriptions::total(&state, &auth, &filter).await?;
        return Ok(super::search::respond_count(
            &base,
            CAPABILITY.type_name,
            &search,
            total,
        ));
    }
    let Json(page) = prescriptions::list(
        State(state.clone()),
        authorized,
        ApiQuery(filter.clone()),
        ApiQuery(search.page()),
    )
    .await?;
    let mut matches = Vec::with_capacity(page.items.len());
    for p in &page.items {
        let (m, _) = to_fhir(p);
        matches.push(Match {
            id: p.id.to_string(),
            resource: json(m)?,
        });
    }
    let count = prescriptions::total(&state, &auth, &filter);
    let total = search
        .total(page.next_cursor.as_ref(), matches.len(), count)
        .await?;
    Ok(super::search::respond(
        &base,
        CAPABILITY.type_name,
        &search,
        Some(total),
        matches,
        page.next_cursor,
    ))
}
