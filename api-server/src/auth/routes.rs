//! Routes of authentication: `POST /auth/login`, `/auth/refresh`, `/auth/logout`,
//! `/auth/register` (when self-registration is enabled) and `GET /me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{idle_expired, password, revoke_session, tokens, AuthUser};
use crate::error::{validated, ApiJson, Error, FieldError, Validate};
use crate::rbac::Role;
use crate::request::RequestMeta;
use crate::state::AppState;
use crate::store::audit::{actions, AuditEvent, Outcome};

/// Failed logins within [`LOCKOUT_WINDOW_MINUTES`] that lock an account.
pub const LOCKOUT_THRESHOLD: i64 = 5;
pub const LOCKOUT_WINDOW_MINUTES: i64 = 15;
/// Routes under `/api/v1`. `/auth/register` exists only when self-registration is enabled.
pub fn router(self_registration: bool) -> Router<AppState> {
    let r = Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/me", get(me));
    if self_registration {
        r.route("/auth/register", post(register))
    } else {
        r
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.email.trim().is_empty() {
            errs.push(FieldError::new("email", "is required"));
        }
        if self.password.is_empty() {
            errs.push(FieldError::new("password", "is required"));
        }
        validated(errs)
    }
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if self.refresh_token.is_empty() || self.refresh_token.len() > 200 {
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
    })
}

/// Log in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem),
              (status = 423, description = "locked after 5 failures in 15 minutes", body = crate::error::Problem),
              (status = 429, body = crate::error::Problem)))]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, Error> {
    let invalid = || Error::Unauthorized("invalid email or password".into());
    // e-mails are encrypted: look up by blind index (or a not yet converted plaintext row)
    let user: Option<LoginRow> = sqlx::query_as(
        "SELECT id, password_hash, role, active FROM users \
         WHERE email_bidx = $1 OR (email IS NOT NULL AND lower(email) = lower($2))",
    )
    .bind(crate::users::email_index(&state.keys, &body.email))
    .bind(body.email.trim())
    .fetch_optional(&state.pool)
    .await?;
    let Some(user) = user else {
        password::verify(body.password, password::DUMMY_HASH.into()).await?;
        state
            .audit
            .record(
                AuditEvent::new(&meta, actions::LOGIN_FAILURE, "session").outcome(Outcome::Denied),
            )
            .await?;
        return Err(invalid());
    };
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures WHERE user_id = $1 AND at > now() - make_interval(mins => $2::int)",
    )
    .bind(user.id)
    .bind(LOCKOUT_WINDOW_MINUTES as i32)
    .fetch_one(&state.pool)
    .await?;
    let locked = || {
        Error::Locked(format!(
            "the account is locked after {LOCKOUT_THRESHOLD} failed logins; try again in {LOCKOUT_WINDOW_MINUTES} minutes"
        ))
    };
    // a refused login of a known account, audited as `action`
    let denied = |action: &str| {
        AuditEvent::new(&meta, action, "session")
            .actor(user.id, &user.role)
            .outcome(Outcome::Denied)
    };
    if failures >= LOCKOUT_THRESHOLD {
        state.audit.record(denied(actions::LOCKOUT)).await?;
        return Err(locked());
    }
    let ok = password::verify(body.password, user.password_hash.clone()).await?;
    if !ok || !user.active {
        sqlx::query("INSERT INTO login_failures (user_id) VALUES ($1)")
            .bind(user.id)
            .execute(&state.pool)
            .await?;
        state.audit.record(denied(actions::LOGIN_FAILURE)).await?;
        if failures + 1 >= LOCKOUT_THRESHOLD {
            state.audit.record(denied(actions::LOCKOUT)).await?;
            return Err(locked());
        }
        return Err(invalid());
    }
    let session = Uuid::now_v7();
    let mut tx = state.pool.begin().await?;
    sqlx::query("DELETE FROM login_failures WHERE user_id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO sessions (id, user_id) VALUES ($1, $2)")
        .bind(session)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    let resp = issue_tokens(&state, &mut tx, user.id, session, &user.role).await?;
    tx.commit().await?;
    state
        .audit
        .record(
            AuditEvent::new(&meta, actions::LOGIN_SUCCESS, "session")
                .actor(user.id, &user.role)
                .resource(session),
        )
        .await?;
    Ok(Json(resp))
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: Uuid,
    rotated_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
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
        "SELECT r.session_id, r.rotated_at, s.revoked_at, s.last_seen_at, s.user_id, u.role, u.active \
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
    tx.commit().await?;
    state
        .audit
        .record(
            AuditEvent::new(&meta, actions::REFRESH, "session")
                .actor(row.user_id, &row.role)
                .resource(row.session_id),
        )
        .await?;
    Ok(Json(resp))
}

/// End the session: its refresh token and access tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn logout(State(state): State<AppState>, auth: AuthUser) -> Result<StatusCode, Error> {
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
    auth: AuthUser,
) -> Result<Json<crate::users::User>, Error> {
    let user = crate::users::fetch(&state.pool, &state.keys, auth.user_id).await?;
    Ok(Json(user))
}

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Err(e) = crate::users::check_email(&self.email) {
            errs.push(e);
        }
        if let Err(e) = password::check_policy("password", &self.password) {
            errs.push(e);
        }
        if let Err(e) = crate::users::check_display_name(&self.display_name) {
            errs.push(e);
        }
        validated(errs)
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
    let user = crate::users::insert(
        &state.pool,
        &state.keys,
        &body.email,
        body.password,
        Role::Patient,
        &body.display_name,
        None,
    )
    .await?;
    state
        .audit
        .record(
            AuditEvent::new(&meta, actions::REGISTER, "user")
                .actor(user.id, Role::Patient.as_str())
                .resource(user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}
