//! JWT access tokens (HS256, key from `CADUCEUS_JWT_KEY_FILE`) and opaque refresh tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const ISSUER: &str = "caduceus-api";

/// Access-token claims. `sid` ties the token to a session row checked on every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub role: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn issue_access(
    key: &[u8],
    user: Uuid,
    session: Uuid,
    role: &str,
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user,
        sid: session,
        role: role.to_string(),
        iss: ISSUER.to_string(),
        iat: now,
        exp: now + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key),
    )
}

/// What an access token must satisfy: HS256 only, no leeway on `exp`, our issuer, `exp`, `sub`
/// and `iss` present. Built once (it is checked on every request).
static ACCESS_VALIDATION: std::sync::LazyLock<Validation> = std::sync::LazyLock::new(|| {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "sub", "iss"]);
    v
});

pub fn decode_access(key: &[u8], token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &ACCESS_VALIDATION)
        .map(|d| d.claims)
}

/// A fresh opaque refresh token (256 random bits, base64url).
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a refresh token.
pub fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_and_rejections() {
        let key = [7u8; 64];
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        let t = issue_access(&key, u, s, "nurse", 60).unwrap();
        let c = decode_access(&key, &t).unwrap();
        assert_eq!((c.sub, c.sid, c.role.as_str()), (u, s, "nurse"));
        assert!(decode_access(&[8u8; 64], &t).is_err());
        let expired = issue_access(&key, u, s, "nurse", -10).unwrap();
        assert!(decode_access(&key, &expired).is_err());
        assert_ne!(new_refresh_token(), new_refresh_token());
        assert_eq!(refresh_hash("a").len(), 32);
    }
}
