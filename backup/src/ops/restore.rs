//! `restore`: a verified restore into a fresh database swapped in by renaming, and the expiry of
//! databases earlier restores moved aside.

use std::process::Stdio;

use chrono::{DateTime, Utc};
use tokio::process::Command;

use super::archive::{authenticated_manifest, decrypt_archive, Sink};
use super::tool::{finish_tool, spawn_tool};
use super::Error;
use crate::key::BackupKey;
use crate::manifest::Manifest;
use crate::pg::{self, quote_ident, PgError, PgTarget};
use crate::store::Store;
use caduceus_contract::self_report::AuditCheckpoint;

/// Result of `restore`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The restored backup (`null` when skipped).
    pub name: Option<String>,
    pub database: String,
    /// The database that held `database` before the swap, kept for inspection
    /// (`null` when `database` did not exist).
    pub previous_database: Option<String>,
    pub schema_version: Option<i64>,
    /// `--if-empty` and the database already had tables: nothing was done.
    pub skipped: bool,
    /// The manifest's MAC verified (`false`: a backup before manifest MACs, restored with
    /// `--allow-unauthenticated`).
    pub authenticated: bool,
    /// The backup's audit chain head (equal to the restored database's), `null` without one.
    pub audit_head: Option<AuditCheckpoint>,
    /// The same as `<id>:<hash>`, for `GET /audit-events/verify?checkpoint=…`.
    pub audit_checkpoint: Option<String>,
    /// A `backup_restores` row was written for the API to audit the restore (`false`: the
    /// database has no audit trail).
    pub restore_recorded: bool,
    /// Databases moved aside by earlier restores, dropped after the grace period.
    pub expired_pre_restore_databases: Vec<String>,
    /// Problems after the swap that did not undo the restore.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Restored {
    fn skipped(database: String) -> Self {
        Self {
            name: None,
            database,
            previous_database: None,
            schema_version: None,
            skipped: true,
            authenticated: false,
            audit_head: None,
            audit_checkpoint: None,
            restore_recorded: false,
            expired_pre_restore_databases: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Default of `--pre-restore-retention-days`: how long a database replaced by a restore is
/// kept (`<db>_pre_restore_<ts>`) before `restore` or `backup` drops it.
pub const DEFAULT_PRE_RESTORE_RETENTION_DAYS: u32 = 7;

/// How `restore` runs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Database to connect to for CREATE/ALTER/DROP DATABASE.
    pub maintenance_db: String,
    /// Do nothing when the target already has tables.
    pub if_empty: bool,
    /// Accept a manifest without a MAC (a backup made before manifest MACs).
    pub allow_unauthenticated: bool,
    /// Drop `<db>_pre_restore_*` databases older than this many days after the restore.
    pub pre_restore_retention_days: u32,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            maintenance_db: "postgres".into(),
            if_empty: false,
            allow_unauthenticated: false,
            pre_restore_retention_days: DEFAULT_PRE_RESTORE_RETENTION_DAYS,
        }
    }
}

