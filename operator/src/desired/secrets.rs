//! Generated Secrets: database credentials, Redis password, API JWT key and PHI key ring.
//!
//! Values are generated once with a CSPRNG and never overwritten: the builder receives the data
//! of the Secrets that already exist and keeps every key it finds, generating only missing keys.
//! The values never reach logs, status, events or error messages.

use caduceus_contract::key_files::PhiKeyRingFile;
use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use rand::RngCore;

use super::{bytes, certs, child_meta, postgres_tls, redis_tls};
use crate::crd::{CacheProvider, DatabaseProvider, DatabaseStatus};
use crate::names::{
    Component, ANNOTATION_PLACEHOLDER, DATABASE_APP_USER, DATABASE_NAME, DATABASE_USER, JWT_KEY,
    PG_DATABASE_KEY, PG_PASSWORD_KEY, PG_URL_KEY, PG_USERNAME_KEY, PHI_KEYS, POSTGRES_PORT,
    REDIS_AUTH_CONF_KEY, REDIS_PASSWORD_KEY, REDIS_PORT, REDIS_URL_KEY,
};
use crate::validate::ValidatedPlatform;

/// Text shown instead of a secret value by `render`.
pub const PLACEHOLDER: &str = "PLACEHOLDER-generated-by-caduceus-operator-at-apply-time";

/// Data of Secrets that already exist in the cluster, by Secret name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExistingSecrets {
    pub by_name: BTreeMap<String, BTreeMap<String, ByteString>>,
}

impl ExistingSecrets {
    pub fn insert(&mut self, name: impl Into<String>, data: BTreeMap<String, ByteString>) {
        self.by_name.insert(name.into(), data);
    }

    fn get(&self, secret: &str, key: &str) -> Option<&ByteString> {
        self.by_name.get(secret).and_then(|d| d.get(key))
    }

    fn get_str(&self, secret: &str, key: &str) -> Option<String> {
        self.get(secret, key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    }
}

/// The data of one generated Secret, starting from what the cluster stores: every stored key is
/// kept, a missing one is generated once (and kept from then on).
pub(crate) struct SecretData {
    name: String,
    data: BTreeMap<String, ByteString>,
}

impl SecretData {
    /// The stored data of Secret `name` (none when it does not exist yet).
    pub(crate) fn stored(existing: &ExistingSecrets, name: String) -> Self {
        let data = existing.by_name.get(&name).cloned().unwrap_or_default();
        SecretData { name, data }
    }

    /// The value of `key`: the stored one, else `generate()`'s, stored from now on.
    pub(crate) fn keep_or(&mut self, key: &str, generate: impl FnOnce() -> ByteString) {
        self.data.entry(key.to_string()).or_insert_with(generate);
    }

    /// The text of `key`: the stored one (when UTF-8), else `generate()`'s, stored from now on.
    fn keep_text_or(&mut self, key: &str, generate: impl FnOnce() -> String) -> String {
        if let Some(text) = self
            .data
            .get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
        {
            return text;
        }
        let text = generate();
        self.set(key, &text);
        text
    }

    /// Sets `key` (a value derived from kept ones, built again every time).
    fn set(&mut self, key: &str, value: &str) {
        self.data.insert(key.to_string(), bytes(value));
    }

    /// The Secret of `component` holding the data.
    pub(crate) fn into_secret(
        self,
        p: &ValidatedPlatform,
        component: Component,
        generator: &SecretGenerator,
    ) -> Secret {
        secret(p, self.name, component, self.data, generator)
    }
}

/// Source of new secret values.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretGenerator {
    /// CSPRNG values (`rand`'s thread-local ChaCha generator, seeded from the OS). `now` dates
    /// new PHI key ids (`YYYYMMDD`) and is the time certificates are issued and renewed at.
    Random { now: Timestamp },
    /// Clearly marked placeholder values, for `render` (deterministic output).
    Placeholder,
}

impl SecretGenerator {
    /// A random generator for the current time.
    pub fn random() -> Self {
        Self::random_at(Timestamp::now())
    }

    /// A random generator for time `now`.
    pub fn random_at(now: Timestamp) -> Self {
        SecretGenerator::Random { now }
    }

    fn is_placeholder(&self) -> bool {
        matches!(self, SecretGenerator::Placeholder)
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        rand::rng().fill_bytes(&mut buf);
        buf
    }

