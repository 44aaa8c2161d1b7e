//! Postgres connection handling. The password never appears on a command line or in output:
//! child processes get the URL without it and the password through `PGPASSWORD`.

use std::fmt;
use std::str::FromStr;

use caduceus_contract::self_report::AuditCheckpoint;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid database URL: {0}")]
    Url(&'static str),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A database URL split into a password-free URL and the password.
#[derive(Clone)]
pub struct PgTarget {
    url: url::Url,
    password: Option<Zeroizing<String>>,
    database: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.url.as_str())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PgTarget {
    pub fn parse(s: &str) -> Result<Self, PgError> {
        let mut url = url::Url::parse(s).map_err(|_| PgError::Url("not a URL"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgError::Url("scheme must be postgres:// or postgresql://"));
        }
        let password = match url.password() {
            Some(p) => Some(Zeroizing::new(
                percent_encoding_decode(p).ok_or(PgError::Url("password is not valid UTF-8"))?,
            )),
            None => None,
        };
        url.set_password(None)
            .map_err(|_| PgError::Url("cannot strip password"))?;
        let database = percent_encoding_decode(url.path().trim_start_matches('/'))
            .ok_or(PgError::Url("database name is not valid UTF-8"))?;
        if database.is_empty() || database.contains('/') {
            return Err(PgError::Url("URL must name a database"));
        }
        Ok(Self {
            url,
            password,
            database,
        })
    }

    /// Database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Same server and credentials, another database.
    pub fn with_database(&self, database: &str) -> Self {
        let mut url = self.url.clone();
        url.set_path(&format!("/{}", url_path_encode(database)));
        Self {
            url,
            password: self.password.clone(),
            database: database.to_string(),
        }
    }

    /// The URL for libpq tools (no password).
    pub fn libpq_url(&self) -> &str {
        self.url.as_str()
    }

    /// Configure a pg_dump/pg_restore child: password via environment, never via argv.
    pub fn apply_env(&self, cmd: &mut tokio::process::Command) {
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p.as_str()),
            None => cmd.env_remove("PGPASSWORD"),
        };
    }

    pub async fn connect(&self) -> Result<PgConnection, PgError> {
        let mut opts = PgConnectOptions::from_str(self.url.as_str())?;
        if let Some(p) = &self.password {
            opts = opts.password(p.as_str());
        }
        Ok(opts.connect().await?)
    }
}

fn percent_encoding_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Characters escaped in a database name placed in a URL path (RFC 3986 unreserved stay as is).
const PATH_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn url_path_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_ESCAPE).to_string()
}

/// Quote an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `SHOW server_version`.
pub async fn server_version(conn: &mut PgConnection) -> Result<String, PgError> {
    let row = sqlx::query("SHOW server_version")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<String, _>(0)?)
}

/// Highest successfully applied sqlx migration, `None` when `_sqlx_migrations` does not exist.
pub async fn schema_version(conn: &mut PgConnection) -> Result<Option<i64>, PgError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(version)
}

pub async fn database_exists(conn: &mut PgConnection, name: &str) -> Result<bool, PgError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Number of tables outside the system schemas.
pub async fn user_table_count(conn: &mut PgConnection) -> Result<i64, PgError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%'",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// The audit chain head as the API defines it (`caduceus_api::store::audit::HEAD_SQL`, compared
/// in a test): the newest `audit_events` row or, when retention purged every row, the newest
/// purge anchor.
pub const AUDIT_HEAD_SQL: &str = "SELECT id, hash FROM ( \
       (SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1) \
       UNION ALL \
       (SELECT through_id, through_hash FROM audit_purges ORDER BY through_id DESC LIMIT 1) \
     ) h ORDER BY id DESC LIMIT 1";