/// `restore NAME|latest`: restore an authenticated backup ([`authenticated_manifest`]) into a
/// fresh database `<db>_restore_<ts>`, verify it (checksum, schema version, audit chain head),
/// record the restore in it for the API's audit trail (`backup_restores`), then swap it in by
/// renaming (`<db>` → `<db>_pre_restore_<ts>`, marked with the time, fresh → `<db>`) in one
/// transaction. On any failure the fresh database is dropped and `<db>` is untouched. With
/// `if_empty` (bootstrap of a new platform) nothing happens when `<db>` already has tables.
/// Afterwards, databases earlier restores moved aside more than the grace period ago are dropped.
pub async fn restore(
    store: &Store,
    key: &BackupKey,
    name: &str,
    target: &PgTarget,
    options: &RestoreOptions,
    now: DateTime<Utc>,
) -> Result<Restored, Error> {
    let maintenance_db = options.maintenance_db.as_str();
    let if_empty = options.if_empty;
    let ts = now.format("%Y%m%d%H%M%S").to_string();
    let db = target.database().to_string();
    let fresh = pg::derived_name(&db, &format!("_restore_{ts}"));
    let previous = pg::derived_name(&db, &format!("_pre_restore_{ts}"));
    if db == maintenance_db {
        return Err(Error::Invalid(format!(
            "cannot restore over the maintenance database {maintenance_db}"
        )));
    }

    let admin = target.with_database(maintenance_db);
    let mut conn = admin.connect().await?;
    if if_empty {
        // Serialises concurrent bootstrap restores of the same database (held until `conn`
        // closes); the second one then finds the database populated and skips.
        sqlx::query("SELECT pg_advisory_lock(hashtext($1))::text")
            .bind(format!("caduceus-backup restore {db}"))
            .execute(&mut conn)
            .await
            .map_err(PgError::from)?;
        if pg::database_exists(&mut conn, &db).await? {
            let mut existing = target.connect().await?;
            let tables = pg::user_table_count(&mut existing).await;
            pg::close(existing).await;
            if tables? > 0 {
                pg::close(conn).await;
                return Ok(Restored::skipped(db));
            }
        }
    }
    let (manifest, authenticated) =
        match authenticated_manifest(store, key, name, options.allow_unauthenticated).await {
            Ok(m) => m,
            Err(e) => {
                pg::close(conn).await;
                return Err(e);
            }
        };
    let backup_time = manifest.parsed_time().ok_or_else(|| {
        Error::Invalid(format!(
            "manifest of backup {} has no valid time",
            manifest.name
        ))
    })?;
    let replaces = pg::database_exists(&mut conn, &db).await?;
    if pg::database_exists(&mut conn, &fresh).await? {
        pg::close(conn).await;
        return Err(Error::Invalid(format!("database {fresh} already exists")));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(&fresh)
    )))
    .execute(&mut conn)
    .await
    .map_err(PgError::from)?;

    let restored = async {
        restore_into(store, key, &manifest, &target.with_database(&fresh)).await?;
        let mut check = target.with_database(&fresh).connect().await?;
        let restored_schema = pg::schema_version(&mut check).await;
        pg::close(check).await;
        let restored_schema = restored_schema?;
        if restored_schema != manifest.schema_version {
            return Err(Error::RestoreVerification(format!(
                "schema version {restored_schema:?} differs from the manifest's {:?}",
                manifest.schema_version
            )));
        }
        let mut fresh_conn = target.with_database(&fresh).connect().await?;
        let recorded = async {
            let restored_head = pg::audit_head(&mut fresh_conn).await?;
            if manifest.audit_head.is_some() && restored_head != manifest.audit_head {
                return Err(Error::RestoreVerification(
                    "the restored audit chain head differs from the manifest's".into(),
                ));
            }
            let record = pg::RestoreRecord {
                backup_name: &manifest.name,
                backup_time,
                key_id: &manifest.key_id,
                manifest_authenticated: authenticated,
                audit_head: manifest.audit_head.as_ref(),
                previous_database: replaces.then_some(previous.as_str()),
                restored_at: now,
            };
            Ok(pg::record_restore(&mut fresh_conn, &record).await?)
        }
        .await;
        pg::close(fresh_conn).await;
        let recorded = recorded?;
        let previous_database = swap(&mut conn, &db, &fresh, &previous, now).await?;
        Ok((previous_database, recorded))
    }
    .await;
    match restored {
        Ok((previous_database, restore_recorded)) => {
            let mut warnings = Vec::new();
            let expired = match pg::expire_pre_restore(
                &mut conn,
                &db,
                options.pre_restore_retention_days,
                now,
                previous_database.as_deref(),
            )
            .await
            {
                Ok(dropped) => dropped,
                Err(e) => {
                    warnings.push(format!(
                        "dropping expired pre-restore databases failed: {e}"
                    ));
                    Vec::new()
                }
            };
            pg::close(conn).await;
            let audit_checkpoint = manifest.audit_head.as_ref().map(ToString::to_string);
            Ok(Restored {
                name: Some(manifest.name),
                database: db,
                previous_database,
                schema_version: manifest.schema_version,
                skipped: false,
                authenticated,
                audit_head: manifest.audit_head,
                audit_checkpoint,
                restore_recorded,
                expired_pre_restore_databases: expired,
                warnings,
            })
        }
        Err(e) => {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&fresh)
            )))
            .execute(&mut conn)
            .await;
            pg::close(conn).await;
            Err(e)
        }
    }
}

