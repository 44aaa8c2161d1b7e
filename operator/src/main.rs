//! `caduceus-operator`: `run` (controller + HTTP server + leader election), `crd`, `render`,
//! `compliance-report`.

use caduceus_contract::operator_env as env;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use caduceus_operator::leader::{run_with_leader_election, LeaderElection, LeaderOutcome};
use caduceus_operator::server::{self, ServerState};
use caduceus_operator::{compliance, crd, render, run_controller, ControllerConfig, Metrics};
use clap::{ArgAction, Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "caduceus-operator",
    version,
    about = "Kubernetes operator for Caduceus healthcare platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller, the /metrics /healthz /readyz server and leader election.
    Run(RunArgs),
    /// Print the HealthcarePlatform CRD as YAML.
    Crd,
    /// Print every child object of the platform(s) in a file as multi-document YAML (no cluster
    /// needed; generated secret values are placeholders). The output is what the operator applies
    /// on a cluster that serves the Prometheus Operator CRDs (ServiceMonitors, PrometheusRule and
    /// dashboard included when monitoring.enabled).
    Render {
        /// File with one or more HealthcarePlatform documents (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for platforms without metadata.namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Render for a cluster without the Prometheus Operator CRDs: no ServiceMonitor,
        /// PrometheusRule or dashboard ConfigMap (the operator applies none of them there).
        #[arg(long)]
        without_prometheus_operator: bool,
    },
    /// Evaluate the static compliance rules of the platform(s) in a file without a cluster (a
    /// GitOps pre-merge check). Exit code 0: no violation, 1: violations, 2: invalid input.
    ComplianceReport {
        /// File with one or more HealthcarePlatform documents (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: compliance::cli::Format,
        /// Namespace for platforms without metadata.namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = env::METRICS_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], env::DEFAULT_METRICS_PORT)))]
    metrics_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease (required with more than one replica).
    #[arg(long, env = env::LEADER_ELECTION, default_value_t = env::DEFAULT_LEADER_ELECTION, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = env::LEASE_NAME, default_value = env::DEFAULT_LEASE_NAME)]
    lease_name: String,
    /// Namespace of the Lease (defaults to the pod's namespace).
    #[arg(long, env = env::POD_NAMESPACE, default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease and reportingInstance of Events (defaults to the pod name).
    #[arg(long, env = env::POD_NAME)]
    identity: Option<String>,
    /// Lease duration in seconds (a new leader takes over at most this long after a crash).
    #[arg(long, env = env::LEASE_DURATION_SECONDS, default_value_t = env::DEFAULT_LEASE_DURATION_SECONDS)]
    lease_duration_seconds: u64,
    /// Watch only this namespace (default: all).
    #[arg(long, env = env::WATCH_NAMESPACE)]
    watch_namespace: Option<String>,
    /// Periodic re-check of every platform, in seconds.
    #[arg(long, env = env::REQUEUE_SECONDS, default_value_t = env::DEFAULT_REQUEUE_SECONDS)]
    requeue_seconds: u64,
    /// Platforms reconciled concurrently.
    #[arg(long, env = env::CONCURRENCY, default_value_t = env::DEFAULT_CONCURRENCY)]
    concurrency: u16,
    /// tracing filter, e.g. `info` or `info,caduceus_operator=debug`.
    #[arg(long, env = env::LOG_LEVEL, default_value = env::DEFAULT_LOG_LEVEL)]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot serialise the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Render {
            file,
            namespace,
            without_prometheus_operator,
        } => {
            let input = match read_input(&file) {
                Ok(s) => s,
                Err(()) => return ExitCode::FAILURE,
            };
            let options = render::RenderOptions {
                prometheus_operator: !without_prometheus_operator,
            };
            match render::render_with(&input, &namespace, options) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::ComplianceReport {
            file,
            output,
            namespace,
        } => {
            let input = match read_input(&file) {
                Ok(s) => s,
                Err(()) => return ExitCode::from(2),
            };
            let now = k8s_openapi::jiff::Timestamp::now();
            match compliance::cli::compliance_report(&input, &namespace, output, now) {
                Ok(report) => {
                    print!("{}", report.text);
                    if report.violations {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) => {
            init_tracing(&args.log_level);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %format!("{e:#}"), "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The text of `file` (`-`: standard input); an error is printed and gives `Err`.
fn read_input(file: &Path) -> Result<String, ()> {
    let input = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    input.map_err(|e| eprintln!("error: cannot read {}: {e}", file.display()))
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));

    // One shutdown signal for everything.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        info!("termination signal received, shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        state,
        stopped(stop_rx.clone()),
    ));
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");

    let config = ControllerConfig {
        requeue_interval: Duration::from_secs(args.requeue_seconds.max(1)),
        namespace: args.watch_namespace.clone(),
        concurrency: args.concurrency.max(1),
        instance: args.identity.clone(),
        metrics,
        ..Default::default()
    };

    let result = if args.leader_election {
        let election = LeaderElection {
            lease_name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: args
                .identity
                .clone()
                .unwrap_or_else(|| format!("caduceus-operator-{}", std::process::id())),
            duration_seconds: args.lease_duration_seconds,
        };
        // A standby replica waiting for the Lease is ready.
        ready.store(true, Ordering::Relaxed);
        match run_with_leader_election(client, election, config, stopped(stop_rx.clone())).await {
            Ok(LeaderOutcome::LostLeadership) => {
                // Exit so the pod restarts as a standby; never reconcile without the Lease.
                Err(anyhow!("leadership lost"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow!(e)),
        }
    } else {
        ready.store(true, Ordering::Relaxed);
        run_controller(client, config, stopped(stop_rx.clone()))
            .await
            .map_err(|e| anyhow!(e))
    };

    // Stop the HTTP server too (also when the controller ended on its own).
    let mut rx = stop_rx;
    if !*rx.borrow_and_update() {
        warn!("controller ended without a termination signal");
    }
    server.abort();
    result
}
