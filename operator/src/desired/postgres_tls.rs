//! TLS between the API and the embedded Postgres: an operator-issued CA and a server certificate
//! for the database Service names, kept in Secret `<platform>-postgres-tls` (`ca.crt`, `ca.key`,
//! `tls.crt`, `tls.key`). Postgres runs with `ssl=on` using the server certificate; the API mounts
//! only `ca.crt` and connects with `sslmode=verify-full&sslrootcert=...` (HIPAA 45 CFR
//! 164.312(e)(2)(ii)).
//!
//! Issuing and renewing are [`super::certs`]'s (re-exported here); this module names the
//! database's certificates: [`SERVICE`], [`dns_names`], where they are mounted.

use k8s_openapi::jiff::Timestamp;

use super::certs;
pub use super::certs::{
    checksum, expiry, issue_server, parse_certificates, plan, stored_from, CertInfo, Plan, Reason,
    Stored, TlsError, TlsMaterial, CA_CERT_KEY, CA_KEY_KEY, CA_RENEW_BEFORE_DAYS, CA_VALIDITY_DAYS,
    KEY_FILE_MODE, PROPAGATION_SECONDS, SERVER_CERT_KEY, SERVER_KEY_KEY, SERVER_RENEW_BEFORE_DAYS,
    SERVER_VALIDITY_DAYS,
};
use crate::validate::ValidatedPlatform;

/// The database's certificates (CA name `caduceus <platform> database CA`).
pub const SERVICE: certs::Service = certs::Service {
    role: "database",
    server: "Postgres",
};

/// Where Postgres reads its certificate and key.
pub const SERVER_TLS_DIR: &str = "/etc/postgres/tls";
/// Where the API reads the CA that signs the database certificate.
pub const API_DB_CA_DIR: &str = "/etc/caduceus/db-ca";

/// DNS names the server certificate covers: the client Service (the API's host) and the
/// headless Service, short and fully qualified.
pub fn dns_names(p: &ValidatedPlatform) -> Vec<String> {
    let ns = &p.namespace;
    let mut out = Vec::new();
    for svc in [p.names.postgres(), p.names.postgres_headless()] {
        out.push(svc.clone());
        out.push(format!("{svc}.{ns}"));
        out.push(format!("{svc}.{ns}.svc"));
        out.push(format!("{svc}.{ns}.svc.cluster.local"));
    }
    out.push(format!(
        "*.{}.{ns}.svc.cluster.local",
        p.names.postgres_headless()
    ));
    out
}

/// The `verify-full` query of the API's `DATABASE_URL`.
pub fn url_query() -> String {
    format!("sslmode=verify-full&sslrootcert={API_DB_CA_DIR}/{CA_CERT_KEY}")
}

/// Issues a new database CA and a server certificate for `hosts`, valid from `now`.
pub fn issue(platform: &str, hosts: &[String], now: Timestamp) -> Result<TlsMaterial, TlsError> {
    certs::issue(SERVICE, platform, hosts, now)
}

/// [`certs::renew`] for the database's certificates.
pub fn renew(
    platform: &str,
    stored: &Stored,
    hosts: &[String],
    now: Timestamp,
) -> Result<(TlsMaterial, Plan), TlsError> {
    certs::renew(SERVICE, platform, stored, hosts, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::{platform, template_annotation};

    #[test]
    fn names_cover_the_service_the_api_connects_to() {
        let names = dns_names(&platform(|_| {}));
        assert!(names.contains(&"demo-postgres.clinic.svc".to_string()));
        assert!(names.contains(&"demo-postgres-headless.clinic.svc.cluster.local".to_string()));
        assert_eq!(
            url_query(),
            "sslmode=verify-full&sslrootcert=/etc/caduceus/db-ca/ca.crt"
        );
    }

    #[test]
    fn postgres_serves_tls_and_the_api_mounts_only_the_ca() {
        let p = platform(|_| {});
        let sts = crate::desired::postgres::build(&p, Some("abc"))
            .unwrap()
            .stateful_set;
        assert_eq!(
            template_annotation(&sts, crate::names::ANNOTATION_TLS_CHECKSUM),
            "abc"
        );
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(args.starts_with("postgres -c ssl=on"), "{args}");
        assert!(
            args.contains("ssl_key_file=/etc/postgres/tls/tls.key"),
            "{args}"
        );
        let tls = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        let src = tls.secret.unwrap();
        assert_eq!(src.secret_name.as_deref(), Some("demo-postgres-tls"));
        assert_eq!(src.default_mode, Some(0o640));
        let mounted: Vec<String> = src.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(
            mounted,
            ["tls.crt", "tls.key"],
            "the CA key never reaches Postgres"
        );

        let config = crate::desired::config_map::build(&p);
        let d = crate::desired::deployment::build(&p, &config, None, None);
        let pod = d.spec.unwrap().template.spec.unwrap();
        let ca = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "db-ca")
            .unwrap();
        let items = ca.secret.unwrap().items.unwrap();
        assert_eq!(items.len(), 1, "the server key never reaches the API");
        assert_eq!(items[0].key, "ca.crt");
        for c in pod
            .init_containers
            .unwrap()
            .iter()
            .chain(pod.containers.iter())
        {
            assert!(
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "db-ca" && m.mount_path == API_DB_CA_DIR),
                "{} lacks the CA",
                c.name
            );
        }

        let external = platform(|s| {
            s.database.provider = crate::crd::DatabaseProvider::External;
            s.database.secret_ref = Some(crate::crd::SecretKeyRef {
                name: "db".into(),
                key: "url".into(),
            });
        });
        let config = crate::desired::config_map::build(&external);
        let d = crate::desired::deployment::build(&external, &config, None, None);
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "db-ca"));
    }
}
