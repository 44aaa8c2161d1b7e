//! Authenticated manifests and the authenticated `latest` pointer.
//!
//! Whoever can write the destination (bucket or volume) but does not hold the backup key could
//! otherwise edit a manifest (point it at an older archive, move its time forward so that
//! `latest` picks it) or copy an old manifest under a new name. Every manifest written by this
//! agent therefore carries `mac` = HMAC-SHA256 under a key derived from the backup key over all
//! its fields, the backup's name and time among them (docs/contracts.md, "Manifest"), and every
//! backup rewrites the pointer object `latest.pointer`, a MAC over the newest backup's name,
//! time and manifest MAC. The MAC key is `HKDF-SHA256(ikm = backup key, salt =
//! "caduceus-backup", info = "caduceus-backup/v1 manifest-mac hmac-sha256")`, never the
//! encryption key itself.
//!
//! What a MAC cannot do is prevent deletion: a writer of the destination can still delete
//! backups. Deleting the newest backup is detected (the pointer names a missing backup), unless
//! the pointer is replaced by an older genuine copy at the same time (then the pointer is older
//! than nothing that is left, and only the operator's `status.backup.lastBackupName` or the
//! store's object versioning shows it).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::key::BackupKey;
use crate::manifest::Manifest;

const MAC_KEY_SALT: &[u8] = b"caduceus-backup";
const MAC_KEY_INFO: &[u8] = b"caduceus-backup/v1 manifest-mac hmac-sha256";
const MANIFEST_DOMAIN: &[u8] = b"caduceus-backup manifest v2";
const POINTER_DOMAIN: &[u8] = b"caduceus-backup latest v1";

/// Version of the `latest.pointer` format.
pub const POINTER_VERSION: u32 = 1;

/// `latest.pointer`: the newest backup, as the agent that wrote it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestPointer {
    pub pointer_version: u32,
    /// Name of the newest backup.
    pub name: String,
    /// Its manifest's `time`.
    pub time: String,
    /// Its manifest's `mac`.
    pub manifest_mac: String,
    /// Lowercase hex HMAC-SHA256 over the three fields above.
    pub mac: String,
}

/// Why a manifest or the pointer was refused. Messages name backups, never keys or contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("manifest of backup {0} fails authentication: it was modified or forged by someone without the backup key (restore another backup by name)")]
    Forged(String),
    #[error("manifest of backup {0} is not authenticated (written by an agent before manifest MACs, or forged); pass --allow-unauthenticated to accept a backup made before manifest MACs")]
    Unauthenticated(String),
    #[error("backup {0} has no authenticated manifest although the destination holds authenticated backups (latest names {1}); it cannot be trusted")]
    UnauthenticatedNewer(String, String),
    #[error("the latest pointer fails authentication: it was modified or forged by someone without the backup key (restore a backup by name)")]
    PointerForged,
    #[error("the destination holds authenticated backups but no latest pointer (deleted?); restore a backup by name")]
    PointerMissing,
    #[error("the latest pointer names backup {pointer}, but the newer authenticated backup {newest} exists: the pointer was rolled back (or the backup {newest} stopped before updating it); restore a backup by name")]
    Rollback { pointer: String, newest: String },
    #[error("the latest pointer names backup {0}, which is missing or newer than every backup at the destination: backups were deleted; restore a backup by name")]
    PointerTargetMissing(String),
}

/// How a manifest compares with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    /// Its `mac` verifies.
    Authentic,
    /// It has no `mac` (manifest version 1, written before manifest MACs).
    Unauthenticated,
    /// Its `mac` does not verify.
    Forged,
}

/// The manifest MAC key, derived from a backup key. `Debug` shows nothing.
#[derive(Clone)]
pub struct MacKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts any key length")
}

