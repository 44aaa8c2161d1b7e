//! `operator_bench`: the operator against the Kubernetes stand-in (`kube-standin`).
//!
//! 1. In-process (real `run_controller` and a real `kube::Client` over HTTP): time and API calls
//!    for one platform from nothing to Ready; then steady-state reconcile time (p50/p95) by
//!    calling the controller's `reconcile` on an unchanged, Ready platform.
//! 2. Separate processes: the `kube-standin` binary and `caduceus-operator run` (through a
//!    kubeconfig), 500 platforms (configurable); the operator's RSS from /proc/PID/status.
//!
//! Build first: `cargo build --release -p kube-standin -p caduceus-operator -p caduceus-bench`,
//! then `target/release/operator_bench` (binaries are looked up next to this one).
//! Targets: < 50 ms per steady-state reconcile, < 100 MiB operator RSS at 500 platforms.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use caduceus_operator::{
    controller::{reconcile, Context},
    run_controller, ControllerConfig, HealthcarePlatform,
};
use clap::Parser;
use futures::{stream, StreamExt};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    Client,
};
use kube_standin::{CallCounts, StandIn};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

const NS: &str = "bench";
const TARGET_RECONCILE_MS: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 100.0;

#[derive(Parser, Debug)]
#[command(about = "Operator benchmark against the Kubernetes stand-in")]
struct Args {
    /// Platforms managed by the operator process for the memory measurement.
    #[arg(long, default_value_t = 500)]
    platforms: usize,
    /// Steady-state reconciles to time.
    #[arg(long, default_value_t = 200)]
    reconciles: usize,
    /// `caduceus-operator` binary (default: next to this binary).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// `kube-standin` binary (default: next to this binary).
    #[arg(long)]
    standin_bin: Option<PathBuf>,
    /// Only the in-process measurements.
    #[arg(long)]
    skip_rss: bool,
    /// Seconds to wait for all platforms to become Ready in the memory run.
    #[arg(long, default_value_t = 900)]
    ready_timeout: u64,
}

fn repo_file(rel: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn crd() -> anyhow::Result<CustomResourceDefinition> {
    serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml")?)
        .context("parsing the CRD")
}

/// The platform used throughout: `examples/minimal.yaml` when it exists.
fn platform_spec() -> Value {
    repo_file("examples/minimal.yaml")
        .ok()
        .and_then(|t| serde_norway::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("spec").cloned())
        .unwrap_or_else(|| json!({"apiServer": {"env": []}}))
}

async fn prepare(client: &Client) -> anyhow::Result<()> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd()?)
        .await
        .context("installing the CRD")?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the namespace")?;
    Ok(())
}

/// Creates through the dynamic API so the body is the manifest (typed serialisation drops
/// empty optional lists).
async fn create_platform(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
            "healthcareplatforms",
        ),
    );
    let obj: kube::core::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": name, "namespace": NS},
        "spec": platform_spec(),
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating platform {name}"))?;
    Ok(())
}

