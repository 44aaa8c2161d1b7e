//! Cross-cutting HTTP middleware: request id, security headers, problem+json normalisation,
//! HTTP metrics and PHI-free access logs ([`observe`]), the client address ([`resolve_client_ip`])
//! and rate limiting ([`rate_limit`]). What a request says about its client is in
//! [`crate::request`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Problem};
use crate::metrics::Metrics;
use crate::ratelimit::{Decision, Limiter};
use crate::state::AppState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub use crate::request::{client_ip, ClientIp, RequestId, RequestMeta};

/// The client address of a request that came from `peer` with these `X-Forwarded-For` values
/// (in header order), trusting only proxies in `trusted`.
///
/// The peer is the client unless it is a trusted proxy. Then `X-Forwarded-For` is walked from
/// the right (each proxy appends the address it saw): the first address that is not itself a
/// trusted proxy is the client. Everything left of it was written by the client and is ignored.
/// If an entry is malformed the walk stops at the nearest trusted hop to its right (nothing
/// further left can be trusted); if every entry is trusted, the leftmost one is the client.
pub fn resolve_forwarded(peer: IpAddr, forwarded_for: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for entry in entries.into_iter().rev() {
        let Some(ip) = parse_forwarded_entry(entry.trim()) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, and the `1.2.3.4:5678` / `[2001:db8::1]:5678` forms some proxies write.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// Resolve the client address once per request (`CADUCEUS_TRUSTED_PROXIES`) and store it as
/// [`ClientIp`]: rate limiting and the audit trail's `client_ip` read it via [`client_ip`].
pub async fn resolve_client_ip(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let values: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = resolve_forwarded(peer.ip(), &values, &state.config.trusted_proxies);
        req.extensions_mut().insert(ClientIp(ip));
    }
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Outermost middleware of both routers.
pub async fn observe(State(metrics): State<Metrics>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    // the path only (never the query string, which may carry search terms)
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());

    let mut resp = next.run(req).await;
    let status = resp.status();

    // Our own problems get `instance` and `request_id`; any other error response (axum
    // rejections, fallback, 405, 408, 413) becomes a problem too (an OperationOutcome on the
    // FHIR routes), except deliberate JSON bodies such as the readiness report or an
    // OperationOutcome a FHIR handler built itself.
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        // FHIR routes answer their errors as OperationOutcome (`fhir::wire`)
        let v = v.as_bytes();
        v.starts_with(b"application/json") || v.starts_with(b"application/fhir+json")
    });
    let own_problem = resp.extensions().get::<Problem>().is_some();
    if (status.is_client_error() || status.is_server_error()) && (own_problem || !is_json) {
        let problem = resp.extensions_mut().remove::<Problem>();
        let mut problem = problem.unwrap_or_else(|| Problem::from_status(status));
        // under /fhir/R4 an OperationOutcome, whichever layer refused (a handler, the rate
        // limit, the body limit, the timeout, a panic)
        let mut fresh = if crate::fhir::outcome::is_fhir(&path) {
            let detail = problem.detail.as_deref().unwrap_or(&problem.title);
            crate::fhir::outcome::outcome(status, detail, &problem.errors, Some(&request_id))
        } else {
            problem.instance = Some(path);
            problem.request_id = Some(request_id.clone());
            problem.into_response_with(status)
        };
        // keep headers set by inner layers (Retry-After, RateLimit-*, Allow, CORS)
        for (name, value) in resp.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.headers_mut().append(name.clone(), value.clone());
            }
        }
        resp = fresh;
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    for (name, value) in SECURITY_HEADERS {
        if !headers.contains_key(name) {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
    }
    let elapsed = start.elapsed();
    let status_label = status.as_str().to_string();
    metrics
        .http_requests_total
        .with_label_values(&[method.as_str(), &route, &status_label])
        .inc();
    metrics
        .http_request_duration_seconds
        .with_label_values(&[method.as_str(), &route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = %route,
        status = status.as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// Fallback for unknown routes: 404 problem.
pub async fn not_found() -> Response {
    Problem::from_status(StatusCode::NOT_FOUND).into_response_with(StatusCode::NOT_FOUND)
}

/// Innermost middleware: a panicking handler becomes a bare 500 problem instead of a dropped
/// connection. The panic payload is neither returned nor logged (it could contain data).
pub async fn catch_panic(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!("request handler panicked");
            Problem::from_status(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response_with(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn set_headers(headers: &mut HeaderMap, d: &Decision) {
    for (name, value) in [
        ("ratelimit-limit", d.limit as u64),
        ("ratelimit-remaining", d.remaining as u64),
        ("ratelimit-reset", d.reset_secs),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
}

/// Rate limiting ([`crate::ratelimit::Limiter`]) on the `/api/v1` router: per client IP, per
/// user of a verified bearer token and, for logins, per IP more strictly.
pub async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limiter: Arc<Limiter> = state.limiter.clone();
    let ip = client_ip(req.extensions());
    // IPv6 clients by their /64
    let ip = ip
        .parse::<IpAddr>()
        .map(crate::ratelimit::ip_bucket)
        .unwrap_or(ip);
    let mut buckets = vec![(format!("ip:{ip}"), false)];
    let path = req.uri().path();
    if req.method() == Method::POST
        && (path.ends_with("/auth/login") || path.ends_with("/auth/login/mfa"))
    {
        buckets.push((format!("login:{ip}"), true));
    }
    if let Some(claims) = crate::auth::bearer_claims(&state, req.headers()) {
        buckets.push((format!("user:{}", claims.sub), false));
        // verified once here; the AuthUser extractor reuses it
        req.extensions_mut()
            .insert(crate::auth::VerifiedBearer(claims));
    }
    let decision = limiter.check(&buckets).await;
    if !decision.allowed {
        state.metrics.rate_limited_total.inc();
        let mut resp = Error::RateLimited {
            retry_after_secs: decision.retry_after_secs.max(1),
        }
        .into_response();
        set_headers(resp.headers_mut(), &decision);
        return resp;
    }
    let mut resp = next.run(req).await;
    set_headers(resp.headers_mut(), &decision);
    resp
}

/// Rate limiting of the health probes (per client address, per process; see
/// [`crate::ratelimit::PROBES_PER_MINUTE`]): generous enough for any kubelet, a flood gets `429`.
pub async fn probe_rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = client_ip(req.extensions());
    let client = ip
        .parse::<IpAddr>()
        .map(crate::ratelimit::ip_bucket)
        .unwrap_or(ip);
    match state.limiter.check_probe(&client) {
        Ok(()) => next.run(req).await,
        Err(retry_after_secs) => {
            state.metrics.rate_limited_total.inc();
            Error::RateLimited { retry_after_secs }.into_response()
        }
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::resolve_forwarded;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(
            resolve_forwarded(ip("203.0.113.5"), &["198.51.100.1"], &[]),
            ip("203.0.113.5")
        );
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            resolve_forwarded(ip("203.0.113.5"), &["198.51.100.1"], &t),
            ip("203.0.113.5")
        );
        // empty list = trust nobody, even a private peer
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["198.51.100.1"], &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn trusted_peer_rightmost_untrusted_entry_wins() {
        let t = nets(&["10.0.0.0/8", "fd00::/8"]);
        // client 198.51.100.1 → proxy 10.1.1.1 → proxy 10.0.0.2 (peer)
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["198.51.100.1, 10.1.1.1"], &t),
            ip("198.51.100.1")
        );
        // a spoofed entry left of the real client is ignored
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["1.1.1.1, 198.51.100.1"], &t),
            ip("198.51.100.1")
        );
        // several header lines are one list, in order
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["1.1.1.1", "198.51.100.1,10.9.9.9"], &t),
            ip("198.51.100.1")
        );
        // ports and IPv6 forms; IPv4-mapped IPv6 matches IPv4 ranges
        assert_eq!(
            resolve_forwarded(ip("::ffff:10.0.0.2"), &["[2001:db8::7]:4711"], &t),
            ip("2001:db8::7")
        );
        assert_eq!(
            resolve_forwarded(ip("fd00::1"), &["198.51.100.1:80"], &t),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn trusted_peer_without_usable_header() {
        let t = nets(&["10.0.0.0/8"]);
        // no header: the peer
        assert_eq!(resolve_forwarded(ip("10.0.0.2"), &[], &t), ip("10.0.0.2"));
        // malformed rightmost entry: stop at the nearest trusted hop
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["198.51.100.1, garbage"], &t),
            ip("10.0.0.2")
        );
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["garbage, 10.3.3.3"], &t),
            ip("10.3.3.3")
        );
        // every entry trusted: the leftmost (the client is inside the trusted range)
        assert_eq!(
            resolve_forwarded(ip("10.0.0.2"), &["10.5.5.5, 10.3.3.3"], &t),
            ip("10.5.5.5")
        );
    }
}
