//! TLS inside the platform for the API (HIPAA 45 CFR 164.312(e)(1)): an operator-issued CA and a
//! serving certificate for the API Service's names, kept in Secret `<platform>-api-internal-tls`
//! (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`; its own CA, not the database's or the cache's; not
//! `<platform>-api-tls`, which is the user's Ingress certificate).
//!
//! - The API mounts only `tls.crt` and `tls.key` (mode `0440`: root-owned with the pod's
//!   `fsGroup`, so only the API's account reads the key) and serves HTTPS on its public port and
//!   its admin port ([`caduceus_contract::settings::TLS_CERT_FILE`],
//!   [`caduceus_contract::settings::TLS_KEY_FILE`]); its probes use `scheme: HTTPS`.
//! - Clients inside the cluster trust `ca.crt` for the name [`server_name`]: the operator when it
//!   reads the self-report on the admin port ([`ca_bundle`]), Prometheus through the API's
//!   ServiceMonitor `tlsConfig`, and an ingress controller that verifies its backend.
//! - Issuing and renewal are [`super::certs`]'s (the same windows and CA overlap as the database's
//!   and cache's). The API reads its certificate at start, so the Deployment's pod template
//!   carries [`crate::names::ANNOTATION_API_TLS_CHECKSUM`]: a renewed certificate rolls the pods
//!   (`maxUnavailable: 0`, the API drains on SIGTERM), no request is lost.

use caduceus_contract::settings;
use k8s_openapi::api::core::v1::{EnvVar, Secret, Volume, VolumeMount};
use k8s_openapi::jiff::Timestamp;

use super::certs::{self, CA_CERT_KEY, SERVER_CERT_KEY, SERVER_KEY_KEY};
use super::pod::{env, read_only_mount, secret_volume};
use super::secrets::{is_placeholder, ExistingSecrets, SecretGenerator, TlsSecret};
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// The API's certificates (CA name `caduceus <platform> API CA`).
pub const SERVICE: certs::Service = certs::Service {
    role: "API",
    server: "the API",
};

/// Where the API reads its serving certificate and key.
pub const API_TLS_DIR: &str = "/etc/caduceus/tls";
/// Name of the pod volume holding them.
pub const VOLUME: &str = "tls";
/// Mode of the mounted files (certificate and key): readable by the pod's `fsGroup` (the API's
/// account), by nobody else.
pub const FILE_MODE: i32 = 0o440;

/// DNS names the serving certificate covers: the API Service, short and fully qualified.
pub fn dns_names(p: &ValidatedPlatform) -> Vec<String> {
    let ns = &p.namespace;
    let svc = p.names.api();
    vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ]
}

/// The name clients verify the API's certificate for: `<platform>-api.<ns>.svc`.
pub fn server_name(p: &ValidatedPlatform) -> String {
    p.names.service_host(&p.names.api(), &p.namespace)
}

/// The Secret `<platform>-api-internal-tls`, issued, renewed and kept as the database's and the
/// cache's are ([`TlsSecret`]).
fn tls_secret(p: &ValidatedPlatform) -> TlsSecret {
    TlsSecret {
        service: SERVICE,
        name: p.names.api_internal_tls(),
        hosts: dns_names(p),
        component: Component::ApiServer,
    }
}

/// What [`build`] does to the certificates at `now` (for the `CertificateRenewed` Event).
pub fn plan(p: &ValidatedPlatform, existing: &ExistingSecrets, now: Timestamp) -> certs::Plan {
    tls_secret(p).plan(existing, now)
}

