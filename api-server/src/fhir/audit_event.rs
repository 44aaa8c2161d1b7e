//! FHIR `AuditEvent` over the audit trail, for admins: the handlers call the same domain entry
//! point as `GET /api/v1/audit-events` ([`crate::audit::routes::find`]: the `AuditRead`
//! permission, the cursor, the `audit.read` record of the read) and only translate.
//!
//! Mapping (close to IHE Basic Audit Log Patterns):
//! * `type`: DICOM `110114` User Authentication (`auth.*` actions), `110110` Patient Record
//!   (`patient.*`, `appointment.*`, `prescription.*`), `110100` Application Activity (the rest);
//!   `subtype`: our action name in [`ACTION_SYSTEM`];
//! * `action`: C/R/U/D/E from the action's verb ([`action_code`]);
//! * `recorded` = the time of the event; `outcome` 0 (success), 4 (denied), 8 (error);
//! * `agent`: the user (`requestor`), `who` = `Practitioner/<user id>` for physicians and nurses
//!   and the user id as identifier for every account, the role, the client's IP address; the
//!   stated purpose (break-glass reason) as `purposeOfUse`;
//! * `source.observer`: this API;
//! * `entity`: the patient (`Patient/<id>`, role 1 Patient) and the resource acted on (role 4
//!   Domain Resource; `Appointment`/`MedicationRequest`/`Patient` references where FHIR serves
//!   the type, an identifier otherwise).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use fhir_r4::r4::resources::audit_event::{
    AuditEvent as FhirAuditEvent, AuditEventAgent, AuditEventAgentNetwork, AuditEventEntity,
    AuditEventSource,
};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::types;

use super::capability::{coded, Interaction, ParamType, ResourceCapability, SearchParam};
use super::search::{reference_id, DateParam, Match, Search};
use super::wire::{self, Version};
use crate::audit::routes::{count, find, AuditQuery, AuditRecord, NamePart};
use crate::auth::Authorized;
use crate::error::Error;
use crate::pagination::PageParams;
use crate::rbac::{perm, Role};
use crate::state::AppState;

/// The CodeSystem of our audit action names (`AuditEvent.subtype`).
pub const ACTION_SYSTEM: &str = "https://caduceus.io/fhir/CodeSystem/audit-action";
/// DICOM's code system (`AuditEvent.type`).
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The user ids of agents without a FHIR resource.
const USER_SYSTEM: &str = "https://caduceus.io/fhir/sid/user";
/// The FHIR route of the list's cursors.
const ROUTE: &str = "/fhir/R4/AuditEvent";

/// What `/fhir/R4/AuditEvent` serves.
pub const CAPABILITY: ResourceCapability = ResourceCapability {
    type_name: "AuditEvent",
    interactions: &[Interaction::Read, Interaction::SearchType],
    search: &[
        SearchParam {
            name: "patient",
            kind: ParamType::Reference,
            doc: "events about this patient (`Patient/<id>`)",
        },
        SearchParam {
            name: "agent",
            kind: ParamType::Reference,
            doc: "events of this user (`Practitioner/<user id>` or the user id)",
        },
        SearchParam {
            name: "date",
            kind: ParamType::Date,
            doc: "when the event was recorded, with the prefixes eq, ge, gt, le, lt (repeat to give a range)",
        },
        SearchParam {
            name: "action",
            kind: ParamType::Token,
            doc: "C | R | U | D | E (comma-separated for any of them)",
        },
        SearchParam {
            name: "type",
            kind: ParamType::Token,
            doc: "DICOM 110110 (Patient Record), 110114 (User Authentication) or 110100 (Application Activity), `[system|]code` with the DICOM system",
        },
        SearchParam {
            name: "subtype",
            kind: ParamType::Token,
            doc: "our action name (e.g. `patient.read`), `[system|]code` with system https://caduceus.io/fhir/CodeSystem/audit-action; comma-separated for any of them",
        },
    ],
    sorts: &[],
    operations: &[],
    doc: "The audit trail (admins only), newest first: every access to and change of patient data, authentication, administration; read-only.",
};

