//! The one API error type, rendered as RFC 9457 `application/problem+json`.
//!
//! Handlers return `Result<_, Error>`. [`Error`] never exposes internals: database and other
//! unexpected errors become a bare 500 (logged with a category only, never SQL text or values).
//! The response middleware (`middleware::problem_and_headers`) adds `instance` and `request_id`
//! to every problem and turns any non-problem error response (axum rejections, 404 fallback,
//! 405, 408 timeout, 413 body limit) into problem+json too.
//!
//! Request bodies use [`ApiJson`]: malformed JSON → 400, wrong or missing content type → 415,
//! JSON of the wrong shape or failing [`Validate`] → 422 with per-field `errors`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Base of the problem `type` URIs.
pub const PROBLEM_BASE: &str = "https://caduceus.io/problems/";

/// A per-field validation error.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer-ish field name, e.g. `password` or `medication.name`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Add an error to `errs` unless text `value` of `field` has 1 to `max` characters once trimmed.
pub fn check_text(errs: &mut Vec<FieldError>, field: &str, value: &str, max: usize) {
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        errs.push(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
}

/// The outcome of a [`Validate::validate`] that collected `errs`.
pub fn validated(errs: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension members (e.g. `interactions` on a prescription conflict).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: Option<String>) -> Self {
        Self {
            type_: format!("{PROBLEM_BASE}{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            instance: None,
            request_id: None,
            errors: Vec::new(),
            extensions: Map::new(),
        }
    }

    /// Generic problem for a bare status (used for responses produced outside our handlers).
    pub fn from_status(status: StatusCode) -> Self {
        let (slug, detail) = match status.as_u16() {
            400 => ("bad-request", "the request could not be parsed"),
            401 => ("unauthorized", "authentication is required"),
            403 => ("forbidden", "not permitted"),
            404 => ("not-found", "no such resource"),
            405 => ("method-not-allowed", "method not allowed on this resource"),
            408 => ("timeout", "the request took too long"),
            413 => ("payload-too-large", "the request body is too large"),
            415 => (
                "unsupported-media-type",
                "expected Content-Type: application/json",
            ),
            422 => ("validation", "the request is not valid (see errors)"),
            429 => ("rate-limited", "too many requests"),
            503 => ("unavailable", "service temporarily unavailable"),
            s if s >= 500 => ("internal", "internal error"),
            _ => ("error", "request failed"),
        };
        Self::new(status, slug, Some(detail.to_string()))
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Detail of the `403` to a session restricted to MFA enrolment.
pub const MFA_ENROLLMENT_REQUIRED: &str = "multi-factor authentication enrolment is required for this account: enrol with POST /api/v1/auth/mfa/enroll, then confirm with POST /api/v1/auth/mfa/confirm";

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A query parameter that parses but is refused as a whole (a list `cursor` that is not
    /// one of this caller's, list's and filters'): `400` with `errors` naming it.
    #[error("bad request: invalid parameter")]
    BadParameter(FieldError),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The session may only enrol in MFA (`403`, type `mfa-enrollment-required`).
    #[error("forbidden: MFA enrolment required")]
    MfaEnrollmentRequired,
    #[error("not found")]
    NotFound,
    /// The record was deleted (kept for retention) and the caller could see it: `410` (FHIR).
    #[error("gone")]
    Gone,
    #[error("conflict: {detail}")]
    Conflict {
        detail: String,
        extensions: Map<String, Value>,
    },
    /// The version the client based its change on is not the current one (`If-Match`): `412`.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// Too much work queued (e.g. password hashing): `503` with `Retry-After`.
    #[error("busy")]
    Busy { retry_after_secs: u64 },
    #[error("audit trail unavailable")]
    AuditUnavailable,
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict {
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    pub fn validation(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// `400` naming the query parameter `field` (see [`Self::BadParameter`]).
    pub fn bad_parameter(field: &str, message: &str) -> Self {
        Self::BadParameter(FieldError::new(field, message))
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::MfaEnrollmentRequired => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Gone => StatusCode::GONE,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::AuditUnavailable | Self::Unavailable(_) | Self::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Self::conflict("a resource with the same unique value already exists")
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23P01") => {
                Self::conflict("conflicts with an existing booking")
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                Self::Unavailable("database unavailable".into())
            }
            _ => Self::Internal(anyhow::anyhow!(e)),
        }
    }
}

impl From<crate::crypto::CryptoError> for Error {
    fn from(e: crate::crypto::CryptoError) -> Self {
        Self::Internal(anyhow::anyhow!(e))
    }
}

/// Short, PHI-free description of an internal error for the log.
fn log_category(e: &anyhow::Error) -> String {
    if let Some(sqlx::Error::Database(db)) = e.downcast_ref::<sqlx::Error>() {
        // SQLSTATE and constraint name only: the message may quote row values
        return format!(
            "database error code={} constraint={}",
            db.code().unwrap_or_default(),
            db.constraint().unwrap_or("-")
        );
    }
    if let Some(s) = e.downcast_ref::<sqlx::Error>() {
        return match s {
            sqlx::Error::Io(_) => "database io error".into(),
            sqlx::Error::Tls(_) => "database tls error".into(),
            sqlx::Error::Protocol(_) => "database protocol error".into(),
            sqlx::Error::ColumnDecode { index, .. } => format!("column decode error at {index}"),
            _ => "database error".into(),
        };
    }
    if let Some(c) = e.downcast_ref::<crate::crypto::CryptoError>() {
        return format!("crypto error: {c}");
    }
    // our own anyhow messages are written without PHI
    format!("{e}")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut retry_after = None;
        let problem = match self {
            Self::BadRequest(d) => Problem::new(status, "bad-request", Some(d)),
            Self::BadParameter(error) => {
                let mut p = Problem::new(
                    status,
                    "bad-request",
                    Some("a query parameter is not valid (see errors)".into()),
                );
                p.errors = vec![error];
                p
            }
            Self::Unauthorized(d) => Problem::new(status, "unauthorized", Some(d)),
            Self::Forbidden(d) => Problem::new(status, "forbidden", Some(d)),
            Self::MfaEnrollmentRequired => Problem::new(
                status,
                "mfa-enrollment-required",
                Some(MFA_ENROLLMENT_REQUIRED.into()),
            ),
            Self::NotFound => Problem::new(status, "not-found", Some("no such resource".into())),
            Self::Gone => Problem::new(status, "gone", Some("the resource was deleted".into())),
            Self::Conflict { detail, extensions } => {
                let mut p = Problem::new(status, "conflict", Some(detail));
                p.extensions = extensions;
                p
            }
            Self::PreconditionFailed(d) => Problem::new(status, "precondition-failed", Some(d)),
            Self::UnsupportedMediaType => Problem::from_status(status),
            Self::PayloadTooLarge => Problem::from_status(status),
            Self::Validation(errors) => {
                let mut p = Problem::new(
                    status,
                    "validation",
                    Some("the request is not valid (see errors)".into()),
                );
                p.errors = errors;
                p
            }
            Self::Busy { retry_after_secs } => {
                retry_after = Some(retry_after_secs);
                Problem::new(
                    status,
                    "busy",
                    Some(format!(
                        "the server is busy; retry after {retry_after_secs} s"
                    )),
                )
            }
            Self::RateLimited { retry_after_secs } => {
                retry_after = Some(retry_after_secs);
                Problem::new(
                    status,
                    "rate-limited",
                    Some(format!(
                        "too many requests; retry after {retry_after_secs} s"
                    )),
                )
            }
            Self::AuditUnavailable => Problem::new(
                status,
                "audit-unavailable",
                Some("the audit trail cannot be written; the request was not completed".into()),
            ),
            Self::Unavailable(d) => Problem::new(status, "unavailable", Some(d)),
            Self::Internal(e) => {
                tracing::error!(error = %log_category(&e), "internal error");
                Problem::from_status(status)
            }
        };
        let mut resp = problem.into_response_with(status);
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Request-body validation beyond the JSON shape.
pub trait Validate {
    fn validate(&self) -> Result<(), Vec<FieldError>>;
}

/// JSON body extractor whose rejections are problem+json (see module docs).
pub struct ApiJson<T>(pub T);

/// Turn a serde error text into field errors without echoing input values.
fn data_error_fields(text: &str) -> Vec<FieldError> {
    // axum: "Failed to deserialize the JSON body into the target type: <path>: <serde msg>"
    let rest = text
        .split_once("target type: ")
        .map(|(_, r)| r)
        .unwrap_or(text);
    if let Some(idx) = rest.find("missing field `") {
        let after = &rest[idx + "missing field `".len()..];
        if let Some(end) = after.find('`') {
            return vec![FieldError::new(&after[..end], "is required")];
        }
    }
    if let Some(idx) = rest.find("unknown field `") {
        let after = &rest[idx + "unknown field `".len()..];
        if let Some(end) = after.find('`') {
            return vec![FieldError::new(&after[..end], "is not a known field")];
        }
    }
    // "<path>: invalid type ..." — keep only the path, never the value
    match rest.split_once(": ") {
        Some((path, _))
            if !path.is_empty()
                && path.len() <= 64
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')) =>
        {
            vec![FieldError::new(path, "has the wrong type or format")]
        }
        _ => vec![FieldError::new(
            "",
            "body does not match the expected schema",
        )],
    }
}

/// Whether the request says its body is JSON (`application/json`, `application/*+json`), as
/// axum's `Json` decides it.
fn json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or_default().trim();
    match essence.split_once('/') {
        Some((ty, sub)) => {
            ty.eq_ignore_ascii_case("application")
                && (sub.eq_ignore_ascii_case("json")
                    || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
        }
        None => false,
    }
}

/// The message of a text field that contains a NUL character: Postgres cannot store one in
/// `text` (SQLSTATE 22021), so it is refused before any handler sees it.
pub const NUL_MESSAGE: &str = "must not contain NUL characters";

/// The first field of a JSON body whose string value (or key) contains a NUL character, as a
/// path (`emergency_contact.name`, `allergies[1]`); `None` when there is none. A JSON text can
/// only carry NUL as the escape `\u0000`, so bodies without that sequence are not parsed again.
fn nul_field(body: &[u8]) -> Option<String> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !body.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    fn walk(v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => s.contains('\0').then(|| path.to_string()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            Value::Object(map) => map.iter().find_map(|(k, item)| {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.contains('\0') {
                    return Some(path.to_string());
                }
                walk(item, &sub)
            }),
            _ => None,
        }
    }
    walk(&value, "")
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let body = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Error::PayloadTooLarge)
            }
            Err(_) => {
                return Err(Error::BadRequest(
                    "the request body could not be read".into(),
                ))
            }
        };
        let value = match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => value,
            Err(rejection) => {
                return Err(match rejection {
                    JsonRejection::JsonDataError(e) => {
                        Error::Validation(data_error_fields(&e.body_text()))
                    }
                    JsonRejection::JsonSyntaxError(_) => {
                        Error::BadRequest("the request body is not well-formed JSON".into())
                    }
                    _ => Error::BadRequest("the request body could not be read".into()),
                })
            }
        };
        // no text with NUL reaches a handler (or the database), whatever the field
        if let Some(field) = nul_field(&body) {
            return Err(Error::Validation(vec![FieldError::new(field, NUL_MESSAGE)]));
        }
        value.validate().map_err(Error::Validation)?;
        Ok(Self(value))
    }
}