    /// Standard (padded) base64 of `n` random bytes.
    fn key_b64(&mut self, n: usize) -> String {
        match self {
            SecretGenerator::Random { .. } => STANDARD.encode(Self::random_bytes(n)),
            SecretGenerator::Placeholder => PLACEHOLDER.to_string(),
        }
    }

    /// A URL-safe password (32 characters from 24 random bytes: 192 bits).
    fn password(&mut self) -> String {
        match self {
            SecretGenerator::Random { .. } => URL_SAFE_NO_PAD.encode(Self::random_bytes(24)),
            SecretGenerator::Placeholder => PLACEHOLDER.to_string(),
        }
    }

    /// A PHI key id `k-YYYYMMDD-xxxx` (matches `^[a-z0-9][a-z0-9-]{0,31}$`).
    fn key_id(&mut self) -> String {
        match self {
            SecretGenerator::Random { now } => {
                let r = Self::random_bytes(2);
                format!("k-{}-{:02x}{:02x}", now.strftime("%Y%m%d"), r[0], r[1])
            }
            SecretGenerator::Placeholder => "k-placeholder".to_string(),
        }
    }
}

fn secret(
    p: &ValidatedPlatform,
    name: String,
    component: Component,
    data: BTreeMap<String, ByteString>,
    generator: &SecretGenerator,
) -> Secret {
    let mut metadata = child_meta(p, name, component);
    if generator.is_placeholder() {
        metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_PLACEHOLDER.to_string(),
            "true".to_string(),
        )]));
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for URL userinfo).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `<platform>-postgres-credentials` for the embedded database: username, password, database and
/// the `database-url` the API reads as `DATABASE_URL`.
pub fn postgres_credentials(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Option<Secret> {
    if p.spec.database.provider != DatabaseProvider::Embedded {
        return None;
    }
    let mut data = SecretData::stored(existing, p.names.postgres_credentials());
    let username = data.keep_text_or(PG_USERNAME_KEY, || DATABASE_USER.to_string());
    let database = data.keep_text_or(PG_DATABASE_KEY, || DATABASE_NAME.to_string());
    let password = data.keep_text_or(PG_PASSWORD_KEY, || generator.password());
    // Derived from the kept parts (not kept itself), so every platform moves to verified TLS.
    let url = format!(
        "postgres://{}:{}@{}:{POSTGRES_PORT}/{}?{}",
        url_encode(&username),
        url_encode(&password),
        p.names.service_host(&p.names.postgres(), &p.namespace),
        url_encode(&database),
        postgres_tls::url_query(),
    );
    data.set(PG_URL_KEY, &url);
    Some(data.into_secret(p, Component::Database, generator))
}

/// `<platform>-postgres-app`: the API's runtime role (Embedded and CloudNativePG): `username`,
/// generated `password` (kept once generated) and `database-url` (the API's `DATABASE_URL`).
/// The API pod's `db-setup` init container creates the role with this password as the owner
/// (Embedded); CloudNativePG creates it as a managed role from this Secret (type
/// `kubernetes.io/basic-auth`, which CloudNativePG requires). Not data-unlocking: regenerated
/// when lost (db-setup / CloudNativePG set the new password).
pub fn postgres_app(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Option<Secret> {
    let host = match p.spec.database.provider {
        DatabaseProvider::Embedded => p.names.service_host(&p.names.postgres(), &p.namespace),
        DatabaseProvider::CloudNativePG => p
            .names
            .service_host(&p.names.cnpg_rw_service(), &p.namespace),
        DatabaseProvider::External => return None,
    };
    let name = p.names.postgres_app();
    let password = existing
        .get_str(&name, PG_PASSWORD_KEY)
        .unwrap_or_else(|| generator.password());
    let query = match p.spec.database.provider {
        DatabaseProvider::Embedded => format!("?{}", postgres_tls::url_query()),
        // CloudNativePG serves TLS with its own CA; the URL asks for it without verifying the CA
        // (as CloudNativePG's own `uri` does not mount it either).
        _ => "?sslmode=require".to_string(),
    };
    let url = format!(
        "postgres://{}:{}@{host}:{POSTGRES_PORT}/{}{query}",
        url_encode(DATABASE_APP_USER),
        url_encode(&password),
        url_encode(DATABASE_NAME),
    );
    let data = BTreeMap::from([
        (PG_USERNAME_KEY.to_string(), bytes(DATABASE_APP_USER)),
        (PG_PASSWORD_KEY.to_string(), bytes(&password)),
        (PG_DATABASE_KEY.to_string(), bytes(DATABASE_NAME)),
        (PG_URL_KEY.to_string(), bytes(&url)),
    ]);
    let mut s = secret(p, name, Component::Database, data, generator);
    s.type_ = Some("kubernetes.io/basic-auth".into());
    Some(s)
}

/// The TLS Secret's values as they exist (non-UTF-8 values count as missing).
fn stored_tls(existing: &ExistingSecrets, name: &str) -> certs::Stored {
    let get = |key: &str| existing.get_str(name, key);
    certs::Stored::parse(
        get(certs::CA_CERT_KEY).as_deref(),
        get(certs::CA_KEY_KEY).as_deref(),
        get(certs::SERVER_CERT_KEY).as_deref(),
        get(certs::SERVER_KEY_KEY).as_deref(),
    )
}

/// One operator-issued TLS Secret (the database's, the cache's, the API's): which server it is
/// for, its name, the names its server certificate covers and the component it belongs to.
pub(crate) struct TlsSecret {
    pub service: certs::Service,
    pub name: String,
    pub hosts: Vec<String>,
    pub component: Component,
}

impl TlsSecret {
    fn postgres(p: &ValidatedPlatform) -> Option<Self> {
        (p.spec.database.provider == DatabaseProvider::Embedded).then(|| Self {
            service: postgres_tls::SERVICE,
            name: p.names.postgres_tls(),
            hosts: postgres_tls::dns_names(p),
            component: Component::Database,
        })
    }

    fn redis(p: &ValidatedPlatform) -> Option<Self> {
        (p.spec.cache.provider == CacheProvider::Embedded).then(|| Self {
            service: redis_tls::SERVICE,
            name: p.names.redis_tls(),
            hosts: redis_tls::dns_names(p),
            component: Component::Cache,
        })
    }

    /// What [`TlsSecret::build`] does to the certificates at `now`.
    pub(crate) fn plan(&self, existing: &ExistingSecrets, now: Timestamp) -> certs::Plan {
        certs::plan(&stored_tls(existing, &self.name), &self.hosts, now)
    }

    /// The Secret: issued when missing and renewed as [`certs::plan`] decides at the
    /// generator's `now`; otherwise kept byte for byte. If issuing fails the Secret keeps what it
    /// had (or stays without certificates): the server cannot start (never a silent plaintext
    /// fallback).
    pub(crate) fn build(
        self,
        p: &ValidatedPlatform,
        existing: &ExistingSecrets,
        generator: &mut SecretGenerator,
    ) -> Secret {
        let mut data = SecretData::stored(existing, self.name);
        match generator {
            SecretGenerator::Random { now } => {
                let stored = stored_tls(existing, &data.name);
                if let Ok((m, plan)) =
                    certs::renew(self.service, &p.name, &stored, &self.hosts, *now)
                {
                    if plan.changes() {
                        data.set(certs::CA_CERT_KEY, &m.ca_cert);
                        data.set(certs::SERVER_CERT_KEY, &m.server_cert);
                        data.set(certs::SERVER_KEY_KEY, &m.server_key);
                        if let Some(key) = &m.ca_key {
                            data.set(certs::CA_KEY_KEY, key);
                        }
                    }
                }
            }
            SecretGenerator::Placeholder => {
                for key in [
                    certs::CA_CERT_KEY,
                    certs::CA_KEY_KEY,
                    certs::SERVER_CERT_KEY,
                    certs::SERVER_KEY_KEY,
                ] {
                    data.keep_or(key, || bytes(PLACEHOLDER));
                }
            }
        }
        data.into_secret(p, self.component, generator)
    }
}

/// What [`postgres_tls`] does to the certificates at `now` (`None` unless the database is
/// embedded). The controller reports it as a `CertificateRenewed` Event.
pub fn postgres_tls_plan(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    now: Timestamp,
) -> Option<certs::Plan> {
    TlsSecret::postgres(p).map(|t| t.plan(existing, now))
}

/// What [`redis_tls`] does to the certificates at `now` (`None` unless the cache is embedded).
pub fn redis_tls_plan(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    now: Timestamp,
) -> Option<certs::Plan> {
    TlsSecret::redis(p).map(|t| t.plan(existing, now))
}

/// `<platform>-postgres-tls` for the embedded database: operator-issued CA bundle (`ca.crt`),
/// the newest CA's key (`ca.key`), server certificate (`tls.crt`) and key (`tls.key`), issued
/// and renewed by [`certs`]. If issuing fails Postgres cannot start and the `database-tls`
/// compliance rule reports it.
pub fn postgres_tls(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Option<Secret> {
    TlsSecret::postgres(p).map(|t| t.build(p, existing, generator))
}

/// `<platform>-redis-tls` for the embedded cache: the same four keys as [`postgres_tls`], with
/// its own CA, for the cache Service names.
pub fn redis_tls(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Option<Secret> {
    TlsSecret::redis(p).map(|t| t.build(p, existing, generator))
}

/// Checksum of the CA bundle (`ca.crt`) in a built TLS Secret: on the API's pod template, so a
/// changed bundle (a new CA during a renewal) reaches the API, which reads it at start, before
/// the server certificate moves to the new CA. `None` for `render`'s placeholder values.
pub fn ca_checksum(secret: &Secret) -> Option<String> {
    if is_placeholder(secret) {
        return None;
    }
    let ca = secret.data.as_ref()?.get(certs::CA_CERT_KEY)?;
    Some(certs::checksum(&ca.0, &[]))
}

/// A Secret built with `render`'s placeholder values.
pub(crate) fn is_placeholder(secret: &Secret) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PLACEHOLDER))
}

/// Checksum of the server certificate and key in a built TLS Secret (pod-template annotation
/// that restarts Postgres / Redis when they change); `None` for `render`'s placeholder values.
pub fn tls_checksum(secret: &Secret) -> Option<String> {
    if is_placeholder(secret) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let cert = data.get(postgres_tls::SERVER_CERT_KEY)?;
    let key = data.get(postgres_tls::SERVER_KEY_KEY)?;
    Some(postgres_tls::checksum(&cert.0, &key.0))
}

/// `status.database` from a built TLS Secret (`None` when it holds no parseable certificates).
pub fn database_status(secret: &Secret) -> Option<DatabaseStatus> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let (server, ca) = postgres_tls::expiry(
        &text(postgres_tls::CA_CERT_KEY)?,
        &text(postgres_tls::SERVER_CERT_KEY)?,
    )?;
    Some(DatabaseStatus {
        tls_not_after: Some(Time(server)),
        ca_not_after: Some(Time(ca)),
    })
}

