//! PHI encryption (AES-256-GCM) and blind indexes (HMAC-SHA256).
//!
//! * [`KeyRing`] is loaded from the PHI key-ring file (`docs/contracts.md`, "Key files").
//! * A ciphertext is `0x01 | len(key id) | key id | 12-byte nonce | AES-GCM ciphertext+tag`, so
//!   every value names the key that encrypted it: new writes use the active key, rows written
//!   under an older key still decrypt until `caduceus-api rotate-keys` re-encrypts them.
//! * The AAD is `caduceus-phi/v1|<table>|<row id>|<column>` ([`Aad`]): a ciphertext copied to
//!   another row or column fails authentication.
//! * Blind indexes are `HMAC-SHA256(blind-index key, domain || 0x00 || normalised value)`, under
//!   the blind-index keys of the ring by id (`crypto/blind_index.rs`): new indexes use the active
//!   one, lookups match any key of the ring until `caduceus-api rotate-blind-index` has
//!   recomputed every row.
//! * The audit chain key ([`AuditKey`]) is derived from the ring's fixed `audit_key` (a one-key
//!   ring's `blind_index_key`) with HKDF-SHA256 under its own label: changing the active
//!   blind-index key never changes it, and the database never holds it.
//! * The list cursor key ([`CursorKey`], `crypto/cursor_key.rs`) is derived the same way under
//!   another label.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use caduceus_contract::key_files::{self, KeyFileError, PhiKeyRingFile};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use ring::aead::{LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

mod blind_index;
mod cursor_key;
pub use blind_index::{BlindIndexKeys, BlindIndexes, BIDX_LOCK_CLASS};
pub use cursor_key::{CursorKey, CURSOR_TAG_LEN};

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Problems with key material. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("PHI key ring is not valid JSON of the documented shape: {0}")]
    Json(String),
    #[error("PHI key ring: unsupported version {0} (expected 1)")]
    Version(u32),
    #[error("PHI key ring: key id {0:?} does not match ^[a-z0-9][a-z0-9-]{{0,31}}$")]
    KeyId(String),
    #[error("PHI key ring: {0} is not standard base64 of exactly 32 bytes")]
    KeyBytes(String),
    #[error("PHI key ring: active_key_id {0:?} is not in keys")]
    ActiveMissing(String),
    /// The blind-index keys' form or active id (the contract's message).
    #[error("PHI key ring: {0}")]
    BlindIndex(String),
    #[error("JWT key file: {0}")]
    Jwt(String),
}

/// Decryption failures. Deliberately carries no detail about the data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext names key {0:?}, which is not in the key ring")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (tampered, or bound to another row/column)")]
    Authentication,
}

/// What a ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub row: Uuid,
    pub column: &'a str,
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut uuid = Uuid::encode_buffer();
        let row = self.row.hyphenated().encode_lower(&mut uuid);
        let mut out =
            Vec::with_capacity(17 + self.table.len() + 1 + row.len() + 1 + self.column.len());
        out.extend_from_slice(b"caduceus-phi/v1|");
        out.extend_from_slice(self.table.as_bytes());
        out.push(b'|');
        out.extend_from_slice(row.as_bytes());
        out.push(b'|');
        out.extend_from_slice(self.column.as_bytes());
        out
    }
}

/// The PHI key ring: data keys by id, the active key id, the blind-index keys, and the keys
/// derived from the fixed audit key.
#[derive(Clone)]
pub struct KeyRing {
    active_key_id: String,
    keys: BTreeMap<String, LessSafeKey>,
    blind: BlindIndexKeys,
    audit_key: AuditKey,
    cursor_key: CursorKey,
}

/// HKDF salt and info of the audit chain key (RFC 5869; domain separation from the blind
/// indexes, which may use the same input key).
const AUDIT_KEY_SALT: &[u8] = b"caduceus-audit-chain";
const AUDIT_KEY_INFO: &[u8] = b"caduceus-audit-chain/v1 hmac-sha256";

