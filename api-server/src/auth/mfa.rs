//! Multi-factor authentication: TOTP (RFC 6238, via `totp-rs`), one-time recovery codes and the
//! login challenge. The routes are in [`crate::auth::routes::mfa`] (and the admin reset in
//! [`crate::users`]); `docs/api.md` ("Multi-factor authentication") describes the flow.
//!
//! * The TOTP secret (160 random bits from the OS) is a PHI-grade secret: stored only encrypted
//!   with the PHI key ring (AAD `user_mfa`, user id, `secret_enc`; re-encrypted by
//!   `rotate-keys`), returned once at enrolment, never logged, never in an error or audit event.
//! * A code is accepted for the step before, the current step and the step after (±30 s), and a
//!   step only once: `user_mfa.last_used_step` keeps the newest accepted step and a code of that
//!   step or an older one is refused (replay), in the statement that accepts it.
//! * Recovery codes are stored as HMAC-SHA256 under the blind-index key (per-user domain) and
//!   each is marked used in the statement that accepts it.
//! * Failed codes are counted with the failed passwords (`login_attempts` of the account's e-mail
//!   blind index, [`crate::auth::routes::LOCKOUT_THRESHOLD`] per window).

use rand_core::{OsRng, RngCore};
use sqlx::PgConnection;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{Aad, KeyRing};
use crate::error::Error;

/// `issuer` of the otpauth URI (the name the authenticator app shows).
pub const ISSUER: &str = "Caduceus";
/// Secret length: 160 bits (RFC 4226 section 4 recommends it).
pub const SECRET_BYTES: usize = 20;
pub const DIGITS: u8 = 6;
pub const STEP_SECS: u64 = 30;
/// Steps accepted on either side of the current one.
pub const SKEW: u16 = 1;
/// Recovery codes issued at confirmation.
pub const RECOVERY_CODES: usize = 10;
/// Lifetime of a login challenge (seconds).
pub const CHALLENGE_TTL_SECS: i64 = 300;

/// Table and ciphertext column of the TOTP secret (AAD and [`crate::rotate::ENCRYPTED_TABLES`]).
pub const TABLE: &str = "user_mfa";
pub const ENC_COLUMNS: [&str; 1] = ["secret_enc"];

fn secret_aad(user: Uuid) -> Aad<'static> {
    Aad {
        table: TABLE,
        row: user,
        column: ENC_COLUMNS[0],
    }
}

/// A fresh TOTP secret.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    OsRng.fill_bytes(&mut s);
    s
}

/// The TOTP of `secret` (SHA-1, 6 digits, 30 s, ±1 step: what every authenticator app reads).
fn totp(secret: &[u8], account: &str) -> Result<Totp, Error> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW)
        .with_step_duration(STEP_SECS)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(ISSUER))
        // a label may not contain ':' (issuer:account); only the label changes
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|_| Error::internal(anyhow::anyhow!("cannot build the TOTP parameters")))
}

/// The secret as the authenticator app takes it by hand (RFC 4648 base32, no padding).
pub fn secret_base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

/// `otpauth://totp/Caduceus:<account>?secret=…&issuer=Caduceus` (the QR code's content).
pub fn otpauth_uri(secret: &[u8], account: &str) -> Result<String, Error> {
    totp(secret, account)?
        .to_url()
        .map_err(|_| Error::internal(anyhow::anyhow!("cannot build the otpauth URI")))
}

/// The time step `code` is valid for at unix time `now` (the current step, or one step before or
/// after), or `None`.
pub fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "").ok()?.check(code, now)
}

/// The code of `secret` at unix time `now` (tests and the demo script compute codes with it).
pub fn code_at(secret: &[u8], now: u64) -> Result<String, Error> {
    Ok(totp(secret, "")?.generate(now).to_string())
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// Encrypt a TOTP secret for `user`.
pub fn encrypt_secret(keys: &KeyRing, user: Uuid, secret: &[u8]) -> Vec<u8> {
    keys.encrypt(secret_aad(user), secret)
}

/// Whether the account has MFA active (enrolment confirmed).
pub async fn is_active(conn: &mut PgConnection, user: Uuid) -> Result<bool, Error> {
    let active: Option<bool> =
        sqlx::query_scalar("SELECT confirmed_at IS NOT NULL FROM user_mfa WHERE id = $1")
            .bind(user)
            .fetch_optional(conn)
            .await?;
    Ok(active.unwrap_or(false))
}

/// Which factor a code was accepted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    RecoveryCode,
}

