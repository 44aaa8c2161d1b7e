//! `verify`: full download, authentication and `pg_restore --list` of a backup.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::archive::{authenticated_manifest, decrypt_archive, Sink};
use super::tool::{finish_tool, spawn_tool};
use super::Error;
use crate::key::BackupKey;
use crate::store::Store;
use caduceus_contract::self_report::AuditCheckpoint;

/// Result of `verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub key_id: String,
    /// Entries in the dump's table of contents (`pg_restore --list`).
    pub toc_entries: usize,
    /// The manifest's MAC verified (`false`: a backup before manifest MACs, accepted with
    /// `--allow-unauthenticated`).
    pub authenticated: bool,
    /// The audit chain head recorded in the manifest.
    pub audit_head: Option<AuditCheckpoint>,
}

/// `verify NAME|latest`: full download, authentication of every chunk, SHA-256 against the
/// manifest, and `pg_restore --list` on the decrypted dump.
pub async fn verify(
    store: &Store,
    key: &BackupKey,
    name: &str,
    allow_unauthenticated: bool,
) -> Result<Verified, Error> {
    let (manifest, authenticated) =
        authenticated_manifest(store, key, name, allow_unauthenticated).await?;
    let mut cmd = Command::new("pg_restore");
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let (mut child, stderr) = spawn_tool("pg_restore", &mut cmd, None)?;
    let stdout = child.stdout.take();
    let toc = tokio::spawn(async move {
        let mut out = String::new();
        if let Some(mut s) = stdout {
            let _ = s.read_to_string(&mut out).await;
        }
        out
    });
    let Some(stdin) = child.stdin.take() else {
        return Err(Error::Invalid("pg_restore stdin not captured".into()));
    };
    let decrypted = match Sink::new(stdin, true) {
        Ok(sink) => decrypt_archive(store, &manifest, key, sink).await,
        Err(e) => Err(e),
    };
    if let Err(e) = decrypted {
        let _ = child.start_kill();
        return Err(e);
    }
    finish_tool("pg_restore", child, stderr).await?;
    let toc = toc.await.unwrap_or_default();
    let toc_entries = toc
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count();
    if toc_entries == 0 {
        return Err(Error::Tool {
            tool: "pg_restore",
            status: "exit status: 0".into(),
            message: "the dump's table of contents is empty".into(),
        });
    }
    Ok(Verified {
        name: manifest.name,
        size: manifest.size,
        sha256: manifest.sha256,
        key_id: manifest.key_id,
        toc_entries,
        authenticated,
        audit_head: manifest.audit_head,
    })
}
