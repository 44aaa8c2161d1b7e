//! Routes of authentication: `POST /auth/login`, `/auth/refresh`, `/auth/logout`,
//! `/auth/register` (when self-registration is enabled) and `GET /me`; MFA (the login's second
//! step, enrolment, disabling) in [`mfa`].

pub mod mfa;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{idle_expired, password, revoke_session, tokens, too_old, too_old_error, AnySession};
use crate::crypto::BlindIndexes;
use crate::error::{validated, ApiJson, Error, FieldError, Validate};
use crate::rbac::Role;
use crate::request::RequestMeta;
use crate::state::AppState;
use crate::store::audit::{actions, AuditEvent, Outcome};

/// Failed logins of one e-mail within [`LOCKOUT_WINDOW_MINUTES`] that lock it: later attempts
/// in the window are refused exactly like a wrong password.
pub const LOCKOUT_THRESHOLD: i32 = 5;
pub const LOCKOUT_WINDOW_MINUTES: i32 = 15;
/// Progressive delay: an attempt after `n` consecutive failures of its e-mail waits
/// `DELAY_BASE_MS × 2^(n-1)`, at most [`DELAY_CAP_MS`], before it is checked.
pub const DELAY_BASE_MS: u64 = 100;
pub const DELAY_CAP_MS: u64 = 2_000;

/// The wait before checking the `attempt`-th attempt of a window (1 = no failure before it).
pub fn login_delay(attempt: i32) -> std::time::Duration {
    let failures = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    if failures == 0 {
        return std::time::Duration::ZERO;
    }
    let ms = DELAY_BASE_MS.saturating_mul(1u64 << (failures - 1).min(20));
    std::time::Duration::from_millis(ms.min(DELAY_CAP_MS))
}

/// Count one login attempt of an e-mail (its blind index under the active key, `$1`, that key's
/// id `$3`) and return its number in the current window: one statement, so concurrent attempts
/// each get their own number (no read-then-check). The attempts of the window counted under the
/// e-mail's index under another blind-index key of the ring (`$4`, during a rotation) add to it.
const COUNT_ATTEMPT_SQL: &str = "WITH bump AS (\
     INSERT INTO login_attempts AS a (email_bidx, attempts, bidx_key_id) VALUES ($1, 1, $3) \
     ON CONFLICT (email_bidx) DO UPDATE SET \
       attempts = CASE WHEN a.window_start <= now() - make_interval(mins => $2) THEN 1 ELSE a.attempts + 1 END, \
       window_start = CASE WHEN a.window_start <= now() - make_interval(mins => $2) THEN now() ELSE a.window_start END \
     RETURNING attempts) \
     SELECT (bump.attempts + COALESCE((SELECT sum(o.attempts) FROM login_attempts o \
       WHERE o.email_bidx = ANY($4) AND o.window_start > now() - make_interval(mins => $2)), 0))::int4 \
     FROM bump";

/// Count one attempt of the e-mail whose blind indexes are `email`; its number in the window.
pub(crate) async fn count_attempt(
    conn: &mut sqlx::PgConnection,
    email: &BlindIndexes,
) -> Result<i32, Error> {
    Ok(sqlx::query_scalar(COUNT_ATTEMPT_SQL)
        .bind(&email.active)
        .bind(LOCKOUT_WINDOW_MINUTES)
        .bind(&email.key_id)
        .bind(&email.others)
        .fetch_one(conn)
        .await?)
}

