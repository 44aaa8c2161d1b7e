//! Service of the API: `http` 8080 (public API) and `metrics` 9090 (admin: metrics, detailed
//! health, compliance self-report). Both speak HTTPS ([`super::api_tls`]); the port names stay
//! (the Ingress, the ServiceMonitor and NetworkPolicies refer to them); `appProtocol: https` is
//! the hint for controllers and service meshes that read it.

use k8s_openapi::api::core::v1::{Service, ServicePort};

use super::pod::{cluster_ip_service, service_port};
use crate::names::{Component, API_HTTP_PORT, API_METRICS_PORT};
use crate::validate::ValidatedPlatform;

/// `appProtocol` of both ports.
pub const APP_PROTOCOL: &str = "https";

fn https_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        app_protocol: Some(APP_PROTOCOL.into()),
        ..service_port(name, port)
    }
}

pub fn build(p: &ValidatedPlatform) -> Service {
    cluster_ip_service(
        p,
        p.names.api(),
        Component::ApiServer,
        vec![
            https_port("http", API_HTTP_PORT),
            https_port("metrics", API_METRICS_PORT),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn exposes_http_and_metrics_over_https() {
        let p = platform(|_| {});
        let spec = build(&p).spec.unwrap();
        let ports: Vec<(String, i32, Option<String>)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.app_protocol))
            .collect();
        let https = Some("https".to_string());
        assert_eq!(
            ports,
            [
                ("http".to_string(), 8080, https.clone()),
                ("metrics".to_string(), 9090, https)
            ]
        );
        assert_eq!(
            spec.selector.unwrap(),
            p.names.selector(Component::ApiServer)
        );
    }
}
