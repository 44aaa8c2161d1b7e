//! Rules `phi-key-valid` and `field-encryption-active`: the PHI key ring the API is given, and
//! the field-level encryption the API reports.

use caduceus_contract::key_files::{KeyFileError, PhiKeyRingFile};

use super::evidence::{is_placeholder, secret_value, self_report};
use super::{fail, not_evaluated, pass, Check, Inputs, OFFLINE};
use crate::names::PHI_KEYS;

pub(super) fn phi_key_valid(i: &Inputs<'_>) -> Check {
    let secret = &i.children.api_secrets;
    if is_placeholder(secret) {
        return not_evaluated(format!(
            "the key ring is generated in the cluster; {OFFLINE}"
        ));
    }
    let Some(raw) = secret_value(secret, PHI_KEYS) else {
        return fail(format!("{PHI_KEYS} is missing from the API secrets"));
    };
    let ring: PhiKeyRingFile = match serde_json::from_slice(raw) {
        Ok(r) => r,
        Err(_) => {
            return fail(format!(
                "{PHI_KEYS} is not a key ring in the documented format"
            ))
        }
    };
    if let Err(e) = ring.check() {
        return fail(match e {
            KeyFileError::Version(v) => {
                format!("key ring version {v} is not supported (expected 1)")
            }
            KeyFileError::ActiveMissing(_) => "the active key id is not in the key ring".into(),
            KeyFileError::KeyId(id) => {
                format!("key id `{id}` does not match ^[a-z0-9][a-z0-9-]{{0,31}}$")
            }
            KeyFileError::KeyBytes(what) if what == "blind_index_key" => {
                "the blind-index key is not 32 bytes of standard base64".into()
            }
            KeyFileError::KeyBytes(what) => {
                format!("{what} is not 32 bytes of standard base64")
            }
            other @ (KeyFileError::BlindIndexForm | KeyFileError::ActiveBlindIndexMissing(_)) => {
                other.to_string()
            }
        });
    }
    pass(format!(
        "key ring valid: {} key(s), active key `{}`",
        ring.keys.len(),
        ring.active_key_id
    ))
}

pub(super) fn field_encryption_active(i: &Inputs<'_>) -> Check {
    let r = match self_report(i) {
        Ok(r) => r,
        Err(e) => return not_evaluated(e),
    };
    if !r.encryption.active {
        fail("the API reports field encryption inactive")
    } else if !r.encryption.key_ids.contains(&r.encryption.active_key_id) {
        fail("the API's active key id is not among the keys it holds")
    } else {
        pass(format!(
            "field encryption active with key `{}` ({} key(s) loaded)",
            r.encryption.active_key_id,
            r.encryption.key_ids.len()
        ))
    }
}
