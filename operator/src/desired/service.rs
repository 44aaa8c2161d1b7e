//! Service of the API: `http` 8080 (public API) and `metrics` 9090 (admin: metrics, detailed
//! health, compliance self-report).

use k8s_openapi::api::core::v1::Service;

use super::pod::{cluster_ip_service, service_port};
use crate::names::{Component, API_HTTP_PORT, API_METRICS_PORT};
use crate::validate::ValidatedPlatform;

pub fn build(p: &ValidatedPlatform) -> Service {
    cluster_ip_service(
        p,
        p.names.api(),
        Component::ApiServer,
        vec![
            service_port("http", API_HTTP_PORT),
            service_port("metrics", API_METRICS_PORT),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn exposes_http_and_metrics() {
        let p = platform(|_| {});
        let spec = build(&p).spec.unwrap();
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("http".to_string(), 8080), ("metrics".to_string(), 9090)]
        );
        assert_eq!(
            spec.selector.unwrap(),
            p.names.selector(Component::ApiServer)
        );
    }
}
