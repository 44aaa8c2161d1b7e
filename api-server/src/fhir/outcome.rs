//! FHIR R4 error answers and JSON responses, below every other layer of the crate (the HTTP
//! middleware uses them too): an error of a request to [`BASE`] is an `OperationOutcome`
//! carrying the request id, whichever layer raised it (a handler, the FHIR wire layer, the rate
//! limit, or the common layers: body limit, timeout, panic).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_r4::r4::resources::operation_outcome::{OperationOutcome, OperationOutcomeIssue};
use fhir_r4::r4::resources::Resource;
use fhir_r4::r4::{codes, types};
use serde::Serialize;

use crate::error::{Error, FieldError};

/// Where the FHIR endpoint is mounted.
pub const BASE: &str = "/fhir/R4";

/// Whether `path` is a request to the FHIR endpoint (answered with FHIR errors).
pub fn is_fhir(path: &str) -> bool {
    path.strip_prefix(BASE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";
const FHIR_JSON_UTF8: &str = "application/fhir+json; charset=utf-8";

/// The FHIR issue type of an HTTP error status.
fn issue_code(status: StatusCode) -> codes::IssueType {
    use codes::IssueType as T;
    match status.as_u16() {
        400 | 422 => T::Invalid,
        401 => T::Login,
        403 => T::Forbidden,
        404 => T::NotFound,
        405 | 406 | 415 => T::NotSupported,
        408 => T::Timeout,
        409 | 412 => T::Conflict,
        410 => T::Deleted,
        413 => T::TooLong,
        429 => T::Throttled,
        503 => T::Transient,
        _ => T::Exception,
    }
}

/// One issue per field error (or one for the whole error), severity `error` (`fatal` for a
/// server error). Diagnostics never carry input values (they come from [`Problem`], which never
/// echoes them); each names the request id for support.
pub fn outcome(
    status: StatusCode,
    detail: &str,
    fields: &[FieldError],
    request_id: Option<&str>,
) -> Response {
    match operation_outcome(status, detail, fields, request_id) {
        Some(o) => fhir_json(status, &Resource::OperationOutcome(Box::new(o))),
        None => status.into_response(),
    }
}

/// The `OperationOutcome` of an error ([`outcome`]).
fn operation_outcome(
    status: StatusCode,
    detail: &str,
    fields: &[FieldError],
    request_id: Option<&str>,
) -> Option<OperationOutcome> {
    let severity = if status.is_server_error() {
        codes::IssueSeverity::Fatal
    } else {
        codes::IssueSeverity::Error
    };
    let issue = |diagnostics: String, expression: Option<&str>| OperationOutcomeIssue {
        severity: fhir_r4::r4::coded::Coded::Known(severity.clone()),
        code: fhir_r4::r4::coded::Coded::Known(issue_code(status)),
        diagnostics: Some(types::String(diagnostics)),
        expression: expression
            .map(|e| types::String(e.to_string()))
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let suffix = request_id
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default();
    let mut issues: Vec<OperationOutcomeIssue> = fields
        .iter()
        .map(|f| {
            issue(
                format!("{}: {}{suffix}", f.field, f.message),
                Some(&f.field),
            )
        })
        .collect();
    if issues.is_empty() {
        issues.push(issue(format!("{detail}{suffix}"), None));
    }
    let issues = vec1::Vec1::try_from_vec(issues).ok()?;
    OperationOutcome::builder().issue(issues).build().ok()
}

/// A FHIR JSON response (`application/fhir+json; charset=utf-8`).
pub fn fhir_json(status: StatusCode, body: &impl Serialize) -> Response {
    // a resource is rarely under 1 KiB: start there rather than growing from nothing
    let mut bytes = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(FHIR_JSON_UTF8),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => Error::internal(anyhow::Error::new(e)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_paths() {
        assert!(is_fhir("/fhir/R4"));
        assert!(is_fhir("/fhir/R4/Patient/1"));
        assert!(!is_fhir("/fhir/R4x"));
        assert!(!is_fhir("/api/v1/patients"));
    }

    #[test]
    fn outcomes_name_fields_and_the_request_id() {
        let o = operation_outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            &[FieldError::new("birthDate", "must be in the past")],
            Some("req-1"),
        )
        .expect("outcome");
        let json = serde_json::to_value(Resource::OperationOutcome(Box::new(o))).expect("json");
        assert_eq!(json["resourceType"], "OperationOutcome");
        assert_eq!(json["issue"][0]["code"], "invalid");
        assert_eq!(json["issue"][0]["severity"], "error");
        assert_eq!(json["issue"][0]["expression"][0], "birthDate");
        assert!(json["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("req-1")));
    }
}