/// Accept a TOTP code of `user` once: its step must be newer than every step accepted before
/// (replay refused), recorded in the same statement. `confirmed`: only an active enrolment
/// (`true`) or only a pending one (`false`). Run it in the transaction of what the code allows.
pub async fn accept_totp(
    conn: &mut PgConnection,
    keys: &KeyRing,
    user: Uuid,
    code: &str,
    confirmed: bool,
) -> Result<bool, Error> {
    let row: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT secret_enc FROM user_mfa WHERE id = $1 AND (confirmed_at IS NOT NULL) = $2",
    )
    .bind(user)
    .bind(confirmed)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(blob) = row else {
        return Ok(false);
    };
    let secret = Zeroizing::new(keys.decrypt(secret_aad(user), &blob)?);
    let Some(step) = matching_step(&secret, code, unix_now()) else {
        return Ok(false);
    };
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "UPDATE user_mfa SET last_used_step = $2 \
         WHERE id = $1 AND (last_used_step IS NULL OR last_used_step < $2)",
    )
    .bind(user)
    .bind(step)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Accept a TOTP code or an unused recovery code of an account with MFA active.
pub async fn accept_code(
    conn: &mut PgConnection,
    keys: &KeyRing,
    user: Uuid,
    code: &str,
) -> Result<Option<Factor>, Error> {
    if is_totp_code(code) {
        return Ok(accept_totp(conn, keys, user, code, true)
            .await?
            .then_some(Factor::Totp));
    }
    if !is_active(conn, user).await? {
        return Ok(None);
    }
    let used = sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = now() \
         WHERE user_id = $1 AND code_hash = ANY($2) AND used_at IS NULL",
    )
    .bind(user)
    .bind(recovery_hashes(keys, user, code).all())
    .execute(&mut *conn)
    .await?;
    Ok((used.rows_affected() == 1).then_some(Factor::RecoveryCode))
}

/// Six ASCII digits.
pub fn is_totp_code(code: &str) -> bool {
    code.len() == usize::from(DIGITS) && code.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 4648 base32 alphabet, lower case: recovery code characters.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Characters of a recovery code (50 bits), shown as two groups of five.
pub const RECOVERY_CODE_CHARS: usize = 10;

/// `xxxxx-xxxxx` or `xxxxxxxxxx` of the recovery alphabet, either case.
pub fn is_recovery_code(code: &str) -> bool {
    let plain: String = match code.split_once('-') {
        Some((a, b)) if a.len() == 5 && b.len() == 5 => format!("{a}{b}"),
        Some(_) => return false,
        None => code.to_string(),
    };
    plain.len() == RECOVERY_CODE_CHARS
        && plain
            .bytes()
            .all(|b| RECOVERY_ALPHABET.contains(&b.to_ascii_lowercase()))
}

/// Fresh recovery codes (`xxxxx-xxxxx`), shown once.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; RECOVERY_CODE_CHARS];
            OsRng.fill_bytes(&mut bytes);
            let chars: String = bytes
                .iter()
                .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b % 32)]))
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// What is stored for a recovery code: HMAC-SHA256 under the active blind-index key, in a
/// domain of the account (the same code of two accounts has two hashes), of the code without its
/// dash, lower case.
pub fn recovery_hash(keys: &KeyRing, user: Uuid, code: &str) -> Vec<u8> {
    recovery_hashes(keys, user, code).active
}

/// [`recovery_hash`] under every blind-index key of the ring: a code stored before the active
/// key changed is accepted while its key is in the ring (the codes themselves are never stored,
/// so `rotate-blind-index` cannot recompute them; it counts them).
pub fn recovery_hashes(keys: &KeyRing, user: Uuid, code: &str) -> crate::crypto::BlindIndexes {
    let normalised: String = code
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    keys.blind_indexes(&format!("mfa-recovery:{user}"), &normalised)
}