/// `<platform>-api-internal-tls`, for every platform (the API always serves HTTPS): issued when
/// missing and renewed as [`certs::plan`] decides at the generator's `now`, otherwise kept byte
/// for byte. If issuing fails the Secret keeps what it had (or stays without certificates): the
/// API pods cannot start (never a silent plaintext fallback).
pub fn build(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Secret {
    tls_secret(p).build(p, existing, generator)
}

/// The CA bundle (`ca.crt`) of a built Secret, which the operator trusts (alone) when it reads
/// the API's self-report; `None` for `render`'s placeholders or a Secret without it.
pub fn ca_bundle(secret: &Secret) -> Option<Vec<u8>> {
    if is_placeholder(secret) {
        return None;
    }
    let ca = secret.data.as_ref()?.get(CA_CERT_KEY)?;
    (!ca.0.is_empty()).then(|| ca.0.clone())
}

/// Volume [`VOLUME`]: only `tls.crt` and `tls.key` of `<platform>-api-internal-tls` (the CA key
/// never reaches the API), mode [`FILE_MODE`].
pub fn volume(p: &ValidatedPlatform) -> Volume {
    secret_volume(
        VOLUME,
        p.names.api_internal_tls(),
        &[SERVER_CERT_KEY, SERVER_KEY_KEY],
        None,
        FILE_MODE,
    )
}

/// The API container's read-only mount of [`volume`] at [`API_TLS_DIR`].
pub fn mount() -> VolumeMount {
    read_only_mount(VOLUME, API_TLS_DIR)
}

/// `CADUCEUS_TLS_CERT_FILE` and `CADUCEUS_TLS_KEY_FILE` naming the mounted files.
pub fn env_vars() -> [EnvVar; 2] {
    [
        env(
            settings::TLS_CERT_FILE,
            format!("{API_TLS_DIR}/{SERVER_CERT_KEY}"),
        ),
        env(
            settings::TLS_KEY_FILE,
            format!("{API_TLS_DIR}/{SERVER_KEY_KEY}"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::certs::CA_KEY_KEY;
    use crate::desired::secrets::PLACEHOLDER;
    use crate::desired::test_support::platform;
    use crate::names::ANNOTATION_PLACEHOLDER;

    fn value(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn names_cover_the_api_service_and_differ_from_the_ingress_certificate() {
        let p = platform(|_| {});
        assert_eq!(
            dns_names(&p),
            [
                "demo-api",
                "demo-api.clinic",
                "demo-api.clinic.svc",
                "demo-api.clinic.svc.cluster.local"
            ]
        );
        assert_eq!(server_name(&p), "demo-api.clinic.svc");
        let s = build(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random(),
        );
        assert_eq!(s.metadata.name.as_deref(), Some("demo-api-internal-tls"));
        assert_ne!(s.metadata.name, Some(p.names.api_tls()));
    }

    #[test]
    fn issued_once_kept_and_covering_the_service_names() {
        let p = platform(|_| {});
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let first = build(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random_at(t0),
        );
        for key in [CA_CERT_KEY, CA_KEY_KEY, SERVER_CERT_KEY, SERVER_KEY_KEY] {
            assert!(!value(&first, key).is_empty(), "{key}");
        }
        let server = &certs::parse_certificates(&value(&first, SERVER_CERT_KEY))[0];
        assert!(server.names.contains("demo-api.clinic.svc"));
        assert!(server.names.contains("demo-api.clinic.svc.cluster.local"));
        let ca = &certs::parse_certificates(&value(&first, CA_CERT_KEY))[0];
        assert!(server.issued_by(ca));
        assert_eq!(
            ca_bundle(&first).unwrap(),
            value(&first, CA_CERT_KEY).as_bytes()
        );

        let mut existing = ExistingSecrets::default();
        existing.insert("demo-api-internal-tls", first.data.clone().unwrap());
        let later = t0.checked_add(k8s_openapi::jiff::SignedDuration::from_hours(24 * 30));
        let second = build(
            &p,
            &existing,
            &mut SecretGenerator::random_at(later.unwrap()),
        );
        assert_eq!(second.data, first.data, "kept byte for byte");
        assert!(!plan(&p, &existing, t0).changes());
    }

    #[test]
    fn render_shows_placeholders_and_no_ca_to_trust() {
        let p = platform(|_| {});
        let s = build(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(value(&s, SERVER_KEY_KEY), PLACEHOLDER);
        assert!(s
            .metadata
            .annotations
            .unwrap()
            .contains_key(ANNOTATION_PLACEHOLDER));
        let s = build(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(ca_bundle(&s), None);
        assert_eq!(crate::desired::secrets::tls_checksum(&s), None);
    }

    /// Near expiry the serving certificate is re-issued from the same CA; its checksum on the
    /// pod template changes, so the API pods roll onto it. Until then nothing changes (no
    /// restart).
    #[test]
    fn renewal_near_expiry_rolls_the_api_pods() {
        use crate::desired::{build_children, certs::SERVER_VALIDITY_DAYS};
        let p = platform(|_| {});
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let at = |days: i64| {
            t0.checked_add(k8s_openapi::jiff::SignedDuration::from_hours(days * 24))
                .unwrap()
        };
        let checksum = |c: &crate::desired::Children| {
            c.api_deployment
                .spec
                .clone()
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[crate::names::ANNOTATION_API_TLS_CHECKSUM]
                .clone()
        };
        let first = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random_at(t0),
        );
        let tls = first.api_tls.clone();
        let mut existing = ExistingSecrets::default();
        existing.insert("demo-api-internal-tls", tls.data.clone().unwrap());
        let month_later = build_children(&p, &existing, &mut SecretGenerator::random_at(at(30)));
        assert_eq!(month_later.api_tls, tls);
        assert_eq!(checksum(&month_later), checksum(&first));

        let late = at(SERVER_VALIDITY_DAYS - 10);
        let plan = plan(&p, &existing, late);
        assert_eq!(plan.server, Some(certs::Reason::Expiring));
        assert!(plan
            .describe(SERVICE)
            .unwrap()
            .contains("re-issued the API server certificate"));
        let renewed = build_children(&p, &existing, &mut SecretGenerator::random_at(late));
        assert_eq!(
            value(&renewed.api_tls, CA_CERT_KEY),
            value(&tls, CA_CERT_KEY),
            "same CA: the operator and Prometheus need nothing new"
        );
        assert_ne!(
            value(&renewed.api_tls, SERVER_CERT_KEY),
            value(&tls, SERVER_CERT_KEY)
        );
        assert_ne!(checksum(&renewed), checksum(&first), "the pods roll");
    }

    #[test]
    fn the_api_mounts_only_its_certificate_and_key_and_probes_https() {
        let p = platform(|_| {});
        let d = crate::desired::deployment::build(
            &p,
            &crate::desired::config_map::build(&p),
            None,
            Some("tls-hash"),
        );
        let template = d.spec.unwrap().template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()
                [crate::names::ANNOTATION_API_TLS_CHECKSUM],
            "tls-hash"
        );
        let pod = template.spec.unwrap();
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == VOLUME)
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(vol.secret_name.as_deref(), Some("demo-api-internal-tls"));
        assert_eq!(vol.default_mode, Some(0o440));
        let keys: Vec<String> = vol.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["tls.crt", "tls.key"], "never the CA key");

        let api = &pod.containers[0];
        let mount = api
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == VOLUME)
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/caduceus/tls", Some(true))
        );
        let env = |name: &str| {
            api.env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            env("CADUCEUS_TLS_CERT_FILE").as_deref(),
            Some("/etc/caduceus/tls/tls.crt")
        );
        assert_eq!(
            env("CADUCEUS_TLS_KEY_FILE").as_deref(),
            Some("/etc/caduceus/tls/tls.key")
        );
        for probe in [
            &api.startup_probe,
            &api.liveness_probe,
            &api.readiness_probe,
        ] {
            let get = probe.clone().unwrap().http_get.unwrap();
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }
        // The migration init container serves nothing: no serving key there.
        for c in pod.init_containers.iter().flatten() {
            assert!(c.volume_mounts.iter().flatten().all(|m| m.name != VOLUME));
        }
    }
}
