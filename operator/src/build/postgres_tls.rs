//! TLS between the API and the embedded Postgres: an operator-issued CA and a server certificate
//! for the database Service names, kept in Secret `<platform>-postgres-tls` (`ca.crt`, `tls.crt`,
//! `tls.key`). Postgres runs with `ssl=on` using them; the API mounts only `ca.crt` and connects
//! with `sslmode=verify-full&sslrootcert=...` (HIPAA 45 CFR 164.312(e)(2)(ii)).
//!
//! Keys are generated once (ECDSA P-256) and kept: an existing Secret is never regenerated.
//! Certificates are valid for 10 years from the day they are issued; renewal is not automated.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::validate::ValidatedPlatform;

/// Keys of the TLS Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const SERVER_CERT_KEY: &str = "tls.crt";
pub const SERVER_KEY_KEY: &str = "tls.key";

/// Where Postgres reads its certificate and key.
pub const SERVER_TLS_DIR: &str = "/etc/postgres/tls";
/// Where the API reads the CA that signs the database certificate.
pub const API_DB_CA_DIR: &str = "/etc/caduceus/db-ca";
/// File mode of the mounted key (Postgres accepts root-owned keys readable by its group).
pub const KEY_FILE_MODE: i32 = 0o640;

/// Years a certificate is valid.
const VALIDITY_YEARS: i32 = 10;

/// PEM-encoded CA certificate, server certificate and server key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
}

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

fn ymd(date: &str) -> Option<(i32, u8, u8)> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y = date[0..4].parse().ok()?;
    let m = date[4..6].parse().ok()?;
    let d = date[6..8].parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// Issues a new CA and a server certificate for `hosts`, valid from `date` (`YYYYMMDD`, the
/// day of issue) for ten years.
pub fn issue(platform: &str, hosts: &[String], date: &str) -> Result<TlsMaterial, rcgen::Error> {
    let (y, m, d) = ymd(date).ok_or(rcgen::Error::Time)?;
    let not_before = date_time_ymd(y, m, d);
    // The 28th exists in every month, so the end date is always valid.
    let not_after = date_time_ymd(y + VALIDITY_YEARS, m, d.min(28));

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("caduceus {platform} database CA"),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "caduceus-operator");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(hosts.to_vec())?;
    server.distinguished_name.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_default(),
    );
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = not_after;
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    Ok(TlsMaterial {
        ca_cert: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::platform;
    use std::process::Command;

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
        let sts = crate::build::postgres::build(&p).unwrap().stateful_set;
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

        let config = crate::build::config_map::build(&p);
        let d = crate::build::deployment::build(&p, &config);
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
        let config = crate::build::config_map::build(&external);
        let d = crate::build::deployment::build(&external, &config);
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "db-ca"));
    }

    #[test]
    fn bad_date_is_an_error() {
        assert!(issue("demo", &["h".into()], "2026-11-22").is_err());
        assert!(issue("demo", &["h".into()], "20261322").is_err());
    }

    /// The issued chain verifies with OpenSSL (the library Postgres itself uses) for the
    /// Service name, and not for another name or against another CA.
    #[test]
    fn issued_chain_verifies_with_openssl_for_the_service_name() {
        let p = platform(|_| {});
        let m = issue("demo", &dns_names(&p), "20261122").unwrap();
        assert!(m.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.server_key.contains("PRIVATE KEY"));
        let other = issue("other", &dns_names(&p), "20261122").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let ca = write("ca.crt", &m.ca_cert);
        let other_ca = write("other-ca.crt", &other.ca_cert);
        let cert = write("tls.crt", &m.server_cert);
        let verify = |ca: &str, host: &str| {
            let out = Command::new("openssl")
                .args([
                    "verify",
                    "-attime",
                    "1795327200",
                    "-CAfile",
                    ca,
                    "-verify_hostname",
                    host,
                    &cert,
                ])
                .output()
                .expect("openssl is installed");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, out) = verify(&ca, "demo-postgres.clinic.svc");
        assert!(ok, "{out}");
        let (ok, out) = verify(&ca, "evil.example.org");
        assert!(!ok, "wrong host must fail: {out}");
        let (ok, out) = verify(&other_ca, "demo-postgres.clinic.svc");
        assert!(!ok, "another CA must fail: {out}");
        // The key matches the certificate.
        let key = write("tls.key", &m.server_key);
        let pubkey = |args: &[&str]| Command::new("openssl").args(args).output().unwrap().stdout;
        assert_eq!(
            pubkey(&["x509", "-in", &cert, "-noout", "-pubkey"]),
            pubkey(&["pkey", "-in", &key, "-pubout"])
        );
    }
}
