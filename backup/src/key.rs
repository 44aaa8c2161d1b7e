//! The backup key file (`backup-key.json`, see docs/contracts.md):
//! `{"version":1,"key_id":"bk-<12 hex>","key":"<standard base64 of 32 random bytes>"}`.

use std::fmt;
use std::path::Path;

use caduceus_contract::key_files::{self, BackupKeyFile, KeyFileError};
use rand::RngCore;
use zeroize::Zeroizing;

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;

/// Errors reading a key file. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file is not valid JSON of the form {{\"version\":1,\"key_id\":\"bk-...\",\"key\":\"...\"}}")]
    Json,
    #[error("unsupported key file version {0} (expected 1)")]
    Version(u32),
    #[error("key_id must match bk-<12 lowercase hex digits>")]
    KeyId,
    #[error("key must be standard base64 of exactly 32 bytes")]
    Key,
}

/// An AES-256 backup key with its public identifier.
pub struct BackupKey {
    key_id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupKey")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// True when `id` has the form `bk-<12 lowercase hex digits>`.
pub fn valid_key_id(id: &str) -> bool {
    key_files::valid_backup_key_id(id)
}

impl BackupKey {
    /// A fresh random key with a random key id.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(key.as_mut());
        let mut id = [0u8; 6];
        rng.fill_bytes(&mut id);
        Self {
            key_id: format!("bk-{}", hex::encode(id)),
            key,
        }
    }

    /// Parse the JSON key file format.
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let file: BackupKeyFile = serde_json::from_str(text.trim()).map_err(|_| KeyError::Json)?;
        file.check().map_err(|e| match e {
            KeyFileError::Version(v) => KeyError::Version(v),
            KeyFileError::KeyId(_) => KeyError::KeyId,
            // the last two concern the PHI key ring's blind-index keys, not a backup key file
            KeyFileError::KeyBytes(_)
            | KeyFileError::ActiveMissing(_)
            | KeyFileError::BlindIndexForm
            | KeyFileError::ActiveBlindIndexMissing(_) => KeyError::Key,
        })?;
        let key = key_files::decode_key(&file.key).ok_or(KeyError::Key)?;
        Ok(Self {
            key_id: file.key_id.clone(),
            key,
        })
    }

    /// Read and parse a key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text =
            caduceus_contract::key_files::read_key_file(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_json(&text)
    }

    /// The key file JSON (contains the secret key: only for `keygen`).
    pub fn to_json(&self) -> Zeroizing<String> {
        let file = BackupKeyFile {
            version: key_files::VERSION,
            key_id: self.key_id.clone(),
            key: key_files::encode_key(self.key.as_ref()),
        };
        // Serialising a struct of strings cannot fail.
        Zeroizing::new(serde_json::to_string(&file).unwrap_or_default())
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    #[test]
    fn generated_key_round_trips_through_json() {
        let key = BackupKey::generate();
        assert!(valid_key_id(key.key_id()), "{}", key.key_id());
        let json = key.to_json();
        let parsed = BackupKey::from_json(&json).expect("parse");
        assert_eq!(parsed.key_id(), key.key_id());
        assert_eq!(parsed.bytes(), key.bytes());
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["version"], 1);
        assert_eq!(
            STANDARD
                .decode(value["key"].as_str().expect("key"))
                .expect("b64")
                .len(),
            32
        );
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = BackupKey::generate();
        let b = BackupKey::generate();
        assert_ne!(a.bytes(), b.bytes());
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn rejects_bad_key_files() {
        let good_key = STANDARD.encode([7u8; 32]);
        let short_key = STANDARD.encode([7u8; 16]);
        let cases = [
            ("not json".to_string(), "not valid JSON"),
            (
                format!(r#"{{"version":2,"key_id":"bk-0123456789ab","key":"{good_key}"}}"#),
                "version 2",
            ),
            (
                format!(r#"{{"version":1,"key_id":"k-1","key":"{good_key}"}}"#),
                "key_id",
            ),
            (
                format!(r#"{{"version":1,"key_id":"bk-0123456789AB","key":"{good_key}"}}"#),
                "key_id",
            ),
            (
                format!(r#"{{"version":1,"key_id":"bk-0123456789ab","key":"{short_key}"}}"#),
                "32 bytes",
            ),
            (
                r#"{"version":1,"key_id":"bk-0123456789ab","key":"!!!"}"#.to_string(),
                "base64",
            ),
        ];
        for (text, expected) in cases {
            let err = BackupKey::from_json(&text).expect_err(&text).to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
            assert!(!err.contains(&good_key), "error leaks the key: {err}");
        }
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let key = BackupKey::generate();
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&STANDARD.encode(key.bytes())));
    }
}
