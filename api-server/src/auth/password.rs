//! Argon2id password hashing (PHC strings), run on the blocking pool.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::{Error, FieldError};

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
    tokio::task::spawn_blocking(move || {
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
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(Error::internal)
}

/// A valid hash of a random password, verified against when the email is unknown so that
/// response time does not reveal which accounts exist.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2VrLHr0QdVU2ylO3Q4zHn8VG6KpRNRa9ZVxG1/7bu9A";

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
        assert!(!verify("wrong horse battery".into(), h).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into()).await.unwrap());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(check_policy("password", "short").is_err());
        assert!(check_policy("password", "twelve chars").is_ok());
    }
}
