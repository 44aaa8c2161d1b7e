//! User accounts (admin): `POST /users`, `GET /users`, `GET/PATCH /users/{id}`,
//! `POST /users/{id}/mfa/reset`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{actions, AuditEvent};
use crate::auth::{password, Authorized};
use crate::crypto::{Aad, KeyRing};
use crate::error::ApiQuery;
use crate::error::{validated, ApiJson, Error, FieldError, Validate};
use crate::pagination::{ListScope, Page, PageParams};
use crate::rbac::{perm, Role};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(read).patch(update))
        .route("/users/{id}/mfa/reset", post(reset_mfa))
}

/// A user account (never includes the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub role: RoleName,
    pub display_name: String,
    pub active: bool,
    pub patient_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `users` row as stored: the e-mail is a ciphertext (`email_enc`), or plaintext `email` on a
/// row written before migration 0102 and not yet converted ([`encrypt_legacy_emails`]).
#[derive(FromRow)]
pub struct UserRow {
    id: Uuid,
    email: Option<String>,
    email_enc: Option<Vec<u8>>,
    #[sqlx(try_from = "String")]
    role: RoleName,
    display_name: String,
    active: bool,
    patient_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Table and ciphertext column of the account e-mail (AAD and [`crate::rotate::ENCRYPTED_TABLES`]).
pub const TABLE: &str = "users";
pub const ENC_COLUMNS: [&str; 1] = ["email_enc"];

fn email_aad(id: Uuid) -> Aad<'static> {
    Aad {
        table: TABLE,
        row: id,
        column: ENC_COLUMNS[0],
    }
}

/// Blind index of an account e-mail: trimmed and lower-cased (login is case-insensitive).
pub fn email_index(keys: &KeyRing, email: &str) -> Vec<u8> {
    email_indexes(keys, email).active
}

/// [`email_index`] under every blind-index key of the ring (lookups, duplicate checks, failure
/// counters), the active one first.
pub fn email_indexes(keys: &KeyRing, email: &str) -> crate::crypto::BlindIndexes {
    keys.blind_indexes("user-email", &email.trim().to_lowercase())
}

impl UserRow {
    /// Decrypt the e-mail.
    pub fn into_user(self, keys: &KeyRing) -> Result<User, Error> {
        let email = match (self.email_enc, self.email) {
            (Some(ct), _) => keys.decrypt_str(email_aad(self.id), &ct)?,
            (None, Some(plain)) => plain,
            (None, None) => {
                return Err(Error::internal(anyhow::anyhow!(
                    "users row without an e-mail"
                )))
            }
        };
        Ok(User {
            id: self.id,
            email,
            role: self.role,
            display_name: self.display_name,
            active: self.active,
            patient_id: self.patient_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Role as stored (validated on read).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(transparent)]
pub struct RoleName(pub Role);

impl TryFrom<String> for RoleName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Role::parse(&s)
            .map(RoleName)
            .ok_or_else(|| "unknown role".to_string())
    }
}

/// The columns of a [`UserRow`].
pub const USER_COLUMNS: &str =
    "id, email, email_enc, role, display_name, active, patient_id, created_at, updated_at";

pub fn check_email(email: &str) -> Result<(), FieldError> {
    let e = email;
    let ok = e.chars().count() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("email", "must be a valid email address"))
    }
}

pub fn check_display_name(name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(FieldError::new(
            "display_name",
            "must be 1 to 200 characters",
        ));
    }
    Ok(())
}

/// The rules of a new account's e-mail, password and display name (`POST /users`,
/// `POST /auth/register`).
pub fn check_account(email: &str, password: &str, display_name: &str) -> Vec<FieldError> {
    [
        check_email(email),
        password::check_policy("password", password),
        check_display_name(display_name),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Fetch one user.
pub async fn fetch(pool: &PgPool, keys: &KeyRing, id: Uuid) -> Result<User, Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound)?
        .into_user(keys)
}

/// Find an account by e-mail (blind index; a not yet converted plaintext row by lower(email)).
pub async fn find_by_email(
    pool: &PgPool,
    keys: &KeyRing,
    email: &str,
) -> Result<Option<User>, Error> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email_bidx = ANY($1) \
         OR (email IS NOT NULL AND lower(email) = lower($2))"
    );
    let row = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(email_indexes(keys, email).all())
        .bind(email.trim())
        .fetch_optional(pool)
        .await?;
    row.map(|r| r.into_user(keys)).transpose()
}

/// Create a user (hashes the password, encrypts the e-mail). Duplicate e-mail → 409 (also
/// against a not yet converted plaintext row).
pub async fn insert(
    pool: &PgPool,
    keys: &KeyRing,
    email: &str,
    password: String,
    role: Role,
    display_name: &str,
    patient_id: Option<Uuid>,
) -> Result<User, Error> {
    let hash = password::hash(password).await?;
    let account = NewAccount {
        email,
        role,
        display_name,
        patient_id,
    };
    let mut tx = pool.begin().await?;
    let user = insert_hashed(&mut tx, keys, &account, hash).await?;
    tx.commit().await?;
    Ok(user)
}