/// The key of the audit hash chain: row hash = `HMAC-SHA256(key, prev_hash || canonical row)`
/// (hash scheme 1, migration 0130). Derived as `HKDF-SHA256(ikm = audit key, salt =
/// "caduceus-audit-chain", info = "caduceus-audit-chain/v1 hmac-sha256", L = 32)`, where the
/// audit key is the ring's `audit_key` (a one-key ring's `blind_index_key`, which a converted
/// ring keeps as its `audit_key`): rotating the blind-index keys leaves it unchanged, and the
/// database (and its owner) never sees it. Holds the keyed HMAC state only; `Debug` shows
/// nothing.
#[derive(Clone)]
pub struct AuditKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// HKDF-SHA256 (RFC 5869) of one output block (L = 32): `T(1) = HMAC(HMAC(salt, ikm), info || 1)`.
fn hkdf_sha256_32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<Vec<u8>> {
    let hmac = |key: &[u8]| {
        // HMAC accepts keys of any length
        #[allow(clippy::expect_used)]
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts any key length")
    };
    let mut extract = hmac(salt);
    extract.update(ikm);
    let prk = Zeroizing::new(extract.finalize().into_bytes().to_vec());
    let mut expand = hmac(&prk);
    expand.update(info);
    expand.update(&[1]);
    Zeroizing::new(expand.finalize().into_bytes().to_vec())
}

impl AuditKey {
    /// The audit chain key derived from a ring's audit key.
    pub fn derive(audit_key: &[u8]) -> Self {
        let key = hkdf_sha256_32(AUDIT_KEY_SALT, audit_key, AUDIT_KEY_INFO);
        #[allow(clippy::expect_used)]
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .expect("HMAC-SHA256 accepts any key length");
        Self { mac }
    }

