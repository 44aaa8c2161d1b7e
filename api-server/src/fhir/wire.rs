//! The FHIR wire format around every `/fhir/R4` route: content negotiation (`Accept`, `_format`:
//! JSON only, `406` otherwise; request bodies `application/fhir+json` or `application/json`,
//! `415` otherwise) and resource responses with `ETag` and `Last-Modified` from `meta`. Errors
//! become `OperationOutcome`s with the request id in [`crate::middleware::observe`] (see
//! [`super::outcome`]). PHI responses keep the global `Cache-Control: no-store`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use fhir_r4::r4::types;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use super::outcome::{fhir_json, outcome, FHIR_JSON};
use crate::error::Error;
use crate::middleware::RequestId;

/// Media types (without parameters) whose responses we can serve: FHIR JSON and plain JSON.
fn acceptable(media: &str) -> bool {
    matches!(
        media,
        FHIR_JSON | "application/json" | "application/json+fhir" | "application/*" | "*/*"
    )
}

/// `_format` values we serve (FHIR R4 §3.1.0.1.8).
fn format_served(value: &str) -> bool {
    matches!(value, "json" | "application/json" | FHIR_JSON)
}

/// The FHIR client's `Accept` and `_format` allow a JSON answer.
fn negotiates_json(headers: &HeaderMap, query: Option<&str>) -> bool {
    let format = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "_format")
        .map(|(_, v)| v.into_owned());
    if let Some(format) = format {
        return format_served(format.split(';').next().unwrap_or_default().trim());
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept
        .split(',')
        .map(|part| part.split(';').next().unwrap_or_default().trim())
        .any(|media| media.is_empty() || acceptable(media))
}

/// Layer of the FHIR router: refuse formats we do not serve (`406`). Its errors, like every
/// error under [`super::BASE`], become OperationOutcomes in [`crate::middleware::observe`]
/// ([`super::outcome::outcome`]).
pub async fn fhir_wire(req: Request, next: Next) -> Response {
    if !negotiates_json(req.headers(), req.uri().query()) {
        let request_id = req.extensions().get::<RequestId>().map(|r| r.0.as_str());
        return outcome(
            StatusCode::NOT_ACCEPTABLE,
            "only JSON is served: Accept application/fhir+json (or _format=json)",
            &[],
            request_id,
        );
    }
    next.run(req).await
}

/// The version of a resource: `meta.versionId` is the row's `updated_at` in microseconds since
/// the epoch (every change moves it), `meta.lastUpdated` the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub DateTime<Utc>);

impl Version {
    pub fn id(&self) -> String {
        self.0.timestamp_micros().to_string()
    }

    pub fn meta(&self) -> types::Meta {
        types::Meta {
            version_id: Some(types::Id(self.id())),
            last_updated: Some(types::Instant(
                self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )),
            ..Default::default()
        }
    }

    /// The weak ETag of this version (`W/"<versionId>"`).
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.id())
    }

    /// Whether an `If-Match` value names this version (`W/"v"`, `"v"` or `*`).
    pub fn matches(&self, if_match: &str) -> bool {
        if_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == self.id())
    }
}

/// A resource response with `ETag` and `Last-Modified` (and `Location` on create).
pub fn resource(
    status: StatusCode,
    body: &impl Serialize,
    version: Version,
    location: Option<String>,
) -> Response {
    let mut resp = fhir_json(status, body);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&version.etag()) {
        headers.insert(header::ETAG, v);
    }
    let modified = httpdate::fmt_http_date(std::time::SystemTime::from(version.0));
    if let Ok(v) = HeaderValue::from_str(&modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, loc);
    }
    resp
}

/// A FHIR resource in a request body: `Content-Type` `application/fhir+json` or
/// `application/json` (`415` otherwise), parsed with the FHIR model (`400` naming the problem,
/// never echoing the value).
pub struct FhirBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FhirBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
        match media.as_deref() {
            Some(FHIR_JSON | "application/json" | "application/json+fhir") => {}
            _ => return Err(Error::UnsupportedMediaType),
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| Error::bad_parameter("body", "the body could not be read"))?;
        serde_json::from_slice(&bytes).map(FhirBody).map_err(|e| {
            // serde's messages name the element and the expected type, never the value
            let what = match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    "the body is not valid JSON".to_string()
                }
                _ => format!(
                    "the body is not a valid resource of this type (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            };
            Error::bad_parameter("body", &what)
        })
    }
}

/// `Prefer: handling=lenient` (FHIR R4 §3.1.1.5.8): unknown search parameters are ignored
/// instead of refused.
pub fn lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"))
}

/// The absolute base of the FHIR endpoint as the client reached it (`Host`, and `https` when
/// the server terminates TLS or a proxy says so), for `fullUrl` and Bundle links.
pub fn base_url(headers: &HeaderMap, tls: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .unwrap_or("localhost");
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let scheme = if tls || forwarded_https {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}{}", super::BASE)
}

/// The logical id of a URL path: ours are UUIDs, so anything else cannot exist (`404`).
pub fn path_id(id: &str) -> Result<uuid::Uuid, Error> {
    id.parse().map_err(|_| Error::NotFound)
}

/// Methods whose request carries a resource body.
pub fn has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let mut h = HeaderMap::new();
        assert!(negotiates_json(&h, None));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/fhir+xml"),
        );
        assert!(!negotiates_json(&h, None));
        assert!(negotiates_json(&h, Some("_format=json")));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/fhir+json; fhirVersion=4.0, */*;q=0.1"),
        );
        assert!(negotiates_json(&h, None));
        assert!(!negotiates_json(&h, Some("_format=xml")));
    }

    #[test]
    fn versions_and_if_match() {
        let v = Version(DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"));
        assert_eq!(v.id(), "1700000000123456");
        assert!(v.matches("W/\"1700000000123456\""));
        assert!(v.matches("\"1700000000123456\""));
        assert!(v.matches("*"));
        assert!(!v.matches("W/\"1\""));
        assert_eq!(
            v.meta().last_updated.map(|i| i.0).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        let resp = resource(StatusCode::OK, &serde_json::json!({}), v, None);
        assert_eq!(
            resp.headers()
                .get(header::LAST_MODIFIED)
                .and_then(|h| h.to_str().ok()),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        assert_eq!(
            resp.headers()
                .get(header::ETAG)
                .and_then(|h| h.to_str().ok()),
            Some("W/\"1700000000123456\"")
        );
    }
}
