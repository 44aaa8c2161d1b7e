//! Sessions in Postgres: the grouped session check of every authenticated request (a
//! [`crate::batch::Lookup`] held by [`crate::state::AppState`]). Whether a session is live is
//! decided by [`crate::auth::AuthUser`].

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the [`crate::auth::AuthUser`] extractor needs to know about the session a token names (columns of
/// [`SESSION_COLUMNS`], plus `ord`).
#[derive(sqlx::FromRow)]
pub struct SessionCheck {
    /// Position in the grouped lookup ([`crate::batch::index`]).
    pub(crate) ord: i64,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    /// The login (the maximum session age counts from it). Aliased: the patient lookup selects
    /// the record's `created_at` beside it.
    #[sqlx(rename = "session_created_at")]
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) last_seen_at: DateTime<Utc>,
    pub(crate) active: bool,
    pub(crate) role: String,
    pub(crate) patient_id: Option<Uuid>,
    /// The session may only enrol in MFA (migration 0120).
    pub(crate) mfa_enrollment_only: bool,
}

/// The session and account columns of a [`SessionCheck`], from `sessions s JOIN users u`.
pub(crate) const SESSION_COLUMNS: &str =
    "s.revoked_at, s.created_at AS session_created_at, s.last_seen_at, u.active, u.role, u.patient_id, \
     s.mfa_enrollment_only";

pub(crate) static SESSION_LOOKUP_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT q.ord, {SESSION_COLUMNS} \
             FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS q(sid, uid, ord) \
             JOIN sessions s ON s.id = q.sid AND s.user_id = q.uid \
             JOIN users u ON u.id = s.user_id"
        )
    });

/// Grouped session check: key = (session id, user id) from a verified access token; the row
/// carries the session's state and the user's current role and status.
pub struct SessionLookup;

impl crate::batch::Lookup for SessionLookup {
    type Key = (Uuid, Uuid);
    type Row = SessionCheck;
    const NAME: &'static str = "session";

    async fn fetch(
        &self,
        conn: &mut sqlx::PgConnection,
        keys: &[(Uuid, Uuid)],
    ) -> Result<Vec<(usize, SessionCheck)>, sqlx::Error> {
        let (sids, uids): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
        let rows: Vec<SessionCheck> =
            sqlx::query_as(sqlx::AssertSqlSafe(SESSION_LOOKUP_SQL.as_str()))
                .bind(&sids)
                .bind(&uids)
                .fetch_all(conn)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| (crate::batch::index(r.ord), r))
            .collect())
    }
}
