//! Unit tests of the key ring (`crypto.rs`).
#![cfg(test)]

use super::*;

fn ring(active: &str, keys: &[(&str, [u8; 32])]) -> KeyRing {
    let keys: BTreeMap<_, _> = keys
        .iter()
        .map(|(id, k)| (id.to_string(), B64.encode(k)))
        .collect();
    let json = serde_json::json!({"version":1,"active_key_id":active,"keys":keys,"blind_index_key":B64.encode([9u8;32])});
    KeyRing::from_json(&json.to_string()).unwrap()
}

/// RFC 5869 test case 1: the first 32 bytes of its OKM are T(1).
#[test]
fn hkdf_matches_rfc_5869() {
    let okm = hkdf_sha256_32(
        &hex::decode("000102030405060708090a0b0c").unwrap(),
        &[0x0b; 22],
        &hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap(),
    );
    assert_eq!(
        hex::encode(&*okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
}

#[test]
fn the_audit_key_is_keyed_and_apart_from_the_blind_index() {
    let a = ring("k-1", &[("k-1", [1u8; 32])]);
    let other = AuditKey::derive(&[8u8; 32]);
    let h = a.audit_key().chain_hash(b"prev", b"row");
    assert_eq!(h.len(), 32);
    assert!(a.audit_key().verify(b"prev", b"row", &h));
    assert!(!a.audit_key().verify(b"prev", b"row2", &h));
    assert!(
        !other.verify(b"prev", b"row", &h),
        "another key gives another hash"
    );
    assert_ne!(h, a.blind_index("prev", "row"));
    assert_eq!(format!("{:?}", a.audit_key()), "AuditKey(..)");
}

fn aad(row: Uuid, column: &str) -> Aad<'_> {
    Aad {
        table: "patients",
        row,
        column,
    }
}

#[test]
fn round_trip_and_key_id() {
    let r = ring("k-a", &[("k-a", [1; 32])]);
    let row = Uuid::new_v4();
    let ct = r.encrypt_str(aad(row, "given_name"), "Alice");
    assert_eq!(KeyRing::key_id_of(&ct).unwrap(), "k-a");
    assert!(!ct.windows(5).any(|w| w == b"Alice"));
    assert_eq!(r.decrypt_str(aad(row, "given_name"), &ct).unwrap(), "Alice");
}

/// A value encrypted by the RustCrypto `aes-gcm` implementation this module used before
/// (recorded then) still decrypts: the stored format and the cipher are unchanged.
#[test]
fn ciphertexts_written_before_still_decrypt() {
    let r = ring("k-a", &[("k-a", [1; 32])]);
    let row = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
    let ct = B64
        .decode("AQNrLWEbQtuAEECWlPQ7zsq/a/IkhfZwvF4SUDh6K3jI1x72v8mKLG7y2ONcq1MukA==")
        .unwrap();
    assert_eq!(
        r.decrypt_str(aad(row, "given_name"), &ct).unwrap(),
        "Alice Ångström"
    );
    assert_eq!(
        r.decrypt(aad(row, "family_name"), &ct),
        Err(CryptoError::Authentication)
    );
}

#[test]
fn wrong_aad_fails() {
    let r = ring("k-a", &[("k-a", [1; 32])]);
    let row = Uuid::new_v4();
    let ct = r.encrypt_str(aad(row, "given_name"), "Alice");
    assert_eq!(
        r.decrypt(aad(row, "family_name"), &ct),
        Err(CryptoError::Authentication)
    );
    assert_eq!(
        r.decrypt(aad(Uuid::new_v4(), "given_name"), &ct),
        Err(CryptoError::Authentication)
    );
}

#[test]
fn old_key_still_decrypts_after_rotation() {
    let old = ring("k-old", &[("k-old", [1; 32])]);
    let row = Uuid::new_v4();
    let ct = old.encrypt_str(aad(row, "mrn"), "MRN-1");
    let rotated = ring("k-new", &[("k-old", [1; 32]), ("k-new", [2; 32])]);
    assert_eq!(rotated.decrypt_str(aad(row, "mrn"), &ct).unwrap(), "MRN-1");
    let ct2 = rotated.encrypt_str(aad(row, "mrn"), "MRN-1");
    assert_eq!(KeyRing::key_id_of(&ct2).unwrap(), "k-new");
    // a ring without the old key cannot read it
    let only_new = ring("k-new", &[("k-new", [2; 32])]);
    assert_eq!(
        only_new.decrypt(aad(row, "mrn"), &ct),
        Err(CryptoError::UnknownKey("k-old".into()))
    );
}

#[test]
fn tamper_detected() {
    let r = ring("k-a", &[("k-a", [1; 32])]);
    let row = Uuid::new_v4();
    let mut ct = r.encrypt_str(aad(row, "phone"), "555-0100");
    let last = ct.len() - 1;
    ct[last] ^= 1;
    assert_eq!(
        r.decrypt(aad(row, "phone"), &ct),
        Err(CryptoError::Authentication)
    );
    assert_eq!(
        r.decrypt(aad(row, "phone"), &ct[..10]),
        Err(CryptoError::Malformed)
    );
}

#[test]
fn blind_indexes_normalise_and_are_keyed() {
    let r = ring("k-a", &[("k-a", [1; 32])]);
    assert_eq!(r.mrn_index(" mrn-0001 "), r.mrn_index("MRN0001"));
    assert_ne!(r.mrn_index("MRN0001"), r.mrn_index("MRN0002"));
    let d = chrono::NaiveDate::from_ymd_opt(1980, 1, 2).unwrap();
    assert_eq!(
        r.name_dob_index("  Van  Helsing", d),
        r.name_dob_index("van helsing", d)
    );
    assert_ne!(
        r.name_dob_index("Smith", d),
        r.name_dob_index("Smith", d.succ_opt().unwrap())
    );
    assert_ne!(r.blind_index("mrn", "X"), r.blind_index("other", "X"));
}

#[test]
fn key_ring_validation() {
    let good = generate_key_ring_json();
    assert!(KeyRing::from_json(&good).is_ok());
    let short = serde_json::json!({"version":1,"active_key_id":"k","keys":{"k":B64.encode([1u8;16])},"blind_index_key":B64.encode([1u8;32])});
    assert!(matches!(
        KeyRing::from_json(&short.to_string()),
        Err(KeyError::KeyBytes(_))
    ));
    let missing = serde_json::json!({"version":1,"active_key_id":"k2","keys":{"k":B64.encode([1u8;32])},"blind_index_key":B64.encode([1u8;32])});
    assert!(matches!(
        KeyRing::from_json(&missing.to_string()),
        Err(KeyError::ActiveMissing(_))
    ));
    let bad_id = serde_json::json!({"version":1,"active_key_id":"K_1","keys":{"K_1":B64.encode([1u8;32])},"blind_index_key":B64.encode([1u8;32])});
    assert!(matches!(
        KeyRing::from_json(&bad_id.to_string()),
        Err(KeyError::KeyId(_))
    ));
    assert!(matches!(KeyRing::from_json("{"), Err(KeyError::Json(_))));
    assert!(parse_jwt_key(&generate_jwt_key()).is_ok());
    assert!(parse_jwt_key(&B64.encode([0u8; 16])).is_err());
    assert!(parse_jwt_key("!!!").is_err());
}

/// A ring converted from the one-key form: the old `blind_index_key` is the blind-index key
/// `legacy` and the `audit_key`, `b-2` (new) is active.
fn converted(active: &str) -> KeyRing {
    let json = serde_json::json!({"version":1,"active_key_id":"k-a","keys":{"k-a":B64.encode([1u8;32])},
        "blind_index_keys":{"legacy":B64.encode([9u8;32]),"b-2":B64.encode([5u8;32])},
        "active_blind_index_key_id":active,"audit_key":B64.encode([9u8;32])});
    KeyRing::from_json(&json.to_string()).unwrap()
}

#[test]
fn rotating_the_blind_index_key_keeps_the_audit_and_cursor_keys() {
    let before = ring("k-a", &[("k-a", [1; 32])]);
    assert_eq!(before.active_blind_index_key_id(), "legacy");
    for active in ["legacy", "b-2"] {
        let after = converted(active);
        assert_eq!(after.active_blind_index_key_id(), active);
        let h = before.audit_key().chain_hash(b"prev", b"row");
        assert!(after.audit_key().verify(b"prev", b"row", &h), "{active}");
        let tag = before.cursor_key().tag(&[b"cursor"]);
        assert!(after.cursor_key().verify(&[b"cursor"], &tag), "{active}");
    }
    // and once the old key has left the ring
    let json = serde_json::json!({"version":1,"active_key_id":"k-a","keys":{"k-a":B64.encode([1u8;32])},
        "blind_index_keys":{"b-2":B64.encode([5u8;32])},
        "active_blind_index_key_id":"b-2","audit_key":B64.encode([9u8;32])});
    let only_new = KeyRing::from_json(&json.to_string()).unwrap();
    let h = before.audit_key().chain_hash(b"prev", b"row");
    assert!(only_new.audit_key().verify(b"prev", b"row", &h));
}

#[test]
fn lookups_match_the_value_under_every_blind_index_key() {
    let before = ring("k-a", &[("k-a", [1; 32])]);
    let after = converted("b-2");
    let v = after.mrn_indexes(" mrn-0001 ");
    assert_eq!(v.key_id, "b-2");
    assert_eq!(v.others, vec![before.mrn_index("MRN0001")]);
    assert_ne!(v.active, before.mrn_index("MRN0001"));
    let d = chrono::NaiveDate::from_ymd_opt(1980, 1, 2).unwrap();
    assert!(after
        .name_dob_indexes("Smith", d)
        .all()
        .contains(&before.name_dob_index("smith", d).as_slice()));
    assert!(!before.mrn_indexes("MRN0001").rotating());
}

#[test]
fn an_active_blind_index_key_outside_the_ring_is_refused_with_its_id() {
    let json = serde_json::json!({"version":1,"active_key_id":"k-a","keys":{"k-a":B64.encode([1u8;32])},
        "blind_index_keys":{"legacy":B64.encode([9u8;32])},
        "active_blind_index_key_id":"b-2","audit_key":B64.encode([9u8;32])});
    let err = KeyRing::from_json(&json.to_string()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PHI key ring: active_blind_index_key_id \"b-2\" is not in blind_index_keys"
    );
    let both = serde_json::json!({"version":1,"active_key_id":"k-a","keys":{"k-a":B64.encode([1u8;32])},
        "blind_index_key":B64.encode([9u8;32]),
        "blind_index_keys":{"legacy":B64.encode([9u8;32])},
        "active_blind_index_key_id":"legacy","audit_key":B64.encode([9u8;32])});
    assert!(matches!(
        KeyRing::from_json(&both.to_string()),
        Err(KeyError::BlindIndex(_))
    ));
}
