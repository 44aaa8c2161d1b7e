//! Operator-issued TLS for the platform's own servers: a CA and a server certificate per server,
//! kept in one Secret each (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`), issued and renewed here for
//! every user ([`super::postgres_tls`]: the embedded Postgres, [`super::redis_tls`]: the embedded
//! Redis). Each Secret has its own CA: a client trusts one server's CA only for that server, and
//! each set rotates on its own. The server mounts `tls.crt`/`tls.key`, its clients only `ca.crt`
//! (HIPAA 45 CFR 164.312(e)(2)(ii)). What differs between users is a [`Service`] (the words of
//! the CA's name and of the Events) and the host names passed in.
//!
//! Renewal is automatic and pure ([`plan`] decides, [`renew`] executes; the caller passes `now`):
//! - the server certificate (valid [`SERVER_VALIDITY_DAYS`]) is re-issued from the same CA when it
//!   is within [`SERVER_RENEW_BEFORE_DAYS`] of expiry, when its names no longer match the host
//!   names, or when it is not signed by a CA in `ca.crt`;
//! - the CA (valid [`CA_VALIDITY_DAYS`]) is renewed [`CA_RENEW_BEFORE_DAYS`] before it expires.
//!   The new CA goes first into `ca.crt`, which keeps the old one (clients trust both); the server
//!   certificate moves to the new CA once it has been published for [`PROPAGATION_SECONDS`], and
//!   the old CA leaves `ca.crt` [`PROPAGATION_SECONDS`] after that (or when it expires).
//!
//! Only the newest CA's key is kept (`ca.key`). Secrets written before `ca.key` existed keep their
//! CA until a certificate must be signed; then a new CA is issued with the same overlap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// Keys of the TLS Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const SERVER_CERT_KEY: &str = "tls.crt";
pub const SERVER_KEY_KEY: &str = "tls.key";

/// File mode of the mounted server key (Postgres and Redis accept keys readable by their group).
pub const KEY_FILE_MODE: i32 = 0o640;

/// Days a CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// A new CA is issued this many days before the current one expires.
pub const CA_RENEW_BEFORE_DAYS: i64 = 365;
/// Days a server certificate is valid (never beyond its CA).
pub const SERVER_VALIDITY_DAYS: i64 = 365;
/// A server certificate is re-issued this many days before it expires.
pub const SERVER_RENEW_BEFORE_DAYS: i64 = 30;
/// How long a new CA is in `ca.crt` before the server certificate moves to it, and how long the
/// old CA stays after that (mounted Secrets reach pods within about a minute).
pub const PROPAGATION_SECONDS: i64 = 3600;
/// Certificates start this long before they are issued (clock skew between nodes).
const BACKDATE_SECONDS: i64 = 300;

const DAY: i64 = 86_400;

/// PEM-encoded CA bundle (newest first), the newest CA's key (absent for Secrets issued before
/// keys were kept), server certificate and server key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_cert: String,
    pub ca_key: Option<String>,
    pub server_cert: String,
    pub server_key: String,
}

/// Errors of issuing certificates. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("issuing a certificate failed: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("time {0} is out of the certificate range")]
    Time(Timestamp),
    #[error("no CA key is available to sign the server certificate")]
    NoCaKey,
}

/// Which server a certificate set is for: the words of its CA's common name and of its Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// What the server is to the platform (`database`, `cache`).
    pub role: &'static str,
    /// The program that loads the certificate (`Postgres`, `Redis`).
    pub server: &'static str,
}

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub pem: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Subject alternative names (DNS names lower-cased, IP addresses as text).
    pub names: BTreeSet<String>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    /// DER `SubjectPublicKeyInfo`.
    pub public_key: Vec<u8>,
}

impl CertInfo {
    /// Whether `issuer` signed this certificate (by key identifier).
    pub fn issued_by(&self, issuer: &CertInfo) -> bool {
        self.authority_key_id.is_some() && self.authority_key_id == issuer.subject_key_id
    }
}

