//! Postgres connection handling. The password never appears on a command line or in output:
//! child processes get the URL without it and the password through `PGPASSWORD`.

use std::fmt;
use std::str::FromStr;

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
    fn derived_names_fit_postgres_limits() {
        assert_eq!(derived_name("app", "_restore_1"), "app_restore_1");
        let long = "x".repeat(80);
        let d = derived_name(&long, "_restore_20261122050405");
        assert_eq!(d.len(), 63);
        assert!(d.ends_with("_restore_20261122050405"));
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}
