//! Caduceus backup agent: `pg_dump -Fc` streamed through chunked AES-256-GCM (STREAM) to an S3
//! bucket or a directory, with manifests, verification, retention and verified restores.

pub mod auth;
pub mod crypto;
pub mod key;
pub mod manifest;
pub mod ops;
pub mod pg;
pub mod store;

/// Install the process-wide TLS crypto provider (ring) used by the S3 client. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