/// Drop the databases restores of `target`'s database moved aside more than `retention_days`
/// ago (connected to `target` itself: `pg_database` is shared). Returns the dropped names.
pub async fn expire_pre_restore(
    target: &PgTarget,
    retention_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Error> {
    let mut conn = target.connect().await?;
    let dropped =
        pg::expire_pre_restore(&mut conn, target.database(), retention_days, now, None).await;
    pg::close(conn).await;
    Ok(dropped?)
}

/// Stream the decrypted dump into `pg_restore --exit-on-error` against `fresh`.
async fn restore_into(
    store: &Store,
    key: &BackupKey,
    manifest: &Manifest,
    fresh: &PgTarget,
) -> Result<(), Error> {
    let mut cmd = Command::new("pg_restore");
    cmd.arg("--exit-on-error")
        .arg("--no-owner")
        .arg("--no-privileges")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let (mut child, stderr) = spawn_tool("pg_restore", &mut cmd, Some(fresh))?;
    let Some(stdin) = child.stdin.take() else {
        return Err(Error::Invalid("pg_restore stdin not captured".into()));
    };
    let decrypted = match Sink::new(stdin, false) {
        Ok(sink) => decrypt_archive(store, manifest, key, sink).await,
        Err(e) => Err(e),
    };
    match decrypted {
        Ok(()) => finish_tool("pg_restore", child, stderr).await,
        Err(Error::Io { what, source }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            // pg_restore stopped early: its own error is the useful one.
            finish_tool("pg_restore", child, stderr).await?;
            Err(Error::Io { what, source })
        }
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(e)
        }
    }
}

/// Atomically put `fresh` in place of `db`; returns the name the old database was moved to
/// (marked as moved aside `at`, [`pg::mark_pre_restore`], in the same transaction).
async fn swap(
    conn: &mut sqlx::PgConnection,
    db: &str,
    fresh: &str,
    previous: &str,
    at: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    let exists = pg::database_exists(conn, db).await?;
    let mut last_err = None;
    // New sessions can race the rename; block them, end existing ones, retry a few times.
    for _ in 0..5 {
        if exists {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                quote_ident(db)
            )))
            .execute(&mut *conn)
            .await
            .map_err(PgError::from)?;
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(db)
            .execute(&mut *conn)
            .await
            .map_err(PgError::from)?;
        }
        let attempt = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            if exists {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(db),
                    quote_ident(previous)
                )))
                .execute(&mut *tx)
                .await?;
                pg::mark_pre_restore(&mut tx, previous, at)
                    .await
                    .map_err(|e| match e {
                        PgError::Sql(e) => e,
                        PgError::Url(m) => sqlx::Error::Protocol(m.into()),
                    })?;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(fresh),
                quote_ident(db)
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        match attempt {
            Ok(()) => {
                if exists {
                    // Keep the previous database reachable for inspection under its new name.
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                        quote_ident(previous)
                    )))
                    .execute(&mut *conn)
                    .await
                    .map_err(PgError::from)?;
                }
                return Ok(exists.then(|| previous.to_string()));
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    if exists {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            quote_ident(db)
        )))
        .execute(&mut *conn)
        .await;
    }
    Err(match last_err {
        Some(e) => PgError::from(e).into(),
        None => Error::Invalid("swap failed".into()),
    })
}