async fn table_exists(conn: &mut PgConnection, table: &str) -> Result<bool, PgError> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// The audit chain head of a Caduceus API database; `None` without `audit_events` (not an API
/// database) or with an empty chain.
pub async fn audit_head(conn: &mut PgConnection) -> Result<Option<AuditCheckpoint>, PgError> {
    if !table_exists(conn, "audit_events").await? {
        return Ok(None);
    }
    let sql = if table_exists(conn, "audit_purges").await? {
        AUDIT_HEAD_SQL
    } else {
        "SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1"
    };
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as(sql).fetch_optional(&mut *conn).await?;
    Ok(head.map(|(id, hash)| AuditCheckpoint {
        id,
        hash: hex::encode(hash),
    }))
}

/// The API's migration creating `backup_restores` (idempotent; run on a restored database whose
/// schema predates it).
pub const BACKUP_RESTORES_DDL: &str =
    include_str!("../../api-server/migrations/0150_backup_restores.sql");

/// What `restore` leaves in the restored database for the API's audit trail.
#[derive(Debug, Clone)]
pub struct RestoreRecord<'a> {
    pub backup_name: &'a str,
    pub backup_time: DateTime<Utc>,
    pub key_id: &'a str,
    pub manifest_authenticated: bool,
    pub audit_head: Option<&'a AuditCheckpoint>,
    pub previous_database: Option<&'a str>,
    pub restored_at: DateTime<Utc>,
}

/// Inserts `record` into `backup_restores` (created when the restored schema predates it), which
/// `caduceus-api serve` turns into a `backup.restore` audit event. `false` (nothing written)
/// for a database without `audit_events`: not an API database, no audit trail to record in.
pub async fn record_restore(
    conn: &mut PgConnection,
    record: &RestoreRecord<'_>,
) -> Result<bool, PgError> {
    if !table_exists(conn, "audit_events").await? {
        return Ok(false);
    }
    sqlx::raw_sql(BACKUP_RESTORES_DDL)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO backup_restores (restored_at, backup_name, backup_time, key_id, \
           manifest_authenticated, audit_head_id, audit_head_hash, previous_database) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(record.restored_at)
    .bind(record.backup_name)
    .bind(record.backup_time)
    .bind(record.key_id)
    .bind(record.manifest_authenticated)
    .bind(record.audit_head.map(|h| h.id))
    .bind(record.audit_head.map(|h| h.hash.as_str()))
    .bind(record.previous_database)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// `COMMENT ON DATABASE` of a database the restore moved aside: this marker, then the RFC 3339
/// time of the swap. Expiry ([`expire_pre_restore`]) trusts it over the name.
pub const PRE_RESTORE_MARKER: &str = "caduceus-backup pre-restore ";

/// Marks `name` (just moved aside by a restore at `at`) for expiry.
pub async fn mark_pre_restore(
    conn: &mut PgConnection,
    name: &str,
    at: DateTime<Utc>,
) -> Result<(), PgError> {
    let comment = format!("{PRE_RESTORE_MARKER}{}", crate::manifest::rfc3339(at));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON DATABASE {} IS '{}'",
        quote_ident(name),
        comment.replace('\'', "''")
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// When `candidate` was moved aside by a restore of `db`: the time in its marker comment, else
/// (databases kept by agents before the marker) the `_pre_restore_<YYYYMMDDHHMMSS>` of its name
/// (`None`: not a pre-restore database of `db`, never dropped).
pub fn pre_restore_time(db: &str, candidate: &str, comment: Option<&str>) -> Option<DateTime<Utc>> {
    let pattern = derived_name(db, "_pre_restore_00000000000000");
    let prefix = &pattern[..pattern.len() - 14];
    let stamp = candidate.strip_prefix(prefix)?;
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(at) = comment
        .and_then(|c| c.strip_prefix(PRE_RESTORE_MARKER))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Drops the databases a restore of `db` moved aside more than `retention_days` ago (they hold
/// the PHI of before the restore), never `keep` (the one the running restore just moved aside).
/// Returns the dropped names; stops at the first failure.
pub async fn expire_pre_restore(
    conn: &mut PgConnection,
    db: &str,
    retention_days: u32,
    now: DateTime<Utc>,
    keep: Option<&str>,
) -> Result<Vec<String>, PgError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
         WHERE strpos(datname, '_pre_restore_') > 0 ORDER BY datname",
    )
    .fetch_all(&mut *conn)
    .await?;
    let cutoff = now - chrono::Duration::days(i64::from(retention_days));
    let mut dropped = Vec::new();
    for (name, comment) in rows {
        if keep == Some(name.as_str()) {
            continue;
        }
        if pre_restore_time(db, &name, comment.as_deref()).is_some_and(|at| at < cutoff) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            )))
            .execute(&mut *conn)
            .await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Build `<base><suffix>` within Postgres' 63-byte identifier limit (truncating `base`).
pub fn derived_name(base: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len());
    let mut cut = base.len().min(room);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &base[..cut], suffix)
}

