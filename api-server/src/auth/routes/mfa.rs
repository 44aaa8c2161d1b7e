//! MFA routes: `POST /auth/login/mfa` (the login's second step), `POST /auth/mfa/enroll`,
//! `POST /auth/mfa/confirm`, `DELETE /auth/mfa`. The admin reset is `POST /users/{id}/mfa/reset`
//! ([`crate::users`]); the mechanics (TOTP, replay, recovery codes, challenges) are in
//! [`crate::auth::mfa`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    clear_attempts, count_attempt, login_delay, open_session, TokenResponse, LOCKOUT_THRESHOLD,
    LOCKOUT_WINDOW_MINUTES,
};
use crate::auth::mfa::{self, Factor};
use crate::auth::{password, tokens, AnySession, AuthUser};
use crate::config::MfaPolicy;
use crate::crypto::BlindIndexes;
use crate::error::{validated, ApiJson, Error, FieldError, Validate};
use crate::request::RequestMeta;
use crate::state::AppState;
use crate::store::audit::{actions, AuditEvent, Outcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login/mfa", post(login_mfa))
        .route("/auth/mfa/enroll", post(enroll))
        .route("/auth/mfa/confirm", post(confirm))
        .route("/auth/mfa", delete(disable))
}

fn check_totp(field: &str, code: &str) -> Result<(), FieldError> {
    if mfa::is_totp_code(code) {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be the 6-digit code"))
    }
}

fn check_code(field: &str, code: &str) -> Result<(), FieldError> {
    if mfa::is_totp_code(code) || mfa::is_recovery_code(code) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a 6-digit code or a recovery code (xxxxx-xxxxx)",
        ))
    }
}

/// `POST /auth/login/mfa` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginMfaRequest {
    /// The `mfa_token` of the login's answer; 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub mfa_token: String,
    /// The authenticator's 6-digit code, or an unused recovery code (`xxxxx-xxxxx`).
    #[schema(pattern = r"^([0-9]{6}|[A-Za-z2-7]{5}-?[A-Za-z2-7]{5})$")]
    pub code: String,
}

impl Validate for LoginMfaRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.mfa_token.is_empty() || self.mfa_token.chars().count() > 200 {
            errs.push(FieldError::new("mfa_token", "is required"));
        }
        if let Err(e) = check_code("code", &self.code) {
            errs.push(e);
        }
        validated(errs)
    }
}

/// `POST /auth/mfa/enroll` body: the account's password again, so a stolen session alone cannot
/// put an attacker's authenticator on the account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollMfaRequest {
    /// The account's current password.
    #[schema(min_length = 1, max_length = 256)]
    pub password: String,
}

impl Validate for EnrollMfaRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let n = self.password.chars().count();
        validated(if n == 0 || n > 256 {
            vec![FieldError::new(
                "password",
                "is required (at most 256 characters)",
            )]
        } else {
            Vec::new()
        })
    }
}

/// `POST /auth/mfa/confirm` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmMfaRequest {
    /// The authenticator's current 6-digit code.
    #[schema(pattern = r"^[0-9]{6}$")]
    pub code: String,
}

impl Validate for ConfirmMfaRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(check_totp("code", &self.code).err().into_iter().collect())
    }
}

/// `DELETE /auth/mfa` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableMfaRequest {
    /// The authenticator's current 6-digit code, or an unused recovery code.
    #[schema(pattern = r"^([0-9]{6}|[A-Za-z2-7]{5}-?[A-Za-z2-7]{5})$")]
    pub code: String,
}

impl Validate for DisableMfaRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(check_code("code", &self.code).err().into_iter().collect())
    }
}

/// A started enrolment: put the URI (as a QR code) or the secret into an authenticator app, then
/// confirm with a code. Shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaEnrollment {
    /// `otpauth://totp/Caduceus:<e-mail>?secret=…&issuer=Caduceus`.
    pub otpauth_uri: String,
    /// The secret, base32 (RFC 4648, no padding), for typing in by hand.
    pub secret: String,
    /// Always `Caduceus`.
    pub issuer: String,
    /// The account's e-mail.
    pub account: String,
    /// Always `SHA1`.
    pub algorithm: String,
    /// Always 6.
    pub digits: u8,
    /// Seconds per code: always 30.
    pub period: u64,
}

