//! In-process part: one platform from nothing to Ready with the real controller, then the
//! steady state.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use caduceus_operator::{
    controller::{reconcile, run_with_context, Context},
    run_controller, ControllerConfig, HealthcarePlatform, Metrics,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};
use tokio::sync::oneshot;

use crate::calls::{counting_client, wait_calls_settle, wait_writes_quiet, CallLog};
use crate::cluster::Cluster;
use crate::measure::{ms, percentile, verdict};
use crate::namespaces::Namespaces;
use crate::platforms::{child_versions, create_platform, platform_spec, PhaseWatch};
use crate::resources::{count_pods, platform_requests};
use crate::{Args, TARGET_RECONCILE_MS};

/// What the in-process part found.
pub struct InProcess {
    pub p95_ms: f64,
    pub writes_ok: bool,
    /// Deployments and StatefulSets of one platform.
    pub workloads: usize,
}

/// One platform from nothing to Ready with the real controller, then the steady state.
pub async fn in_process(
    args: &Args,
    cluster: &Cluster,
    namespaces: &Namespaces,
) -> anyhow::Result<InProcess> {
    let spec = platform_spec()?;
    let ns = namespaces.create(&cluster.admin, "one").await?;
    let log = CallLog::default();
    let (operator_config, _) = cluster.operator_config(3600).await?;
    let client = counting_client(&operator_config, &log)?;
    let phases = PhaseWatch::start(&cluster.admin, &ns).await?;

    let metrics = Metrics::new();
    let config = ControllerConfig {
        namespace: Some(ns.clone()),
        metrics: metrics.clone(),
        ..ControllerConfig::default()
    };
    // Dropping `stop` (also on an early return) stops the controller.
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(client.clone(), config, async move {
        let _ = stopped.await;
    }));
    wait_calls_settle(&log, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .context("starting the controller")?;
    let startup = log.counts();
    println!("== one platform, nothing to Ready (in-process run_controller, namespace {ns})");
    println!(
        "controller start (before the platform exists): {} API calls: {}",
        startup.total(),
        startup.describe(1.0)
    );

    log.forget_first_child_write();
    let t0 = Instant::now();
    create_platform(&cluster.admin, &ns, "p0", &spec).await?;
    let timeout = Duration::from_secs(args.one_timeout);
    loop {
        if phases.phase("p0").as_deref() == Some("Ready") {
            break;
        }
        if t0.elapsed() > timeout {
            bail!(
                "platform p0 not Ready after {} s (phase {:?}); operator calls: {}",
                timeout.as_secs(),
                phases.phase("p0"),
                log.counts().since(&startup).describe(1.0)
            );
        }
        phases.changed(Duration::from_millis(200)).await;
    }
    let to_ready = t0.elapsed();
    let at_ready = log.counts().since(&startup);
    let first_child = log
        .first_child_write()
        .map(|t| ms(t.saturating_duration_since(t0)))
        .unwrap_or_default();
    wait_writes_quiet(&log, Duration::from_secs(2), Duration::from_secs(60)).await?;
    let quiet_after = log
        .last_write()
        .map(|t| t.saturating_duration_since(t0))
        .unwrap_or_default();
    let to_quiet = log.counts().since(&startup);
    let reconciles = metrics.reconciles.with_label_values(&["success"]).get();
    let pods = count_pods(
        &cluster.admin,
        &ns,
        "status.phase!=Succeeded,status.phase!=Failed",
    )
    .await?;
    let (requests, workload_count, workloads) =
        platform_requests(&cluster.admin, &ns, "p0", 1, Duration::ZERO).await?;
    let replica_sets = Api::<ReplicaSet>::namespaced(cluster.admin.clone(), &ns)
        .list_metadata(&ListParams::default())
        .await
        .context("listing ReplicaSets")?
        .items
        .len();
    println!(
        "first child written after {first_child:.0} ms; phase Ready after {:.0} ms (pods made Running/Ready by KWOK)",
        ms(to_ready)
    );
    println!(
        "operator API calls from create to Ready: {} ({} writes): {}",
        at_ready.total(),
        at_ready.writes(),
        at_ready.describe(1.0)
    );
    println!(
        "until the operator stopped writing (last write at {:.0} ms): {} calls ({} writes), {reconciles} reconciles; \
         {pods} pods not finished (workloads: {workloads}; {replica_sets} ReplicaSets); the platform requests {}",
        ms(quiet_after),
        to_quiet.total(),
        to_quiet.writes(),
        requests.describe(),
    );

    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .context("the controller did not stop within 30 s")?
        .context("controller task")?
        .map_err(|e| anyhow!(e))
        .context("the controller failed")?;

    // Steady state: the reconcile the Controller runs, on the unchanged Ready platform, with the
    // controller running on the same context (its watches fill the watch cache the reconcile
    // reads; its own reconciles of p0 are done before measuring).
    let ctx = Arc::new(Context::new(
        client.clone(),
        ControllerConfig {
            namespace: Some(ns.clone()),
            ..ControllerConfig::default()
        },
    ));
    let (stop_watching, watching_stopped) = oneshot::channel::<()>();
    let watching = tokio::spawn(run_with_context(ctx.clone(), async move {
        let _ = watching_stopped.await;
    }));
    wait_calls_settle(&log, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .context("starting the controller for the steady state")?;
    println!(
        "controller restarted for the steady state: its watches hold {} children",
        ctx.drift.watched.len()
    );
    let platforms: Api<HealthcarePlatform> = Api::namespaced(cluster.admin.clone(), &ns);
    for _ in 0..5 {
        let hp = platforms.get("p0").await.context("reading p0")?;
        reconcile(Arc::new(hp), ctx.clone())
            .await
            .map_err(|e| anyhow!(e))
            .context("warm-up reconcile")?;
    }
    let before = child_versions(&cluster.admin, &ns, "p0").await?;
    let calls_before = log.counts();
    let waited_before = log.waited();
    let mut durations = Vec::with_capacity(args.reconciles);
    for _ in 0..args.reconciles {
        // The bench's read (admin client) is not counted; the reconcile reads the platform
        // fresh itself.
        let hp = Arc::new(platforms.get("p0").await.context("reading p0")?);
        let t = Instant::now();
        reconcile(hp, ctx.clone())
            .await
            .map_err(|e| anyhow!(e))
            .context("steady-state reconcile")?;
        durations.push(t.elapsed());
    }
    let steady = log.counts().since(&calls_before);
    let waited: BTreeMap<String, Duration> = log
        .waited()
        .into_iter()
        .map(|(verb, d)| {
            let before = waited_before.get(&verb).copied().unwrap_or_default();
            (verb, d.saturating_sub(before))
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    let after = child_versions(&cluster.admin, &ns, "p0").await?;
    drop(stop_watching);
    tokio::time::timeout(Duration::from_secs(30), watching)
        .await
        .context("the controller did not stop within 30 s")?
        .context("controller task")?
        .map_err(|e| anyhow!(e))
        .context("the controller failed")?;
    durations.sort();
    let p50 = ms(percentile(&durations, 0.50));
    let p95 = ms(percentile(&durations, 0.95));
    let n = args.reconciles.max(1) as f64;
    let children = before
        .keys()
        .filter(|k| !k.starts_with("HealthcarePlatform/"))
        .count();
    let changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).map(|b| &b.resource_version) != Some(&v.resource_version))
        .map(|(k, v)| format!("{k} (managers: {})", v.managers.join("; ")))
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{k} (gone)")),
        )
        .collect();
    let writes = steady.writes() - steady.writes_of("Event");
    let per_child = writes as f64 / n / children.max(1) as f64;
    let writes_ok = per_child <= 1.0 && changed.is_empty();
    println!(
        "== steady-state reconcile ({} reconciles of the unchanged Ready platform)",
        args.reconciles
    );
    println!(
        "p50 {p50:.2} ms, p95 {p95:.2} ms, max {:.2} ms (target < {TARGET_RECONCILE_MS} ms): {}",
        ms(durations.last().copied().unwrap_or_default()),
        verdict(p95 < TARGET_RECONCILE_MS)
    );
    println!(
        "per reconcile: {:.2} API calls: {}",
        steady.total() as f64 / n,
        steady.describe(n)
    );
    println!(
        "writes per reconcile: {:.2} for {children} children = {per_child:.2} per child, {:.2} Events; \
         resourceVersions changed over {} reconciles: {} of {} objects (target ≤ 1 write per child, none changed): {}",
        writes as f64 / n,
        steady.writes_of("Event") as f64 / n,
        args.reconciles,
        changed.len(),
        after.len(),
        verdict(writes_ok)
    );
    for c in &changed {
        println!("  changed: {c}");
    }
    let mean = durations.iter().sum::<Duration>() / args.reconciles.max(1) as u32;
    let waited_total = waited.values().sum::<Duration>() / args.reconciles.max(1) as u32;
    println!(
        "mean reconcile {:.2} ms, of which {:.2} ms ({:.0} %) waiting for API responses; mean per call: {}",
        ms(mean),
        ms(waited_total),
        100.0 * waited_total.as_secs_f64() / mean.as_secs_f64().max(f64::EPSILON),
        waited
            .iter()
            .map(|(verb, d)| {
                let calls = steady.verb(verb).max(1);
                format!("{verb} {:.2} ms", ms(*d) / calls as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let forbidden = log.forbidden();
    if forbidden.total() > 0 {
        println!(
            "WARNING: the chart's RBAC refused operator requests: {}",
            forbidden.describe(1.0)
        );
    }
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
    Ok(InProcess {
        p95_ms: p95,
        writes_ok,
        workloads: workload_count,
    })
}