/// An account to insert ([`insert_hashed`]).
#[derive(Clone, Copy)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub role: Role,
    pub display_name: &'a str,
    pub patient_id: Option<Uuid>,
}

/// [`insert`] with the password already hashed, in the transaction `tx` (e.g. the one that also
/// writes the account's audit record). While the ring holds several blind-index keys, an
/// account whose e-mail is stored under another key is a duplicate too
/// ([`crate::store::blind_index`]; its lock is held until `tx` ends).
pub async fn insert_hashed(
    tx: &mut sqlx::PgConnection,
    keys: &KeyRing,
    account: &NewAccount<'_>,
    hash: String,
) -> Result<User, Error> {
    let NewAccount {
        email,
        role,
        display_name,
        patient_id,
    } = *account;
    let id = Uuid::now_v7();
    let email = email.trim();
    let duplicate = || Error::conflict("a user with this email already exists");
    let index = email_indexes(keys, email);
    let candidate = crate::store::blind_index::Candidate {
        row: id,
        others: &index.others,
        lock: index.lock,
    };
    let taken = crate::store::blind_index::taken_under_other_keys(
        &mut *tx,
        crate::store::blind_index::USER_EMAIL,
        &[candidate],
    )
    .await?;
    if !taken.is_empty() {
        return Err(duplicate());
    }
    let sql = format!(
        "INSERT INTO users (id, email_enc, email_bidx, phi_key_id, password_hash, role, display_name, patient_id, bidx_key_id) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10 \
         WHERE NOT EXISTS (SELECT 1 FROM users WHERE email IS NOT NULL AND lower(email) = lower($9)) \
         RETURNING {USER_COLUMNS}"
    );
    let res = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(keys.encrypt_str(email_aad(id), email))
        .bind(&index.active)
        .bind(keys.active_key_id())
        .bind(hash)
        .bind(role.as_str())
        .bind(display_name.trim())
        .bind(patient_id)
        .bind(email)
        .bind(&index.key_id)
        .fetch_optional(&mut *tx)
        .await;
    match res {
        Ok(Some(u)) => u.into_user(keys),
        Ok(None) => Err(duplicate()),
        Err(sqlx::Error::Database(db))
            if matches!(
                db.constraint(),
                Some("users_email_key" | "users_email_bidx_key")
            ) =>
        {
            Err(duplicate())
        }
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_patient_id_key") => Err(
            Error::conflict("this patient record is already linked to an account"),
        ),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_patient_fk") => {
            Err(Error::validation("patient_id", "no such patient"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Encrypt the e-mails of rows written before migration 0102, `batch` rows per committed
/// transaction (`FOR UPDATE SKIP LOCKED`: replicas may run it at once; interrupt and re-run
/// freely). The plaintext is set to NULL in the same UPDATE. Returns the rows converted.
pub async fn encrypt_legacy_emails(
    pool: &PgPool,
    keys: &KeyRing,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let mut total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, email FROM users WHERE email IS NOT NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(batch.max(1))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(total);
        }
        for (id, email) in &rows {
            let email = zeroize::Zeroizing::new(email.trim().to_string());
            sqlx::query(
                "UPDATE users SET email = NULL, email_enc = $2, email_bidx = $3, phi_key_id = $4, \
                 bidx_key_id = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(keys.encrypt_str(email_aad(*id), &email))
            .bind(email_index(keys, &email))
            .bind(keys.active_key_id())
            .bind(keys.active_blind_index_key_id())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        total += rows.len() as u64;
    }
}

/// `POST /users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// `local@domain.tld`, no spaces or control characters, at most 254 characters.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^.\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]$"
    )]
    pub email: String,
    /// 12 to 256 characters.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    pub role: Role,
    /// 1 to 200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub display_name: String,
    /// Required for (and only allowed on) `patient` accounts: the linked patient record.
    pub patient_id: Option<Uuid>,
}

impl Validate for CreateUser {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = check_account(&self.email, &self.password, &self.display_name);
        if self.patient_id.is_some() && self.role != Role::Patient {
            errs.push(FieldError::new(
                "patient_id",
                "is only allowed for patient accounts",
            ));
        }
        validated(errs)
    }
}

/// Create a user (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<User>), Error> {
    // hashed before the transaction opens: no connection is held during the hashing
    let hash = password::hash(body.password).await?;
    let account = NewAccount {
        email: &body.email,
        role: body.role,
        display_name: &body.display_name,
        patient_id: body.patient_id,
    };
    // the account and its audit record commit together (or not at all)
    let mut tx = state.pool.begin().await?;
    let user = insert_hashed(&mut tx, &state.keys, &account, hash).await?;
    let event = AuditEvent::by(&auth, actions::USER_CREATE, "user").resource(user.id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// List users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<User>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<User>>, Error> {
    let paging = page.open::<Uuid>(
        &state.cursor_key,
        ListScope::new("/api/v1/users", auth.user_id),
    )?;
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(paging.after)
        .bind(paging.limit + 1)
        .fetch_all(&state.pool)
        .await?
        .into_iter()
        .map(|r| r.into_user(&state.keys))
        .collect::<Result<Vec<_>, _>>()?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_LIST, "user"))
        .await?;
    Ok(Json(paging.page(rows, |u| u.id)))
}

