//! What a request says about its client, as request extensions set by [`crate::middleware`] and
//! read by the audit trail and the rate limiter: the request id, the resolved client address and
//! the client metadata of audit events ([`RequestMeta`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::header;
use axum::http::request::Parts;

/// The request id of the current request (request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Client metadata recorded in audit events.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub client_ip: String,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn from_parts(parts: &Parts) -> Self {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect());
        Self {
            request_id,
            client_ip: client_ip(&parts.extensions),
            user_agent,
        }
    }
}

/// The client address resolved by [`crate::middleware::resolve_client_ip`] (request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Client IP: the one [`crate::middleware::resolve_client_ip`] found (peer, or `X-Forwarded-For` behind a trusted
/// proxy), else the peer from `ConnectInfo` (set by `serve`; tests insert it), else `unknown`.
pub fn client_ip(ext: &http::Extensions) -> String {
    if let Some(ClientIp(ip)) = ext.get::<ClientIp>() {
        return ip.to_string();
    }
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical().to_string())
        .unwrap_or_else(|| "unknown".into())
}
