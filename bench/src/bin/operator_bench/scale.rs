//! Scale part: `caduceus-operator run` managing N platforms until all are Ready, and its RSS.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use futures::{stream, StreamExt, TryStreamExt};
use kube::{
    api::{Api, PostParams},
    core::DynamicObject,
    Client,
};
use serde_json::{json, Value};
use tokio::process::Command;

use crate::cluster::{write_operator_kubeconfig, Cluster};
use crate::measure::verdict;
use crate::namespaces::{hcp_resource, Namespaces};
use crate::platforms::{create_platform, describe_histogram, platform_spec, PhaseWatch};
use crate::process::{
    cpu_seconds, free_port, operator_metrics, rss_mib, sibling, stop_child, summarize_log,
};
use crate::resources::{cluster_room, count_pods, platform_requests, scheduling_failures};
use crate::{Args, TARGET_RSS_MIB, TARGET_RSS_PLATFORMS};

/// What the scale part found.
pub struct Scale {
    pub ready: usize,
    pub hwm_mib: f64,
}

/// CPU and memory every container of the scale run's platforms requests (unless
/// `--keep-requests`): KWOK's fake nodes admit pods by their requests, and minimal.yaml's
/// (≈ 0.85 CPU per platform with the two API replicas HIPAA Enforce mode asks for) would fill
/// the three 32-CPU nodes of `scripts/cluster.sh` at ~110 platforms. Requests change nothing the
/// operator or the control plane does.
const SCALE_REQUESTS: (&str, &str) = ("10m", "32Mi");

/// The scale run's spec: minimal.yaml's, with the API, database and cache requests lowered to
/// [`SCALE_REQUESTS`] and their limits as the CRD defaults them (read from a server-side dry
/// run, so nothing here repeats the CRD's defaults).
async fn scale_spec(admin: &Client, ns: &str, spec: &Value) -> anyhow::Result<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": "dry-run", "namespace": ns},
        "spec": spec,
    }))?;
    let defaulted = api
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &obj,
        )
        .await
        .context("server-side dry run of the platform (CRD defaults)")?;
    let mut out = spec.clone();
    for component in ["apiServer", "database", "cache"] {
        let limits = defaulted.data["spec"][component]["resources"]["limits"].clone();
        if !limits.is_object() {
            bail!("the CRD defaults no spec.{component}.resources.limits");
        }
        if !out[component].is_object() {
            out[component] = json!({});
        }
        out[component]["resources"] = json!({
            "requests": {"cpu": SCALE_REQUESTS.0, "memory": SCALE_REQUESTS.1},
            "limits": limits,
        });
    }
    Ok(out)
}

