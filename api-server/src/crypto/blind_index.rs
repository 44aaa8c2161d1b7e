//! Blind indexes: `HMAC-SHA256(blind-index key, domain || 0x00 || normalised value)` under the
//! blind-index keys of the ring, by id (`docs/contracts.md`, "Key files").
//!
//! New indexes are made with the active key ([`BlindIndexes::active`], its id
//! [`BlindIndexes::key_id`], stored beside the index: `bidx_key_id`, migration 0170). Lookups and
//! duplicate checks match the value under every key of the ring (`= ANY(..)`,
//! [`BlindIndexes::all`]) until `caduceus-api rotate-blind-index` has recomputed every row under
//! the active key and the old key has left the ring.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `classid` of the transaction-scoped advisory locks that serialise writers of the same
/// unique blind-indexed value while the ring holds several blind-index keys (`"bidx"`; the
/// two-`int4` lock space, apart from the audit chain's `bigint` lock).
pub const BIDX_LOCK_CLASS: i32 = 0x6269_6478;

/// HKDF salt and info of the lock key (domain separation from the audit chain and cursor keys,
/// which use the same input key).
const LOCK_KEY_SALT: &[u8] = b"caduceus-bidx-lock";
const LOCK_KEY_INFO: &[u8] = b"caduceus-bidx-lock/v1 hmac-sha256";

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the keys are checked to be 32 bytes at load
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts any key length")
}

fn mac(key: &Hmac<Sha256>, domain: &str, normalised: &str) -> Vec<u8> {
    let mut mac = key.clone();
    mac.update(domain.as_bytes());
    mac.update(&[0]);
    mac.update(normalised.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The blind-index keys of a ring (keyed HMAC states only), the active id, and the key of the
/// write locks (derived from the ring's fixed `audit_key`, so every replica, whatever its active
/// blind-index key, takes the same lock for the same value).
#[derive(Clone)]
pub struct BlindIndexKeys {
    active: String,
    keys: BTreeMap<String, Hmac<Sha256>>,
    lock: Hmac<Sha256>,
}

/// One value's blind indexes under every key of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindIndexes {
    /// The active key's id (stored as the row's `bidx_key_id`).
    pub key_id: String,
    /// Under the active key: what new rows store.
    pub active: Vec<u8>,
    /// Under each other key of the ring (empty when the ring has one blind-index key).
    pub others: Vec<Vec<u8>>,
    /// `objid` of the value's advisory lock (with [`BIDX_LOCK_CLASS`]).
    pub lock: i32,
}

impl BlindIndexes {
    /// Every value, the active one first: what a lookup matches with `= ANY($1)`.
    pub fn all(&self) -> Vec<&[u8]> {
        std::iter::once(self.active.as_slice())
            .chain(self.others.iter().map(Vec::as_slice))
            .collect()
    }

    /// Whether the ring holds keys besides the active one: rows may still carry an index under
    /// another key, which the unique indexes cannot compare with a new one.
    pub fn rotating(&self) -> bool {
        !self.others.is_empty()
    }
}

impl BlindIndexKeys {
    /// Keys by id (32 bytes each), the active id (one of them) and the fixed input key of the
    /// derived keys.
    pub fn new<'a>(
        active: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        audit_key: &[u8],
    ) -> Self {
        let lock = super::hkdf_sha256_32(LOCK_KEY_SALT, audit_key, LOCK_KEY_INFO);
        Self {
            active: active.to_string(),
            keys: keys
                .into_iter()
                .map(|(id, k)| (id.to_string(), keyed(k)))
                .collect(),
            lock: keyed(&lock),
        }
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    fn active_key(&self) -> &Hmac<Sha256> {
        // `new` is only called with an active id among the keys (checked by the key-file parser)
        #[allow(clippy::expect_used)]
        self.keys
            .get(&self.active)
            .expect("the active blind-index key is in the ring")
    }

    /// The index under the active key.
    pub fn index(&self, domain: &str, normalised: &str) -> Vec<u8> {
        mac(self.active_key(), domain, normalised)
    }

    /// The index under the key `id`, if the ring has it.
    pub fn index_with(&self, id: &str, domain: &str, normalised: &str) -> Option<Vec<u8>> {
        self.keys.get(id).map(|k| mac(k, domain, normalised))
    }

    /// The indexes under every key, the active one first, and the value's lock.
    pub fn indexes(&self, domain: &str, normalised: &str) -> BlindIndexes {
        let others = self
            .keys
            .iter()
            .filter(|(id, _)| **id != self.active)
            .map(|(_, k)| mac(k, domain, normalised))
            .collect();
        let tag = mac(&self.lock, domain, normalised);
        BlindIndexes {
            key_id: self.active.clone(),
            active: self.index(domain, normalised),
            others,
            lock: i32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(active: &str, ids: &[(&str, u8)], audit: u8) -> BlindIndexKeys {
        let raw: Vec<(String, [u8; 32])> = ids
            .iter()
            .map(|(id, b)| (id.to_string(), [*b; 32]))
            .collect();
        BlindIndexKeys::new(
            active,
            raw.iter().map(|(id, k)| (id.as_str(), k.as_slice())),
            &[audit; 32],
        )
    }

    #[test]
    fn indexes_put_the_active_key_first_and_keep_each_keys_value() {
        let a = keys("a", &[("a", 1)], 9);
        let ab = keys("b", &[("a", 1), ("b", 2)], 9);
        let v = ab.indexes("mrn", "X1");
        assert_eq!(v.key_id, "b");
        assert_eq!(v.others, vec![a.index("mrn", "X1")]);
        assert_eq!(v.active, ab.index_with("b", "mrn", "X1").unwrap());
        assert_ne!(v.active, v.others[0]);
        assert_eq!(v.all(), vec![v.active.as_slice(), v.others[0].as_slice()]);
        assert!(v.rotating());
        assert!(!a.indexes("mrn", "X1").rotating());
        assert_eq!(ab.index_with("c", "mrn", "X1"), None);
    }

    #[test]
    fn the_lock_follows_the_value_and_the_fixed_key_not_the_active_key() {
        let before = keys("a", &[("a", 1), ("b", 2)], 9);
        let after = keys("b", &[("a", 1), ("b", 2)], 9);
        let lock = before.indexes("mrn", "X1").lock;
        assert_eq!(after.indexes("mrn", "X1").lock, lock);
        assert_eq!(keys("b", &[("b", 2)], 9).indexes("mrn", "X1").lock, lock);
        assert_ne!(before.indexes("mrn", "X2").lock, lock);
        assert_ne!(keys("a", &[("a", 1)], 8).indexes("mrn", "X1").lock, lock);
    }
}