/// `<platform>-redis-credentials` for the embedded cache: password, `redis-url` (the API's
/// `REDIS_URL`, `rediss://`: Redis serves TLS only) and `auth.conf` (a Redis config include with `requirepass`, so the password is
/// never on a command line).
pub fn redis_credentials(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Option<Secret> {
    if p.spec.cache.provider != CacheProvider::Embedded {
        return None;
    }
    let mut data = SecretData::stored(existing, p.names.redis_credentials());
    let password = data.keep_text_or(REDIS_PASSWORD_KEY, || generator.password());
    // Derived from the kept password (not kept itself), so every platform moves to TLS: the
    // API verifies the server certificate against `<platform>-redis-tls`'s `ca.crt`.
    let url = format!(
        "rediss://:{}@{}:{REDIS_PORT}/0",
        url_encode(&password),
        p.names.service_host(&p.names.redis(), &p.namespace)
    );
    data.set(REDIS_URL_KEY, &url);
    data.keep_text_or(REDIS_AUTH_CONF_KEY, || {
        format!("requirepass \"{password}\"\n")
    });
    Some(data.into_secret(p, Component::Cache, generator))
}

/// `<platform>-api-secrets`: `jwt.key` (base64 of 64 random bytes) and `phi-keys.json` (key ring
/// with one 32-byte key and a 32-byte blind-index key), both in the format of docs/contracts.md.
pub fn api_secrets(
    p: &ValidatedPlatform,
    existing: &ExistingSecrets,
    generator: &mut SecretGenerator,
) -> Secret {
    let mut data = SecretData::stored(existing, p.names.api_secrets());
    data.keep_or(JWT_KEY, || bytes(&generator.key_b64(64)));
    data.keep_or(PHI_KEYS, || {
        let key_id = generator.key_id();
        let ring = PhiKeyRingFile::single(
            key_id.clone(),
            BTreeMap::from([(key_id, generator.key_b64(32))]),
            generator.key_b64(32),
        );
        // Serialising a struct of strings into a Vec cannot fail.
        ByteString(serde_json::to_vec(&ring).unwrap_or_default())
    });
    data.into_secret(p, Component::ApiServer, generator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::{platform, template_annotation};

    fn value(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    fn random() -> SecretGenerator {
        SecretGenerator::Random {
            now: "2026-11-22T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn api_secrets_match_contract_format() {
        let p = platform(|_| {});
        let s = api_secrets(&p, &ExistingSecrets::default(), &mut random());
        assert_eq!(s.metadata.name.as_deref(), Some("demo-api-secrets"));
        let jwt = STANDARD.decode(value(&s, JWT_KEY).trim()).unwrap();
        assert_eq!(jwt.len(), 64);
        let ring: serde_json::Value = serde_json::from_str(&value(&s, PHI_KEYS)).unwrap();
        assert_eq!(ring["version"], 1);
        let active = ring["active_key_id"].as_str().unwrap();
        assert!(
            active.starts_with("k-20261122-") && active.len() == 15,
            "{active}"
        );
        assert!(active
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let key = STANDARD
            .decode(ring["keys"][active].as_str().unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        let blind = STANDARD
            .decode(ring["blind_index_key"].as_str().unwrap())
            .unwrap();
        assert_eq!(blind.len(), 32);
        assert_ne!(key, blind);
        assert_eq!(ring.as_object().unwrap().len(), 4);
    }

    #[test]
    fn generated_values_differ_between_platforms() {
        let p = platform(|_| {});
        let a = api_secrets(&p, &ExistingSecrets::default(), &mut random());
        let b = api_secrets(&p, &ExistingSecrets::default(), &mut random());
        assert_ne!(value(&a, JWT_KEY), value(&b, JWT_KEY));
    }

    #[test]
    fn existing_values_are_never_regenerated() {
        let p = platform(|_| {});
        let first = build_all(&p, &ExistingSecrets::default());
        let mut existing = ExistingSecrets::default();
        for s in &first {
            existing.insert(s.metadata.name.clone().unwrap(), s.data.clone().unwrap());
        }
        let second = build_all(&p, &existing);
        assert_eq!(first, second);
    }

    #[test]
    fn missing_keys_are_added_without_touching_present_ones() {
        let p = platform(|_| {});
        let mut existing = ExistingSecrets::default();
        existing.insert(
            "demo-postgres-credentials",
            BTreeMap::from([("password".to_string(), bytes("p@ss word"))]),
        );
        let s = postgres_credentials(&p, &existing, &mut random()).unwrap();
        assert_eq!(value(&s, "password"), "p@ss word");
        assert_eq!(
            value(&s, "database-url"),
            "postgres://caduceus:p%40ss%20word@demo-postgres.clinic.svc:5432/caduceus?sslmode=verify-full&sslrootcert=/etc/caduceus/db-ca/ca.crt"
        );
    }

    #[test]
    fn postgres_tls_is_issued_once_and_kept() {
        let p = platform(|_| {});
        let first = postgres_tls(&p, &ExistingSecrets::default(), &mut random()).unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("demo-postgres-tls"));
        assert!(value(&first, "ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(value(&first, "tls.key").contains("PRIVATE KEY"));
        let mut existing = ExistingSecrets::default();
        existing.insert("demo-postgres-tls", first.data.clone().unwrap());
        let second = postgres_tls(&p, &existing, &mut random()).unwrap();
        assert_eq!(first.data, second.data, "an existing CA is never replaced");
        let placeholder = postgres_tls(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        )
        .unwrap();
        assert_eq!(value(&placeholder, "tls.key"), PLACEHOLDER);
        let external = platform(|s| {
            s.database.provider = DatabaseProvider::External;
            s.database.secret_ref = Some(crate::crd::SecretKeyRef {
                name: "db".into(),
                key: "url".into(),
            });
        });
        assert!(postgres_tls(&external, &ExistingSecrets::default(), &mut random()).is_none());
    }

    /// Near expiry the next build re-issues the server certificate from the kept CA, the
    /// Postgres pod template's checksum changes (so Postgres restarts with it) and
    /// `status.database` moves; before that nothing changes.
    #[test]
    fn postgres_tls_is_renewed_near_expiry_and_restarts_postgres() {
        use crate::desired::{build_children, postgres_tls::SERVER_VALIDITY_DAYS};
        let p = platform(|_| {});
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let at = |days: i64| {
            SecretGenerator::random_at(
                t0.checked_add(k8s_openapi::jiff::SignedDuration::from_hours(days * 24))
                    .unwrap(),
            )
        };
        let checksum = |c: &crate::desired::Children| {
            let sts = &c.postgres.as_ref().unwrap().stateful_set;
            template_annotation(sts, crate::names::ANNOTATION_TLS_CHECKSUM)
        };
        let first = build_children(&p, &ExistingSecrets::default(), &mut at(0));
        let tls = first.postgres_tls.clone().unwrap();
        for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
            assert!(!value(&tls, key).is_empty(), "{key}");
        }
        let status = database_status(&tls).unwrap();
        assert_eq!(
            status.tls_not_after.clone().unwrap().0,
            t0.checked_add(k8s_openapi::jiff::SignedDuration::from_hours(
                SERVER_VALIDITY_DAYS * 24
            ))
            .unwrap()
        );
        let mut existing = ExistingSecrets::default();
        existing.insert("demo-postgres-tls", tls.data.clone().unwrap());

        let month_later = build_children(&p, &existing, &mut at(30));
        assert_eq!(month_later.postgres_tls, first.postgres_tls);
        assert_eq!(checksum(&month_later), checksum(&first));
        assert!(!postgres_tls_plan(&p, &existing, t0).unwrap().changes());

        let near_expiry = build_children(&p, &existing, &mut at(SERVER_VALIDITY_DAYS - 10));
        let renewed = near_expiry.postgres_tls.clone().unwrap();
        assert_eq!(value(&renewed, "ca.crt"), value(&tls, "ca.crt"));
        assert_eq!(value(&renewed, "ca.key"), value(&tls, "ca.key"));
        assert_ne!(value(&renewed, "tls.crt"), value(&tls, "tls.crt"));
        assert_ne!(checksum(&near_expiry), checksum(&first));
        assert!(
            database_status(&renewed).unwrap().tls_not_after > status.tls_not_after,
            "status.database.tlsNotAfter moves"
        );
        let plan = postgres_tls_plan(
            &p,
            &existing,
            t0.checked_add(k8s_openapi::jiff::SignedDuration::from_hours(
                (SERVER_VALIDITY_DAYS - 10) * 24,
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(plan.server, Some(postgres_tls::Reason::Expiring));
        // No value of the Secret reaches the Event text.
        let note = plan.describe(postgres_tls::SERVICE).unwrap();
        assert!(!note.contains("BEGIN"), "{note}");
    }

    #[test]
    fn redis_secret_has_url_and_auth_conf() {
        let p = platform(|_| {});
        let s = redis_credentials(&p, &ExistingSecrets::default(), &mut random()).unwrap();
        let pw = value(&s, "password");
        assert_eq!(pw.len(), 32);
        assert_eq!(
            value(&s, "redis-url"),
            format!("rediss://:{pw}@demo-redis.clinic.svc:6379/0")
        );
        assert_eq!(value(&s, "auth.conf"), format!("requirepass \"{pw}\"\n"));
        // A platform from before Redis served TLS moves to `rediss://`, keeping its password.
        let mut existing = ExistingSecrets::default();
        existing.insert(
            "demo-redis-credentials",
            BTreeMap::from([
                ("password".to_string(), bytes("old pw")),
                (
                    "redis-url".to_string(),
                    bytes("redis://:old%20pw@demo-redis.clinic.svc:6379/0"),
                ),
            ]),
        );
        let s = redis_credentials(&p, &existing, &mut random()).unwrap();
        assert_eq!(
            value(&s, "redis-url"),
            "rediss://:old%20pw@demo-redis.clinic.svc:6379/0"
        );
    }

    /// The cache's certificates: their own CA (not the database's), for the cache Service,
    /// kept once issued, and only for an embedded cache.
    #[test]
    fn redis_tls_is_issued_once_with_its_own_ca() {
        let p = platform(|_| {});
        let first = redis_tls(&p, &ExistingSecrets::default(), &mut random()).unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("demo-redis-tls"));
        let server = &certs::parse_certificates(&value(&first, "tls.crt"))[0];
        assert!(server.names.contains("demo-redis.clinic.svc"));
        let db = postgres_tls(&p, &ExistingSecrets::default(), &mut random()).unwrap();
        assert_ne!(value(&first, "ca.crt"), value(&db, "ca.crt"));
        let mut existing = ExistingSecrets::default();
        existing.insert("demo-redis-tls", first.data.clone().unwrap());
        let second = redis_tls(&p, &existing, &mut random()).unwrap();
        assert_eq!(first.data, second.data, "an existing CA is never replaced");
        assert!(
            !redis_tls_plan(&p, &existing, "2026-11-22T10:00:00Z".parse().unwrap())
                .unwrap()
                .changes()
        );
        assert_eq!(
            ca_checksum(&first),
            ca_checksum(&second),
            "the API rolls only when ca.crt changes"
        );
        for provider in [CacheProvider::Disabled, CacheProvider::External] {
            let p = platform(|s| {
                s.cache.provider = provider;
                s.cache.secret_ref =
                    (provider == CacheProvider::External).then(|| crate::crd::SecretKeyRef {
                        name: "r".into(),
                        key: "url".into(),
                    });
            });
            assert!(redis_tls(&p, &ExistingSecrets::default(), &mut random()).is_none());
        }
    }

    #[test]
    fn provider_controls_which_secrets_exist() {
        let p = platform(|s| {
            s.database.provider = DatabaseProvider::CloudNativePG;
            s.cache.provider = CacheProvider::Disabled;
        });
        assert!(postgres_credentials(&p, &ExistingSecrets::default(), &mut random()).is_none());
        assert!(redis_credentials(&p, &ExistingSecrets::default(), &mut random()).is_none());
    }

    #[test]
    fn placeholders_are_marked() {
        let p = platform(|_| {});
        let s = api_secrets(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::Placeholder,
        );
        assert_eq!(
            s.metadata.annotations.unwrap()[ANNOTATION_PLACEHOLDER],
            "true"
        );
        assert_eq!(
            String::from_utf8(s.data.unwrap()[JWT_KEY].0.clone()).unwrap(),
            PLACEHOLDER
        );
    }

    /// Every Secret the build stage produces holds keys or credentials, so `deletionPolicy:
    /// Retain` must keep each of them: a Secret added to the build later and forgotten in
    /// `Names::retained_secrets` fails here. Secrets are found by kind among every child, so a
    /// new child field that holds a Secret is covered too.
    #[test]
    fn every_built_secret_is_retained() {
        use crate::crd::{DatabaseProvider, S3Destination};
        let configs: [fn(&mut crate::crd::HealthcarePlatformSpec); 3] = [
            // Embedded database and cache, agent backups with the generated key.
            |_| {},
            |s| {
                s.cache.persistence.enabled = true;
                s.api_server.autoscaling.enabled = true;
            },
            |s| {
                s.database.provider = DatabaseProvider::CloudNativePG;
                s.backup.destination.pvc = None;
                s.backup.destination.s3 = Some(S3Destination {
                    endpoint: None,
                    bucket: "phi".into(),
                    prefix: String::new(),
                    region: "eu-central-1".into(),
                    credentials_secret_ref: "s3".into(),
                    force_path_style: false,
                });
            },
        ];
        let mut seen = std::collections::BTreeSet::new();
        for config in configs {
            let p = platform(config);
            let children =
                crate::desired::build_children(&p, &ExistingSecrets::default(), &mut random());
            let retained = p.names.retained_secrets();
            for obj in crate::render::children_to_values(&children).unwrap() {
                if obj["kind"] != "Secret" {
                    continue;
                }
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                assert!(
                    retained.contains(&name),
                    "Secret {name} is built but deletionPolicy: Retain would not keep it"
                );
                seen.insert(name);
            }
        }
        // The Secrets of the default platform, the database certificate among them.
        for want in [
            "demo-api-secrets",
            "demo-postgres-credentials",
            "demo-postgres-tls",
            "demo-redis-credentials",
            "demo-redis-tls",
            "demo-backup-key",
        ] {
            assert!(seen.contains(want), "{want} not built: {seen:?}");
        }
    }

    fn build_all(p: &ValidatedPlatform, existing: &ExistingSecrets) -> Vec<Secret> {
        let mut g = random();
        vec![
            postgres_credentials(p, existing, &mut g).unwrap(),
            redis_credentials(p, existing, &mut g).unwrap(),
            api_secrets(p, existing, &mut g),
        ]
    }
}
