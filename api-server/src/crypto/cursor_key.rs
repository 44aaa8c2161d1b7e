//! The key that authenticates list cursors ([`crate::pagination`]).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HKDF salt and info of the cursor key (domain separation from the blind indexes and the audit
/// chain, which use the same input key).
const CURSOR_KEY_SALT: &[u8] = b"caduceus-list-cursor";
const CURSOR_KEY_INFO: &[u8] = b"caduceus-list-cursor/v1 hmac-sha256";

/// Bytes of a cursor's tag: HMAC-SHA256 truncated to its first 16 bytes (128 bits).
pub const CURSOR_TAG_LEN: usize = 16;

/// The key of the list cursors' MAC, derived as `HKDF-SHA256(ikm = blind_index_key, salt =
/// "caduceus-list-cursor", info = "caduceus-list-cursor/v1 hmac-sha256", L = 32)`: every replica
/// with the same key ring accepts the others' cursors, a key-ring rotation (the blind-index key
/// stays) does not end them, and nothing stores it. Holds the keyed HMAC state only; `Debug`
/// shows nothing.
#[derive(Clone)]
pub struct CursorKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// The cursor key derived from a blind-index key.
    pub fn derive(blind_index_key: &[u8]) -> Self {
        let key = super::hkdf_sha256_32(CURSOR_KEY_SALT, blind_index_key, CURSOR_KEY_INFO);
        // HMAC accepts keys of any length
        #[allow(clippy::expect_used)]
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .expect("HMAC-SHA256 accepts any key length");
        Self { mac }
    }

    fn keyed(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The tag of the concatenation of `parts`: the first [`CURSOR_TAG_LEN`] bytes of
    /// `HMAC-SHA256(key, parts…)`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; CURSOR_TAG_LEN] {
        let full = self.keyed(parts).finalize().into_bytes();
        let mut tag = [0u8; CURSOR_TAG_LEN];
        tag.copy_from_slice(&full[..CURSOR_TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `parts` (constant-time comparison; a tag of any other length
    /// than [`CURSOR_TAG_LEN`] is refused).
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == CURSOR_TAG_LEN && self.keyed(parts).verify_truncated_left(tag).is_ok()
    }
}
