//! The key files the operator generates into Secrets and the API server / backup agent read
//! (docs/contracts.md, "Key files"): the PHI key ring (`phi-keys.json`) and the backup key
//! (`backup-key.json`). One type and one check per format; the readers turn the decoded keys
//! into ciphers. Messages name fields and key ids, never key material.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The only version of both formats.
pub const VERSION: u32 = 1;
/// Length of every key (AES-256, HMAC-SHA256 blind index).
pub const KEY_LEN: usize = 32;

/// What is wrong with a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    /// `version` is not [`VERSION`].
    Version(u32),
    /// A key id that does not have the format's shape (the id itself; ids are not secret).
    KeyId(String),
    /// The named key is not standard base64 of exactly [`KEY_LEN`] bytes.
    KeyBytes(String),
    /// The key ring's `active_key_id` is not one of its keys.
    ActiveMissing(String),
    /// The key ring mixes or half-states the two forms of its blind-index keys: either
    /// `blind_index_key` alone (one key, id [`LEGACY_BLIND_INDEX_KEY_ID`]) or `blind_index_keys`
    /// with `active_blind_index_key_id` and `audit_key`.
    BlindIndexForm,
    /// The key ring's `active_blind_index_key_id` is not one of its `blind_index_keys`.
    ActiveBlindIndexMissing(String),
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "unsupported version {v} (expected {VERSION})"),
            Self::KeyId(id) => write!(f, "key id {id:?} does not match ^[a-z0-9][a-z0-9-]{{0,31}}$"),
            Self::KeyBytes(what) => write!(f, "{what} is not standard base64 of exactly {KEY_LEN} bytes"),
            Self::ActiveMissing(id) => write!(f, "active_key_id {id:?} is not in keys"),
            Self::BlindIndexForm => f.write_str(
                "give either blind_index_key (one blind-index key) or blind_index_keys together with \
                 active_blind_index_key_id and audit_key, not both and not part of either",
            ),
            Self::ActiveBlindIndexMissing(id) => {
                write!(f, "active_blind_index_key_id {id:?} is not in blind_index_keys")
            }
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Reads a key file, refusing one that others can read or that anyone but its owner can
/// change (`mode & 0o027 != 0`): keys must not be readable by every account of the machine.
/// Group read stays allowed: Kubernetes mounts Secret files owned by root with the pod's
/// `fsGroup` (the operator mounts them `0440`), and that group is how the process reads them.
/// The text is zeroized when dropped.
pub fn read_key_file(path: &std::path::Path) -> std::io::Result<Zeroizing<String>> {
    let file = std::fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o027 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "mode {mode:04o} lets other accounts read it or others change it; allow at most owner read/write and group read (chmod 0600 or 0640)"
                ),
            ));
        }
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &file, &mut text)?;
    Ok(text)
}

