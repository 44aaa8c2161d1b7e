//! The agent's operations: backup, list, verify, prune, restore.

use std::process::Stdio;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::auth::{AuthError, Authenticity, MacKey};
use crate::crypto::{CryptoError, StreamDecryptor, StreamEncryptor, DEFAULT_CHUNK_SIZE};
use crate::key::BackupKey;
use crate::manifest::{backup_name, rfc3339, select_for_pruning, Manifest, MANIFEST_VERSION};
use crate::pg::{self, quote_ident, PgError, PgTarget};
use crate::store::{Store, StoreError, MAX_PARTS_IN_FLIGHT};
use caduceus_contract::self_report::AuditCheckpoint;

/// Every failure of the agent; `Display` is the one-line message printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot run {tool}: {source} (is it installed and on PATH?)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {message}")]
    Tool {
        tool: &'static str,
        status: String,
        message: String,
    },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("archive size mismatch: manifest says {expected} bytes, store has {actual} (truncated or replaced)")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("archive checksum mismatch: SHA-256 differs from the manifest")]
    ChecksumMismatch,
    #[error("restored database failed verification: {0}")]
    RestoreVerification(String),
    #[error("{0}")]
    Invalid(String),
}

/// Pipe capacity to request for the streams to and from `pg_dump`/`pg_restore`: the Linux
/// default of 64 KiB makes every 256 KiB chunk several partial writes, each a wake-up of both
/// processes. 1 MiB is the default `fs.pipe-max-size`, so unprivileged processes may ask for it.
const PIPE_CAPACITY: usize = 1 << 20;

/// Best effort: a kernel that refuses (lower `fs.pipe-max-size`) leaves the default size,
/// which is only slower.
fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_CAPACITY);
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Starts `cmd`, the PostgreSQL tool `tool`, killed when dropped, with its stderr collected
/// ([`collect_stderr`]); with a `target`, connected to it (`--no-password --dbname <url>` after
/// the arguments already given, and its environment).
fn spawn_tool(
    tool: &'static str,
    cmd: &mut Command,
    target: Option<&PgTarget>,
) -> Result<(Child, tokio::task::JoinHandle<String>), Error> {
    if let Some(target) = target {
        cmd.arg("--no-password")
            .arg("--dbname")
            .arg(target.libpq_url());
        target.apply_env(cmd);
    }
    cmd.stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|source| Error::Spawn { tool, source })?;
    let stderr = collect_stderr(&mut child);
    Ok((child, stderr))
}

/// Collects a child's stderr (bounded) to explain failures.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 8192 {
                        let cut = kept.len() - 4096;
                        kept.drain(..cut);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// The most useful single line of a tool's stderr.
fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.contains("error:"))
        .or(lines.last())
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_else(|| "no error output".to_string())
}

async fn finish_tool(
    tool: &'static str,
    mut child: Child,
    stderr: tokio::task::JoinHandle<String>,
) -> Result<(), Error> {
    let status = child
        .wait()
        .await
        .map_err(io("waiting for a child process"))?;
    let stderr = stderr.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool,
            status: status.to_string(),
            message: summarize(&stderr),
        })
    }
}

/// Read until `buf` holds `n` bytes or the input ends.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
    buf.clear();
    buf.resize(n, 0);
    let mut filled = 0;
    while filled < n {
        let k = r.read(&mut buf[filled..]).await?;
        if k == 0 {
            break;
        }
        filled += k;
    }
    buf.truncate(filled);
    Ok(())
}