/// N platforms with the operator as a separate process.
pub async fn scale(
    args: &Args,
    cluster: &Cluster,
    namespaces: &Namespaces,
    workloads_per_platform: usize,
) -> anyhow::Result<Scale> {
    let operator_bin = match &args.operator_bin {
        Some(p) => p.clone(),
        None => sibling("caduceus-operator")?,
    };
    let n = args.platforms;
    println!(
        "== {n} platforms, operator as a separate process ({})",
        operator_bin.display()
    );
    let ns = namespaces.create(&cluster.admin, "scale").await?;
    let spec = if args.keep_requests {
        println!("platform spec: examples/minimal.yaml");
        platform_spec()?
    } else {
        println!(
            "platform spec: examples/minimal.yaml with cpu {} / memory {} requests for the API, database and cache \
             (for KWOK's fake node capacity; --keep-requests uses minimal.yaml's)",
            SCALE_REQUESTS.0, SCALE_REQUESTS.1
        );
        scale_spec(&cluster.admin, &ns, &platform_spec()?).await?
    };
    let (allocatable, used) = cluster_room(&cluster.admin).await?;
    println!(
        "cluster: {} allocatable on schedulable Ready nodes; {} requested by pods of others",
        allocatable.describe(),
        used.describe()
    );

    let dir = tempfile::tempdir().context("temporary directory")?;
    let kubeconfig = dir.path().join("operator.kubeconfig");
    let token_seconds = args.ready_timeout + 3600;
    let (operator_config, token) = cluster.operator_config(token_seconds).await?;
    write_operator_kubeconfig(&operator_config, &token, &kubeconfig)?;
    let phases = PhaseWatch::start(&cluster.admin, &ns).await?;
    let metrics_port = free_port()?;
    let operator_log = dir.path().join("operator.log");
    let mut operator = Command::new(&operator_bin)
        .args([
            "run",
            "--leader-election",
            "false",
            "--log-level",
            "warn",
            "--watch-namespace",
            &ns,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        // Its JSON log (warnings and errors at --log-level warn) goes to stdout: kept in a file.
        .stdout(Stdio::from(
            std::fs::File::create(&operator_log)
                .with_context(|| format!("creating {}", operator_log.display()))?,
        ))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", operator_bin.display()))?;
    let pid = operator
        .id()
        .ok_or_else(|| anyhow!("the operator exited at once"))?;
    println!(
        "operator pid {pid}, namespace {ns}, kubeconfig with the chart ServiceAccount's token"
    );

    let result: anyhow::Result<Scale> = async {
        let t0 = Instant::now();
        // The first platform alone: what one asks the scheduler for, to know whether N fit.
        create_platform(&cluster.admin, &ns, "p0000", &spec).await?;
        let (per, _, workloads) = platform_requests(
            &cluster.admin,
            &ns,
            "p0000",
            workloads_per_platform,
            Duration::from_secs(120),
        )
        .await
        .context("the operator's workloads of the first platform")?;
        let (room, limit) = allocatable.minus(used).fits(per);
        println!(
            "one platform requests {} ({workloads}); room for {room} platforms (limited by {limit})",
            per.describe()
        );
        if room < n {
            bail!(
                "the cluster has room for {room} platforms of this spec (limited by {limit}: {} allocatable, {} used by others, \
                 {} per platform), {n} asked: pass --platforms {room} or less, or use a cluster with more nodes \
                 (e.g. a fresh `CADUCEUS_CLUSTER_NODES=<n> scripts/cluster.sh up`)",
                allocatable.describe(),
                used.describe(),
                per.describe()
            );
        }
        let creates = (1..n).map(|i| {
            let (admin, ns, spec) = (cluster.admin.clone(), ns.clone(), spec.clone());
            async move { create_platform(&admin, &ns, &format!("p{i:04}"), &spec).await }
        });
        stream::iter(creates)
            .buffer_unordered(args.create_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let created = t0.elapsed();
        println!("created {n} platforms in {:.1} s", created.as_secs_f64());
        let mut peak_rss = 0.0f64;
        let mut last_report = Instant::now();
        let timeout = Duration::from_secs(args.ready_timeout);
        let mut all_ready = None;
        loop {
            if let Some(status) = operator.try_wait()? {
                bail!("the operator exited: {status}");
            }
            let (rss, _) = rss_mib(pid)?;
            peak_rss = peak_rss.max(rss);
            let hist = phases.histogram();
            let ready = hist.get("Ready").copied().unwrap_or(0);
            if ready == n {
                all_ready = Some(t0.elapsed());
                break;
            }
            if t0.elapsed() > timeout {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(30) {
                last_report = Instant::now();
                println!(
                    "  [{:>5.0} s] {ready}/{n} Ready ({}); {} pods Pending; operator RSS {rss:.1} MiB, CPU {:.1} s",
                    t0.elapsed().as_secs_f64(),
                    describe_histogram(&hist),
                    count_pods(&cluster.admin, &ns, "status.phase=Pending").await?,
                    cpu_seconds(pid)?
                );
            }
            phases.changed(Duration::from_secs(1)).await;
        }
        let ready = phases.histogram().get("Ready").copied().unwrap_or(0);
        match all_ready {
            Some(t) => println!(
                "all {n} platforms Ready after {:.1} s (created in {:.1} s); operator CPU {:.1} s",
                t.as_secs_f64(),
                created.as_secs_f64(),
                cpu_seconds(pid)?
            ),
            None => println!(
                "NOT all Ready: {ready}/{n} after {} s ({}); {} pods Pending in {ns}; scheduler: {}",
                timeout.as_secs(),
                describe_histogram(&phases.histogram()),
                count_pods(&cluster.admin, &ns, "status.phase=Pending").await?,
                scheduling_failures(&cluster.admin, &ns).await?
            ),
        }
        // Settle: let the reconciles the last readiness changes triggered finish, then read what
        // the operator keeps.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, hwm) = rss_mib(pid)?;
        let rss_verdict = if ready >= TARGET_RSS_PLATFORMS {
            verdict(hwm < TARGET_RSS_MIB).to_string()
        } else {
            format!(
                "{} at {ready} platforms, not verified at {TARGET_RSS_PLATFORMS}",
                verdict(hwm < TARGET_RSS_MIB)
            )
        };
        println!(
            "operator RSS {rss:.1} MiB after settling (sampled peak {:.1} MiB, VmHWM {hwm:.1} MiB) at {ready} Ready platforms \
             (target < {TARGET_RSS_MIB} MiB at {TARGET_RSS_PLATFORMS}): {rss_verdict}; operator CPU {:.1} s in total",
            peak_rss.max(rss),
            cpu_seconds(pid)?
        );
        match operator_metrics(metrics_port).await {
            Ok(m) => println!("operator metrics: {m}"),
            Err(e) => println!("operator metrics unavailable: {e:#}"),
        }
        println!("operator log: {}", summarize_log(&operator_log)?);
        Ok(Scale {
            ready,
            hwm_mib: hwm,
        })
    }
    .await;
    stop_child(&mut operator).await;
    drop(phases);
    let t = Instant::now();
    namespaces
        .delete(
            &cluster.admin,
            &ns,
            Duration::from_secs(args.cleanup_timeout),
        )
        .await?;
    println!(
        "cleanup: namespace {ns} deleted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    result
}