/// MFA is active: the one-time recovery codes, shown once (each replaces a code once when the
/// authenticator is lost).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaRecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// The e-mail blind indexes of an account under every key of the ring: the keys of its login
/// failure counters (the e-mail is decrypted: an index under the active key is computed even
/// for a row the rotation has not reached yet).
async fn email_indexes(state: &AppState, user: Uuid) -> Result<BlindIndexes, Error> {
    let u = crate::users::fetch(&state.pool, &state.keys, user).await?;
    Ok(crate::users::email_indexes(&state.keys, &u.email))
}

/// A refused code of an authenticated caller: audited (with the lockout when this failure
/// locks the account); the error to answer.
async fn refused_code(state: &AppState, auth: &AuthUser, attempt: i32, locked: bool) -> Error {
    refused_secret(state, auth, attempt, locked, "code").await
}

/// A wrong `field` (code or password) of an authenticated MFA step: audited, counted with the
/// failed logins; `429` once locked.
async fn refused_secret(
    state: &AppState,
    auth: &AuthUser,
    attempt: i32,
    locked: bool,
    field: &str,
) -> Error {
    let mut events = vec![AuditEvent::by(auth, actions::MFA_FAILED, "user")
        .resource(auth.user_id)
        .outcome(Outcome::Denied)];
    if attempt == LOCKOUT_THRESHOLD {
        events.push(
            AuditEvent::by(auth, actions::LOCKOUT, "session")
                .resource(auth.session_id)
                .outcome(Outcome::Denied),
        );
    }
    if let Err(e) = state.audit.record_all(events).await {
        return e;
    }
    if locked {
        Error::RateLimited {
            retry_after_secs: u64::from(LOCKOUT_WINDOW_MINUTES.unsigned_abs()) * 60,
        }
    } else {
        Error::validation(field, &format!("is not a valid {field}"))
    }
}

/// The second step of a login to an account with MFA: the challenge token of `POST /auth/login`
/// and a current TOTP code (each time step is accepted once) or an unused recovery code (spent).
/// Every refusal gets the same `401`; the attempts are counted with the account's failed
/// passwords (5 per 15 minutes lock the e-mail, both steps included) and delayed like them.
#[utoipa::path(post, path = "/api/v1/auth/login/mfa", tag = "auth", request_body = LoginMfaRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "unknown, expired or spent challenge, wrong or replayed code, or locked after 5 failures in 15 minutes (one answer for all)", body = crate::error::Problem),
              (status = 503, description = "the database or audit trail is unavailable", body = crate::error::Problem)))]
pub async fn login_mfa(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginMfaRequest>,
) -> Result<Json<TokenResponse>, Error> {
    let invalid = || Error::Unauthorized("the MFA challenge or the code is not valid".into());
    let hash = tokens::refresh_hash(&body.mfa_token);
    let challenge: Option<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT c.user_id, u.role, u.active FROM mfa_challenges c \
         JOIN users u ON u.id = c.user_id \
         WHERE c.token_hash = $1 AND c.used_at IS NULL AND c.expires_at > now()",
    )
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?;
    let Some((user, role, active)) = challenge else {
        state
            .audit
            .record(AuditEvent::new(&meta, actions::MFA_FAILED, "session").outcome(Outcome::Denied))
            .await?;
        return Err(invalid());
    };
    // counted with the login's failed passwords (the e-mail's counters)
    let bidx = email_indexes(&state, user).await?;
    let attempt = count_attempt(&mut *state.pool.acquire().await?, &bidx).await?;
    tokio::time::sleep(login_delay(attempt)).await;
    let locked = attempt > LOCKOUT_THRESHOLD;
    let mut tx = state.pool.begin().await?;
    let factor = if locked || !active {
        None
    } else {
        mfa::accept_code(&mut tx, &state.keys, user, &body.code).await?
    };
    let spent = match factor {
        Some(_) => {
            sqlx::query(
                "UPDATE mfa_challenges SET used_at = now() \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
            )
            .bind(&hash)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        }
        None => false,
    };
    let Some(factor) = factor.filter(|_| spent) else {
        tx.rollback().await?;
        let event = |action: &str| {
            AuditEvent::new(&meta, action, "session")
                .actor(user, &role)
                .outcome(Outcome::Denied)
        };
        let mut events = vec![event(if locked {
            actions::LOCKOUT
        } else {
            actions::MFA_FAILED
        })];
        if attempt == LOCKOUT_THRESHOLD {
            events.push(event(actions::LOCKOUT));
        }
        state.audit.record_all(events).await?;
        return Err(invalid());
    };
    tx.commit().await?;
    let login = |session| {
        let mut events = vec![AuditEvent::new(&meta, actions::LOGIN_SUCCESS, "session")
            .actor(user, &role)
            .resource(session)];
        if factor == Factor::RecoveryCode {
            events.push(
                AuditEvent::new(&meta, actions::MFA_RECOVERY_USED, "session")
                    .actor(user, &role)
                    .resource(session),
            );
        }
        events
    };
    let (_, resp) = open_session(&state, &bidx, user, &role, false, login).await?;
    Ok(Json(resp))
}