/// Delete the failure counters of the e-mail whose blind indexes are `email` (every key's).
pub(crate) async fn clear_attempts(
    conn: &mut sqlx::PgConnection,
    email: &BlindIndexes,
) -> Result<(), Error> {
    sqlx::query("DELETE FROM login_attempts WHERE email_bidx = ANY($1)")
        .bind(email.all())
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete the attempt counters whose window has ended (daily, by `serve`): an e-mail that was
/// only guessed leaves no row behind for long.
pub async fn purge_login_attempts(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    // MFA login challenges live minutes; the spent and expired ones go with the counters
    sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= now() OR used_at IS NOT NULL")
        .execute(pool)
        .await?;
    sqlx::query(
        "DELETE FROM login_attempts WHERE window_start <= now() - make_interval(mins => $1)",
    )
    .bind(LOCKOUT_WINDOW_MINUTES)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// Routes under `/api/v1`. `POST /auth/register` answers 404 unless self-registration is
/// enabled (the route is there either way, as in the document: another method is a 405).
pub fn router(self_registration: bool) -> Router<AppState> {
    let r = Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .merge(mfa::router());
    if self_registration {
        r.route("/auth/register", post(register))
    } else {
        r.route("/auth/register", post(registration_disabled))
    }
}

/// `POST /auth/register` without self-registration: 404, before the body is read.
async fn registration_disabled() -> Error {
    Error::NotFound
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Not blank, at most 254 characters.
    #[schema(
        min_length = 1,
        max_length = 254,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub email: String,
    /// 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub password: String,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.email.trim().is_empty() {
            errs.push(FieldError::new("email", "is required"));
        } else if self.email.chars().count() > 254 {
            errs.push(FieldError::new("email", "must be at most 254 characters"));
        }
        if self.password.is_empty() {
            errs.push(FieldError::new("password", "is required"));
        } else if self.password.chars().count() > password::MAX_PASSWORD_CHARS {
            errs.push(FieldError::new(
                "password",
                "must be at most 256 characters",
            ));
        }
        validated(errs)
    }
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if self.refresh_token.is_empty() || self.refresh_token.chars().count() > 200 {
            return Err(vec![FieldError::new("refresh_token", "is required")]);
        }
        Ok(())
    }
}

/// Token pair returned by login and refresh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// Present (`true`) when the account's role must use MFA and it has not enrolled: the
    /// session may only enrol (`POST /auth/mfa/enroll`, `POST /auth/mfa/confirm`), read `/me`
    /// and log out; every other route answers `403` (`mfa-enrollment-required`) until the
    /// enrolment is confirmed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa_enrollment_required: bool,
}

/// The first step of a login to an account with MFA active: no session yet; send the token with
/// a code to `POST /auth/login/mfa` within `expires_in` seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaChallenge {
    /// Always `true`.
    pub mfa_required: bool,
    /// Single-use challenge token (not an access token).
    pub mfa_token: String,
    /// Seconds the challenge stays valid.
    pub expires_in: i64,
}

/// What `POST /auth/login` answers: the tokens, or an MFA challenge.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenResponse),
    MfaChallenge(MfaChallenge),
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    password_hash: String,
    role: String,
    active: bool,
}

async fn issue_tokens(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    user: Uuid,
    session: Uuid,
    role: &str,
) -> Result<TokenResponse, Error> {
    let refresh = tokens::new_refresh_token();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
        .bind(tokens::refresh_hash(&refresh))
        .bind(session)
        .execute(&mut *tx)
        .await?;
    let ttl = state.config.access_token_ttl.as_secs() as i64;
    let access = tokens::issue_access(&state.config.jwt_key, user, session, role, ttl)
        .map_err(|_| Error::internal(anyhow::anyhow!("token signing failed")))?;
    Ok(TokenResponse {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer".into(),
        expires_in: ttl,
        mfa_enrollment_required: false,
    })
}

