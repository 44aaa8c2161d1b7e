//! The agent's operations: backup, list, verify, prune, restore.

mod archive;
mod backup;
mod prune;
mod restore;
mod tool;
mod verify;

pub use archive::authenticated_manifest;
pub use backup::backup;
pub use prune::{prune, Pruned};
pub use restore::{
    expire_pre_restore, restore, RestoreOptions, Restored, DEFAULT_PRE_RESTORE_RETENTION_DAYS,
};
pub use verify::{verify, Verified};

use crate::auth::AuthError;
use crate::crypto::CryptoError;
use crate::pg::PgError;
use crate::store::StoreError;

/// Every failure of the agent; `Display` is the one-line message printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot run {tool}: {source} (is it installed and on PATH?)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {message}")]
    Tool {
        tool: &'static str,
        status: String,
        message: String,
    },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("archive size mismatch: manifest says {expected} bytes, store has {actual} (truncated or replaced)")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("archive checksum mismatch: SHA-256 differs from the manifest")]
    ChecksumMismatch,
    #[error("restored database failed verification: {0}")]
    RestoreVerification(String),
    #[error("{0}")]
    Invalid(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}
