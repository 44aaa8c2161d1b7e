//! `caduceus-backup` command line. Exit 0 on success; otherwise one line on stderr and exit 1
//! (usage errors: exit 2).

use std::io::Write;

use caduceus_contract::settings;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use caduceus_backup::key::BackupKey;
use caduceus_backup::ops::{self, Error};
use caduceus_backup::pg::PgTarget;
use caduceus_backup::store::Store;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "caduceus-backup",
    version,
    about = "Encrypted, verified Postgres backups for Caduceus"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Location {
    /// s3://bucket/prefix or file:///absolute/path
    #[arg(long, env = settings::BACKUP_DESTINATION)]
    destination: String,
    /// S3 endpoint URL for S3-compatible stores (path-style requests); credentials from AWS_*.
    #[arg(long, env = settings::BACKUP_S3_ENDPOINT)]
    s3_endpoint: Option<String>,
}

#[derive(Args)]
struct KeyArg {
    /// Backup key file (JSON, see `keygen`).
    #[arg(long, env = settings::BACKUP_KEY_FILE)]
    key_file: PathBuf,
}

#[derive(Args)]
struct AllowUnauthenticatedArg {
    /// Accept a manifest without a MAC: a backup made by an agent before manifest MACs (named,
    /// or as `latest` of a destination holding no authenticated backup). A manifest whose MAC
    /// fails is never accepted.
    #[arg(long)]
    allow_unauthenticated: bool,
}