/// Parses every certificate of a PEM text (blocks that are not certificates are skipped).
pub fn parse_certificates(pem_text: &str) -> Vec<CertInfo> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes()) {
        let Ok(block) = block else { break };
        if block.label != "CERTIFICATE" {
            continue;
        }
        let Ok(cert) = block.parse_x509() else {
            continue;
        };
        let time = |t: i64| Timestamp::from_second(t).ok();
        let (Some(not_before), Some(not_after)) = (
            time(cert.validity().not_before.timestamp()),
            time(cert.validity().not_after.timestamp()),
        ) else {
            continue;
        };
        let mut names = BTreeSet::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => {
                        names.insert(d.to_ascii_lowercase());
                    }
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            names.insert(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => subject_key_id = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    authority_key_id = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        let pem = pem_encode(&block.contents);
        out.push(CertInfo {
            pem,
            not_before,
            not_after,
            names,
            subject_key_id,
            authority_key_id,
            public_key: cert.public_key().raw.to_vec(),
        });
    }
    out
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The normalised name set of `hosts` (as [`CertInfo::names`] reads them back).
fn name_set(hosts: &[String]) -> BTreeSet<String> {
    hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => h.to_ascii_lowercase(),
        })
        .collect()
}

/// The TLS Secret as it is, parsed.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Certificates of `ca.crt`, in order.
    pub cas: Vec<CertInfo>,
    /// `ca.key` and the index in `cas` of the certificate it belongs to.
    pub ca_key: Option<(String, usize)>,
    /// `tls.crt` with `tls.key`, when both exist and belong together.
    pub server: Option<(CertInfo, String)>,
}

impl Stored {
    /// Parses the four Secret values (any may be missing or invalid).
    pub fn parse(
        ca_cert: Option<&str>,
        ca_key: Option<&str>,
        server_cert: Option<&str>,
        server_key: Option<&str>,
    ) -> Self {
        let cas = ca_cert.map(parse_certificates).unwrap_or_default();
        let spki = |pem: &str| {
            KeyPair::from_pem(pem)
                .ok()
                .map(|k| k.subject_public_key_info())
        };
        let ca_key = ca_key.and_then(|pem| {
            let public = spki(pem)?;
            let index = cas.iter().position(|c| c.public_key == public)?;
            Some((pem.to_string(), index))
        });
        let server = match (server_cert.map(parse_certificates), server_key) {
            (Some(certs), Some(key)) => certs
                .into_iter()
                .next()
                .filter(|c| spki(key).is_some_and(|public| public == c.public_key))
                .map(|c| (c, key.to_string())),
            _ => None,
        };
        Self {
            cas,
            ca_key,
            server,
        }
    }
}

impl Stored {
    /// The CA whose key is kept, when it has not expired at `now`: (certificate, key PEM).
    pub fn signing(&self, now: Timestamp) -> Option<(&CertInfo, &str)> {
        self.ca_key
            .as_ref()
            .map(|(key, i)| (&self.cas[*i], key.as_str()))
            .filter(|(c, _)| c.not_after > now)
    }
}

/// Why a certificate is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// There is none (first issue, or the Secret lost it).
    Missing,
    /// It expires within the renewal window (or has expired).
    Expiring,
    /// The server certificate does not cover the desired names.
    NamesChanged,
    /// The server certificate is not signed by a CA in `ca.crt`.
    UntrustedIssuer,
    /// The server certificate moves to the CA that replaced its issuer.
    NewCa,
    /// A certificate must be signed but the CA's key is not kept (older Secret).
    NoCaKey,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Missing => "it did not exist",
            Reason::Expiring => "it was about to expire",
            Reason::NamesChanged => "its DNS names no longer matched the server's Services",
            Reason::UntrustedIssuer => "it was not signed by a CA in ca.crt",
            Reason::NewCa => "its CA has been replaced by a new one",
            Reason::NoCaKey => "the key of the previous CA is not kept",
        }
    }
}

/// What [`renew`] does for a given state and time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// A new CA is issued (and put first into `ca.crt`).
    pub new_ca: Option<Reason>,
    /// The server certificate is (re-)issued from the newest CA.
    pub server: Option<Reason>,
    /// Old CAs that leave `ca.crt` (expired, or replaced and no longer needed).
    pub removed_cas: usize,
}