/// Log in with email and password.
///
/// Every attempt does the same work whether the e-mail is unknown, the account locked or
/// inactive, or the password wrong, and gets the same answer (`401`, same problem body): count
/// the attempt for the e-mail's blind index (atomically), wait the progressive delay, look the
/// account up, run one Argon2id verification (against a dummy hash when there is nothing to
/// verify), write the audit event. Only the first [`LOCKOUT_THRESHOLD`] attempts of a window
/// can succeed.
///
/// An account with MFA active gets an MFA challenge instead of tokens (`mfa_required`,
/// `mfa_token`): the session is created by `POST /auth/login/mfa` with a code. An account whose
/// role must use MFA (`CADUCEUS_MFA=required`) and that has not enrolled gets tokens of a session
/// restricted to enrolment (`mfa_enrollment_required: true`).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "tokens, or an MFA challenge (`mfa_required: true`) for an account with MFA active", body = LoginResponse),
              (status = 401, description = "wrong e-mail or password, inactive account, or locked after 5 failures in 15 minutes (one answer for all)", body = crate::error::Problem),
              (status = 429, body = crate::error::Problem),
              (status = 503, description = "password hashing is saturated (Retry-After), or the database or audit trail is unavailable", body = crate::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    let invalid = || Error::Unauthorized("invalid email or password".into());
    let email = crate::users::email_indexes(&state.keys, &body.email);
    let attempt = count_attempt(&mut *state.pool.acquire().await?, &email).await?;
    tokio::time::sleep(login_delay(attempt)).await;
    // e-mails are encrypted: look up by blind index under any key of the ring (or a not yet
    // converted plaintext row)
    let user: Option<LoginRow> = sqlx::query_as(
        "SELECT id, password_hash, role, active FROM users \
         WHERE email_bidx = ANY($1) OR (email IS NOT NULL AND lower(email) = lower($2))",
    )
    .bind(email.all())
    .bind(body.email.trim())
    .fetch_optional(&state.pool)
    .await?;
    let locked = attempt > LOCKOUT_THRESHOLD;
    let phc = user
        .as_ref()
        .filter(|_| !locked)
        .map(|u| u.password_hash.clone());
    let verified = password::verify_or_dummy(body.password, phc).await?;
    let user = match user {
        Some(u) if verified && u.active => u,
        other => {
            // a refused attempt, audited with the account when there is one
            let event = |action: &str| {
                let ev = AuditEvent::new(&meta, action, "session").outcome(Outcome::Denied);
                match &other {
                    Some(u) => ev.actor(u.id, &u.role),
                    None => ev,
                }
            };
            let mut events = vec![event(if locked {
                actions::LOCKOUT
            } else {
                actions::LOGIN_FAILURE
            })];
            if attempt == LOCKOUT_THRESHOLD {
                // this failure locks the e-mail
                events.push(event(actions::LOCKOUT));
            }
            state.audit.record_all(events).await?;
            return Err(invalid());
        }
    };
    let mut conn = state.pool.acquire().await?;
    if super::mfa::is_active(&mut conn, user.id).await? {
        // the second step: no session yet, and the failure counter stays (the codes tried
        // next are counted with the passwords)
        let token = super::mfa::create_challenge(&mut conn, user.id, &email.active).await?;
        drop(conn);
        state
            .audit
            .record(
                AuditEvent::new(&meta, actions::MFA_CHALLENGE, "session")
                    .actor(user.id, &user.role),
            )
            .await?;
        return Ok(Json(LoginResponse::MfaChallenge(MfaChallenge {
            mfa_required: true,
            mfa_token: token,
            expires_in: super::mfa::CHALLENGE_TTL_SECS,
        })));
    }
    drop(conn);
    let enrollment_only = Role::parse(&user.role).is_some_and(|r| state.config.mfa_required_for(r));
    let login = |session| {
        vec![AuditEvent::new(&meta, actions::LOGIN_SUCCESS, "session")
            .actor(user.id, &user.role)
            .resource(session)]
    };
    let (_, resp) =
        open_session(&state, &email, user.id, &user.role, enrollment_only, login).await?;
    Ok(Json(LoginResponse::Tokens(resp)))
}

/// A completed login: the e-mail's failure counter is deleted, a session opened (restricted to
/// MFA enrolment when `enrollment_only`), its tokens issued, and the login's audit events
/// (`audit(session id)`) written in the same transaction: no session exists without them.
pub(crate) async fn open_session(
    state: &AppState,
    email: &BlindIndexes,
    user: Uuid,
    role: &str,
    enrollment_only: bool,
    audit: impl FnOnce(Uuid) -> Vec<AuditEvent>,
) -> Result<(Uuid, TokenResponse), Error> {
    let session = Uuid::now_v7();
    let mut tx = state.pool.begin().await?;
    clear_attempts(&mut tx, email).await?;
    sqlx::query("INSERT INTO sessions (id, user_id, mfa_enrollment_only) VALUES ($1, $2, $3)")
        .bind(session)
        .bind(user)
        .bind(enrollment_only)
        .execute(&mut *tx)
        .await?;
    let mut resp = issue_tokens(state, &mut tx, user, session, role).await?;
    state.audit.write_in(&mut tx, &audit(session)).await?;
    tx.commit().await?;
    resp.mfa_enrollment_required = enrollment_only;
    Ok((session, resp))
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: Uuid,
    rotated_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    user_id: Uuid,
    role: String,
    active: bool,
}

