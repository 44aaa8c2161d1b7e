//! `caduceus-api` command line (see `docs/contracts.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use caduceus_api::config::{self, Config, Env, ProcessEnv};
use caduceus_api::{audit, crypto, health, rbac::Role, rotate, state, users};
use caduceus_contract::settings;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "caduceus-api", version, about = "Caduceus clinical API server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (CADUCEUS_HTTP_ADDR) and the admin endpoints (CADUCEUS_ADMIN_ADDR).
    Serve,
    /// Apply database migrations (needs only DATABASE_URL).
    Migrate,
    /// Apply the migrations and create (or update) the API's runtime role with its grants, as
    /// the owner: DATABASE_URL with the owner's credentials, CADUCEUS_APP_DB_USER (default
    /// caduceus_app) and CADUCEUS_APP_DB_PASSWORD. `serve` then connects as that role.
    DbSetup,
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create the first admin account; the password is read from a file, never the command line.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_file: PathBuf,
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
    /// Re-encrypt PHI under the active key (batches; safe to interrupt and re-run).
    RotateKeys {
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
    },
    /// Recompute every blind index under the active blind-index key (batches; safe to interrupt
    /// and re-run) and report the rows still under other keys; with --check, only report (exit
    /// status 1 while any remain).
    RotateBlindIndex {
        #[arg(long, default_value_t = 500)]
        batch_size: i64,
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write DIR/jwt.key and DIR/phi-keys.json (mode 0600; never overwrites).
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
}

enum AdminOutcome {
    Created(users::User),
    Existing(users::User),
}

/// PHI-free description of an internal error (database errors by SQLSTATE only).
fn internal_kind(e: &anyhow::Error) -> String {
    match e.downcast_ref::<sqlx::Error>() {
        Some(db) => caduceus_api::error_kind(db),
        None => "internal error".into(),
    }
}

/// A pool on `url` (DATABASE_URL); the error names the database error by SQLSTATE only.
async fn connect_url(url: &str) -> anyhow::Result<sqlx::PgPool> {
    state::connect_db(url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to DATABASE_URL: {}",
            caduceus_api::error_kind(&e)
        )
    })
}

/// A pool on DATABASE_URL.
async fn connect(env: &ProcessEnv) -> anyhow::Result<sqlx::PgPool> {
    connect_url(&config::database_url(env)?).await
}

/// Apply the migrations; the schema version after them.
async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    health::MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    let (version, _) = health::schema_state(pool).await?;
    Ok(version)
}