/// Query parameters deserialised into `T`. A parameter that does not parse (a number out of
/// range, an unknown enum value, a malformed date) is the same 422 validation problem as a
/// parameter the handler refuses (`limit=0`): `errors[].field` names the parameter; the value is
/// never echoed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        // a NUL in any parameter (Postgres cannot store or compare it: SQLSTATE 22021)
        if let Some((key, _)) = form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            let named = !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            let field = if named {
                key.to_string()
            } else {
                String::new()
            };
            return Err(Error::Validation(vec![FieldError::new(field, NUL_MESSAGE)]));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            Error::Validation(vec![FieldError::new(
                &field,
                "is not a valid value for this query parameter",
            )])
        })
    }
}

/// PHI- and secret-free description of a database error.
pub fn error_kind(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!(
            "database error (SQLSTATE {})",
            db.code().unwrap_or_default()
        ),
        sqlx::Error::Io(io) => format!("i/o error: {io}"),
        sqlx::Error::Tls(_) => "TLS error".into(),
        sqlx::Error::Configuration(_) => "invalid DATABASE_URL".into(),
        sqlx::Error::PoolTimedOut => "timed out connecting".into(),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_never_echo_values() {
        let f = data_error_fields("Failed to deserialize the JSON body into the target type: given_name: invalid type: integer `42`, expected a string at line 1 column 2");
        assert_eq!(
            f,
            vec![FieldError::new(
                "given_name",
                "has the wrong type or format"
            )]
        );
        let f = data_error_fields("Failed to deserialize the JSON body into the target type: missing field `mrn` at line 1 column 2");
        assert_eq!(f, vec![FieldError::new("mrn", "is required")]);
        let f = data_error_fields("Failed to deserialize the JSON body into the target type: invalid type: string \"Alice\", expected struct");
        assert!(!format!("{f:?}").contains("Alice"));
    }

    #[test]
    fn nul_fields_are_found_by_path() {
        assert_eq!(nul_field(br#"{"a":"x"}"#), None);
        // an escaped backslash followed by u0000 is text, not NUL
        assert_eq!(nul_field(br#"{"a":"\\u0000"}"#), None);
        assert_eq!(nul_field(br#"{"a":"x\u0000"}"#).as_deref(), Some("a"));
        assert_eq!(
            nul_field(br#"{"a":"x","e":{"name":"\u0000"}}"#).as_deref(),
            Some("e.name")
        );
        assert_eq!(
            nul_field(br#"{"l":["ok","b\u0000"]}"#).as_deref(),
            Some("l[1]")
        );
        assert!(json_content_type(&http::HeaderMap::from_iter([(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json; charset=utf-8")
        )])));
        assert!(!json_content_type(&http::HeaderMap::from_iter([(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain")
        )])));
    }

    #[test]
    fn problem_shape() {
        let p = Problem::new(StatusCode::CONFLICT, "conflict", Some("x".into()));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://caduceus.io/problems/conflict");
        assert_eq!(v["status"], 409);
        assert_eq!(v["title"], "Conflict");
    }
}
