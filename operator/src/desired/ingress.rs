//! Optional Ingress of the API, always with TLS — towards clients (the user's certificate,
//! `tls.secretName`, default `<platform>-api-tls`) and towards the API, which serves only HTTPS
//! ([`super::api_tls`]): [`BACKEND_PROTOCOL_ANNOTATION`] tells ingress-nginx to connect to the
//! backend with TLS (docs/security.md lists what other controllers need). Annotations of
//! `apiServer.ingress.annotations` win over the operator's.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::child_meta;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// ingress-nginx: the protocol of the backend.
pub const BACKEND_PROTOCOL_ANNOTATION: &str = "nginx.ingress.kubernetes.io/backend-protocol";

/// The Ingress, or `None` when disabled.
pub fn build(p: &ValidatedPlatform) -> Option<Ingress> {
    let spec = &p.spec.api_server.ingress;
    if !spec.enabled {
        return None;
    }
    // Validation guarantees a host when enabled.
    let host = spec.host.clone()?;
    let mut metadata = child_meta(p, p.names.api(), Component::ApiServer);
    let mut annotations =
        BTreeMap::from([(BACKEND_PROTOCOL_ANNOTATION.to_string(), "HTTPS".to_string())]);
    annotations.extend(spec.annotations.clone());
    metadata.annotations = Some(annotations);
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![host.clone()]),
                secret_name: Some(
                    spec.tls_secret_name
                        .clone()
                        .unwrap_or_else(|| p.names.api_tls()),
                ),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: p.names.api(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    })
}

/// Public URL of the API when the Ingress is enabled.
pub fn external_url(p: &ValidatedPlatform) -> Option<String> {
    let spec = &p.spec.api_server.ingress;
    spec.enabled
        .then(|| spec.host.as_ref().map(|h| format!("https://{h}")))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn ingress_always_has_tls() {
        let p = platform(|s| {
            s.api_server.ingress.enabled = true;
            s.api_server.ingress.host = Some("api.example.org".into());
            s.api_server.ingress.class_name = Some("nginx".into());
            s.api_server
                .ingress
                .annotations
                .insert("cert-manager.io/cluster-issuer".into(), "le".into());
        });
        let ing = build(&p).unwrap();
        let annotations = ing.metadata.annotations.unwrap();
        assert_eq!(annotations["cert-manager.io/cluster-issuer"], "le");
        // The API speaks only HTTPS: the controller must too.
        assert_eq!(annotations[BACKEND_PROTOCOL_ANNOTATION], "HTTPS");
        let spec = ing.spec.unwrap();
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("demo-api-tls"));
        assert_eq!(tls.hosts.clone().unwrap(), ["api.example.org"]);
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(external_url(&p).as_deref(), Some("https://api.example.org"));
    }

    #[test]
    fn the_users_annotations_win() {
        let p = platform(|s| {
            s.api_server.ingress.enabled = true;
            s.api_server.ingress.host = Some("api.example.org".into());
            s.api_server
                .ingress
                .annotations
                .insert(BACKEND_PROTOCOL_ANNOTATION.into(), "GRPCS".into());
        });
        let annotations = build(&p).unwrap().metadata.annotations.unwrap();
        assert_eq!(annotations[BACKEND_PROTOCOL_ANNOTATION], "GRPCS");
        assert_eq!(annotations.len(), 1);
    }

    #[test]
    fn disabled_means_none() {
        let p = platform(|_| {});
        assert!(build(&p).is_none());
        assert!(external_url(&p).is_none());
    }
}
