//! The API server's compliance self-report (`GET /internal/compliance` on the admin port 9090,
//! docs/contracts.md) and the client the operator reads it with.
//!
//! The admin port speaks HTTPS with the operator-issued certificate of
//! `<platform>-api-internal-tls` ([`crate::desired::api_tls`]). The operator trusts nothing else
//! for it: [`SelfReportClient::new`] trusts no CA at all (no system or built-in roots), and
//! [`SelfReportClient::trusting`] only the bundle it is given, the `ca.crt` the operator issued.

use std::time::Duration;

use crate::names::{Names, API_METRICS_PORT};

pub use caduceus_contract::self_report::*;

/// Why the self-report could not be read. Messages carry no response bodies.
#[derive(Debug, thiserror::Error)]
pub enum SelfReportError {
    #[error("building the HTTP client failed: {0}")]
    Client(String),
    #[error("the API self-report at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the API self-report at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the API self-report at {url} is not in the documented shape: {detail}")]
    Malformed { url: String, detail: String },
}

/// In-cluster URL of a platform's self-report: `https://<platform>-api.<ns>.svc:9090/internal/compliance`
/// (the host is the name the API's certificate is verified for).
pub fn url_for(names: &Names, namespace: &str) -> String {
    format!(
        "https://{}:{API_METRICS_PORT}{SELF_REPORT_PATH}",
        names.service_host(&names.api(), namespace)
    )
}

/// Reads self-reports with a short timeout (a slow API must not stall reconciles).
#[derive(Clone, Debug)]
pub struct SelfReportClient {
    http: reqwest::Client,
    timeout: Duration,
}

impl SelfReportClient {
    /// A client that trusts no certificate authority: it reads `http://` URLs only (tests of
    /// an API without TLS). See [`SelfReportClient::trusting`].
    pub fn new(timeout: Duration) -> Result<Self, SelfReportError> {
        let http = Self::builder(timeout)
            .build()
            .map_err(|e| SelfReportError::Client(e.to_string()))?;
        Ok(Self { http, timeout })
    }

    fn builder(timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
    }

    /// A client (same timeout) that reads only `https://` URLs and trusts only the CAs of
    /// `ca_pem` (a PEM bundle: during a CA renewal it holds the old and the new CA) — the
    /// `ca.crt` of the API's operator-issued certificate. The server's certificate must name
    /// the URL's host.
    pub fn trusting(&self, ca_pem: &[u8]) -> Result<Self, SelfReportError> {
        let cas = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|_| SelfReportError::Client("the API's CA bundle is not PEM".into()))?;
        if cas.is_empty() {
            return Err(SelfReportError::Client(
                "the API's CA bundle holds no certificate".into(),
            ));
        }
        let http = cas
            .into_iter()
            .fold(Self::builder(self.timeout).https_only(true), |b, ca| {
                b.add_root_certificate(ca)
            })
            .build()
            .map_err(|e| SelfReportError::Client(e.to_string()))?;
        Ok(Self {
            http,
            timeout: self.timeout,
        })
    }

    /// `GET url` and parse the self-report.
    pub async fn fetch(&self, url: &str) -> Result<SelfReport, SelfReportError> {
        self.fetch_with(url, &[]).await
    }

    /// `GET url?checkpoint=<id>:<hash>...`: the self-report with the API's comparison of
    /// `checkpoints` (audit chain heads recorded earlier, see [`super::audit_chain`]) with the
    /// chain as it is now, in `audit.checkpoints`.
    pub async fn fetch_with(
        &self,
        url: &str,
        checkpoints: &[AuditCheckpoint],
    ) -> Result<SelfReport, SelfReportError> {
        let query: Vec<(&str, String)> = checkpoints
            .iter()
            .take(MAX_CHECKPOINTS)
            .map(|c| (CHECKPOINT_PARAM, c.to_string()))
            .collect();
        let response = self
            .http
            .get(url)
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| SelfReportError::Unreachable {
                url: url.to_string(),
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(SelfReportError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| SelfReportError::Unreachable {
                url: url.to_string(),
                detail: e.without_url().to_string(),
            })?;
        parse(&body).map_err(|detail| SelfReportError::Malformed {
            url: url.to_string(),
            detail,
        })
    }
}

/// Parses a self-report body; the error names the offending field, never echoes values.
pub fn parse(body: &[u8]) -> Result<SelfReport, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let kind = match e.inner().classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing field or wrong type",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        format!("{kind} at `{path}`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const CONTRACT_EXAMPLE: &str = r#"{"version":"0.1.0","schema_version":7,
       "encryption":{"active":true,"active_key_id":"k-1","key_ids":["k-1"]},
       "audit":{"chain_head_id":123,"chain_head_hash":"ab","write_failures":0,"retention_days":2190},
       "sessions":{"idle_timeout_minutes":15,"access_token_ttl_minutes":15},
       "rate_limit":{"enabled":true,"backend":"redis","requests_per_minute":600,"login_attempts_per_minute":5},
       "database_tls":true, "cache":{"configured":true,"reachable":true}, "future_field": 1}"#;

    #[test]
    fn parses_the_contract_example() {
        let r = parse(CONTRACT_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.schema_version, 7);
        assert!(r.encryption.active);
        assert_eq!(r.audit.chain_head_id, 123);
        assert_eq!(r.rate_limit.backend, "redis");
        assert!(r.database_tls);
        assert_eq!(
            r.cache,
            Some(CacheReport {
                configured: true,
                reachable: true
            })
        );
    }

    #[test]
    fn reports_of_older_apis_without_the_cache_still_parse() {
        let old = CONTRACT_EXAMPLE.replace(r#""cache":{"configured":true,"reachable":true}, "#, "");
        assert!(!old.contains("cache"));
        let r = parse(old.as_bytes()).expect("older report parses");
        assert_eq!(r.cache, None, "unknown, not unreachable");
        let down = CONTRACT_EXAMPLE.replace(r#""reachable":true"#, r#""reachable":false"#);
        assert_eq!(
            parse(down.as_bytes()).unwrap().cache,
            Some(CacheReport {
                configured: true,
                reachable: false
            })
        );
    }

    #[test]
    fn malformed_report_names_the_field_without_values() {
        let body =
            CONTRACT_EXAMPLE.replace(r#""write_failures":0"#, r#""write_failures":"secret-ish""#);
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(err.contains("audit.write_failures"), "{err}");
        assert!(!err.contains("secret-ish"), "{err}");
        assert!(parse(b"{").unwrap_err().contains("truncated"));
    }

    #[test]
    fn url_points_at_the_admin_port_of_the_api_service() {
        assert_eq!(
            url_for(&Names::new("demo"), "clinic"),
            "https://demo-api.clinic.svc:9090/internal/compliance"
        );
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let client = SelfReportClient::new(Duration::from_millis(500)).unwrap();
        for bad in [&b""[..], b"not pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n"] {
            let err = client.trusting(bad).unwrap_err();
            assert!(matches!(err, SelfReportError::Client(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn unreachable_api_is_an_error_not_a_pass() {
        let client = SelfReportClient::new(Duration::from_millis(500)).unwrap();
        // Port 9 (discard) on localhost: nothing listens there in the test environment.
        let err = client
            .fetch("http://127.0.0.1:9/internal/compliance")
            .await
            .unwrap_err();
        assert!(matches!(err, SelfReportError::Unreachable { .. }), "{err}");
    }
}