#[derive(Args)]
struct PreRestoreArg {
    /// Drop the databases earlier restores moved aside (`<db>_pre_restore_<ts>`, holding the
    /// data from before the restore) once they are older than this many days.
    #[arg(long, default_value_t = ops::DEFAULT_PRE_RESTORE_RETENTION_DAYS)]
    pre_restore_retention_days: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Dump a database, encrypt and upload it, write its manifest.
    Backup {
        /// postgres://user[:password]@host:port/db[?sslmode=...]
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        key: KeyArg,
        /// Also write the result (or the error) line here, e.g. /dev/termination-log.
        #[arg(long)]
        termination_log: Option<PathBuf>,
        /// After a successful backup, prune backups older than this many days.
        #[arg(long)]
        retention_days: Option<u32>,
        /// With --retention-days: never prune below this many backups.
        #[arg(long, default_value_t = 1, requires = "retention_days")]
        min_count: usize,
        #[command(flatten)]
        pre_restore: PreRestoreArg,
    },
    /// Print a new backup key file.
    Keygen,
    /// List complete backups, newest first, one JSON manifest per line.
    List {
        #[command(flatten)]
        location: Location,
        /// Accepted for symmetry with the other commands; listing needs no key.
        #[arg(long, env = settings::BACKUP_KEY_FILE)]
        key_file: Option<PathBuf>,
    },
    /// Download, authenticate, checksum and `pg_restore --list` a backup.
    Verify {
        /// Backup name or `latest`.
        name: String,
        #[command(flatten)]
        unauthenticated: AllowUnauthenticatedArg,
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
    /// Delete backups older than the retention, never going below --min-count.
    Prune {
        #[arg(long)]
        retention_days: u32,
        #[arg(long, default_value_t = 1)]
        min_count: usize,
        #[command(flatten)]
        location: Location,
        #[arg(long, env = settings::BACKUP_KEY_FILE)]
        key_file: Option<PathBuf>,
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
    /// Restore a backup into a fresh database, verify it, then swap it in.
    Restore {
        /// Backup name or `latest`.
        name: String,
        /// The database to restore (it may not exist yet).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Database to connect to for CREATE/ALTER DATABASE.
        #[arg(long, default_value = "postgres")]
        maintenance_db: String,
        /// Do nothing when the database already has tables (bootstrap of a new platform; safe to
        /// run from every pod: concurrent runs are serialised with an advisory lock).
        #[arg(long)]
        if_empty: bool,
        #[command(flatten)]
        unauthenticated: AllowUnauthenticatedArg,
        #[command(flatten)]
        pre_restore: PreRestoreArg,
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        key: KeyArg,
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Invalid(format!("cannot encode result: {e}")))
}

fn open(location: &Location) -> Result<Store, Error> {
    Ok(Store::open(
        &location.destination,
        location.s3_endpoint.as_deref(),
    )?)
}

/// The key, the database and the store of a command that moves data between the two (checked in
/// that order).
fn open_with_database(
    key: &KeyArg,
    database_url: &str,
    location: &Location,
) -> Result<(BackupKey, PgTarget, Store), Error> {
    let key = BackupKey::load(&key.key_file)?;
    let target = PgTarget::parse(database_url)?;
    Ok((key, target, open(location)?))
}

async fn run(cmd: Cmd) -> Result<String, Error> {
    let now = chrono::Utc::now();
    match cmd {
        Cmd::Keygen => Ok(BackupKey::generate().to_json().to_string()),
        Cmd::Backup {
            database_url,
            location,
            key,
            retention_days,
            min_count,
            pre_restore,
            ..
        } => {
            let (key, target, store) = open_with_database(&key, &database_url, &location)?;
            let manifest = ops::backup(&store, &target, &key, now).await?;
            // Also a problem here is reported, not fatal: the backup is stored.
            match ops::expire_pre_restore(&target, pre_restore.pre_restore_retention_days, now)
                .await
            {
                Ok(dropped) if !dropped.is_empty() => eprintln!(
                    "dropped {} database(s) moved aside by restores more than {} days ago",
                    dropped.len(),
                    pre_restore.pre_restore_retention_days
                ),
                Ok(_) => {}
                Err(e) => eprintln!("warning: dropping expired pre-restore databases failed: {e}"),
            }
            if let Some(days) = retention_days {
                // The backup is safely stored; a pruning problem is reported, not fatal.
                match ops::prune(&store, days, min_count.max(1), now).await {
                    Ok(pruned) if !pruned.deleted.is_empty() => {
                        eprintln!("pruned {} expired backup(s)", pruned.deleted.len())
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("warning: pruning failed: {e}"),
                }
            }
            Ok(manifest.result_line())
        }
        Cmd::List { location, .. } => {
            let store = open(&location)?;
            let manifests = store.list().await?;
            let lines: Result<Vec<_>, _> = manifests.iter().map(json).collect();
            Ok(lines?.join("\n"))
        }
        Cmd::Verify {
            name,
            location,
            key,
            unauthenticated,
            ..
        } => {
            let key = BackupKey::load(&key.key_file)?;
            let store = open(&location)?;
            json(&ops::verify(&store, &key, &name, unauthenticated.allow_unauthenticated).await?)
        }
        Cmd::Prune {
            retention_days,
            min_count,
            location,
            ..
        } => {
            let store = open(&location)?;
            json(&ops::prune(&store, retention_days, min_count, now).await?)
        }
        Cmd::Restore {
            name,
            database_url,
            maintenance_db,
            if_empty,
            unauthenticated,
            pre_restore,
            location,
            key,
            ..
        } => {
            let (key, target, store) = open_with_database(&key, &database_url, &location)?;
            let options = ops::RestoreOptions {
                maintenance_db,
                if_empty,
                allow_unauthenticated: unauthenticated.allow_unauthenticated,
                pre_restore_retention_days: pre_restore.pre_restore_retention_days,
            };
            let restored = ops::restore(&store, &key, &name, &target, &options, now).await?;
            for warning in &restored.warnings {
                eprintln!("warning: {warning}");
            }
            json(&restored)
        }
    }
}

fn termination_log(cmd: &Cmd) -> Option<PathBuf> {
    match cmd {
        Cmd::Backup {
            termination_log, ..
        }
        | Cmd::Verify {
            termination_log, ..
        }
        | Cmd::Prune {
            termination_log, ..
        }
        | Cmd::Restore {
            termination_log, ..
        } => termination_log.clone(),
        Cmd::Keygen | Cmd::List { .. } => None,
    }
}

fn write_termination_log(path: &Path, line: &str) {
    // Best effort: the result is on stdout/stderr either way.
    if let Err(e) = std::fs::write(path, format!("{line}\n")) {
        eprintln!(
            "warning: cannot write termination log {}: {e}",
            path.display()
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    caduceus_backup::install_tls_provider();
    let log_path = termination_log(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(out) => {
            if let Some(path) = &log_path {
                if let Some(last) = out.lines().last() {
                    write_termination_log(path, last);
                }
            }
            let mut stdout = std::io::stdout().lock();
            if !out.is_empty() && writeln!(stdout, "{out}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let line = format!("error: {}", e.to_string().replace('\n', " "));
            if let Some(path) = &log_path {
                write_termination_log(path, &line);
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}
