//! Database roles: the owner (migrations, DDL; the credentials `caduceus-api db-setup` runs with)
//! and the API's runtime role, which `serve` connects as. The runtime role is neither superuser
//! nor owner: it may read and write the clinical tables, only SELECT and INSERT the audit trail
//! (`audit_events`; `audit_purges` read-only), read the migrations table, purge expired audit
//! rows only through `audit_purge_expired` (migration 0110), and has no TRUNCATE, no DDL and no
//! CREATE on the schema. The append-only triggers stay as the second line.

use sqlx::{PgPool, Postgres, Transaction};

/// Tables the runtime role may read and append to, never change.
pub const APPEND_ONLY: &[&str] = &["audit_events"];
/// Tables the runtime role may only read.
pub const READ_ONLY: &[&str] = &[
    "audit_purges",
    "_sqlx_migrations",
    "drug_substances",
    "drug_class_members",
    "drug_terms",
    "drug_interactions",
];

/// What `db-setup` did to the runtime role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleAction {
    Created,
    /// Existed; its password (and attributes) set again.
    Updated,
    /// Existed and the owner may not manage roles (CloudNativePG's managed roles, a role
    /// created by the database's administrator): left as it is, grants applied.
    Kept,
}

/// Why the runtime role cannot be set up or used. Messages name roles and tables, never
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("{0:?} is not a valid role name (lower-case letters, digits and _, starting with a letter or _, at most 63)")]
    InvalidName(String),
    #[error("the runtime role must not be the owner: db-setup connects as {0:?}, the role it sets up must be another one")]
    SameAsOwner(String),
    #[error("role {role:?} does not exist and {owner:?} may not create roles: create it (CloudNativePG: a managed role) or run db-setup as a role with CREATEROLE")]
    CannotCreate { role: String, owner: String },
    #[error("DATABASE_URL connects as {0:?}, a superuser: serve needs the API's runtime role (run `caduceus-api db-setup` with the owner's credentials, then connect as the role it sets up)")]
    Superuser(String),
    #[error("DATABASE_URL connects as {role:?}, which owns (or may act as the owner of) {tables}: serve needs the runtime role, not the owner (run `caduceus-api db-setup` with the owner's credentials)")]
    Owner { role: String, tables: String },
    #[error("DATABASE_URL connects as {0:?}, which may UPDATE, DELETE or TRUNCATE the audit trail: run `caduceus-api db-setup` with the owner's credentials to set its grants")]
    AuditWritable(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks a role name (it is quoted as an identifier anyway).
pub fn valid_role_name(name: &str) -> Result<(), RoleError> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(RoleError::InvalidName(name.to_string()))
    }
}

/// Server-side `format(template, args...)` with `%I`/`%L` quoting, so no identifier or literal is
/// ever spliced by hand.
async fn formatted(
    tx: &mut Transaction<'_, Postgres>,
    template: &str,
    args: &[&str],
) -> Result<String, sqlx::Error> {
    let placeholders: Vec<String> = (2..args.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT format($1, {})", placeholders.join(", "));
    // Only numbered placeholders are spliced; every value is bound.
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(template);
    for a in args {
        q = q.bind(*a);
    }
    q.fetch_one(&mut **tx).await
}

async fn exec_formatted(
    tx: &mut Transaction<'_, Postgres>,
    template: &str,
    args: &[&str],
) -> Result<(), sqlx::Error> {
    let sql = formatted(tx, template, args).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates (or updates) the runtime role `role` with `password` and sets its grants, as the
/// owner `pool` connects as, after the migrations. Idempotent: run on every deployment (the
/// grants then cover tables added by new migrations). The password reaches the server only as a
/// SCRAM-SHA-256 verifier.
pub async fn setup_runtime_role(
    owner: &PgPool,
    role: &str,
    password: &str,
) -> Result<RoleAction, RoleError> {
    valid_role_name(role)?;
    let mut tx = owner.begin().await?;
    let (me, can_manage): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *tx)
    .await?;
    if me == role {
        return Err(RoleError::SameAsOwner(me));
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *tx)
            .await?;
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    const ATTRIBUTES: &str =
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT";
    let action = match (exists, can_manage) {
        (false, false) => {
            return Err(RoleError::CannotCreate {
                role: role.to_string(),
                owner: me,
            })
        }
        (false, true) => {
            let template = format!("CREATE ROLE %I {ATTRIBUTES} PASSWORD %L");
            exec_formatted(&mut tx, &template, &[role, &verifier]).await?;
            RoleAction::Created
        }
        (true, true) => {
            let template = format!("ALTER ROLE %I {ATTRIBUTES} PASSWORD %L");
            exec_formatted(&mut tx, &template, &[role, &verifier]).await?;
            RoleAction::Updated
        }
        (true, false) => RoleAction::Kept,
    };
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *tx)
        .await?;
    exec_formatted(
        &mut tx,
        "GRANT CONNECT ON DATABASE %I TO %I",
        &[&database, role],
    )
    .await?;
    for template in [
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "REVOKE ALL ON SCHEMA public FROM %1$I",
        "GRANT USAGE ON SCHEMA public TO %1$I",
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %1$I",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %1$I",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %1$I",
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %1$I",
        "GRANT EXECUTE ON FUNCTION audit_purge_expired(integer) TO %1$I",
    ] {
        exec_formatted(&mut tx, template, &[role]).await?;
    }
    for (tables, revoke) in [
        (APPEND_ONLY, "REVOKE UPDATE, DELETE ON %I FROM %I"),
        (READ_ONLY, "REVOKE INSERT, UPDATE, DELETE ON %I FROM %I"),
    ] {
        for table in tables {
            exec_formatted(&mut tx, revoke, &[table, role]).await?;
        }
    }
    tx.commit().await?;
    Ok(action)
}

/// Refuses a connection that is a superuser, owns (or may act as the owner of) a table, or may
/// change the audit trail: what `serve` checks before it serves anything.
pub async fn check_runtime_role(pool: &PgPool) -> Result<(), RoleError> {
    let (role, superuser, owned, audit_writable): (String, bool, Option<String>, bool) =
        sqlx::query_as(
            "SELECT current_user::text, r.rolsuper, \
               (SELECT string_agg(c.relname::text, ', ' ORDER BY c.relname) \
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
                   AND pg_has_role(current_user, c.relowner, 'MEMBER')), \
               has_table_privilege('audit_events', 'UPDATE') \
                 OR has_table_privilege('audit_events', 'DELETE') \
                 OR has_table_privilege('audit_events', 'TRUNCATE') \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(pool)
        .await?;
    if superuser {
        return Err(RoleError::Superuser(role));
    }
    if let Some(tables) = owned {
        return Err(RoleError::Owner { role, tables });
    }
    if audit_writable {
        return Err(RoleError::AuditWritable(role));
    }
    Ok(())
}