/// Read one user (admin).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    Path(id): Path<Uuid>,
) -> Result<Json<User>, Error> {
    let user = fetch(&state.pool, &state.keys, id).await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_READ, "user").resource(id))
        .await?;
    Ok(Json(user))
}

/// `PATCH /users/{id}` body; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// 1 to 200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub display_name: Option<String>,
    /// `false` deactivates the account and ends its sessions.
    pub active: Option<bool>,
    pub role: Option<Role>,
    /// Link a patient account to its record.
    pub patient_id: Option<Uuid>,
    /// 12 to 256 characters.
    #[schema(min_length = 12, max_length = 256)]
    pub password: Option<String>,
}

impl Validate for UpdateUser {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Some(n) = &self.display_name {
            if let Err(e) = check_display_name(n) {
                errs.push(e);
            }
        }
        if let Some(p) = &self.password {
            if let Err(e) = password::check_policy("password", p) {
                errs.push(e);
            }
        }
        validated(errs)
    }
}

/// Update or deactivate a user (admin).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "an admin deactivating or demoting their own account, or the patient record is already linked to another account", body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<User>, Error> {
    let current = fetch(&state.pool, &state.keys, id).await?;
    let role = body.role.unwrap_or(current.role.0);
    let patient_id = body.patient_id.or(current.patient_id);
    if patient_id.is_some() && role != Role::Patient {
        return Err(Error::validation(
            "patient_id",
            "is only allowed for patient accounts",
        ));
    }
    if id == auth.user_id
        && (body.active == Some(false) || body.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(Error::conflict(
            "admins cannot deactivate or demote themselves",
        ));
    }
    let password_changed = body.password.is_some();
    let hash = match body.password {
        Some(p) => Some(password::hash(p).await?),
        None => None,
    };
    let mut tx = state.pool.begin().await?;
    let sql = format!(
        "UPDATE users SET display_name = COALESCE($2, display_name), active = COALESCE($3, active), \
         role = $4, patient_id = $5, password_hash = COALESCE($6, password_hash), updated_at = now() \
         WHERE id = $1 RETURNING {USER_COLUMNS}"
    );
    let res = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(body.display_name.as_deref().map(str::trim))
        .bind(body.active)
        .bind(role.as_str())
        .bind(patient_id)
        .bind(hash)
        .fetch_one(&mut *tx)
        .await;
    let user = match res {
        Ok(u) => u.into_user(&state.keys)?,
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_patient_id_key") => {
            return Err(Error::conflict(
                "this patient record is already linked to an account",
            ))
        }
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_patient_fk") => {
            return Err(Error::validation("patient_id", "no such patient"))
        }
        Err(e) => return Err(e.into()),
    };
    // deactivation, a password change (or reset) and a role change end every session of the
    // account: its refresh tokens and access tokens stop working at once
    let ended_by = if !user.active {
        Some("user_deactivated")
    } else if password_changed {
        Some("password_changed")
    } else if body.role.is_some() {
        Some("role_changed")
    } else {
        None
    };
    match ended_by {
        // One's own password: every other session ends, the caller's (which just proved it holds
        // a valid session of the account) stays.
        Some(reason) if id == auth.user_id && reason == "password_changed" => {
            crate::auth::revoke_other_sessions(&mut tx, id, auth.session_id, reason).await?;
        }
        Some(reason) => {
            crate::auth::revoke_all_sessions(&mut tx, id, reason).await?;
        }
        None => {}
    }
    // the change and its audit record commit together (or not at all)
    let event = AuditEvent::by(&auth, actions::USER_UPDATE, "user").resource(id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(Json(user))
}

/// Remove an account's MFA (admin; e.g. a lost authenticator): its TOTP secret, recovery codes
/// and open login challenges go, and every session of the account ends (`mfa_reset`). Its next
/// login asks for no code, or opens a session restricted to enrolment when its role must use
/// MFA. Audited (`user.mfa_reset`) before it is kept. An admin cannot reset their own MFA
/// (`409`: another admin must, or `DELETE /auth/mfa` with a code).
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/reset", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem),
              (status = 409, description = "an admin resetting their own MFA", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reset_mfa(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    if id == auth.user_id {
        return Err(Error::conflict(
            "admins cannot reset their own multi-factor authentication",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(Error::NotFound);
    }
    crate::auth::mfa::remove(&mut tx, id).await?;
    crate::auth::revoke_all_sessions(&mut tx, id, "mfa_reset").await?;
    // the reset and its audit record commit together (or not at all)
    let event = AuditEvent::by(&auth, actions::USER_MFA_RESET, "user").resource(id);
    state.audit.write_in(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
