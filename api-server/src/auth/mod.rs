//! Authentication: login/refresh/logout/me/register, and the [`AuthUser`] extractor.
//!
//! Any handler that takes an [`AuthUser`] argument is authenticated: the extractor checks the
//! bearer JWT (HS256, `exp`, `iss`) AND the session row it names (not revoked, not idle, user
//! active), so logout and revocation take effect immediately. Authorisation is one call:
//! `auth.require(&state, Permission::X).await?` (matrix in [`crate::rbac`]); handlers declare it
//! instead as `auth: Authorized<perm::X>` ([`Authorized`]) so it runs before the body is parsed.

mod authorized;
pub mod password;
pub mod tokens;

pub use authorized::Authorized;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{actions, AuditEvent, Outcome};
use crate::error::{ApiJson, Error, FieldError, Validate};
use crate::middleware::RequestMeta;
use crate::rbac::{self, Permission, Role};
use crate::state::AppState;
pub use crate::store::sessions::{SessionCheck, SessionLookup};

/// Failed logins within [`LOCKOUT_WINDOW_MINUTES`] that lock an account.
pub const LOCKOUT_THRESHOLD: i64 = 5;
pub const LOCKOUT_WINDOW_MINUTES: i64 = 15;
/// The session's `last_seen_at` is refreshed at most this often (seconds).
const TOUCH_INTERVAL_SECS: i64 = 30;

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

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub role: Role,
    pub session_id: Uuid,
    /// Linked patient record (patient accounts).
    pub patient_id: Option<Uuid>,
    pub meta: RequestMeta,
    /// Trimmed, non-empty `X-Break-Glass-Reason` header.
    pub break_glass_reason: Option<String>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// User id of a validly signed, unexpired bearer token (no database check; for rate limiting).
pub fn bearer_subject(state: &AppState, headers: &HeaderMap) -> Option<Uuid> {
    bearer_claims(state, headers).map(|c| c.sub)
}

/// Claims of a validly signed, unexpired bearer token (no database check). The rate limiter
/// stores them as [`VerifiedBearer`] so [`AuthUser`] does not verify the same token twice.
pub fn bearer_claims(state: &AppState, headers: &HeaderMap) -> Option<tokens::Claims> {
    let token = bearer(headers)?;
    tokens::decode_access(&state.config.jwt_key, token).ok()
}

/// Request extension: the claims of this request's bearer token, already verified (signature,
/// `exp`, `iss`) by the rate limiter. Set only by the server, never from client input.
#[derive(Debug, Clone)]
pub struct VerifiedBearer(pub tokens::Claims);

async fn revoke_session(state: &AppState, session: Uuid, reason: &str) -> Result<(), Error> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(reason)
    .execute(&state.pool)
    .await?;
    Ok(())
}

fn idle_expired(state: &AppState, last_seen: DateTime<Utc>) -> bool {
    let idle = chrono::Duration::from_std(state.config.session_idle_timeout)
        .unwrap_or(chrono::Duration::minutes(15));
    Utc::now() - last_seen > idle
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let claims = verified_claims(parts, state)?;
        let row = state.sessions.get((claims.sid, claims.sub)).await?;
        AuthUser::from_session(parts, state, &claims, row).await
    }
}

/// The claims of the request's bearer access token: verified by the rate limiter already
/// ([`VerifiedBearer`]) or here (signature, `exp`, `iss`). `401` without a valid token.
pub(crate) fn verified_claims(
    parts: &mut Parts,
    state: &AppState,
) -> Result<tokens::Claims, Error> {
    match parts.extensions.remove::<VerifiedBearer>() {
        Some(VerifiedBearer(claims)) => Ok(claims),
        None => {
            let token = bearer(&parts.headers)
                .ok_or_else(|| Error::Unauthorized("a bearer access token is required".into()))?;
            tokens::decode_access(&state.config.jwt_key, token)
                .map_err(|_| Error::Unauthorized("the access token is invalid or expired".into()))
        }
    }
}