/// Write a command's audit event now; `done` says what already happened if it fails.
async fn audit_cli(
    pool: &sqlx::PgPool,
    keys: &crypto::KeyRing,
    event: audit::AuditEvent,
    done: &str,
) -> anyhow::Result<()> {
    audit::write_now(pool, keys.audit_key(), &event)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{done} but the audit event failed: {}",
                caduceus_api::error_kind(&e)
            )
        })
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = ProcessEnv;
    match cli.command {
        Command::Serve => {
            let cfg = Config::from_env(&env)?;
            init_logs(&cfg.log_level);
            caduceus_api::serve(cfg).await
        }
        Command::DbSetup => {
            let url = config::database_url(&env)?;
            let role = env
                .get(settings::APP_DB_USER)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| settings::DEFAULT_APP_DB_USER.to_string());
            let password = env
                .get(settings::APP_DB_PASSWORD)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is required (the runtime role's password)",
                        settings::APP_DB_PASSWORD
                    )
                })?;
            caduceus_api::store::roles::valid_role_name(&role)?;
            let pool = connect_url(&url).await?;
            let version = migrate(&pool).await?;
            let action = caduceus_api::store::roles::setup_runtime_role(&pool, &role, &password)
                .await
                .map_err(|e| match e {
                    caduceus_api::store::roles::RoleError::Database(db) => anyhow::anyhow!(
                        "setting up role {role:?} failed: {}",
                        caduceus_api::error_kind(&db)
                    ),
                    other => anyhow::anyhow!("{other}"),
                })?;
            println!(
                "migrations applied (schema version {version}); runtime role {role:?} {action:?}"
            );
            Ok(())
        }
        Command::Migrate => {
            let pool = connect(&env).await?;
            let version = migrate(&pool).await?;
            println!("migrations applied; schema version {version}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Generate { out },
        } => {
            crypto::write_key_files(&out)?;
            println!(
                "wrote {} and {} (mode 0600)",
                out.join("jwt.key").display(),
                out.join("phi-keys.json").display()
            );
            Ok(())
        }
        Command::CreateAdmin {
            email,
            password_file,
            display_name,
        } => {
            let password = std::fs::read_to_string(&password_file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", password_file.display()))?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            // a shell argument may carry stray blanks; the API itself refuses a padded e-mail
            let email = email.trim().to_string();
            users::check_email(&email).map_err(|e| anyhow::anyhow!("--email {}", e.message))?;
            caduceus_api::auth::password::check_policy("password", &password)
                .map_err(|e| anyhow::anyhow!("password file: password {}", e.message))?;
            let keys = config::phi_keys(&env)?;
            let pool = connect(&env).await?;
            let db_err = |e: caduceus_api::error::Error| match e {
                caduceus_api::error::Error::Internal(e) => {
                    anyhow::anyhow!("cannot create the admin: {}", internal_kind(&e))
                }
                other => anyhow::anyhow!("cannot create the admin: {other}"),
            };
            // idempotent: an existing admin with this e-mail is left exactly as it is
            let existing = users::find_by_email(&pool, &keys, &email)
                .await
                .map_err(db_err)?;
            let outcome = match existing {
                Some(u) => AdminOutcome::Existing(u),
                None => match users::insert(
                    &pool,
                    &keys,
                    &email,
                    password,
                    Role::Admin,
                    &display_name,
                    None,
                )
                .await
                {
                    Ok(u) => AdminOutcome::Created(u),
                    // lost a race with a concurrent create-admin (or another writer): re-check
                    Err(caduceus_api::error::Error::Conflict { .. }) => {
                        match users::find_by_email(&pool, &keys, &email)
                            .await
                            .map_err(db_err)?
                        {
                            Some(u) => AdminOutcome::Existing(u),
                            None => anyhow::bail!(
                                "cannot create the admin: a conflicting account exists"
                            ),
                        }
                    }
                    Err(e) => return Err(db_err(e)),
                },
            };
            match outcome {
                AdminOutcome::Existing(u) if u.role.0 == Role::Admin => {
                    println!(
                        "admin {} ({}) already exists; nothing changed",
                        u.email, u.id
                    );
                    Ok(())
                }
                AdminOutcome::Existing(u) => anyhow::bail!(
                    "--email: an account with this e-mail already exists with role {} (not admin); \
                     nothing changed (use another e-mail, or change the role with PATCH /api/v1/users/{})",
                    u.role.0.as_str(),
                    u.id
                ),
                AdminOutcome::Created(user) => {
                    audit_cli(
                        &pool,
                        &keys,
                        audit::AuditEvent::cli(audit::actions::USER_CREATE, "user")
                            .resource(user.id),
                        "admin created",
                    )
                    .await?;
                    println!("created admin {} ({})", user.email, user.id);
                    Ok(())
                }
            }
        }
        Command::RotateKeys { batch_size } => {
            let keys = config::phi_keys(&env)?;
            let pool = connect(&env).await?;
            let report = rotate::rotate_keys(&pool, &keys, batch_size, |table, done| {
                println!(
                    "{table}: {done} rows re-encrypted under {}",
                    keys.active_key_id()
                );
            })
            .await?;
            audit_cli(
                &pool,
                &keys,
                audit::AuditEvent::cli(audit::actions::KEYS_ROTATE, "phi_key")
                    .resource(keys.active_key_id()),
                "rotation done",
            )
            .await?;
            println!(
                "rotation complete: {} rows re-encrypted; every ciphertext now uses {}",
                report.total(),
                keys.active_key_id()
            );
            Ok(())
        }
        Command::RotateBlindIndex { batch_size, check } => {
            rotate_blind_index(&env, batch_size, check).await
        }
    }
}

/// `rotate-blind-index`: recompute (unless `check`), then say what still uses other keys.
async fn rotate_blind_index(env: &ProcessEnv, batch_size: i64, check: bool) -> anyhow::Result<()> {
    let keys = config::phi_keys(env)?;
    let pool = connect(env).await?;
    let active = keys.active_blind_index_key_id();
    let remaining = if check {
        rotate::blind_index::remaining(&pool, active).await?
    } else {
        let report = rotate::rotate_blind_index(&pool, &keys, batch_size, |table, done| {
            println!("{table}: {done} rows re-indexed under {active}");
        })
        .await?;
        audit_cli(
            &pool,
            &keys,
            audit::AuditEvent::cli(audit::actions::KEYS_ROTATE_BLIND_INDEX, "blind_index_key")
                .resource(active),
            "re-indexing done",
        )
        .await?;
        println!(
            "re-indexing complete: {} rows re-indexed under {active}; {} spent recovery codes \
             and ended failure counters under other keys deleted",
            report.total(),
            report.deleted
        );
        report.remaining
    };
    for (key, kind, n) in &remaining.rows {
        println!("still under blind-index key {key}: {kind}: {n}");
    }
    if remaining.total() == 0 {
        println!("no stored blind index uses a key other than {active}: the other blind-index keys may leave the ring");
        Ok(())
    } else if check {
        anyhow::bail!(
            "{} rows still use blind-index keys {:?}; keep them in the ring",
            remaining.total(),
            remaining.key_ids()
        )
    } else {
        println!(
            "keep blind-index keys {:?} in the ring until none remains (see docs/api.md, \
             \"Rotating the blind-index key\"), then run with --check",
            remaining.key_ids()
        );
        Ok(())
    }
}

/// mimalloc instead of glibc malloc: under load `malloc`/`free` were ~20 % of the API's CPU
/// (README, bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Panic payloads could carry data; log only where it happened.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic");
        eprintln!("caduceus-api: internal error (panic at {location})");
    }));
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("caduceus-api: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caduceus-api: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
