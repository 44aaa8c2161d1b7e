//! `operator_bench`: the operator against a real Kubernetes control plane (`scripts/cluster.sh`:
//! etcd, kube-apiserver with RBAC, kube-controller-manager, kube-scheduler and KWOK, which makes
//! scheduled pods Running and Ready without containers and provisions PVCs).
//!
//! 1. In-process, the real `run_controller` with the chart ServiceAccount's token (so the chart's
//!    RBAC authorizes it) and every request counted by (verb, kind) in a tower layer on its
//!    `kube::Client`: wall time and API calls for one platform (`examples/minimal.yaml`'s spec)
//!    from nothing to Ready.
//! 2. Steady state: the controller's `reconcile` called on that unchanged Ready platform; p50/p95,
//!    API calls and writes per reconcile, and the children's resourceVersions before and after
//!    (nothing may change: a no-op server-side apply keeps the resourceVersion).
//! 3. Separate process: `caduceus-operator run` (kubeconfig with the ServiceAccount's token,
//!    `--watch-namespace` the bench's namespace) managing N platforms (default 500) until all are
//!    Ready; the time and the operator's RSS (VmRSS/VmHWM from /proc/PID/status).
//!
//! Which cluster: `--kubeconfig` or `CADUCEUS_BENCH_KUBECONFIG`, else this repository's control
//! plane (`scripts/cluster.sh up`, which reuses a running one). Never the current kubeconfig
//! context. Every namespace the bench creates is unique (`bench-<pid>-<hex>`) and deleted at the
//! end, also after a failure or Ctrl-C.
//!
//! Build first: `cargo build --release -p caduceus-operator -p caduceus-bench`, then
//! `target/release/operator_bench` (the operator binary is looked up next to this one).
//! Targets: < 50 ms per steady-state reconcile (p95), ≤ 1 write per child per reconcile and no
//! child changed when nothing changed, < 100 MiB operator RSS at 500 platforms.

// The (verb, kind) of a Kubernetes API request, shared with the operator's cluster tests.
#[path = "../../../operator/tests/support/call_kind.rs"]
mod call_kind;
#[path = "operator_bench/calls.rs"]
mod calls;
#[path = "operator_bench/cluster.rs"]
mod cluster;
#[path = "operator_bench/in_process.rs"]
mod in_process;
#[path = "operator_bench/measure.rs"]
mod measure;
#[path = "operator_bench/namespaces.rs"]
mod namespaces;
#[path = "operator_bench/platforms.rs"]
mod platforms;
#[path = "operator_bench/process.rs"]
mod process;
#[path = "operator_bench/resources.rs"]
mod resources;
#[path = "operator_bench/scale.rs"]
mod scale;

use std::{path::PathBuf, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;

use cluster::{kubeconfig_path, Cluster};
use in_process::in_process;
use namespaces::Namespaces;
use scale::scale;

const TARGET_RECONCILE_MS: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 100.0;
/// The platform count the RSS target is defined for.
const TARGET_RSS_PLATFORMS: usize = 500;
/// Field manager of the bench's own writes (CRD, RBAC, namespaces).
const MANAGER: &str = "caduceus-bench";
/// The operator's release namespace (its ServiceAccount) as the tests use it.
const OPERATOR_NS: &str = "caduceus-system";
const HCP_CRD: &str = "healthcareplatforms.caduceus.io";

#[derive(Parser, Debug)]
#[command(about = "Operator benchmark against a real Kubernetes control plane")]
struct Args {
    /// Kubeconfig of the cluster to use (default: `scripts/cluster.sh up`, this repository's own
    /// control plane). Never the current context of ~/.kube/config.
    #[arg(long, env = "CADUCEUS_BENCH_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Platforms managed by the operator process for the scale and memory measurement.
    #[arg(long, default_value_t = 500)]
    platforms: usize,
    /// Steady-state reconciles to time.
    #[arg(long, default_value_t = 200)]
    reconciles: usize,
    /// `caduceus-operator` binary (default: next to this binary).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Only the in-process measurements (one platform, steady state).
    #[arg(long)]
    skip_rss: bool,
    /// Seconds to wait for one platform to become Ready (in-process part).
    #[arg(long, default_value_t = 180)]
    one_timeout: u64,
    /// Seconds to wait for all platforms to become Ready in the scale run.
    #[arg(long, default_value_t = 1800)]
    ready_timeout: u64,
    /// Scale run: minimal.yaml's resource requests unchanged (by default they are lowered so
    /// that KWOK's fake nodes admit more platforms; see SCALE_REQUESTS).
    #[arg(long)]
    keep_requests: bool,
    /// Platforms created at once in the scale run.
    #[arg(long, default_value_t = 8)]
    create_concurrency: usize,
    /// Seconds to wait for a bench namespace to be gone at the end (deletion goes on in the
    /// cluster after this).
    #[arg(long, default_value_t = 900)]
    cleanup_timeout: u64,
}

async fn run(args: &Args, cluster: &Cluster, namespaces: &Namespaces) -> anyhow::Result<()> {
    let one = in_process(args, cluster, namespaces).await?;
    let scaled = if args.skip_rss {
        None
    } else {
        Some(scale(args, cluster, namespaces, one.workloads.max(1)).await?)
    };
    let mut missed = Vec::new();
    if one.p95_ms >= TARGET_RECONCILE_MS {
        missed.push(format!("steady-state reconcile p95 {:.1} ms", one.p95_ms));
    }
    if !one.writes_ok {
        missed.push("writes per child per reconcile / unchanged children".to_string());
    }
    if let Some(s) = &scaled {
        if s.ready < args.platforms {
            missed.push(format!(
                "only {}/{} platforms Ready",
                s.ready, args.platforms
            ));
        }
        if s.hwm_mib >= TARGET_RSS_MIB {
            missed.push(format!("operator peak RSS {:.1} MiB", s.hwm_mib));
        }
        if s.ready < TARGET_RSS_PLATFORMS {
            println!(
                "operator_bench: the RSS target (< {TARGET_RSS_MIB} MiB at {TARGET_RSS_PLATFORMS} platforms) was measured at {} only",
                s.ready
            );
        }
    }
    if missed.is_empty() {
        println!("operator_bench: all targets met");
        Ok(())
    } else {
        bail!("targets missed: {}", missed.join("; "))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // kube-runtime's Controller (with all its watches) and the reconcile are deep futures: an
    // unoptimised build overflows the default 2 MiB worker stack.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        tokio::spawn(bench(args))
            .await
            .context("the benchmark task panicked")?
    })
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let (kubeconfig, source) = kubeconfig_path(&args)?;
    println!(
        "operator_bench: kubeconfig from {source}; load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cluster = Cluster::prepare(&kubeconfig).await?;
    let namespaces = Namespaces::default();
    let result = tokio::select! {
        r = run(&args, &cluster, &namespaces) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Whatever happened: no namespace of this run stays behind.
    namespaces
        .delete_all(&cluster.admin, Duration::from_secs(args.cleanup_timeout))
        .await;
    println!("cluster {} left running", cluster.server);
    result.map_err(|e| e.context("operator_bench"))
}