    /// Keyed chain hash of one row: `HMAC-SHA256(key, prev || canonical)`.
    pub fn chain_hash(&self, prev: &[u8], canonical: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(prev);
        mac.update(canonical);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `hash` is the keyed chain hash of `prev || canonical` (constant time).
    pub fn verify(&self, prev: &[u8], canonical: &[u8], hash: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(prev);
        mac.update(canonical);
        mac.verify_slice(hash).is_ok()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active_key_id", &self.active_key_id)
            .field("key_ids", &self.key_ids())
            .field("active_blind_index_key_id", &self.blind.active_id())
            .field("blind_index_key_ids", &self.blind.ids())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Parse the key-ring JSON (contracts format).
    pub fn from_json(text: &str) -> Result<Self, KeyError> {
        let file: PhiKeyRingFile = serde_json::from_str(text).map_err(|e| {
            // serde_json messages name fields and positions, never the (secret) values
            let msg = e.to_string();
            let what = if msg.starts_with("missing field") || msg.starts_with("unknown field") {
                msg.split(" at line")
                    .next()
                    .unwrap_or("invalid")
                    .to_string()
            } else {
                format!("{:?} error", e.classify())
            };
            KeyError::Json(format!("{what} (line {} column {})", e.line(), e.column()))
        })?;
        file.check().map_err(|e| match e {
            KeyFileError::Version(v) => KeyError::Version(v),
            KeyFileError::KeyId(id) => KeyError::KeyId(id),
            KeyFileError::KeyBytes(what) => KeyError::KeyBytes(what),
            KeyFileError::ActiveMissing(id) => KeyError::ActiveMissing(id),
            other @ (KeyFileError::BlindIndexForm | KeyFileError::ActiveBlindIndexMissing(_)) => {
                KeyError::BlindIndex(other.to_string())
            }
        })?;
        let mut keys = BTreeMap::new();
        for (id, b64) in &file.keys {
            let bad = || KeyError::KeyBytes(format!("key {id:?}"));
            let raw = key_files::decode_key(b64).ok_or_else(bad)?;
            let cipher = UnboundKey::new(&AES_256_GCM, raw.as_ref()).map_err(|_| bad())?;
            keys.insert(id.clone(), LessSafeKey::new(cipher));
        }
        let (blind, audit_key, cursor_key) = file
            .blind_index(|b| {
                // `check` has decoded every one of these keys
                let decode = |b64: &str| key_files::decode_key(b64).unwrap_or_default();
                let raw: Vec<(&str, Zeroizing<[u8; key_files::KEY_LEN]>)> =
                    b.keys.iter().map(|(id, k)| (*id, decode(k))).collect();
                let audit = decode(b.audit_key);
                (
                    BlindIndexKeys::new(
                        b.active_id,
                        raw.iter().map(|(id, k)| (*id, k.as_slice())),
                        audit.as_slice(),
                    ),
                    AuditKey::derive(audit.as_slice()),
                    CursorKey::derive(audit.as_slice()),
                )
            })
            .map_err(|e| KeyError::BlindIndex(e.to_string()))?;
        Ok(Self {
            active_key_id: file.active_key_id.clone(),
            keys,
            blind,
            audit_key,
            cursor_key,
        })
    }

    /// Read and parse a key-ring file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text =
            caduceus_contract::key_files::read_key_file(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
        Self::from_json(&text)
    }

    pub fn active_key_id(&self) -> &str {
        &self.active_key_id
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// The audit chain key derived from this ring's audit key.
    pub fn audit_key(&self) -> &AuditKey {
        &self.audit_key
    }

    /// The list cursor key derived from this ring's audit key.
    pub fn cursor_key(&self) -> CursorKey {
        self.cursor_key.clone()
    }

    /// The blind-index keys (by id, the active one, the write locks).
    pub fn blind_index_keys(&self) -> &BlindIndexKeys {
        &self.blind
    }

    /// The id of the blind-index key new indexes are made with.
    pub fn active_blind_index_key_id(&self) -> &str {
        self.blind.active_id()
    }

    /// Encrypt under the active key, bound to `aad`.
    pub fn encrypt(&self, aad: Aad<'_>, plaintext: &[u8]) -> Vec<u8> {
        let id = self.active_key_id.as_bytes();
        let cipher = &self.keys[&self.active_key_id];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad_bytes = aad.bytes();
        let head = 2 + id.len() + NONCE_LEN;
        let mut out = Vec::with_capacity(head + plaintext.len() + TAG_LEN);
        out.push(FORMAT_V1);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        // AES-GCM sealing fails only for plaintexts over 2^36 bytes; request bodies are
        // limited to kilobytes, so this is an invariant, not an input-dependent error.
        #[allow(clippy::expect_used)]
        cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad_bytes[..]),
                &mut sealed,
            )
            .expect("AES-256-GCM encryption of a bounded plaintext cannot fail");
        out.extend_from_slice(&sealed);
        out
    }

    /// Key id a ciphertext was written under.
    pub fn key_id_of(blob: &[u8]) -> Result<&str, CryptoError> {
        if blob.len() < 2 || blob[0] != FORMAT_V1 {
            return Err(CryptoError::Malformed);
        }
        let len = blob[1] as usize;
        let id = blob.get(2..2 + len).ok_or(CryptoError::Malformed)?;
        std::str::from_utf8(id).map_err(|_| CryptoError::Malformed)
    }

    /// Decrypt with whichever key the ciphertext names.
    pub fn decrypt(&self, aad: Aad<'_>, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = Self::key_id_of(blob)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_string()))?;
        let start = 2 + id.len();
        if blob.len() < start + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[start..start + NONCE_LEN]);
        let aad_bytes = aad.bytes();
        let mut in_out = blob[start + NONCE_LEN..].to_vec();
        let len = cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad_bytes[..]),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Authentication)?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }

    /// Encrypt a UTF-8 string.
    pub fn encrypt_str(&self, aad: Aad<'_>, value: &str) -> Vec<u8> {
        self.encrypt(aad, value.as_bytes())
    }

    /// Decrypt to a UTF-8 string.
    pub fn decrypt_str(&self, aad: Aad<'_>, blob: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.decrypt(aad, blob)?).map_err(|_| CryptoError::Malformed)
    }

    /// Keyed blind index (under the active blind-index key) of an already normalised value
    /// within a domain.
    pub fn blind_index(&self, domain: &str, normalised: &str) -> Vec<u8> {
        self.blind.index(domain, normalised)
    }

    /// The blind indexes of an already normalised value under every key of the ring (lookups,
    /// duplicate checks), the active one first.
    pub fn blind_indexes(&self, domain: &str, normalised: &str) -> BlindIndexes {
        self.blind.indexes(domain, normalised)
    }

    /// Blind index of an MRN: trimmed, upper-cased, spaces and hyphens removed.
    pub fn mrn_index(&self, mrn: &str) -> Vec<u8> {
        self.mrn_indexes(mrn).active
    }

    /// [`Self::mrn_index`] under every key of the ring.
    pub fn mrn_indexes(&self, mrn: &str) -> BlindIndexes {
        self.blind_indexes("mrn", &normalise_mrn(mrn))
    }

    /// Blind index of family name + birth date: name trimmed, lower-cased, inner whitespace collapsed.
    pub fn name_dob_index(&self, family_name: &str, birth_date: chrono::NaiveDate) -> Vec<u8> {
        self.name_dob_indexes(family_name, birth_date).active
    }

    /// [`Self::name_dob_index`] under every key of the ring.
    pub fn name_dob_indexes(
        &self,
        family_name: &str,
        birth_date: chrono::NaiveDate,
    ) -> BlindIndexes {
        let name = family_name
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        self.blind_indexes("family_name+birth_date", &format!("{name}|{birth_date}"))
    }
}