/// Verbs (the part of an action name after its dot) of each FHIR action code but `E`.
const VERBS: [(&str, &[&str]); 4] = [
    ("C", &["create", "register", "care_team_add"]),
    (
        "R",
        &[
            "read",
            "list",
            "search",
            "everything",
            "break_glass",
            "verify",
        ],
    ),
    ("U", &["update", "cancel", "discontinue", "mfa_reset"]),
    ("D", &["delete", "purge", "care_team_remove"]),
];

/// Areas (the part of an action name before its dot) of the Patient Record type.
const PATIENT_AREAS: &[&str] = &["patient", "appointment", "prescription"];
/// The area of the User Authentication type.
const AUTH_AREAS: &[&str] = &["auth"];

/// The FHIR action code (C/R/U/D/E) of one of our action names.
pub fn action_code(action: &str) -> &'static str {
    let verb = action.rsplit('.').next().unwrap_or(action);
    VERBS
        .iter()
        .find(|(_, verbs)| verbs.contains(&verb))
        .map_or("E", |(code, _)| code)
}

/// The DICOM event type (code, display) of one of our action names.
fn event_type(action: &str) -> (&'static str, &'static str) {
    let area = action.split('.').next().unwrap_or(action);
    if AUTH_AREAS.contains(&area) {
        ("110114", "User Authentication")
    } else if PATIENT_AREAS.contains(&area) {
        ("110110", "Patient Record")
    } else {
        ("110100", "Application Activity")
    }
}

fn coding(system: &str, code: &str, display: Option<&str>) -> types::Coding {
    types::Coding {
        system: Some(types::Uri(system.to_string())),
        code: Some(types::Code(code.to_string())),
        display: display.map(|d| types::String(d.to_string())),
        ..Default::default()
    }
}

fn reference(reference: String) -> types::Reference {
    types::Reference {
        reference: Some(types::String(reference)),
        ..Default::default()
    }
}

/// The FHIR resource type of one of our resource types, when FHIR serves it.
fn fhir_type(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "patient" => Some("Patient"),
        "appointment" => Some("Appointment"),
        "prescription" => Some("MedicationRequest"),
        _ => None,
    }
}