/// Start (or restart) MFA enrolment: a new TOTP secret for the caller's account, as an otpauth
/// URI and as base32. Needs the account's password again (a wrong one counts with the failed
/// logins: `422`, then `429`). Not active until confirmed. Accepted from a session restricted to
/// enrolment. `409` when MFA is already active (turn it off first) or disabled on the platform.
#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll", tag = "auth", request_body = EnrollMfaRequest,
    responses((status = 200, body = MfaEnrollment),
              (status = 422, description = "the password is not the account's", body = crate::error::Problem),
              (status = 429, description = "too many failed codes and passwords: the account is locked for 15 minutes", body = crate::error::Problem),
              (status = 409, description = "MFA is already active on the account, or disabled on the platform (`CADUCEUS_MFA=disabled`)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    AnySession(auth): AnySession,
    ApiJson(body): ApiJson<EnrollMfaRequest>,
) -> Result<Json<MfaEnrollment>, Error> {
    if state.config.mfa == MfaPolicy::Disabled {
        return Err(Error::conflict(
            "multi-factor authentication is disabled on this platform",
        ));
    }
    // The password again: a session alone (stolen token, unlocked screen) is not enough.
    let bidx = email_indexes(&state, auth.user_id).await?;
    let phc: Option<String> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(auth.user_id)
        .fetch_optional(&state.pool)
        .await?;
    let attempt = count_attempt(&mut *state.pool.acquire().await?, &bidx).await?;
    let locked = attempt > LOCKOUT_THRESHOLD;
    if locked || !password::verify_or_dummy(body.password, phc).await? {
        return Err(refused_secret(&state, &auth, attempt, locked, "password").await);
    }
    let account = crate::users::fetch(&state.pool, &state.keys, auth.user_id)
        .await?
        .email;
    let secret = mfa::new_secret();
    let stored = sqlx::query(
        "INSERT INTO user_mfa (id, secret_enc, phi_key_id) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET secret_enc = EXCLUDED.secret_enc, \
           phi_key_id = EXCLUDED.phi_key_id, last_used_step = NULL, created_at = now() \
         WHERE user_mfa.confirmed_at IS NULL",
    )
    .bind(auth.user_id)
    .bind(mfa::encrypt_secret(&state.keys, auth.user_id, &secret))
    .bind(state.keys.active_key_id())
    .execute(&state.pool)
    .await?;
    if stored.rows_affected() != 1 {
        return Err(Error::conflict(
            "multi-factor authentication is already active; turn it off first (DELETE /api/v1/auth/mfa)",
        ));
    }
    let enrollment = MfaEnrollment {
        otpauth_uri: mfa::otpauth_uri(&secret, &account)?,
        secret: mfa::secret_base32(&secret),
        issuer: mfa::ISSUER.into(),
        account,
        algorithm: "SHA1".into(),
        digits: mfa::DIGITS,
        period: mfa::STEP_SECS,
    };
    state
        .audit
        .record(AuditEvent::by(&auth, actions::MFA_ENROLL, "user").resource(auth.user_id))
        .await?;
    Ok(Json(enrollment))
}

/// Confirm the enrolment with the authenticator's current code: MFA becomes active and the
/// answer carries 10 one-time recovery codes (shown once; stored hashed). A session restricted
/// to enrolment becomes a full session. Wrong codes are counted with the account's failed logins
/// (`422`, then `429` once 5 failures in 15 minutes lock it).
#[utoipa::path(post, path = "/api/v1/auth/mfa/confirm", tag = "auth", request_body = ConfirmMfaRequest,
    responses((status = 200, body = MfaRecoveryCodes),
              (status = 409, description = "no enrolment was started, or MFA is already active", body = crate::error::Problem),
              (status = 422, description = "the code is not the authenticator's current code (or was used already)", body = crate::error::Problem),
              (status = 429, description = "too many failed codes and passwords: the account is locked for 15 minutes", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<AppState>,
    AnySession(auth): AnySession,
    ApiJson(body): ApiJson<ConfirmMfaRequest>,
) -> Result<Json<MfaRecoveryCodes>, Error> {
    let bidx = email_indexes(&state, auth.user_id).await?;
    let mut tx = state.pool.begin().await?;
    let confirmed: Option<bool> = sqlx::query_scalar(
        "SELECT confirmed_at IS NOT NULL FROM user_mfa WHERE id = $1 FOR UPDATE",
    )
    .bind(auth.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    match confirmed {
        None => {
            return Err(Error::conflict(
                "no MFA enrolment was started (POST /api/v1/auth/mfa/enroll)",
            ))
        }
        Some(true) => {
            return Err(Error::conflict(
                "multi-factor authentication is already active",
            ))
        }
        Some(false) => {}
    }
    let attempt = count_attempt(&mut *state.pool.acquire().await?, &bidx).await?;
    let locked = attempt > LOCKOUT_THRESHOLD;
    let accepted =
        !locked && mfa::accept_totp(&mut tx, &state.keys, auth.user_id, &body.code, false).await?;
    if !accepted {
        tx.rollback().await?;
        return Err(refused_code(&state, &auth, attempt, locked).await);
    }
    sqlx::query("UPDATE user_mfa SET confirmed_at = now() WHERE id = $1")
        .bind(auth.user_id)
        .execute(&mut *tx)
        .await?;
    let recovery_codes = mfa::replace_recovery_codes(&mut tx, &state.keys, auth.user_id).await?;
    if auth.mfa_enrollment_only {
        sqlx::query("UPDATE sessions SET mfa_enrollment_only = false WHERE id = $1")
            .bind(auth.session_id)
            .execute(&mut *tx)
            .await?;
    }
    clear_attempts(&mut tx, &bidx).await?;
    // Every other session was opened with the password alone: it ends.
    crate::auth::revoke_other_sessions(&mut tx, auth.user_id, auth.session_id, "mfa_enabled")
        .await?;
    // no MFA activated without its record: both commit together (or not at all)
    let event = AuditEvent::by(&auth, actions::MFA_CONFIRM, "user").resource(auth.user_id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(Json(MfaRecoveryCodes { recovery_codes }))
}

/// Turn MFA off for the caller's account, with a current code or an unused recovery code.
/// Refused (`409`) when the caller's role must use MFA (an admin can reset it instead) or MFA is
/// not active. Wrong codes count like failed logins (`422`, then `429`).
#[utoipa::path(delete, path = "/api/v1/auth/mfa", tag = "auth", request_body = DisableMfaRequest,
    responses((status = 204),
              (status = 409, description = "MFA is not active, or the caller's role must use MFA", body = crate::error::Problem),
              (status = 422, description = "the code is not valid (or was used already)", body = crate::error::Problem),
              (status = 429, description = "too many failed codes and passwords: the account is locked for 15 minutes", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(body): ApiJson<DisableMfaRequest>,
) -> Result<StatusCode, Error> {
    if state.config.mfa_required_for(auth.role) {
        return Err(Error::conflict(format!(
            "the {} role must use multi-factor authentication; an administrator can reset it",
            auth.role.as_str()
        )));
    }
    let bidx = email_indexes(&state, auth.user_id).await?;
    let mut tx = state.pool.begin().await?;
    if !mfa::is_active(&mut tx, auth.user_id).await? {
        return Err(Error::conflict("multi-factor authentication is not active"));
    }
    let attempt = count_attempt(&mut *state.pool.acquire().await?, &bidx).await?;
    let locked = attempt > LOCKOUT_THRESHOLD;
    let factor = if locked {
        None
    } else {
        mfa::accept_code(&mut tx, &state.keys, auth.user_id, &body.code).await?
    };
    if factor.is_none() {
        tx.rollback().await?;
        return Err(refused_code(&state, &auth, attempt, locked).await);
    }
    mfa::remove(&mut tx, auth.user_id).await?;
    clear_attempts(&mut tx, &bidx).await?;
    let event = AuditEvent::by(&auth, actions::MFA_DISABLE, "user").resource(auth.user_id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