/// MRN normal form used for uniqueness and lookup.
pub fn normalise_mrn(mrn: &str) -> String {
    mrn.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

fn random_b64(len: usize) -> String {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    OsRng.fill_bytes(&mut bytes);
    B64.encode(&*bytes)
}

/// Fresh key-ring JSON with one active key `k-<yyyymmdd>-<4 hex>`.
pub fn generate_key_ring_json() -> String {
    let mut suffix = [0u8; 2];
    OsRng.fill_bytes(&mut suffix);
    let id = format!(
        "k-{}-{}",
        chrono::Utc::now().format("%Y%m%d"),
        hex::encode(suffix)
    );
    let ring = PhiKeyRingFile::single(
        id.clone(),
        BTreeMap::from([(id, random_b64(32))]),
        random_b64(32),
    );
    // Serialising a struct of strings cannot fail.
    let json = Zeroizing::new(serde_json::to_string(&ring).unwrap_or_default());
    format!("{}\n", json.as_str())
}

/// Fresh JWT key file content: standard base64 of 64 random bytes.
pub fn generate_jwt_key() -> String {
    format!("{}\n", random_b64(64))
}

/// Parse the JWT key file: base64 of at least 32 bytes.
pub fn parse_jwt_key(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bytes = Zeroizing::new(
        B64.decode(text.trim())
            .map_err(|_| KeyError::Jwt("not standard base64".into()))?,
    );
    if bytes.len() < 32 {
        return Err(KeyError::Jwt(format!(
            "key is {} bytes; at least 32 are required",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Read the JWT key file.
pub fn load_jwt_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let text =
        caduceus_contract::key_files::read_key_file(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
    parse_jwt_key(&text)
}

/// Write `DIR/jwt.key` and `DIR/phi-keys.json` with mode 0600 (refuses to overwrite).
pub fn write_key_files(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    for (name, content) in [
        ("jwt.key", generate_jwt_key()),
        ("phi-keys.json", generate_key_ring_json()),
    ] {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