/// A rotated refresh token was presented again: revoke the whole session (family) and audit.
async fn refresh_reuse(
    state: &AppState,
    meta: &RequestMeta,
    session: Uuid,
    user: Uuid,
    role: &str,
) -> Error {
    if let Err(e) = revoke_session(state, session, "refresh_reuse").await {
        return e;
    }
    let ev = AuditEvent::new(meta, actions::REFRESH_REUSE, "session")
        .actor(user, role)
        .resource(session)
        .outcome(Outcome::Denied);
    if let Err(e) = state.audit.record(ev).await {
        return e;
    }
    Error::Unauthorized("refresh token reuse detected; the session has been revoked".into())
}

/// Exchange a refresh token for a new pair (the old refresh token is rotated out).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, Error> {
    let hash = tokens::refresh_hash(&body.refresh_token);
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.session_id, r.rotated_at, s.revoked_at, s.created_at, s.last_seen_at, s.user_id, u.role, u.active \
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id \
         WHERE r.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else {
        return Err(Error::Unauthorized("the refresh token is not valid".into()));
    };
    if row.rotated_at.is_some() {
        return Err(refresh_reuse(&state, &meta, row.session_id, row.user_id, &row.role).await);
    }
    if row.revoked_at.is_some() || !row.active {
        return Err(Error::Unauthorized("the session has ended".into()));
    }
    if too_old(&state, row.created_at) {
        // counted from the login: refreshing does not extend it
        revoke_session(&state, row.session_id, "max_age").await?;
        return Err(too_old_error());
    }
    if idle_expired(&state, row.last_seen_at) {
        revoke_session(&state, row.session_id, "idle_timeout").await?;
        return Err(Error::Unauthorized(
            "the session expired after inactivity".into(),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let rotated = sqlx::query(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1 AND rotated_at IS NULL",
    )
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    if rotated.rows_affected() != 1 {
        // lost a race with a concurrent use of the same token: that is reuse too
        tx.rollback().await?;
        return Err(refresh_reuse(&state, &meta, row.session_id, row.user_id, &row.role).await);
    }
    sqlx::query("UPDATE sessions SET last_seen_at = now() WHERE id = $1")
        .bind(row.session_id)
        .execute(&mut *tx)
        .await?;
    let resp = issue_tokens(&state, &mut tx, row.user_id, row.session_id, &row.role).await?;
    let event = AuditEvent::new(&meta, actions::REFRESH, "session")
        .actor(row.user_id, &row.role)
        .resource(row.session_id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(Json(resp))
}

/// End the session: its refresh token and access tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    AnySession(auth): AnySession,
) -> Result<StatusCode, Error> {
    revoke_session(&state, auth.session_id, "logout").await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::LOGOUT, "session").resource(auth.session_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = crate::users::User), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn me(
    State(state): State<AppState>,
    AnySession(auth): AnySession,
) -> Result<Json<crate::users::User>, Error> {
    let user = crate::users::fetch(&state.pool, &state.keys, auth.user_id).await?;
    Ok(Json(user))
}

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// `local@domain.tld`, no spaces or control characters, at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]$"
    )]
    pub email: String,
    /// 12 to 256 characters.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    /// 1 to 200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub display_name: String,
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(crate::users::check_account(
            &self.email,
            &self.password,
            &self.display_name,
        ))
    }
}

/// Self-registration of a patient account (route exists only when
/// `CADUCEUS_SELF_REGISTRATION=true`; 404 otherwise). The account is linked to a patient record later by an admin (`PATCH /users/{id}`).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = crate::users::User), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<crate::users::User>), Error> {
    let hash = password::hash(body.password).await?;
    let account = crate::users::NewAccount {
        email: &body.email,
        role: Role::Patient,
        display_name: &body.display_name,
        patient_id: None,
    };
    // the account and its audit record commit together (or not at all)
    let mut tx = state.pool.begin().await?;
    let user = crate::users::insert_hashed(&mut tx, &state.keys, &account, hash).await?;
    let event = AuditEvent::new(&meta, actions::REGISTER, "user")
        .actor(user.id, Role::Patient.as_str())
        .resource(user.id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}