/// Close a connection, ignoring errors on the way out.
pub async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_password_out_of_the_url() {
        let t =
            PgTarget::parse("postgres://app:p%40ss%2Fw@db.example:5432/caduceus?sslmode=require")
                .expect("parse");
        assert_eq!(t.database(), "caduceus");
        assert_eq!(
            t.libpq_url(),
            "postgres://app@db.example:5432/caduceus?sslmode=require"
        );
        assert_eq!(t.password.as_deref().map(String::as_str), Some("p@ss/w"));
        assert!(!format!("{t:?}").contains("p@ss"));
        let other = t.with_database("caduceus_restore_1");
        assert_eq!(
            other.libpq_url(),
            "postgres://app@db.example:5432/caduceus_restore_1?sslmode=require"
        );
        assert_eq!(
            other.password.as_deref().map(String::as_str),
            Some("p@ss/w")
        );
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in [
            "mysql://u:secret@h/db",
            "postgres://u:secret@h",
            "nonsense secret",
        ] {
            let err = PgTarget::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn pre_restore_databases_are_recognised_by_name_and_dated_by_their_marker() {
        use chrono::TimeZone;
        let at = |y, mo, d| {
            Utc.with_ymd_and_hms(y, mo, d, 3, 4, 5)
                .single()
                .expect("time")
        };
        // By the marker comment, which wins over the name.
        let marker = format!("{PRE_RESTORE_MARKER}2026-11-22T03:04:05.000Z");
        assert_eq!(
            pre_restore_time("app", "app_pre_restore_20200101000000", Some(&marker)),
            Some(at(2026, 11, 22))
        );
        // Without it (kept by an older agent): the name's time.
        assert_eq!(
            pre_restore_time("app", "app_pre_restore_20251003030405", None),
            Some(at(2025, 10, 3))
        );
        assert_eq!(
            pre_restore_time("app", "app_pre_restore_20251003030405", Some("notes")),
            Some(at(2025, 10, 3))
        );
        // Other databases are never candidates.
        for other in [
            "app",
            "app_restore_20251003030405",
            "app2_pre_restore_20251003030405",
            "other_pre_restore_20251003030405",
            "app_pre_restore_2025100303040",
            "app_pre_restore_20251003030405x",
        ] {
            assert_eq!(pre_restore_time("app", other, None), None, "{other}");
        }
        // A long database name, truncated like the restore truncates it.
        let long = "x".repeat(80);
        let name = derived_name(&long, "_pre_restore_20251003030405");
        assert_eq!(pre_restore_time(&long, &name, None), Some(at(2025, 10, 3)));
    }

    #[test]
    fn derived_names_fit_postgres_limits() {
        assert_eq!(derived_name("app", "_restore_1"), "app_restore_1");
        let long = "x".repeat(80);
        let d = derived_name(&long, "_restore_20261122050405");
        assert_eq!(d.len(), 63);
        assert!(d.ends_with("_restore_20261122050405"));
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}
