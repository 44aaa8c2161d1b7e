//! TLS between the API and the embedded Redis: an operator-issued CA and a server certificate for
//! the cache Service names, kept in Secret `<platform>-redis-tls` (`ca.crt`, `ca.key`, `tls.crt`,
//! `tls.key`; its own CA, not the database's). Redis serves TLS only (`port 0`, `tls-port 6379`)
//! with `tls.crt`/`tls.key`; clients authenticate with the password, not certificates
//! (`tls-auth-clients no`). The API mounts only `ca.crt`, connects to `rediss://` and verifies
//! the server certificate against it ([`caduceus_contract::settings::REDIS_CA_FILE`]).
//!
//! Issuing and renewal (the same rules and overlap as the database's) are [`super::certs`]'s.

use super::certs::{self, CA_CERT_KEY};
use crate::validate::ValidatedPlatform;

/// The cache's certificates (CA name `caduceus <platform> cache CA`).
pub const SERVICE: certs::Service = certs::Service {
    role: "cache",
    server: "Redis",
};

/// Where Redis reads its certificate, key and CA (the CA for `redis-cli --tls` in the probes).
pub const SERVER_TLS_DIR: &str = "/etc/redis/tls";
/// Where the API reads the CA that signs the Redis certificate.
pub const API_REDIS_CA_DIR: &str = "/etc/caduceus/redis-ca";

/// DNS names the server certificate covers: the cache Service (the API's host; it also governs
/// the StatefulSet), short and fully qualified, and its pods' names.
pub fn dns_names(p: &ValidatedPlatform) -> Vec<String> {
    let ns = &p.namespace;
    let svc = p.names.redis();
    vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
        format!("*.{svc}.{ns}.svc.cluster.local"),
    ]
}

/// The API's `CADUCEUS_REDIS_CA_FILE`.
pub fn api_ca_file() -> String {
    format!("{API_REDIS_CA_DIR}/{CA_CERT_KEY}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn names_cover_the_service_the_api_connects_to() {
        let names = dns_names(&platform(|_| {}));
        assert!(names.contains(&"demo-redis.clinic.svc".to_string()));
        assert!(names.contains(&"*.demo-redis.clinic.svc.cluster.local".to_string()));
        assert_eq!(api_ca_file(), "/etc/caduceus/redis-ca/ca.crt");
    }
}
