//! A throw-away database on the Postgres of `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) with the API's schema, its runtime role and API
//! keys, for tests that run the real `caduceus-api serve`; dropped at the end.

use std::process::{Command, Output};

use super::api_process::{db_setup, generate_keys, output_text};

/// The URL of the Postgres the tests create their databases on (its owner's).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with database `db` (user, host and parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let start = base.find("://").map_or(0, |i| i + 3);
    let root = base[start..].find('/').map_or(base, |i| &base[..start + i]);
    if query.is_empty() {
        format!("{root}/{db}")
    } else {
        format!("{root}/{db}?{query}")
    }
}

/// `psql` on [`admin_url`], stopping at the first error.
pub fn psql(sql: &str) -> Output {
    Command::new("psql")
        .arg(admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs")
}

/// A fresh database `<prefix>_<pid>_<nanos>` after `caduceus-api db-setup`, with the URL `serve`
/// connects with (the runtime role) and keys from `caduceus-api keys generate`.
pub struct Database {
    pub name: String,
    pub app_url: String,
    pub keys: tempfile::TempDir,
}

impl Database {
    pub fn create(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        let out = psql(&format!("CREATE DATABASE \"{name}\""));
        assert!(
            out.status.success(),
            "create database: {}",
            output_text(&out)
        );
        let keys = generate_keys();
        let app_url = db_setup(&with_database(&admin_url(), &name));
        Self {
            name,
            app_url,
            keys,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ));
    }
}