/// Standard base64 of exactly [`KEY_LEN`] bytes (surrounding whitespace ignored).
pub fn decode_key(b64: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let bytes = Zeroizing::new(STANDARD.decode(b64.trim()).ok()?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

/// Standard base64 of a key.
pub fn encode_key(key: &[u8]) -> String {
    STANDARD.encode(key)
}

/// A PHI key id: `^[a-z0-9][a-z0-9-]{0,31}$`.
pub fn valid_phi_key_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A backup key id: `bk-<12 lowercase hex digits>`.
pub fn valid_backup_key_id(id: &str) -> bool {
    id.strip_prefix("bk-").is_some_and(|hex| {
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The id the single key of a one-key ring (`blind_index_key`) has among the blind-index keys:
/// what every row written before blind-index keys had ids records (migration 0170).
pub const LEGACY_BLIND_INDEX_KEY_ID: &str = "legacy";

/// `phi-keys.json`: data keys by id (standard base64 of 32 bytes), the id new writes use, and
/// the blind-index keys, in one of two forms:
///
/// * one key, `blind_index_key` (every ring written before blind-index rotation): its id is
///   [`LEGACY_BLIND_INDEX_KEY_ID`], and it is also the input of the audit chain and list-cursor
///   keys;
/// * several, `blind_index_keys` (by id) with `active_blind_index_key_id` (the key new indexes
///   are made with) and `audit_key`, the input of the audit chain and list-cursor keys, which
///   never changes (the chain is verified with one key): a ring converted from the one-key form
///   keeps the old `blind_index_key` value there.
///
/// Wiped from memory when dropped; `Debug` shows no key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhiKeyRingFile {
    pub version: u32,
    pub active_key_id: String,
    pub keys: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_index_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_index_keys: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_blind_index_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<String>,
}

/// The blind-index keys of a checked ring ([`PhiKeyRingFile::blind_index`]): base64 by id,
/// the active id, and the audit key (the input of the derived keys).
#[derive(Clone, Copy)]
pub struct BlindIndexKeys<'a> {
    pub active_id: &'a str,
    pub keys: &'a [(&'a str, &'a str)],
    pub audit_key: &'a str,
}

impl Drop for PhiKeyRingFile {
    fn drop(&mut self) {
        for key in self.keys.values_mut() {
            key.zeroize();
        }
        for key in self
            .blind_index_keys
            .iter_mut()
            .flat_map(|k| k.values_mut())
        {
            key.zeroize();
        }
        if let Some(k) = self.blind_index_key.as_mut() {
            k.zeroize();
        }
        if let Some(k) = self.audit_key.as_mut() {
            k.zeroize();
        }
    }
}

impl std::fmt::Debug for PhiKeyRingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhiKeyRingFile")
            .field("version", &self.version)
            .field("active_key_id", &self.active_key_id)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active_blind_index_key_id", &self.active_blind_index_key_id)
            .field(
                "blind_index_key_ids",
                &self
                    .blind_index_keys
                    .as_ref()
                    .map(|k| k.keys().collect::<Vec<_>>()),
            )
            .finish_non_exhaustive()
    }
}

impl PhiKeyRingFile {
    /// A ring of the one-key form (what `keys generate` and the operator write).
    pub fn single(
        active_key_id: String,
        keys: BTreeMap<String, String>,
        blind_index_key: String,
    ) -> Self {
        Self {
            version: VERSION,
            active_key_id,
            keys,
            blind_index_key: Some(blind_index_key),
            blind_index_keys: None,
            active_blind_index_key_id: None,
            audit_key: None,
        }
    }

    /// The blind-index keys, whichever form the ring has, checked: `f` gets them as
    /// [`BlindIndexKeys`] (id order, a one-key ring's key under [`LEGACY_BLIND_INDEX_KEY_ID`]).
    pub fn blind_index<R>(
        &self,
        f: impl FnOnce(BlindIndexKeys<'_>) -> R,
    ) -> Result<R, KeyFileError> {
        let forms = (
            &self.blind_index_key,
            &self.blind_index_keys,
            &self.active_blind_index_key_id,
            &self.audit_key,
        );
        match forms {
            (Some(key), None, None, None) => {
                if decode_key(key).is_none() {
                    return Err(KeyFileError::KeyBytes("blind_index_key".into()));
                }
                Ok(f(BlindIndexKeys {
                    active_id: LEGACY_BLIND_INDEX_KEY_ID,
                    keys: &[(LEGACY_BLIND_INDEX_KEY_ID, key.as_str())],
                    audit_key: key,
                }))
            }
            (None, Some(keys), Some(active), Some(audit)) => {
                let mut list = Vec::with_capacity(keys.len());
                for (id, key) in keys {
                    if !valid_phi_key_id(id) {
                        return Err(KeyFileError::KeyId(id.clone()));
                    }
                    if decode_key(key).is_none() {
                        return Err(KeyFileError::KeyBytes(format!("blind-index key {id:?}")));
                    }
                    list.push((id.as_str(), key.as_str()));
                }
                if !keys.contains_key(active) {
                    return Err(KeyFileError::ActiveBlindIndexMissing(active.clone()));
                }
                if decode_key(audit).is_none() {
                    return Err(KeyFileError::KeyBytes("audit_key".into()));
                }
                Ok(f(BlindIndexKeys {
                    active_id: active,
                    keys: &list,
                    audit_key: audit,
                }))
            }
            _ => Err(KeyFileError::BlindIndexForm),
        }
    }

    /// Checks the version, every key id and key, the blind-index keys (either form) and that
    /// the active keys are in the ring.
    pub fn check(&self) -> Result<(), KeyFileError> {
        if self.version != VERSION {
            return Err(KeyFileError::Version(self.version));
        }
        for (id, key) in &self.keys {
            if !valid_phi_key_id(id) {
                return Err(KeyFileError::KeyId(id.clone()));
            }
            if decode_key(key).is_none() {
                return Err(KeyFileError::KeyBytes(format!("key {id:?}")));
            }
        }
        if !valid_phi_key_id(&self.active_key_id) {
            return Err(KeyFileError::KeyId(self.active_key_id.clone()));
        }
        if !self.keys.contains_key(&self.active_key_id) {
            return Err(KeyFileError::ActiveMissing(self.active_key_id.clone()));
        }
        self.blind_index(|_| ())
    }
}

/// `backup-key.json`: `{"version":1,"key_id":"bk-<12 hex>","key":"<base64 of 32 bytes>"}`.
/// Wiped from memory when dropped; `Debug` shows no key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct BackupKeyFile {
    pub version: u32,
    pub key_id: String,
    pub key: String,
}

impl std::fmt::Debug for BackupKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKeyFile")
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl BackupKeyFile {
    /// Checks the version, the key id and the key.
    pub fn check(&self) -> Result<(), KeyFileError> {
        if self.version != VERSION {
            return Err(KeyFileError::Version(self.version));
        }
        if !valid_backup_key_id(&self.key_id) {
            return Err(KeyFileError::KeyId(self.key_id.clone()));
        }
        if decode_key(&self.key).is_none() {
            return Err(KeyFileError::KeyBytes("key".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("caduceus-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.json");
        std::fs::write(&path, "secret").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, true),
            (0o440, true),
            (0o644, false),
            (0o604, false),
            (0o660, false),
            (0o666, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_key_file(&path);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
                assert!(e.to_string().contains("chmod 0600"), "{e}");
            } else {
                assert_eq!(r.unwrap().as_str(), "secret");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ring() -> PhiKeyRingFile {
        PhiKeyRingFile::single(
            "k-1".into(),
            BTreeMap::from([("k-1".to_string(), encode_key(&[7u8; 32]))]),
            encode_key(&[9u8; 32]),
        )
    }

    /// A ring of the several-keys form: blind-index keys `b-1` and `b-2`, `b-2` active.
    fn rotated() -> PhiKeyRingFile {
        let mut r = ring();
        r.blind_index_key = None;
        r.blind_index_keys = Some(BTreeMap::from([
            ("b-1".to_string(), encode_key(&[9u8; 32])),
            ("b-2".to_string(), encode_key(&[10u8; 32])),
        ]));
        r.active_blind_index_key_id = Some("b-2".into());
        r.audit_key = Some(encode_key(&[9u8; 32]));
        r
    }

    /// (active id, ids, audit key) of a ring's blind-index keys.
    fn shape(r: &PhiKeyRingFile) -> Result<(String, Vec<String>, String), KeyFileError> {
        r.blind_index(|b| {
            (
                b.active_id.to_string(),
                b.keys.iter().map(|(id, _)| id.to_string()).collect(),
                b.audit_key.to_string(),
            )
        })
    }

    #[test]
    fn a_one_key_ring_reads_as_the_legacy_blind_index_key() {
        let text = format!(
            r#"{{"version":1,"active_key_id":"k-1","keys":{{"k-1":"{}"}},"blind_index_key":"{}"}}"#,
            encode_key(&[7u8; 32]),
            encode_key(&[9u8; 32])
        );
        let r: PhiKeyRingFile = serde_json::from_str(&text).unwrap();
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            shape(&r).unwrap(),
            (
                LEGACY_BLIND_INDEX_KEY_ID.to_string(),
                vec![LEGACY_BLIND_INDEX_KEY_ID.to_string()],
                encode_key(&[9u8; 32])
            )
        );
        // written back unchanged: no field of the other form appears
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
    }

    #[test]
    fn a_ring_of_several_blind_index_keys_checks_and_round_trips() {
        let r = rotated();
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            shape(&r).unwrap(),
            (
                "b-2".to_string(),
                vec!["b-1".to_string(), "b-2".to_string()],
                encode_key(&[9u8; 32])
            )
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("\"blind_index_key\""), "{json}");
        let back: PhiKeyRingFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_active_blind_index_key_outside_the_ring_is_refused() {
        let mut r = rotated();
        r.active_blind_index_key_id = Some("b-9".into());
        let err = r.check().unwrap_err();
        assert_eq!(err, KeyFileError::ActiveBlindIndexMissing("b-9".into()));
        assert_eq!(
            err.to_string(),
            "active_blind_index_key_id \"b-9\" is not in blind_index_keys"
        );
        // removing the active key from the ring is the same mistake
        let mut r = rotated();
        r.blind_index_keys.as_mut().unwrap().remove("b-2");
        assert_eq!(
            r.check(),
            Err(KeyFileError::ActiveBlindIndexMissing("b-2".into()))
        );
    }

    #[test]
    fn every_defect_of_the_blind_index_keys_is_named() {
        // both forms at once, or a part of the several-keys form
        let mut both = rotated();
        both.blind_index_key = Some(encode_key(&[9u8; 32]));
        assert_eq!(both.check(), Err(KeyFileError::BlindIndexForm));
        for strip in 0..3 {
            let mut r = rotated();
            match strip {
                0 => r.active_blind_index_key_id = None,
                1 => r.audit_key = None,
                _ => r.blind_index_keys = None,
            }
            assert_eq!(r.check(), Err(KeyFileError::BlindIndexForm), "{strip}");
        }
        let mut none = ring();
        none.blind_index_key = None;
        assert_eq!(none.check(), Err(KeyFileError::BlindIndexForm));
        assert!(KeyFileError::BlindIndexForm
            .to_string()
            .contains("active_blind_index_key_id and audit_key"));
        let mut r = rotated();
        r.blind_index_keys
            .as_mut()
            .unwrap()
            .insert("B_3".into(), encode_key(&[1u8; 32]));
        assert_eq!(r.check(), Err(KeyFileError::KeyId("B_3".into())));
        let mut r = rotated();
        r.blind_index_keys
            .as_mut()
            .unwrap()
            .insert("b-3".into(), encode_key(&[1u8; 16]));
        assert_eq!(
            r.check(),
            Err(KeyFileError::KeyBytes("blind-index key \"b-3\"".into()))
        );
        let mut r = rotated();
        r.audit_key = Some("short".into());
        assert_eq!(r.check(), Err(KeyFileError::KeyBytes("audit_key".into())));
    }

    #[test]
    fn a_generated_key_ring_checks_and_round_trips() {
        let r = ring();
        assert_eq!(r.check(), Ok(()));
        let json = serde_json::to_string(&r).unwrap();
        let back: PhiKeyRingFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(decode_key(&r.keys["k-1"]).unwrap().as_ref(), &[7u8; 32]);
    }

    #[test]
    fn every_defect_of_a_key_ring_is_named() {
        let mut r = ring();
        r.version = 2;
        assert_eq!(r.check(), Err(KeyFileError::Version(2)));
        let mut r = ring();
        r.keys.insert("Bad".into(), encode_key(&[1u8; 32]));
        assert_eq!(r.check(), Err(KeyFileError::KeyId("Bad".into())));
        let mut r = ring();
        r.keys.insert("k-2".into(), encode_key(&[1u8; 31]));
        assert_eq!(r.check(), Err(KeyFileError::KeyBytes("key \"k-2\"".into())));
        let mut r = ring();
        r.active_key_id = "k-9".into();
        assert_eq!(r.check(), Err(KeyFileError::ActiveMissing("k-9".into())));
        let mut r = ring();
        r.blind_index_key = Some("not base64!".into());
        assert_eq!(
            r.check(),
            Err(KeyFileError::KeyBytes("blind_index_key".into()))
        );
        let unknown = r#"{"version":1,"active_key_id":"k","keys":{},"blind_index_key":"","x":1}"#;
        assert!(serde_json::from_str::<PhiKeyRingFile>(unknown).is_err());
    }

    #[test]
    fn debug_output_shows_no_key() {
        let r = ring();
        let shown = format!("{r:?}");
        let blind = r.blind_index_key.clone().unwrap();
        assert!(!shown.contains(&r.keys["k-1"]) && !shown.contains(&blind));
        assert!(shown.contains("k-1"));
        let r = rotated();
        let shown = format!("{r:?}");
        assert!(!shown.contains(&encode_key(&[10u8; 32])), "{shown}");
        assert!(!shown.contains(&encode_key(&[9u8; 32])), "{shown}");
        assert!(shown.contains("b-2"), "{shown}");
    }

    #[test]
    fn backup_key_files_check_id_and_key() {
        let ok = BackupKeyFile {
            version: 1,
            key_id: "bk-0123456789ab".into(),
            key: encode_key(&[3u8; 32]),
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            format!(
                r#"{{"version":1,"key_id":"bk-0123456789ab","key":"{}"}}"#,
                ok.key
            )
        );
        for bad_id in ["bk-0123456789AB", "bk-0123", "xx-0123456789ab"] {
            let mut f = ok.clone();
            f.key_id = bad_id.into();
            assert_eq!(f.check(), Err(KeyFileError::KeyId(bad_id.into())));
        }
        let mut short = ok.clone();
        short.key = encode_key(&[3u8; 16]);
        assert_eq!(short.check(), Err(KeyFileError::KeyBytes("key".into())));
    }
}