fn phase(hp: &HealthcarePlatform) -> String {
    hp.status
        .as_ref()
        .map(|s| format!("{:?}", s.phase))
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_calls(label: &str, calls: &CallCounts) {
    let by_verb: Vec<String> = [
        "get",
        "list",
        "watch",
        "create",
        "apply",
        "patch",
        "update",
        "delete",
        "discovery",
    ]
    .iter()
    .map(|v| (v, calls.verb(v)))
    .filter(|(_, n)| *n > 0)
    .map(|(v, n)| format!("{v}={n}"))
    .collect();
    println!(
        "{label}: {} API calls ({} writes): {}",
        calls.total(),
        calls.writes(),
        by_verb.join(" ")
    );
}

async fn in_process(args: &Args) -> anyhow::Result<(f64, f64)> {
    let standin = StandIn::start().await?;
    standin.set_auto_ready(true);
    let client = standin.client()?;
    prepare(&client).await?;

    let config = ControllerConfig {
        namespace: Some(NS.into()),
        ..ControllerConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let c = client.clone();
    let controller = tokio::spawn(run_controller(c, config, async move {
        let _ = stopped.await;
    }));

    let platforms: Api<HealthcarePlatform> = Api::namespaced(client.clone(), NS);
    standin.reset_calls();
    let t0 = Instant::now();
    create_platform(&client, "p0").await?;
    let mut applied_at = None;
    loop {
        if applied_at.is_none() && !standin.list("apps/v1", "Deployment", Some(NS)).is_empty() {
            applied_at = Some(t0.elapsed());
        }
        // Read the stand-in's store directly: the poll makes no API calls.
        let phase_now = standin
            .get("caduceus.io/v1alpha1", "HealthcarePlatform", NS, "p0")
            .and_then(|p| {
                p.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        if phase_now == "Ready" {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("platform p0 not Ready after 60 s (phase {phase_now:?})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let to_ready = t0.elapsed();
    let calls = standin.calls();
    println!("== one platform, nothing to Ready (in-process controller, workloads auto-ready)");
    println!(
        "first child written after {:.1} ms; phase Ready after {:.1} ms",
        applied_at.map(ms).unwrap_or_default(),
        ms(to_ready)
    );
    print_calls(
        "API calls from create to Ready (the operator, plus the benchmark's one create)",
        &calls,
    );
    let operator_writes: u64 = CallCounts::WRITE_VERBS
        .iter()
        .map(|v| calls.verb(v))
        .sum::<u64>()
        - 1;
    println!("operator writes: {operator_writes} (the platform create by the bench excluded)");

    let _ = stop.send(());
    controller
        .await
        .context("controller task")?
        .map_err(|e| anyhow!(e))?;

    // Steady state: the same reconcile the Controller runs, on an unchanged Ready platform.
    let ctx = Arc::new(Context::new(client.clone(), ControllerConfig::default()));
    for _ in 0..5 {
        reconcile(Arc::new(platforms.get("p0").await?), ctx.clone()).await?;
    }
    let rv_before = standin.resource_version();
    let calls_before = standin.calls();
    let mut durations = Vec::with_capacity(args.reconciles);
    for _ in 0..args.reconciles {
        let hp = Arc::new(platforms.get("p0").await?);
        let t = Instant::now();
        reconcile(hp, ctx.clone()).await?;
        durations.push(t.elapsed());
    }
    let steady_calls = standin.calls().since(&calls_before);
    let changed = standin.resource_version() - rv_before;
    durations.sort();
    let p50 = ms(percentile(&durations, 0.50));
    let p95 = ms(percentile(&durations, 0.95));
    println!(
        "== steady-state reconcile ({} reconciles of an unchanged Ready platform)",
        args.reconciles
    );
    println!(
        "p50 {p50:.2} ms, p95 {p95:.2} ms, max {:.2} ms (target < {TARGET_RECONCILE_MS} ms): {}",
        ms(durations.last().copied().unwrap_or_default()),
        if p95 < TARGET_RECONCILE_MS {
            "OK"
        } else {
            "MISSED"
        }
    );
    let per = |n: u64| n as f64 / args.reconciles as f64;
    println!(
        "per reconcile: {:.1} API calls ({:.1} server-side applies, {:.1} other writes); objects changed in total: {changed}",
        per(steady_calls.total().saturating_sub(args.reconciles as u64)),
        per(steady_calls.verb("apply")),
        per(steady_calls.writes() - steady_calls.verb("apply")),
    );
    standin.shutdown().await;
    Ok((p50, p95))
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("binary has no directory"))?;
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found; build it with `cargo build --release -p kube-standin -p caduceus-operator` or pass its path",
            path.display()
        )
    }
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/PID/status")?;
    let field = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| anyhow!("{key} missing in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("malformed {key} line"))?
            .parse()
            .context("parsing kB")?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SIGTERM for a graceful stop of the process we started.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

async fn rss(args: &Args) -> anyhow::Result<f64> {
    let standin_bin = match &args.standin_bin {
        Some(p) => p.clone(),
        None => sibling("kube-standin")?,
    };
    let operator_bin = match &args.operator_bin {
        Some(p) => p.clone(),
        None => sibling("caduceus-operator")?,
    };
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut standin = Command::new(&standin_bin)
        .args(["--port", "0", "--auto-ready", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", standin_bin.display()))?;
    let stdout = standin.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("kube-standin did not start")??
        .ok_or_else(|| anyhow!("kube-standin exited"))?;
    println!(
        "== {} platforms, operator as a separate process ({first})",
        args.platforms
    );

    let kc = Kubeconfig::read_from(&kubeconfig).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    prepare(&client).await?;

    let mut operator = Command::new(&operator_bin)
        .args([
            "run",
            "--leader-election",
            "false",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", operator_bin.display()))?;
    let pid = operator
        .id()
        .ok_or_else(|| anyhow!("operator exited at once"))?;

    let t0 = Instant::now();
    let names: Vec<String> = (0..args.platforms).map(|i| format!("p{i:04}")).collect();
    let results: Vec<anyhow::Result<()>> = stream::iter(names.iter())
        .map(|n| create_platform(&client, n))
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r?;
    }
    println!(
        "created {} platforms in {:.1} s",
        args.platforms,
        t0.elapsed().as_secs_f64()
    );
    let platforms: Api<HealthcarePlatform> = Api::namespaced(client.clone(), NS);
    let mut peak_rss = 0.0f64;
    loop {
        if let Ok(Some(status)) = operator.try_wait() {
            bail!("the operator exited: {status}");
        }
        let (rss, _) = rss_mib(pid)?;
        peak_rss = peak_rss.max(rss);
        let list = platforms.list(&ListParams::default()).await?;
        let ready = list.items.iter().filter(|p| phase(p) == "Ready").count();
        if ready == args.platforms {
            break;
        }
        if t0.elapsed() > Duration::from_secs(args.ready_timeout) {
            bail!(
                "only {ready}/{} platforms Ready after {} s",
                args.platforms,
                args.ready_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = t0.elapsed();
    // Settle: let in-flight work finish, then measure what the operator keeps.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = rss_mib(pid)?;
    let calls_text = client
        .request_text(http::Request::get("/standin/calls").body(Vec::new())?)
        .await
        .context("reading the stand-in's call counters")?;
    let calls: Value = serde_json::from_str(&calls_text)?;
    let total: u64 = calls["calls"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["count"].as_u64()).sum())
        .unwrap_or_default();
    println!(
        "all {} platforms Ready after {:.1} s; {total} API calls in total",
        args.platforms,
        all_ready.as_secs_f64()
    );
    println!(
        "operator RSS {rss:.1} MiB (peak {:.1} MiB, VmHWM {hwm:.1} MiB) (target < {TARGET_RSS_MIB} MiB): {}",
        peak_rss.max(rss),
        if hwm < TARGET_RSS_MIB { "OK" } else { "MISSED" }
    );
    stop_child(&mut operator).await;
    stop_child(&mut standin).await;
    Ok(hwm)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_, p95) = in_process(&args).await?;
    let hwm = if args.skip_rss {
        None
    } else {
        Some(rss(&args).await?)
    };
    let mut missed = Vec::new();
    if p95 >= TARGET_RECONCILE_MS {
        missed.push(format!("steady-state reconcile p95 {p95:.1} ms"));
    }
    if let Some(h) = hwm.filter(|h| *h >= TARGET_RSS_MIB) {
        missed.push(format!("operator peak RSS {h:.1} MiB"));
    }
    if missed.is_empty() {
        println!("operator_bench: all targets met");
    } else {
        println!("operator_bench: targets missed: {}", missed.join("; "));
    }
    Ok(())
}
