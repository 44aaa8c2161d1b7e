//! Argon2id password hashing (PHC strings), run on the blocking pool behind a semaphore.
//!
//! Every hash and verification takes one of [`permits`] permits first (one Argon2id run costs
//! ~19 MiB and tens of milliseconds of CPU; without a bound a flood of logins queues hundreds of
//! them on the blocking pool, memory and latency for everybody). A caller waits up to
//! [`PERMIT_WAIT`] for a permit, then gets `503` with `Retry-After` ([`Error::Busy`]). The permit
//! is held until the computation ends, even when the request gave up meanwhile.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{Error, FieldError};

/// Longest a caller waits for a hashing permit before `503`.
pub const PERMIT_WAIT: Duration = Duration::from_secs(3);
/// `Retry-After` of that `503`, in seconds.
pub const BUSY_RETRY_AFTER_SECS: u64 = 2;

/// Concurrent Argon2id computations in this process: the CPUs (at least 2, at most 16).
pub fn permits() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 16)
}

static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(permits()));

/// The process-wide hashing semaphore (tests hold its permits to saturate it).
pub fn semaphore() -> &'static Semaphore {
    &HASHING
}

/// A hashing permit within [`PERMIT_WAIT`], else [`Error::Busy`].
async fn permit() -> Result<SemaphorePermit<'static>, Error> {
    match tokio::time::timeout(PERMIT_WAIT, HASHING.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Error::Busy {
            retry_after_secs: BUSY_RETRY_AFTER_SECS,
        }),
    }
}

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Password policy: 12..=256 characters.
pub fn check_policy(field: &str, password: &str) -> Result<(), FieldError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(field, "must be at least 12 characters"));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(field, "must be at most 256 characters"));
    }
    Ok(())
}

/// Argon2id hash (default parameters: m=19 MiB, t=2, p=1).
pub async fn hash(password: String) -> Result<String, Error> {
    let permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| Error::internal(anyhow::anyhow!("password hashing failed")))
    })
    .await
    .map_err(Error::internal)?
}

/// Constant-work verification; a malformed stored hash counts as a mismatch.
pub async fn verify(password: String, phc: String) -> Result<bool, Error> {
    verify_or_dummy(password, Some(phc)).await
}

/// Verify against `phc`, or, when there is none (unknown e-mail, locked account), against
/// [`DUMMY_HASH`] — the same work — and answer `false`.
pub async fn verify_or_dummy(password: String, phc: Option<String>) -> Result<bool, Error> {
    let permit = permit().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        let matched = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matched && real
    })
    .await
    .map_err(Error::internal)
}

const FALLBACK_DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2VrLHr0QdVU2ylO3Q4zHn8VG6KpRNRa9ZVxG1/7bu9A";

pub static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut random = [0u8; 32];
    argon2::password_hash::rand_core::RngCore::fill_bytes(&mut OsRng, &mut random);
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(&random, &salt)
        .map(|h| h.to_string())
        // hashing with the default parameters does not fail; should it, a fixed hash with the
        // same parameters does the same work
        .unwrap_or_else(|_| FALLBACK_DUMMY_HASH.to_string())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery".into(), h.clone())
            .await
            .unwrap());
        assert!(!verify("wrong horse battery".into(), h.clone())
            .await
            .unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
        let dummy = PasswordHash::new(&DUMMY_HASH).expect("dummy hash");
        let real = PasswordHash::new(&h).expect("hash");
        assert_eq!(dummy.params, real.params, "same Argon2 parameters");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert!(PasswordHash::new(FALLBACK_DUMMY_HASH).is_ok_and(|f| f.params == real.params));
        assert!(check_policy("password", "short").is_err());
        assert!(check_policy("password", "twelve chars").is_ok());
    }
}