/// The agent of a record: the user who acted (none for the scheduler and the command line).
fn agent(r: &AuditRecord) -> AuditEventAgent {
    let role = r.actor_role.as_deref();
    let clinician = role.and_then(Role::parse).is_some_and(Role::is_clinician);
    let who = r.actor_id.map(|id| types::Reference {
        reference: clinician.then(|| types::String(format!("Practitioner/{id}"))),
        identifier: Some(types::Identifier {
            system: Some(types::Uri(USER_SYSTEM.into())),
            value: Some(types::String(id.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    });
    AuditEventAgent {
        r#type: Some(types::CodeableConcept {
            coding: vec![coding(
                "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "IRCP",
                Some("information recipient"),
            )],
            ..Default::default()
        }),
        role: role
            .map(|role| types::CodeableConcept {
                text: Some(types::String(role.to_string())),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        who,
        // the scheduler and the command line: the user agent names them
        name: r
            .actor_id
            .is_none()
            .then(|| r.user_agent.clone().map(types::String))
            .flatten(),
        requestor: types::Boolean(true),
        network: r.client_ip.as_ref().map(|ip| AuditEventAgentNetwork {
            address: Some(types::String(ip.clone())),
            r#type: Some(coded("2")),
            ..Default::default()
        }),
        purpose_of_use: r
            .purpose
            .as_ref()
            .map(|p| types::CodeableConcept {
                coding: (r.action == crate::audit::actions::BREAK_GLASS)
                    .then(|| {
                        coding(
                            "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                            "BTG",
                            Some("break the glass"),
                        )
                    })
                    .into_iter()
                    .collect(),
                text: Some(types::String(p.clone())),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// The entities of a record: the patient (role 1) and the resource acted on (role 4).
fn entities(r: &AuditRecord) -> Vec<AuditEventEntity> {
    const ROLES: &str = "http://terminology.hl7.org/CodeSystem/object-role";
    const TYPES: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
    let mut out = Vec::new();
    if let Some(p) = r.patient_id {
        out.push(AuditEventEntity {
            what: Some(reference(format!("Patient/{p}"))),
            r#type: Some(coding(TYPES, "1", Some("Person"))),
            role: Some(coding(ROLES, "1", Some("Patient"))),
            ..Default::default()
        });
    }
    let is_the_patient =
        r.resource_type == "patient" && r.patient_id.map(|p| p.to_string()) == r.resource_id;
    if !is_the_patient {
        let what = match (fhir_type(&r.resource_type), &r.resource_id) {
            (Some(t), Some(id)) => Some(reference(format!("{t}/{id}"))),
            (None, Some(id)) => Some(types::Reference {
                identifier: Some(types::Identifier {
                    system: Some(types::Uri(format!(
                        "https://caduceus.io/fhir/sid/{}",
                        r.resource_type
                    ))),
                    value: Some(types::String(id.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            _ => None,
        };
        out.push(AuditEventEntity {
            what,
            r#type: Some(coding(TYPES, "2", Some("System Object"))),
            role: Some(coding(ROLES, "4", Some("Domain Resource"))),
            name: Some(types::String(r.resource_type.clone())),
            ..Default::default()
        });
    }
    out
}

/// The FHIR AuditEvent of an audit record (never changed: `meta.versionId` is the time it was
/// recorded).
pub fn to_fhir(r: &AuditRecord) -> Result<(FhirAuditEvent, Version), Error> {
    let version = Version(r.occurred_at);
    let (type_code, type_display) = event_type(&r.action);
    let outcome = match r.outcome.as_str() {
        "success" => "0",
        "denied" => "4",
        _ => "8",
    };
    let event = FhirAuditEvent::builder()
        .id(types::String(r.id.to_string()))
        .meta(version.meta())
        .r#type(coding(DCM, type_code, Some(type_display)))
        .subtype(vec![coding(ACTION_SYSTEM, &r.action, None)])
        .action(coded(action_code(&r.action)))
        .recorded(types::Instant(
            r.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ))
        .outcome(coded(outcome))
        .agent(vec1::vec1![agent(r)])
        .source(AuditEventSource {
            observer: types::Reference {
                display: Some(types::String(format!(
                    "caduceus-api {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                ..Default::default()
            },
            r#type: vec![coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                Some("Application Server"),
            )],
            ..Default::default()
        })
        .entity(entities(r))
        .build()
        .map_err(|e| Error::internal(anyhow::anyhow!("AuditEvent mapping incomplete: {e}")))?;
    Ok((event, version))
}

fn json(e: FhirAuditEvent) -> Result<serde_json::Value, Error> {
    serde_json::to_value(Resource::AuditEvent(Box::new(e)))
        .map_err(|e| Error::internal(anyhow::Error::new(e)))
}

/// `GET /AuditEvent/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::AuditRead>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    // ids are the trail's row numbers; anything else names no event
    let id: i64 = id.parse().map_err(|_| Error::NotFound)?;
    let query = AuditQuery {
        id: Some(id),
        ..Default::default()
    };
    let page = find(&state, &auth, ROUTE, &query, PageParams::default()).await?;
    let record = page.items.first().ok_or(Error::NotFound)?;
    let (event, version) = to_fhir(record)?;
    Ok(wire::resource(StatusCode::OK, &json(event)?, version, None))
}

/// `GET /AuditEvent?...`: a searchset through the same list as `GET /api/v1/audit-events`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Authorized(auth, _): Authorized<perm::AuditRead>,
) -> Result<Response, Error> {
    let search = Search::parse(&CAPABILITY, uri.query(), &headers)?;
    let query = query(&search)?;
    let page = find(&state, &auth, ROUTE, &query, search.page()).await?;
    let total = if search.summary_count || search.cursor.is_some() || page.next_cursor.is_some() {
        Some(count(&state, &query).await?)
    } else {
        Some(page.items.len() as i64)
    };
    let mut matches = Vec::with_capacity(page.items.len());
    for r in &page.items {
        let (event, _) = to_fhir(r)?;
        matches.push(Match {
            id: r.id.to_string(),
            resource: json(event)?,
        });
    }
    let base = wire::base_url(&headers, state.config.tls.is_some());
    Ok(super::search::respond(
        &base,
        "AuditEvent",
        &search,
        total,
        matches,
        page.next_cursor,
    ))
}

/// The code of a token (`[system|]code`) whose system, when given, must be `system`.
fn token<'a>(name: &str, value: &'a str, system: &str) -> Result<&'a str, Error> {
    match value.split_once('|') {
        None => Ok(value),
        Some((s, code)) if s.is_empty() || s == system => Ok(code),
        Some(_) => Err(Error::bad_parameter(
            name,
            &format!("codes of {system} only"),
        )),
    }
}

/// The domain query of an AuditEvent search.
fn query(search: &Search) -> Result<AuditQuery, Error> {
    let mut q = AuditQuery::default();
    if let Some(v) = search.one("patient")? {
        q.patient_id = Some(reference_id("patient", v, "Patient")?);
    }
    if let Some(v) = search.one("agent")? {
        q.actor = Some(reference_id("agent", v, "Practitioner")?);
    }
    let (mut from, mut to): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    for v in search.all("date") {
        let (lower, upper) = DateParam::parse("date", v)?.bounds();
        from = from.max(lower);
        to = match (to, upper) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (q.from, q.to) = (from, to);
    if let Some(v) = search.one("action")? {
        let codes: Vec<&str> = v.split(',').map(str::trim).collect();
        if !codes
            .iter()
            .all(|c| matches!(*c, "C" | "R" | "U" | "D" | "E"))
        {
            return Err(Error::bad_parameter("action", "must be C, R, U, D or E"));
        }
        let crud = |code: &str| {
            VERBS
                .iter()
                .filter(|(c, _)| *c == code)
                .flat_map(|(_, verbs)| verbs.iter().copied())
                .collect::<Vec<_>>()
        };
        q.verbs = Some(if codes.contains(&"E") {
            // E: no C/R/U/D verb, but those of the codes also asked for
            let excluded: Vec<&str> = VERBS
                .iter()
                .filter(|(c, _)| !codes.contains(c))
                .flat_map(|(_, verbs)| verbs.iter().copied())
                .collect();
            NamePart {
                values: excluded,
                negate: true,
            }
        } else {
            NamePart {
                values: codes.iter().flat_map(|c| crud(c)).collect(),
                negate: false,
            }
        });
    }
    if let Some(v) = search.one("type")? {
        q.areas = Some(match token("type", v, DCM)? {
            "110110" => NamePart {
                values: PATIENT_AREAS.to_vec(),
                negate: false,
            },
            "110114" => NamePart {
                values: AUTH_AREAS.to_vec(),
                negate: false,
            },
            "110100" => NamePart {
                values: [PATIENT_AREAS, AUTH_AREAS].concat(),
                negate: true,
            },
            _ => {
                return Err(Error::bad_parameter(
                    "type",
                    "must be DICOM 110110, 110114 or 110100",
                ))
            }
        });
    }
    if let Some(v) = search.one("subtype")? {
        for code in v.split(',') {
            let action = token("subtype", code.trim(), ACTION_SYSTEM)?;
            if action.is_empty() || action.len() > 64 {
                return Err(Error::bad_parameter("subtype", "must be an action name"));
            }
            q.actions.push(action.to_string());
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_codes() {
        assert_eq!(action_code("patient.create"), "C");
        assert_eq!(action_code("patient.read"), "R");
        assert_eq!(action_code("patient.everything"), "R");
        assert_eq!(action_code("appointment.cancel"), "U");
        assert_eq!(action_code("patient.delete"), "D");
        assert_eq!(action_code("auth.login"), "E");
        assert_eq!(event_type("auth.login").0, "110114");
        assert_eq!(event_type("prescription.read").0, "110110");
        assert_eq!(event_type("keys.rotate").0, "110100");
    }

    #[test]
    fn e_excludes_the_other_verbs_but_those_asked_for() {
        let s = Search::parse(&CAPABILITY, Some("action=E,R"), &HeaderMap::new()).expect("parse");
        let q = query(&s).expect("query");
        let v = q.verbs.expect("verbs");
        assert!(v.negate);
        assert!(v.values.contains(&"create") && !v.values.contains(&"read"));
        let s = Search::parse(&CAPABILITY, Some("action=X"), &HeaderMap::new()).expect("parse");
        assert!(query(&s).is_err());
    }
}
