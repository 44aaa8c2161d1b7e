//! User accounts (admin): `POST /users`, `GET /users`, `GET/PATCH /users/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{actions, AuditEvent};
use crate::auth::{password, Authorized};
use crate::error::{ApiJson, Error, FieldError, Validate};
use crate::pagination::{Page, PageParams};
use crate::rbac::{perm, Role};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", get(read).patch(update))
}

/// A user account (never includes the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, FromRow, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: RoleName,
    pub display_name: String,
    pub active: bool,
    pub patient_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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

const USER_COLUMNS: &str =
    "id, email, role, display_name, active, patient_id, created_at, updated_at";

pub fn check_email(email: &str) -> Result<(), FieldError> {
    let e = email.trim();
    let ok = e.len() <= 254
        && !e.chars().any(char::is_whitespace)
        && matches!(e.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("email", "must be a valid email address"))
    }
}

pub fn check_display_name(name: &str) -> Result<(), FieldError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 200 {
        return Err(FieldError::new(
            "display_name",
            "must be 1 to 200 characters",
        ));
    }
    Ok(())
}

/// Fetch one user.
pub async fn fetch(pool: &PgPool, id: Uuid) -> Result<User, Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound)
}

/// Create a user (hashes the password). Duplicate email → 409.
pub async fn insert(
    pool: &PgPool,
    email: &str,
    password: String,
    role: Role,
    display_name: &str,
    patient_id: Option<Uuid>,
) -> Result<User, Error> {
    let hash = password::hash(password).await?;
    let sql = format!(
        "INSERT INTO users (id, email, password_hash, role, display_name, patient_id) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
    );
    let res = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(email.trim())
        .bind(hash)
        .bind(role.as_str())
        .bind(display_name.trim())
        .bind(patient_id)
        .fetch_one(pool)
        .await;
    match res {
        Ok(u) => Ok(u),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_email_key") => {
            Err(Error::conflict("a user with this email already exists"))
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

/// `POST /users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub password: String,
    pub role: Role,
    pub display_name: String,
    /// Required for (and only allowed on) `patient` accounts: the linked patient record.
    pub patient_id: Option<Uuid>,
}

impl Validate for CreateUser {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if let Err(e) = check_email(&self.email) {
            errs.push(e);
        }
        if let Err(e) = password::check_policy("password", &self.password) {
            errs.push(e);
        }
        if let Err(e) = check_display_name(&self.display_name) {
            errs.push(e);
        }
        if self.patient_id.is_some() && self.role != Role::Patient {
            errs.push(FieldError::new(
                "patient_id",
                "is only allowed for patient accounts",
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
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
    let user = insert(
        &state.pool,
        &body.email,
        body.password,
        body.role,
        &body.display_name,
        body.patient_id,
    )
    .await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_CREATE, "user").resource(user.id))
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// List users (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<User>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<User>>, Error> {
    let limit = page.limit()?;
    let cursor = page.cursor_uuid()?;
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql))
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_LIST, "user"))
        .await?;
    Ok(Json(Page::from_rows(rows, limit, |u| u.id.to_string())))
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
    let user = fetch(&state.pool, id).await?;
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
    pub display_name: Option<String>,
    /// `false` deactivates the account and ends its sessions.
    pub active: Option<bool>,
    pub role: Option<Role>,
    /// Link a patient account to its record.
    pub patient_id: Option<Uuid>,
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
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Update or deactivate a user (admin).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Authorized(auth, _): Authorized<perm::UsersManage>,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<User>, Error> {
    let current = fetch(&state.pool, id).await?;
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
    let res = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(body.display_name.as_deref().map(str::trim))
        .bind(body.active)
        .bind(role.as_str())
        .bind(patient_id)
        .bind(hash)
        .fetch_one(&mut *tx)
        .await;
    let user = match res {
        Ok(u) => u,
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
    if !user.active || body.role.is_some() {
        // deactivation or a role change ends every session of the account
        sqlx::query(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'user_deactivated' \
             WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    state
        .audit
        .record(AuditEvent::by(&auth, actions::USER_UPDATE, "user").resource(id))
        .await?;
    Ok(Json(user))
}