/// Every field length-prefixed (u32 BE), after a domain label: no two field lists encode alike.
fn encode(domain: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(&(domain.len() as u32).to_be_bytes());
    out.extend_from_slice(domain);
    for field in fields {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The bytes a manifest's MAC covers: every field but `mac`, in a fixed order.
pub fn manifest_mac_input(m: &Manifest) -> Vec<u8> {
    let version = m.manifest_version.to_string();
    let size = m.size.to_string();
    let schema = m.schema_version.map(|v| v.to_string()).unwrap_or_default();
    let head = m
        .audit_head
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    encode(
        MANIFEST_DOMAIN,
        &[
            version.as_bytes(),
            m.name.as_bytes(),
            m.time.as_bytes(),
            m.archive.as_bytes(),
            size.as_bytes(),
            m.sha256.as_bytes(),
            m.key_id.as_bytes(),
            m.postgres_version.as_bytes(),
            schema.as_bytes(),
            m.database.as_bytes(),
            head.as_bytes(),
        ],
    )
}

fn pointer_mac_input(name: &str, time: &str, manifest_mac: &str) -> Vec<u8> {
    encode(
        POINTER_DOMAIN,
        &[name.as_bytes(), time.as_bytes(), manifest_mac.as_bytes()],
    )
}

impl MacKey {
    /// HKDF-SHA256 (RFC 5869, one output block) of the backup key under the manifest label.
    pub fn derive(key: &BackupKey) -> Self {
        let mut extract = hmac(MAC_KEY_SALT);
        extract.update(key.bytes());
        let prk = Zeroizing::new(extract.finalize().into_bytes().to_vec());
        let mut expand = hmac(&prk);
        expand.update(MAC_KEY_INFO);
        expand.update(&[1]);
        let okm = Zeroizing::new(expand.finalize().into_bytes().to_vec());
        Self { mac: hmac(&okm) }
    }

    fn tag(&self, input: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(input);
        hex::encode(mac.finalize().into_bytes())
    }

    fn verifies(&self, input: &[u8], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(input);
        mac.verify_slice(&tag).is_ok()
    }

    /// Sets `m.mac`.
    pub fn sign_manifest(&self, m: &mut Manifest) {
        m.mac = Some(self.tag(&manifest_mac_input(m)));
    }

    pub fn check_manifest(&self, m: &Manifest) -> Authenticity {
        match &m.mac {
            None => Authenticity::Unauthenticated,
            Some(tag) if self.verifies(&manifest_mac_input(m), tag) => Authenticity::Authentic,
            Some(_) => Authenticity::Forged,
        }
    }

    /// The pointer to a signed manifest.
    pub fn pointer(&self, m: &Manifest) -> LatestPointer {
        let manifest_mac = m.mac.clone().unwrap_or_default();
        LatestPointer {
            pointer_version: POINTER_VERSION,
            mac: self.tag(&pointer_mac_input(&m.name, &m.time, &manifest_mac)),
            name: m.name.clone(),
            time: m.time.clone(),
            manifest_mac,
        }
    }

    pub fn check_pointer(&self, p: &LatestPointer) -> bool {
        p.pointer_version == POINTER_VERSION
            && self.verifies(
                &pointer_mac_input(&p.name, &p.time, &p.manifest_mac),
                &p.mac,
            )
    }

    /// A manifest asked for by name: authentic, or without a MAC when `allow_unauthenticated`.
    pub fn accept_named(&self, m: &Manifest, allow_unauthenticated: bool) -> Result<(), AuthError> {
        match self.check_manifest(m) {
            Authenticity::Authentic => Ok(()),
            Authenticity::Unauthenticated if allow_unauthenticated => Ok(()),
            Authenticity::Unauthenticated => Err(AuthError::Unauthenticated(m.name.clone())),
            Authenticity::Forged => Err(AuthError::Forged(m.name.clone())),
        }
    }

    /// Which backup `latest` is, from every manifest at the destination (newest first) and the
    /// pointer object (`None`: absent). The newest manifest must be authentic and be exactly
    /// what the authentic pointer names: a newer forged or unauthenticated manifest, a forged
    /// or missing pointer, a pointer older than the newest authentic backup (rollback) and a
    /// pointer naming a backup that is gone are all refused. A destination without any
    /// authenticated backup and without a pointer (written only by agents before manifest MACs)
    /// yields its newest manifest when `allow_unauthenticated`.
    pub fn resolve_latest<'a>(
        &self,
        newest_first: &'a [Manifest],
        pointer: Option<&LatestPointer>,
        allow_unauthenticated: bool,
    ) -> Result<Option<&'a Manifest>, AuthError> {
        let Some(newest) = newest_first.first() else {
            return Ok(None);
        };
        let pointer = match pointer {
            Some(p) if self.check_pointer(p) => Some(p),
            Some(_) => return Err(AuthError::PointerForged),
            None => None,
        };
        match (self.check_manifest(newest), pointer) {
            (Authenticity::Forged, _) => Err(AuthError::Forged(newest.name.clone())),
            (Authenticity::Unauthenticated, Some(p)) => Err(AuthError::UnauthenticatedNewer(
                newest.name.clone(),
                p.name.clone(),
            )),
            (Authenticity::Unauthenticated, None) => {
                let any_authentic = newest_first
                    .iter()
                    .any(|m| self.check_manifest(m) == Authenticity::Authentic);
                if any_authentic {
                    Err(AuthError::PointerMissing)
                } else if allow_unauthenticated {
                    Ok(Some(newest))
                } else {
                    Err(AuthError::Unauthenticated(newest.name.clone()))
                }
            }
            (Authenticity::Authentic, None) => Err(AuthError::PointerMissing),
            (Authenticity::Authentic, Some(p)) => {
                if p.name == newest.name {
                    if p.time == newest.time && Some(&p.manifest_mac) == newest.mac.as_ref() {
                        return Ok(Some(newest));
                    }
                    return Err(AuthError::PointerForged);
                }
                // The pointer names another backup: an older one still listed is a rollback;
                // one not listed (or newer than everything listed) was deleted.
                let listed = newest_first
                    .iter()
                    .any(|m| m.name == p.name && self.check_manifest(m) == Authenticity::Authentic);
                if listed {
                    Err(AuthError::Rollback {
                        pointer: p.name.clone(),
                        newest: newest.name.clone(),
                    })
                } else {
                    Err(AuthError::PointerTargetMissing(p.name.clone()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{rfc3339, MANIFEST_VERSION};
    use caduceus_contract::self_report::AuditCheckpoint;
    use chrono::{Duration, TimeZone, Utc};

    fn manifest(i: i64) -> Manifest {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("time")
            + Duration::hours(i);
        let name = crate::manifest::backup_name(t);
        Manifest {
            manifest_version: MANIFEST_VERSION,
            archive: format!("{name}.cbk"),
            name,
            time: rfc3339(t),
            size: 100 + i as u64,
            sha256: "ab".repeat(32),
            key_id: "bk-000000000000".into(),
            postgres_version: "16.4".into(),
            schema_version: Some(130),
            database: "caduceus".into(),
            audit_head: Some(AuditCheckpoint {
                id: 42,
                hash: "cd".repeat(32),
            }),
            mac: None,
        }
    }

    /// Three signed backups, newest first, and the pointer to the newest.
    fn signed(key: &MacKey) -> (Vec<Manifest>, LatestPointer) {
        let mut ms: Vec<_> = (0..3).rev().map(manifest).collect();
        for m in &mut ms {
            key.sign_manifest(m);
        }
        let p = key.pointer(&ms[0]);
        (ms, p)
    }

    #[test]
    fn every_field_is_covered_by_the_mac() {
        let key = MacKey::derive(&BackupKey::generate());
        let mut m = manifest(0);
        key.sign_manifest(&mut m);
        assert_eq!(key.check_manifest(&m), Authenticity::Authentic);
        let edits: Vec<fn(&mut Manifest)> = vec![
            |m| m.manifest_version += 1,
            |m| m.name.push('x'),
            |m| m.time = "2030-01-01T00:00:00.000Z".into(),
            |m| m.archive = "backup-older.cbk".into(),
            |m| m.size += 1,
            |m| m.sha256 = "ef".repeat(32),
            |m| m.key_id = "bk-111111111111".into(),
            |m| m.postgres_version.push('1'),
            |m| m.schema_version = None,
            |m| m.database.push('x'),
            |m| m.audit_head = None,
            |m| {
                if let Some(h) = &mut m.audit_head {
                    h.id += 1
                }
            },
        ];
        for edit in edits {
            let mut forged = m.clone();
            edit(&mut forged);
            assert_eq!(
                key.check_manifest(&forged),
                Authenticity::Forged,
                "{forged:?}"
            );
        }
        let mut stripped = m.clone();
        stripped.mac = None;
        assert_eq!(key.check_manifest(&stripped), Authenticity::Unauthenticated);
        // Another key (or the raw encryption key's holder without the derivation) fails.
        let other = MacKey::derive(&BackupKey::generate());
        assert_eq!(other.check_manifest(&m), Authenticity::Forged);
        let mut bad_hex = m.clone();
        bad_hex.mac = Some("zz".into());
        assert_eq!(key.check_manifest(&bad_hex), Authenticity::Forged);
    }

    #[test]
    fn latest_is_the_newest_authentic_backup_the_pointer_names() {
        let key = MacKey::derive(&BackupKey::generate());
        let (ms, p) = signed(&key);
        let got = key.resolve_latest(&ms, Some(&p), false).expect("latest");
        assert_eq!(got.map(|m| &m.name), Some(&ms[0].name));
        assert_eq!(key.resolve_latest(&[], None, false), Ok(None));
    }

    #[test]
    fn a_forged_newer_manifest_is_refused() {
        let key = MacKey::derive(&BackupKey::generate());
        let (mut ms, p) = signed(&key);
        // The bucket writer dates an old archive's manifest into the future.
        let mut forged = ms[2].clone();
        forged.name = "backup-29991231T000000.000Z".into();
        forged.time = "2999-12-31T00:00:00.000Z".into();
        ms.insert(0, forged.clone());
        let err = key.resolve_latest(&ms, Some(&p), true).expect_err("forged");
        assert_eq!(err, AuthError::Forged(forged.name.clone()));
        // Without a MAC at all, even --allow-unauthenticated does not admit it next to a pointer.
        ms[0].mac = None;
        let err = key
            .resolve_latest(&ms, Some(&p), true)
            .expect_err("unauthenticated");
        assert!(matches!(err, AuthError::UnauthenticatedNewer(..)), "{err}");
    }

    #[test]
    fn pointer_rollback_deletion_and_forgery_are_refused() {
        let key = MacKey::derive(&BackupKey::generate());
        let (ms, p) = signed(&key);
        // An older genuine pointer put back: rollback.
        let old = key.pointer(&ms[1]);
        let err = key
            .resolve_latest(&ms, Some(&old), false)
            .expect_err("rollback");
        assert_eq!(
            err,
            AuthError::Rollback {
                pointer: ms[1].name.clone(),
                newest: ms[0].name.clone()
            }
        );
        // The newest backup deleted: the pointer names a missing backup.
        let err = key
            .resolve_latest(&ms[1..], Some(&p), false)
            .expect_err("deleted");
        assert_eq!(err, AuthError::PointerTargetMissing(ms[0].name.clone()));
        // A pointer edited to name an older backup.
        let mut edited = p.clone();
        edited.name = ms[1].name.clone();
        assert_eq!(
            key.resolve_latest(&ms, Some(&edited), false),
            Err(AuthError::PointerForged)
        );
        // The pointer deleted.
        assert_eq!(
            key.resolve_latest(&ms, None, false),
            Err(AuthError::PointerMissing)
        );
        // A pointer of another key.
        let other = MacKey::derive(&BackupKey::generate());
        assert_eq!(
            key.resolve_latest(&ms, Some(&other.pointer(&ms[0])), false),
            Err(AuthError::PointerForged)
        );
    }

    #[test]
    fn legacy_destinations_need_the_explicit_flag() {
        let key = MacKey::derive(&BackupKey::generate());
        let ms: Vec<_> = (0..2).rev().map(manifest).collect();
        assert_eq!(
            key.resolve_latest(&ms, None, false),
            Err(AuthError::Unauthenticated(ms[0].name.clone()))
        );
        let got = key.resolve_latest(&ms, None, true).expect("legacy");
        assert_eq!(got.map(|m| &m.name), Some(&ms[0].name));
        assert!(key.accept_named(&ms[1], true).is_ok());
        assert_eq!(
            key.accept_named(&ms[1], false),
            Err(AuthError::Unauthenticated(ms[1].name.clone()))
        );
        // A manifest with a wrong MAC is never accepted, flag or not.
        let mut forged = ms[1].clone();
        forged.mac = Some("00".repeat(32));
        assert_eq!(
            key.accept_named(&forged, true),
            Err(AuthError::Forged(forged.name.clone()))
        );
    }
}