impl Plan {
    /// Whether this is the first issue (nothing to renew).
    pub fn is_initial(&self) -> bool {
        self.new_ca == Some(Reason::Missing) && self.server == Some(Reason::Missing)
    }

    /// Whether anything changes.
    pub fn changes(&self) -> bool {
        self.new_ca.is_some() || self.server.is_some() || self.removed_cas > 0
    }

    /// One sentence for an Event about `service`'s certificates (`None` when nothing changes or
    /// on the first issue).
    pub fn describe(&self, service: Service) -> Option<String> {
        if !self.changes() || self.is_initial() {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(r) = self.new_ca {
            parts.push(format!(
                "issued a new {} CA because {}; ca.crt carries the old and the new CA until the server certificate has moved to it",
                service.role,
                r.describe()
            ));
        }
        if let Some(r) = self.server {
            parts.push(format!(
                "re-issued the {} server certificate because {}; {} restarts to load it",
                service.role,
                r.describe(),
                service.server
            ));
        }
        if self.removed_cas > 0 {
            parts.push(format!(
                "removed {} old CA certificate(s) from ca.crt",
                self.removed_cas
            ));
        }
        Some(parts.join("; "))
    }
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

/// When a certificate was issued (its `notBefore` is backdated).
fn issued_at(c: &CertInfo) -> Timestamp {
    c.not_before
        .checked_add(secs(BACKDATE_SECONDS))
        .unwrap_or(c.not_before)
}

fn within(t: Timestamp, now: Timestamp, days: i64) -> bool {
    now.checked_add(secs(days * DAY))
        .map_or(true, |limit| t <= limit)
}

fn older_than(t: Timestamp, now: Timestamp, seconds: i64) -> bool {
    t.checked_add(secs(seconds)).is_ok_and(|limit| limit <= now)
}

/// Decides what must be issued for `stored` to serve `hosts` at `now`. Pure.
pub fn plan(stored: &Stored, hosts: &[String], now: Timestamp) -> Plan {
    let alive: Vec<&CertInfo> = stored.cas.iter().filter(|c| c.not_after > now).collect();
    let signing = stored.signing(now).map(|(c, _)| c);
    let mut server = match &stored.server {
        None => Some(Reason::Missing),
        Some((s, _)) if within(s.not_after, now, SERVER_RENEW_BEFORE_DAYS) => {
            Some(Reason::Expiring)
        }
        Some((s, _)) if !alive.iter().any(|ca| s.issued_by(ca)) => Some(Reason::UntrustedIssuer),
        Some((s, _)) if s.names != name_set(hosts) => Some(Reason::NamesChanged),
        Some(_) => None,
    };
    let new_ca = match signing {
        None if alive.is_empty() => Some(Reason::Missing),
        None if server.is_some() => Some(Reason::NoCaKey),
        None if alive
            .iter()
            .all(|c| within(c.not_after, now, CA_RENEW_BEFORE_DAYS)) =>
        {
            Some(Reason::Expiring)
        }
        None => None,
        Some(ca) if within(ca.not_after, now, CA_RENEW_BEFORE_DAYS) => Some(Reason::Expiring),
        Some(_) => None,
    };
    // The CA the server certificate should come from after this step (`None`: a kept legacy
    // CA without key, or the new one issued now).
    let newest = if new_ca.is_some() { None } else { signing };
    if server.is_none() {
        if let (Some(ca), Some((s, _))) = (newest, &stored.server) {
            if !s.issued_by(ca) && older_than(issued_at(ca), now, PROPAGATION_SECONDS) {
                server = Some(Reason::NewCa);
            }
        }
    }
    let kept = kept_old_cas(stored, newest, new_ca.is_some(), server.is_some(), now).len()
        + usize::from(newest.is_some());
    let removed_cas = stored.cas.len().saturating_sub(kept);
    Plan {
        new_ca,
        server,
        removed_cas,
    }
}

/// Indices of the CAs other than the newest that stay in `ca.crt`: alive ones while the server
/// certificate is not yet (or only recently) signed by the newest CA.
fn kept_old_cas(
    stored: &Stored,
    newest: Option<&CertInfo>,
    new_ca: bool,
    server_reissued: bool,
    now: Timestamp,
) -> Vec<usize> {
    let server_settled = match (&stored.server, newest) {
        _ if new_ca || server_reissued => false,
        (Some((s, _)), Some(ca)) => {
            s.issued_by(ca) && older_than(issued_at(s), now, PROPAGATION_SECONDS)
        }
        // A legacy CA without key: nothing replaces it.
        (_, None) => false,
        (None, Some(_)) => false,
    };
    stored
        .cas
        .iter()
        .enumerate()
        .filter(|(_, c)| c.not_after > now)
        .filter(|(_, c)| newest.is_none_or(|n| *c != n))
        .filter(|_| !server_settled)
        .map(|(i, _)| i)
        .collect()
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| TlsError::Time(t))
}

fn add_days(t: Timestamp, days: i64) -> Result<Timestamp, TlsError> {
    t.checked_add(secs(days * DAY))
        .map_err(|_| TlsError::Time(t))
}

fn ca_params(
    service: Service,
    platform: &str,
    now: Timestamp,
) -> Result<CertificateParams, TlsError> {
    let start = now
        .checked_sub(secs(BACKDATE_SECONDS))
        .map_err(|_| TlsError::Time(now))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("caduceus {platform} {} CA", service.role),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "caduceus-operator");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = offset(start)?;
    ca.not_after = offset(add_days(now, CA_VALIDITY_DAYS)?)?;
    Ok(ca)
}