impl AuthUser {
    /// The caller, given the verified token's claims and the session row they name (`None`: no
    /// such session for this user). The one place that decides whether a session is live:
    /// not revoked, account active, not idle (an idle session is revoked here); `last_seen_at`
    /// is refreshed at most every [`TOUCH_INTERVAL_SECS`].
    pub(crate) async fn from_session(
        parts: &Parts,
        state: &AppState,
        claims: &tokens::Claims,
        row: Option<SessionCheck>,
    ) -> Result<Self, Error> {
        let meta = RequestMeta::from_parts(parts);
        let row = row.ok_or_else(|| Error::Unauthorized("the session does not exist".into()))?;
        if row.revoked_at.is_some() {
            return Err(Error::Unauthorized("the session has ended".into()));
        }
        if !row.active {
            return Err(Error::Unauthorized("the account is deactivated".into()));
        }
        if idle_expired(state, row.last_seen_at) {
            revoke_session(state, claims.sid, "idle_timeout").await?;
            return Err(Error::Unauthorized(
                "the session expired after inactivity".into(),
            ));
        }
        if (Utc::now() - row.last_seen_at).num_seconds() >= TOUCH_INTERVAL_SECS {
            sqlx::query("UPDATE sessions SET last_seen_at = now() WHERE id = $1")
                .bind(claims.sid)
                .execute(&state.pool)
                .await?;
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("unknown role in users table")))?;
        let break_glass_reason = parts
            .headers
            .get("x-break-glass-reason")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(500).collect());
        Ok(Self {
            user_id: claims.sub,
            role,
            session_id: claims.sid,
            patient_id: row.patient_id,
            meta,
            break_glass_reason,
        })
    }
}

impl AuthUser {
    /// Role-level permission check; denials are counted and audited.
    pub async fn require(&self, state: &AppState, perm: Permission) -> Result<(), Error> {
        if rbac::allows(self.role, perm) {
            return Ok(());
        }
        self.denied(state, &format!("{perm:?}"), None, None).await;
        Err(Error::Forbidden(format!(
            "the {} role may not perform this operation",
            self.role.as_str()
        )))
    }

    /// Count and audit a denial (best effort: the request is refused either way).
    pub async fn denied(
        &self,
        state: &AppState,
        what: &str,
        resource_id: Option<String>,
        patient: Option<Uuid>,
    ) {
        state.metrics.phi_access_denied_total.inc();
        let mut ev =
            AuditEvent::by(self, actions::PERMISSION_DENIED, what).outcome(Outcome::Denied);
        ev.resource_id = resource_id;
        ev.patient_id = patient;
        if state.audit.record(ev).await.is_err() {
            tracing::warn!("could not audit a permission denial");
        }
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
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
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
    if failures >= LOCKOUT_THRESHOLD {
        state
            .audit
            .record(
                AuditEvent::new(&meta, actions::LOCKOUT, "session")
                    .actor(user.id, &user.role)
                    .outcome(Outcome::Denied),
            )
            .await?;
        return Err(locked());
    }
    let ok = password::verify(body.password, user.password_hash.clone()).await?;
    if !ok || !user.active {
        sqlx::query("INSERT INTO login_failures (user_id) VALUES ($1)")
            .bind(user.id)
            .execute(&state.pool)
            .await?;
        state
            .audit
            .record(
                AuditEvent::new(&meta, actions::LOGIN_FAILURE, "session")
                    .actor(user.id, &user.role)
                    .outcome(Outcome::Denied),
            )
            .await?;
        if failures + 1 >= LOCKOUT_THRESHOLD {
            state
                .audit
                .record(
                    AuditEvent::new(&meta, actions::LOCKOUT, "session")
                        .actor(user.id, &user.role)
                        .outcome(Outcome::Denied),
                )
                .await?;
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
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
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