/// Replace the account's recovery codes with fresh ones; returns them (shown once).
pub async fn replace_recovery_codes(
    conn: &mut PgConnection,
    keys: &KeyRing,
    user: Uuid,
) -> Result<Vec<String>, Error> {
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    let codes = new_recovery_codes();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| recovery_hash(keys, user, c)).collect();
    sqlx::query(
        "INSERT INTO mfa_recovery_codes (user_id, code_hash, bidx_key_id) \
         SELECT $1, h, $3 FROM unnest($2::bytea[]) AS h ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(&hashes)
    .bind(keys.active_blind_index_key_id())
    .execute(&mut *conn)
    .await?;
    Ok(codes)
}

/// Remove the account's MFA: secret, recovery codes and open login challenges.
pub async fn remove(conn: &mut PgConnection, user: Uuid) -> Result<bool, Error> {
    let removed = sqlx::query("DELETE FROM user_mfa WHERE id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    Ok(removed > 0)
}

/// A login challenge for `user` (after the right password): a random token, stored as its
/// SHA-256, valid [`CHALLENGE_TTL_SECS`], single use. The user's spent or expired challenges go.
pub async fn create_challenge(
    conn: &mut PgConnection,
    user: Uuid,
    email_bidx: &[u8],
) -> Result<String, Error> {
    sqlx::query(
        "DELETE FROM mfa_challenges WHERE user_id = $1 AND (used_at IS NOT NULL OR expires_at <= now())",
    )
    .bind(user)
    .execute(&mut *conn)
    .await?;
    let token = super::tokens::new_refresh_token();
    sqlx::query(
        "INSERT INTO mfa_challenges (token_hash, user_id, email_bidx, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(super::tokens::refresh_hash(&token))
    .bind(user)
    .bind(email_bidx)
    .bind(CHALLENGE_TTL_SECS as f64)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors_and_skew() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890" (8 digits there; the last 6
        // digits are the 6-digit code)
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59).unwrap(), "287082");
        assert_eq!(code_at(secret, 1111111109).unwrap(), "081804");
        assert_eq!(code_at(secret, 1234567890).unwrap(), "005924");
        let now = 1_234_567_890;
        let step = now / STEP_SECS;
        let code = code_at(secret, now).unwrap();
        assert_eq!(matching_step(secret, &code, now), Some(step));
        // one step either side is accepted, two are not
        assert_eq!(matching_step(secret, &code, now + STEP_SECS), Some(step));
        assert_eq!(matching_step(secret, &code, now - STEP_SECS), Some(step));
        assert_eq!(matching_step(secret, &code, now + 2 * STEP_SECS), None);
        assert_eq!(matching_step(secret, &code, now - 2 * STEP_SECS), None);
        assert_eq!(matching_step(secret, "12345", now), None);
        assert_eq!(matching_step(secret, "abcdef", now), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let secret = new_secret();
        assert_eq!(secret.len(), SECRET_BYTES);
        let uri = otpauth_uri(&secret, "ada@example.org").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/Caduceus:ada%40example.org?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={}", secret_base32(&secret))));
        assert!(uri.contains("issuer=Caduceus"));
        assert!(otpauth_uri(&secret, "odd:name@example.org").is_ok());
    }

    #[test]
    fn recovery_codes_are_distinct_and_recognised() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for c in &codes {
            assert!(is_recovery_code(c), "{c}");
            assert!(is_recovery_code(&c.replace('-', "")));
            assert!(is_recovery_code(&c.to_uppercase()));
            assert!(!is_totp_code(c));
        }
        assert!(!is_recovery_code("abcde-fghi1"));
        assert!(!is_recovery_code("abcd-efghij"));
        assert!(is_totp_code("012345"));
        assert!(!is_totp_code("01234a"));
        let keys = KeyRing::from_json(&crate::crypto::generate_key_ring_json()).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            recovery_hash(&keys, a, "abcde-fghij"),
            recovery_hash(&keys, a, "ABCDEFGHIJ")
        );
        assert_ne!(
            recovery_hash(&keys, a, "abcde-fghij"),
            recovery_hash(&keys, b, "abcde-fghij")
        );
    }
}
