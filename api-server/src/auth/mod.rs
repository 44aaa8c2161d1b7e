//! Authentication: the [`AuthUser`] extractor and [`Authorized`]; the routes (login, refresh,
//! logout, me, register) are in [`routes`].
//!
//! Any handler that takes an [`AuthUser`] argument is authenticated: the extractor checks the
//! bearer JWT (HS256, `exp`, `iss`) AND the session row it names (not revoked, not idle, user
//! active), so logout and revocation take effect immediately. Authorisation is one call:
//! `auth.require(&state, Permission::X).await?` (matrix in [`crate::rbac`]); handlers declare it
//! instead as `auth: Authorized<perm::X>` ([`Authorized`]) so it runs before the body is parsed.

mod authorized;
pub mod mfa;
pub mod password;
pub mod routes;
pub mod tokens;

pub use authorized::Authorized;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Error;
use crate::rbac::{self, Permission, Role};
use crate::request::RequestMeta;
use crate::state::AppState;
use crate::store::audit::{actions, AuditEvent, Outcome};
pub use crate::store::sessions::{SessionCheck, SessionLookup};

/// The session's `last_seen_at` is refreshed at most this often (seconds).
const TOUCH_INTERVAL_SECS: i64 = 30;

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
    /// The session was opened with the password only by an account whose role must use MFA and
    /// has not enrolled: only [`AnySession`] routes (enrolment, `/me`, logout) accept it.
    pub mfa_enrollment_only: bool,
}

/// An authenticated caller whose session may be restricted to MFA enrolment
/// ([`AuthUser::mfa_enrollment_only`]): the extractor of the enrolment routes, `/me` and logout.
/// Every other route takes [`AuthUser`] (or [`Authorized`]), which answers such a session `403`
/// (`mfa-enrollment-required`).
pub struct AnySession(pub AuthUser);

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

pub(crate) async fn revoke_session(
    state: &AppState,
    session: Uuid,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(reason)
    .execute(&state.pool)
    .await?;
    Ok(())
}

pub(crate) fn idle_expired(state: &AppState, last_seen: DateTime<Utc>) -> bool {
    let idle = chrono::Duration::from_std(state.config.session_idle_timeout)
        .unwrap_or(chrono::Duration::minutes(15));
    Utc::now() - last_seen > idle
}

/// The session was opened (logged in) longer ago than `CADUCEUS_MAX_SESSION_HOURS`.
pub(crate) fn too_old(state: &AppState, created: DateTime<Utc>) -> bool {
    let max = chrono::Duration::from_std(state.config.max_session_age)
        .unwrap_or(chrono::Duration::hours(12));
    Utc::now() - created > max
}

/// The answer to a session past its maximum age (after it is revoked).
pub(crate) fn too_old_error() -> Error {
    Error::Unauthorized("the session reached its maximum age; log in again".into())
}

/// End every session of `user` (password change or reset, deactivation, role change): their
/// refresh tokens stop working, and so do their access tokens (every request checks the
/// session).
pub(crate) async fn revoke_all_sessions(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    reason: &str,
) -> Result<u64, Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 \
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// End every session of `user` but `keep` (the caller's own, when it proved itself again: a
/// password change of one's own account, confirming MFA).
pub(crate) async fn revoke_other_sessions(
    conn: &mut sqlx::PgConnection,
    user: Uuid,
    keep: Uuid,
    reason: &str,
) -> Result<u64, Error> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
         WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(keep)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let claims = verified_claims(parts, state)?;
        let row = state.sessions.get((claims.sid, claims.sub)).await?;
        AuthUser::from_session(parts, state, &claims, row).await
    }
}

impl FromRequestParts<AppState> for AnySession {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let claims = verified_claims(parts, state)?;
        let row = state.sessions.get((claims.sid, claims.sub)).await?;
        AuthUser::from_any_session(parts, state, &claims, row)
            .await
            .map(AnySession)
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
    /// not revoked, account active, younger than the maximum session age, not idle (an old or
    /// idle session is revoked here); `last_seen_at`
    /// is refreshed at most every [`TOUCH_INTERVAL_SECS`].
    pub(crate) async fn from_session(
        parts: &Parts,
        state: &AppState,
        claims: &tokens::Claims,
        row: Option<SessionCheck>,
    ) -> Result<Self, Error> {
        let user = Self::from_any_session(parts, state, claims, row).await?;
        if user.mfa_enrollment_only {
            user.denied(state, "MfaEnrollmentRequired", None, None)
                .await;
            return Err(Error::MfaEnrollmentRequired);
        }
        Ok(user)
    }

    /// [`Self::from_session`], also for a session restricted to MFA enrolment.
    pub(crate) async fn from_any_session(
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
        if too_old(state, row.created_at) {
            revoke_session(state, claims.sid, "max_age").await?;
            return Err(too_old_error());
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
            mfa_enrollment_only: row.mfa_enrollment_only,
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

/// Audit events of an authenticated caller (the event type lives in [`crate::store::audit`]).
impl AuditEvent {
    /// Event performed by an authenticated user.
    pub fn by(auth: &AuthUser, action: &str, resource_type: &str) -> Self {
        Self::new(&auth.meta, action, resource_type).actor(auth.user_id, auth.role.as_str())
    }
}