/// Issues a new CA valid from `now` for [`CA_VALIDITY_DAYS`]: (certificate PEM, key PEM).
pub fn issue_ca(
    service: Service,
    platform: &str,
    now: Timestamp,
) -> Result<(String, String), TlsError> {
    let params = ca_params(service, platform, now)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a server certificate for `hosts` (DNS names or IP addresses) signed by the CA
/// (`ca_cert` PEM, `ca_key` PEM), valid from `now` for [`SERVER_VALIDITY_DAYS`] but never beyond
/// the CA: (certificate PEM, key PEM).
pub fn issue_server(
    ca_cert: &str,
    ca_key: &str,
    hosts: &[String],
    now: Timestamp,
) -> Result<(String, String), TlsError> {
    let ca = parse_certificates(ca_cert)
        .into_iter()
        .next()
        .ok_or(TlsError::Issue(rcgen::Error::CouldNotParseCertificate))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.pem, KeyPair::from_pem(ca_key)?)?;
    let start = now
        .checked_sub(secs(BACKDATE_SECONDS))
        .map_err(|_| TlsError::Time(now))?;
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
    server.not_before = offset(start)?;
    server.not_after = offset(add_days(now, SERVER_VALIDITY_DAYS)?.min(ca.not_after))?;
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a new CA and a server certificate for `hosts`, valid from `now`.
pub fn issue(
    service: Service,
    platform: &str,
    hosts: &[String],
    now: Timestamp,
) -> Result<TlsMaterial, TlsError> {
    let (ca_cert, ca_key) = issue_ca(service, platform, now)?;
    let (server_cert, server_key) = issue_server(&ca_cert, &ca_key, hosts, now)?;
    Ok(TlsMaterial {
        ca_cert,
        ca_key: Some(ca_key),
        server_cert,
        server_key,
    })
}

/// Carries out [`plan`]: the material the Secret must hold at `now`, and the plan.
pub fn renew(
    service: Service,
    platform: &str,
    stored: &Stored,
    hosts: &[String],
    now: Timestamp,
) -> Result<(TlsMaterial, Plan), TlsError> {
    let plan = plan(stored, hosts, now);
    let current_ca = stored
        .signing(now)
        .map(|(c, key)| (c.clone(), key.to_string()));
    let (newest, ca_key): (Option<CertInfo>, Option<String>) = match plan.new_ca {
        Some(_) => {
            let (cert, key) = issue_ca(service, platform, now)?;
            (parse_certificates(&cert).into_iter().next(), Some(key))
        }
        None => match current_ca {
            Some((cert, key)) => (Some(cert), Some(key)),
            None => (None, None),
        },
    };
    let (server_cert, server_key) = match (plan.server, &stored.server) {
        (None, Some((cert, key))) => (cert.pem.clone(), key.clone()),
        _ => {
            let (Some(ca), Some(key)) = (&newest, &ca_key) else {
                return Err(TlsError::NoCaKey);
            };
            issue_server(&ca.pem, key, hosts, now)?
        }
    };
    // Newest CA first, then the old ones clients may still need.
    let mut bundle = String::new();
    if let Some(ca) = &newest {
        bundle.push_str(&ca.pem);
    }
    let current = match plan.new_ca {
        Some(_) => None,
        None => stored.signing(now).map(|(c, _)| c),
    };
    for i in kept_old_cas(
        stored,
        current,
        plan.new_ca.is_some(),
        plan.server.is_some(),
        now,
    ) {
        bundle.push_str(&stored.cas[i].pem);
    }
    Ok((
        TlsMaterial {
            ca_cert: bundle,
            ca_key,
            server_cert,
            server_key,
        },
        plan,
    ))
}

/// Expiry of the server certificate and of the newest CA in a TLS Secret's values.
pub fn expiry(ca_cert: &str, server_cert: &str) -> Option<(Timestamp, Timestamp)> {
    let server = parse_certificates(server_cert).into_iter().next()?;
    let ca = parse_certificates(ca_cert)
        .into_iter()
        .map(|c| c.not_after)
        .max()?;
    Some((server.not_after, ca))
}

/// Hash of the server certificate and key, put on the server's pod template so a new
/// certificate rolls the pod (Postgres and Redis read their certificate at start).
pub fn checksum(server_cert: &[u8], server_key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(server_cert);
    h.update([0]);
    h.update(server_key);
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The values of a TLS Secret by key, for [`Stored::parse`].
pub fn stored_from(data: &BTreeMap<String, String>) -> Stored {
    Stored::parse(
        data.get(CA_CERT_KEY).map(String::as_str),
        data.get(CA_KEY_KEY).map(String::as_str),
        data.get(SERVER_CERT_KEY).map(String::as_str),
        data.get(SERVER_KEY_KEY).map(String::as_str),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::postgres_tls::dns_names;
    use crate::desired::test_support::platform;
    use std::process::Command;

    /// The tests' certificates are the database's (the words differ per [`Service`], nothing else).
    const PG: Service = crate::desired::postgres_tls::SERVICE;

    fn issue(platform: &str, hosts: &[String], now: Timestamp) -> Result<TlsMaterial, TlsError> {
        super::issue(PG, platform, hosts, now)
    }

    fn renew(
        platform: &str,
        stored: &Stored,
        hosts: &[String],
        now: Timestamp,
    ) -> Result<(TlsMaterial, Plan), TlsError> {
        super::renew(PG, platform, stored, hosts, now)
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plus(t: Timestamp, seconds: i64) -> Timestamp {
        t.checked_add(SignedDuration::from_secs(seconds)).unwrap()
    }

    fn stored(m: &TlsMaterial) -> Stored {
        Stored::parse(
            Some(&m.ca_cert),
            m.ca_key.as_deref(),
            Some(&m.server_cert),
            Some(&m.server_key),
        )
    }

    /// `openssl verify` of `cert` against the CA bundle `ca` for `host` at `at`.
    fn openssl_verify(ca: &str, cert: &str, host: &str, at: Timestamp) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        let cert_path = dir.path().join("tls.crt");
        std::fs::write(&ca_path, ca).unwrap();
        std::fs::write(&cert_path, cert).unwrap();
        let out = Command::new("openssl")
            .arg("verify")
            .args(["-attime", &at.as_second().to_string()])
            .arg("-CAfile")
            .arg(&ca_path)
            .args(["-verify_hostname", host])
            .arg(&cert_path)
            .output()
            .expect("openssl is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    const HOST: &str = "demo-postgres.clinic.svc";

    #[test]
    fn a_time_beyond_the_certificate_range_is_an_error() {
        assert!(matches!(
            issue("demo", &["h".into()], Timestamp::MAX),
            Err(TlsError::Time(_))
        ));
    }

    /// The issued chain verifies with OpenSSL (the library Postgres itself uses) for the
    /// Service name, and not for another name or against another CA.
    #[test]
    fn issued_chain_verifies_with_openssl_for_the_service_name() {
        let p = platform(|_| {});
        let m = issue("demo", &dns_names(&p), t("2026-11-22T00:00:00Z")).unwrap();
        assert!(m.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(m.server_key.contains("PRIVATE KEY"));
        assert!(m.ca_key.as_deref().unwrap().contains("PRIVATE KEY"));
        let other = issue("other", &dns_names(&p), t("2026-11-22T00:00:00Z")).unwrap();
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

    #[test]
    fn ip_addresses_and_names_are_both_covered() {
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let now = t("2026-11-22T10:00:00Z");
        let m = issue("demo", &hosts, now).unwrap();
        let server = &parse_certificates(&m.server_cert)[0];
        assert_eq!(server.names, name_set(&hosts));
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(m.server_cert.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
    }

    #[test]
    fn fresh_certificates_are_kept_until_the_renewal_window() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2026-11-22T10:00:00Z");
        let m = issue("demo", &hosts, t0).unwrap();
        let s = stored(&m);
        assert_eq!(s.ca_key.as_ref().map(|(_, i)| *i), Some(0));
        assert!(s.server.is_some());
        let server = &s.server.as_ref().unwrap().0;
        assert_eq!(server.not_after, plus(t0, SERVER_VALIDITY_DAYS * DAY));
        assert!(server.issued_by(&s.cas[0]));
        for day in [
            0,
            1,
            100,
            SERVER_VALIDITY_DAYS - SERVER_RENEW_BEFORE_DAYS - 1,
        ] {
            let at = plus(t0, day * DAY);
            assert_eq!(plan(&s, &hosts, at), Plan::default(), "day {day}");
            let (again, p) = renew("demo", &s, &hosts, at).unwrap();
            assert!(!p.changes());
            assert_eq!(again.server_cert, s.server.as_ref().unwrap().0.pem);
        }
        // No Secret yet: the first issue, not a renewal.
        let first = plan(&Stored::default(), &hosts, t0);
        assert!(first.is_initial());
        assert_eq!(first.describe(PG), None);
    }

    #[test]
    fn a_server_certificate_about_to_expire_is_reissued_from_the_same_ca() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2026-11-22T10:00:00Z");
        let m = issue("demo", &hosts, t0).unwrap();
        let at = plus(
            t0,
            (SERVER_VALIDITY_DAYS - SERVER_RENEW_BEFORE_DAYS + 1) * DAY,
        );
        let (renewed, p) = renew("demo", &stored(&m), &hosts, at).unwrap();
        assert_eq!(p.server, Some(Reason::Expiring));
        assert_eq!(p.new_ca, None);
        assert_eq!(
            renewed.ca_cert, m.ca_cert,
            "same CA, so clients need nothing new"
        );
        assert_eq!(renewed.ca_key, m.ca_key);
        assert_ne!(renewed.server_cert, m.server_cert);
        assert_ne!(renewed.server_key, m.server_key, "a new key too");
        let server = &parse_certificates(&renewed.server_cert)[0];
        assert_eq!(server.not_after, plus(at, SERVER_VALIDITY_DAYS * DAY));
        let (ok, out) = openssl_verify(&m.ca_cert, &renewed.server_cert, HOST, at);
        assert!(ok, "{out}");
        assert!(p.describe(PG).unwrap().contains("about to expire"));
        // An expired one too.
        let late = plus(t0, (SERVER_VALIDITY_DAYS + 10) * DAY);
        assert_eq!(
            plan(&stored(&m), &hosts, late).server,
            Some(Reason::Expiring)
        );
    }

    #[test]
    fn changed_names_or_a_foreign_issuer_reissue_the_server_certificate() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2026-11-22T10:00:00Z");
        let m = issue("demo", &hosts, t0).unwrap();
        let mut fewer = hosts.clone();
        fewer.pop();
        let p = plan(&stored(&m), &fewer, plus(t0, DAY));
        assert_eq!(p.server, Some(Reason::NamesChanged));
        let (renewed, _) = renew("demo", &stored(&m), &fewer, plus(t0, DAY)).unwrap();
        assert_eq!(
            parse_certificates(&renewed.server_cert)[0].names,
            name_set(&fewer)
        );

        // tls.crt from another CA than ca.crt.
        let other = issue("other", &hosts, t0).unwrap();
        let mixed = Stored::parse(
            Some(&m.ca_cert),
            m.ca_key.as_deref(),
            Some(&other.server_cert),
            Some(&other.server_key),
        );
        assert_eq!(
            plan(&mixed, &hosts, t0).server,
            Some(Reason::UntrustedIssuer)
        );
        // A key that does not belong to the certificate counts as missing.
        let broken = Stored::parse(
            Some(&m.ca_cert),
            m.ca_key.as_deref(),
            Some(&m.server_cert),
            Some(&other.server_key),
        );
        assert_eq!(plan(&broken, &hosts, t0).server, Some(Reason::Missing));
    }

    /// The CA is renewed a year before it expires. Every step keeps a client that has the
    /// previous `ca.crt` able to verify the certificate Postgres serves after the step.
    #[test]
    fn the_ca_is_renewed_with_an_overlap_clients_can_follow() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2026-11-22T10:00:00Z");
        let m0 = issue("demo", &hosts, t0).unwrap();
        let ca_end = plus(t0, CA_VALIDITY_DAYS * DAY);
        // A server certificate issued shortly before the CA renewal window (from the old CA).
        let before = plus(ca_end, -(CA_RENEW_BEFORE_DAYS + 10) * DAY);
        let (m1, p1) = renew("demo", &stored(&m0), &hosts, before).unwrap();
        assert_eq!(p1.server, Some(Reason::Expiring));
        assert_eq!(p1.new_ca, None);

        // 1. The CA enters its renewal window: a new CA, published next to the old one; the
        //    server certificate stays.
        let t1 = plus(ca_end, -(CA_RENEW_BEFORE_DAYS - 1) * DAY);
        let (m2, p2) = renew("demo", &stored(&m1), &hosts, t1).unwrap();
        assert_eq!(p2.new_ca, Some(Reason::Expiring));
        assert_eq!(p2.server, None);
        assert_eq!(m2.server_cert, m1.server_cert);
        assert_ne!(m2.ca_key, m1.ca_key);
        let bundle = parse_certificates(&m2.ca_cert);
        assert_eq!(bundle.len(), 2, "old and new CA");
        assert_eq!(bundle[1].pem, parse_certificates(&m1.ca_cert)[0].pem);
        assert_eq!(bundle[0].not_after, plus(t1, CA_VALIDITY_DAYS * DAY));
        assert!(p2.describe(PG).unwrap().contains("new database CA"));
        let (ok, out) = openssl_verify(&m2.ca_cert, &m2.server_cert, HOST, t1);
        assert!(ok, "{out}");

        // 2. Before the new CA has propagated nothing moves.
        let (m3, p3) = renew(
            "demo",
            &stored(&m2),
            &hosts,
            plus(t1, PROPAGATION_SECONDS / 2),
        )
        .unwrap();
        assert!(!p3.changes(), "{p3:?}");
        assert_eq!(m3.ca_cert, m2.ca_cert);

        // 3. Then the server certificate moves to the new CA; ca.crt still has both.
        let t3 = plus(t1, PROPAGATION_SECONDS + 60);
        let (m4, p4) = renew("demo", &stored(&m2), &hosts, t3).unwrap();
        assert_eq!(p4.server, Some(Reason::NewCa));
        assert_eq!(p4.new_ca, None);
        assert_eq!(parse_certificates(&m4.ca_cert).len(), 2);
        assert_eq!(m4.ca_key, m2.ca_key);
        // A client that only has the bundle of step 1 trusts the new server certificate, and
        // one that still has the old CA alone trusted the certificate served until now.
        let (ok, out) = openssl_verify(&m2.ca_cert, &m4.server_cert, HOST, t3);
        assert!(ok, "{out}");
        let (ok, out) = openssl_verify(&m1.ca_cert, &m2.server_cert, HOST, t3);
        assert!(ok, "{out}");
        let (ok, _) = openssl_verify(&m1.ca_cert, &m4.server_cert, HOST, t3);
        assert!(
            !ok,
            "the new server certificate is signed by the new CA only"
        );

        // 4. Once the new server certificate has propagated, the old CA leaves ca.crt.
        let (m5, p5) = renew(
            "demo",
            &stored(&m4),
            &hosts,
            plus(t3, PROPAGATION_SECONDS / 2),
        )
        .unwrap();
        assert!(!p5.changes(), "{p5:?}");
        assert_eq!(m5.ca_cert, m4.ca_cert);
        let t5 = plus(t3, PROPAGATION_SECONDS + 60);
        let (m6, p6) = renew("demo", &stored(&m4), &hosts, t5).unwrap();
        assert_eq!((p6.new_ca, p6.server, p6.removed_cas), (None, None, 1));
        assert_eq!(parse_certificates(&m6.ca_cert).len(), 1);
        let (ok, out) = openssl_verify(&m6.ca_cert, &m6.server_cert, HOST, t5);
        assert!(ok, "{out}");
        assert!(p6.describe(PG).unwrap().contains("removed 1 old CA"));
        // Steady again.
        assert!(!plan(&stored(&m6), &hosts, plus(t5, DAY)).changes());
    }

    /// Secrets from before `ca.key` was kept: left alone until a certificate must be signed,
    /// then a new CA is issued and the old one stays in ca.crt.
    #[test]
    fn a_secret_without_the_ca_key_gets_a_new_ca_only_when_needed() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2026-11-22T10:00:00Z");
        let m = issue("demo", &hosts, t0).unwrap();
        let legacy = Stored::parse(
            Some(&m.ca_cert),
            None,
            Some(&m.server_cert),
            Some(&m.server_key),
        );
        assert!(!plan(&legacy, &hosts, plus(t0, DAY)).changes());
        let (kept, _) = renew("demo", &legacy, &hosts, plus(t0, DAY)).unwrap();
        assert_eq!(kept.ca_key, None);

        let late = plus(t0, (SERVER_VALIDITY_DAYS - 5) * DAY);
        let (renewed, p) = renew("demo", &legacy, &hosts, late).unwrap();
        assert_eq!(p.new_ca, Some(Reason::NoCaKey));
        assert_eq!(p.server, Some(Reason::Expiring));
        assert!(renewed.ca_key.is_some());
        assert_eq!(parse_certificates(&renewed.ca_cert).len(), 2);
        let (ok, out) = openssl_verify(&renewed.ca_cert, &renewed.server_cert, HOST, late);
        assert!(ok, "{out}");
    }

    #[test]
    fn expired_cas_leave_the_bundle() {
        let hosts = dns_names(&platform(|_| {}));
        let t0 = t("2016-11-22T10:00:00Z");
        let old = issue("demo", &hosts, t0).unwrap();
        let now = plus(t0, (CA_VALIDITY_DAYS + 1) * DAY);
        let fresh = issue("demo", &hosts, now).unwrap();
        let both = Stored::parse(
            Some(&format!("{}{}", fresh.ca_cert, old.ca_cert)),
            fresh.ca_key.as_deref(),
            Some(&fresh.server_cert),
            Some(&fresh.server_key),
        );
        let (m, p) = renew("demo", &both, &hosts, plus(now, 2 * PROPAGATION_SECONDS)).unwrap();
        assert_eq!(p.removed_cas, 1);
        assert_eq!(parse_certificates(&m.ca_cert).len(), 1);
        assert_eq!(m.server_cert, fresh.server_cert);
    }

    #[test]
    fn the_ca_and_the_events_name_the_server() {
        let cache = Service {
            role: "cache",
            server: "Redis",
        };
        let hosts = vec!["demo-redis.clinic.svc".to_string()];
        let t0 = t("2026-11-22T10:00:00Z");
        let m = super::issue(cache, "demo", &hosts, t0).unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(m.ca_cert.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        let subject = String::from_utf8_lossy(&out.stdout);
        assert!(subject.contains("caduceus demo cache CA"), "{subject}");
        let late = plus(t0, (SERVER_VALIDITY_DAYS - 5) * DAY);
        let (_, p) = super::renew(cache, "demo", &stored(&m), &hosts, late).unwrap();
        let note = p.describe(cache).unwrap();
        assert!(
            note.contains("re-issued the cache server certificate")
                && note.contains("Redis restarts"),
            "{note}"
        );
    }
}