/// `backup`: pg_dump -Fc → encrypt → multipart upload → manifest. Returns the manifest.
pub async fn backup(
    store: &Store,
    target: &PgTarget,
    key: &BackupKey,
    now: DateTime<Utc>,
) -> Result<Manifest, Error> {
    let mut conn = target.connect().await?;
    let postgres_version = pg::server_version(&mut conn).await?;
    let schema_version = pg::schema_version(&mut conn).await?;
    // The audit chain head is read in the snapshot pg_dump dumps (exported from a transaction
    // kept open until the dump ends): the manifest's head is exactly the dump's.
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(PgError::from)?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::from)?;
    let audit_head = pg::audit_head(&mut conn).await?;

    let name = backup_name(now);
    let mut cmd = Command::new("pg_dump");
    cmd.arg("--format=custom")
        .arg(format!("--snapshot={snapshot}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (mut child, stderr) = spawn_tool("pg_dump", &mut cmd, Some(target))?;
    let Some(mut stdout) = child.stdout.take() else {
        return Err(Error::Invalid("pg_dump stdout not captured".into()));
    };
    widen_pipe(&stdout);

    let mut writer = store.upload_archive(&name).await?;
    let streamed = async {
        let mut enc = StreamEncryptor::new(key, DEFAULT_CHUNK_SIZE);
        let chunk = enc.chunk_size();
        let mut hasher = Sha256::new();
        let mut size = enc.header().len() as u64;
        hasher.update(enc.header());
        writer.write(enc.header());
        let mut cur = Vec::with_capacity(chunk + crate::crypto::TAG_LEN);
        let mut next = Vec::with_capacity(chunk + crate::crypto::TAG_LEN);
        fill(&mut stdout, &mut cur, chunk)
            .await
            .map_err(io("reading pg_dump output"))?;
        loop {
            let last = if cur.len() < chunk {
                true
            } else {
                fill(&mut stdout, &mut next, chunk)
                    .await
                    .map_err(io("reading pg_dump output"))?;
                next.is_empty()
            };
            if last {
                break;
            }
            enc.encrypt_chunk(&mut cur)?;
            hasher.update(&cur);
            size += cur.len() as u64;
            writer
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(StoreError::from)?;
            writer.write(&cur);
            std::mem::swap(&mut cur, &mut next);
        }
        enc.encrypt_last(&mut cur)?;
        hasher.update(&cur);
        size += cur.len() as u64;
        writer.write(&cur);
        Ok::<_, Error>((size, hex::encode(hasher.finalize())))
    }
    .await;
    let (size, sha256) = match streamed {
        Ok(v) => v,
        Err(e) => {
            let _ = child.start_kill();
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    // The archive becomes visible only if pg_dump succeeded.
    let dumped = finish_tool("pg_dump", child, stderr).await;
    pg::close(conn).await; // ends the snapshot's transaction
    if let Err(e) = dumped {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.finish().await.map_err(StoreError::from)?;

    let mut manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        archive: Store::archive_object(&name),
        name,
        time: rfc3339(now),
        size,
        sha256,
        key_id: key.key_id().to_string(),
        postgres_version,
        schema_version,
        database: target.database().to_string(),
        audit_head,
        mac: None,
    };
    let mac_key = MacKey::derive(key);
    mac_key.sign_manifest(&mut manifest);
    store.put_manifest(&manifest).await?;
    store.put_pointer(&mac_key.pointer(&manifest)).await?;
    Ok(manifest)
}

/// The manifest of `name` (or `latest`), refused unless authenticated under `key`
/// ([`crate::auth`]); manifests without a MAC (before manifest MACs) only with
/// `allow_unauthenticated`. Returns it and whether its MAC verified.
pub async fn authenticated_manifest(
    store: &Store,
    key: &BackupKey,
    name: &str,
    allow_unauthenticated: bool,
) -> Result<(Manifest, bool), Error> {
    let mac_key = MacKey::derive(key);
    let manifest = if name == "latest" {
        let listed = store.list().await?;
        if let Some(newest) = listed.first() {
            if newest.key_id != key.key_id() {
                return Err(CryptoError::KeyMismatch {
                    archive: newest.key_id.clone(),
                    key: key.key_id().to_string(),
                }
                .into());
            }
        }
        let pointer = store.pointer().await?;
        mac_key
            .resolve_latest(&listed, pointer.as_ref(), allow_unauthenticated)?
            .cloned()
            .ok_or(StoreError::Empty)?
    } else {
        store.manifest(name).await?
    };
    // A backup of another key is reported as such (rather than as a failed MAC).
    if manifest.key_id != key.key_id() {
        return Err(CryptoError::KeyMismatch {
            archive: manifest.key_id.clone(),
            key: key.key_id().to_string(),
        }
        .into());
    }
    mac_key.accept_named(&manifest, allow_unauthenticated)?;
    let authenticated = mac_key.check_manifest(&manifest) == Authenticity::Authentic;
    Ok((manifest, authenticated))
}

/// Where decrypted plaintext goes: a child's stdin, written by a blocking thread.
///
/// `pg_restore` reads its input 4 KiB at a time. Fed from the async runtime, every read that
/// frees pipe space woke the writer through epoll and a runtime thread for another small
/// write (tens of thousands of wake-ups per 100 MB, measurable next to a CPU-bound restore on
/// two cores). A blocking `write_all` of a whole chunk instead waits for space inside the
/// kernel. `tolerate_close` lets the child stop reading early (`pg_restore --list` reads only
/// the table of contents); decryption still runs to the end.
struct Sink {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Sink {
    fn new(stdin: tokio::process::ChildStdin, tolerate_close: bool) -> Result<Self, Error> {
        let fd = stdin
            .into_owned_fd()
            .map_err(io("taking pg_restore's stdin"))?;
        rustix::io::ioctl_fionbio(&fd, false)
            .map_err(|e| io("making pg_restore's stdin blocking")(e.into()))?;
        widen_pipe(&fd);
        let mut file = std::fs::File::from(fd);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            while let Some(buf) = rx.blocking_recv() {
                match file.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && tolerate_close => {
                        // Keep accepting (and discarding) so decryption can finish.
                        while rx.blocking_recv().is_some() {}
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(()) // `file` closes here: end of input for the child
        });
        Ok(Self {
            tx: Some(tx),
            writer,
        })
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if tx.send(data).await.is_err() {
            // The writer stopped early; `finish` reports why.
            self.tx = None;
            return self.finish().await;
        }
        Ok(())
    }

    /// Closes the child's stdin and reports the writer's outcome.
    async fn finish(&mut self) -> Result<(), Error> {
        self.tx = None;
        match (&mut self.writer).await {
            Ok(Ok(())) => Ok(()),
            // The child's exit status explains why; reported by the caller.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::Io {
                what: "feeding pg_restore (it stopped reading)",
                source: e,
            }),
            Ok(Err(e)) => Err(io("feeding pg_restore")(e)),
            Err(join) => Err(io("feeding pg_restore")(std::io::Error::other(
                join.to_string(),
            ))),
        }
    }
}

/// Download, authenticate and decrypt an archive, checking size and SHA-256 against its manifest.
async fn decrypt_archive(
    store: &Store,
    manifest: &Manifest,
    key: &BackupKey,
    mut sink: Sink,
) -> Result<(), Error> {
    if manifest.key_id != key.key_id() {
        return Err(CryptoError::KeyMismatch {
            archive: manifest.key_id.clone(),
            key: key.key_id().to_string(),
        }
        .into());
    }
    let (actual, mut stream) = store.download(manifest).await?;
    if actual != manifest.size {
        return Err(Error::SizeMismatch {
            expected: manifest.size,
            actual,
        });
    }
    let mut dec = StreamDecryptor::new(key);
    let mut hasher = Sha256::new();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        hasher.update(&piece);
        let mut plain = Vec::with_capacity(piece.len());
        dec.push(&piece, &mut plain)?;
        sink.write(plain).await?;
    }
    let mut plain = Vec::new();
    dec.finish(&mut plain)?;
    sink.write(plain).await?;
    if hex::encode(hasher.finalize()) != manifest.sha256 {
        return Err(Error::ChecksumMismatch);
    }
    sink.finish().await
}

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

/// Result of `prune`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub kept: usize,
}

/// `prune`: delete backups older than `retention_days`, always keeping the newest `min_count`.
pub async fn prune(
    store: &Store,
    retention_days: u32,
    min_count: usize,
    now: DateTime<Utc>,
) -> Result<Pruned, Error> {
    let manifests = store.list().await?;
    let doomed = select_for_pruning(&manifests, retention_days, min_count, now);
    for m in manifests.iter().filter(|m| doomed.contains(&m.name)) {
        store.delete(m).await?;
    }
    Ok(Pruned {
        kept: manifests.len() - doomed.len(),
        deleted: doomed,
    })
}

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
