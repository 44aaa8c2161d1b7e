//! The controller: kube-runtime `Controller` over `HealthcarePlatform` and every owned kind
//! (this file: wiring, watches, context, errors, backoff with jitter). The staged reconcile
//! (validate → desired objects → apply → status) is in `stages`, the finalizer that applies
//! `deletionPolicy` in `finalizer`, Events in `events`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PartialObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::apply::{self, describe, Applier, ApplyError, DriftTracker};
use crate::compliance::{self, self_report::SelfReportClient, stage::ComplianceUpdate};
use crate::crd::{DatabaseProvider, DeletionPolicy, HealthcarePlatform};
use crate::desired::{build_children, cnpg, restore, secrets, SecretGenerator};
use crate::metrics::Metrics;
use crate::names::{Names, FINALIZER, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};
use crate::status::{self, Outcome};
use crate::validate::validate;
use crate::watch_cache;

/// Annotation that allows the operator to generate new Secrets for a platform that already
/// had them (they were deleted and cannot be restored).
pub const ANNOTATION_ALLOW_NEW_SECRETS: &str = "caduceus.io/allow-new-secrets";

/// Settings of the controller. `Default` gives the production values.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Periodic re-check of every platform without events (default 5 min).
    pub requeue_interval: Duration,
    /// Re-check interval while a platform is not Ready yet (default 15 s).
    pub progress_interval: Duration,
    /// First error backoff; doubles per consecutive failure (default 1 s).
    pub error_backoff_base: Duration,
    /// Longest error backoff (default 5 min).
    pub error_backoff_max: Duration,
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Platforms reconciled at once (default 8).
    pub concurrency: u16,
    /// `reportingInstance` of Events (usually the pod name).
    pub instance: Option<String>,
    /// Metrics registry the controller records into.
    pub metrics: Metrics,
    /// Timeout of one read of an API's compliance self-report (default 3 s).
    pub self_report_timeout: Duration,
    /// How often the operator checks whether optional CRDs (Prometheus Operator,
    /// CloudNativePG) appeared or went away; a change reconciles every platform (default 60 s).
    pub crd_recheck_interval: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            requeue_interval: Duration::from_secs(300),
            progress_interval: Duration::from_secs(15),
            error_backoff_base: Duration::from_secs(1),
            error_backoff_max: Duration::from_secs(300),
            namespace: None,
            concurrency: 8,
            instance: None,
            metrics: Metrics::new(),
            self_report_timeout: Duration::from_secs(3),
            crd_recheck_interval: Duration::from_secs(60),
        }
    }
}

/// Reconciler context: client, event recorder, metrics, config. (The HTTP server has its own
/// state; it only shares `Metrics`.)
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub config: ControllerConfig,
    pub drift: DriftTracker,
    /// Reads the APIs' compliance self-reports (an error when no HTTP client could be built).
    pub self_reports: Result<SelfReportClient, String>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        let reporter = Reporter {
            controller: MANAGED_BY.into(),
            instance: config.instance.clone(),
        };
        let self_reports =
            SelfReportClient::new(config.self_report_timeout).map_err(|e| e.to_string());
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            metrics: config.metrics.clone(),
            client,
            config,
            drift: DriftTracker::default(),
            self_reports,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        match self.failures.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Errors of the reconcile (one enum per stage below it).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("patching the status failed: {0}")]
    Status(String),
    #[error("finalizer cleanup failed: {0}")]
    Cleanup(String),
    #[error("the platform has no namespace")]
    NoNamespace,
    #[error("reading the platform failed: {0}")]
    Read(String),
}

impl ReconcileError {
    /// Status reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Apply(e) => e.reason(),
            ReconcileError::Status(_) => "StatusPatchFailed",
            ReconcileError::Cleanup(_) => "CleanupFailed",
            ReconcileError::NoNamespace => "NoNamespace",
            ReconcileError::Read(_) => "ReadFailed",
        }
    }
}

/// Error type of one reconcile (the finalizer helper wraps ours).
pub type Error = FinalizerError<ReconcileError>;

/// Metric label / reason of a reconcile error.
pub fn error_reason(e: &Error) -> &'static str {
    match e {
        FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => inner.reason(),
        FinalizerError::AddFinalizer(_) => "AddFinalizerFailed",
        FinalizerError::RemoveFinalizer(_) => "RemoveFinalizerFailed",
        FinalizerError::UnnamedObject => "UnnamedObject",
        _ => "FinalizerFailed",
    }
}

/// Errors that stop the controller from starting.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(
        "the HealthcarePlatform CRD is not installed (install crds/caduceus.io_healthcareplatforms.yaml): {0}"
    )]
    CrdNotInstalled(String),
    #[error("cannot list HealthcarePlatforms: {0}")]
    Api(String),
}

fn key(hp: &HealthcarePlatform) -> String {
    format!("{}/{}", hp.namespace().unwrap_or_default(), hp.name_any())
}

mod events;
mod finalizer;
mod stages;

use events::{publish, publish_related};
use finalizer::cleanup;
use stages::apply_platform;

/// One reconcile, wrapped in the finalizer helper and measured; its log lines carry the
/// platform (`namespace/name`, never spec values) through the `reconcile` span.
#[tracing::instrument(name = "reconcile", skip_all, fields(platform = %key(&hp)))]
pub async fn reconcile(hp: Arc<HealthcarePlatform>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let platform_key = key(&hp);
    let ns = hp.namespace().unwrap_or_default();
    let api: Api<HealthcarePlatform> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, hp, |event| async {
        match event {
            FinalizerEvent::Apply(hp) => apply_platform(hp, &ctx).await,
            FinalizerEvent::Cleanup(hp) => cleanup(hp, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    match &result {
        Ok(_) => {
            ctx.metrics.reconciles.with_label_values(&["success"]).inc();
            ctx.failures().remove(&platform_key);
        }
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&["error"]).inc();
            ctx.metrics
                .errors
                .with_label_values(&[error_reason(e)])
                .inc();
        }
    }
    result
}

/// Exponential backoff with jitter: base·2^(n-1), capped, plus up to one base of jitter.
pub fn backoff(config: &ControllerConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = config.error_backoff_base;
    let delay = base
        .saturating_mul(1u32 << exp)
        .min(config.error_backoff_max);
    let jitter_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    delay + Duration::from_millis(rand::rng().random_range(0..jitter_ms))
}

/// Requeue after an error with backoff and jitter.
pub fn error_policy(hp: Arc<HealthcarePlatform>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut map = ctx.failures();
        let n = map.entry(key(&hp)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(&ctx.config, failures);
    warn!(platform = %key(&hp), reason = error_reason(err), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Which optional CRDs are served: (Prometheus Operator, CloudNativePG). `None` when discovery
/// failed (no change is assumed then).
async fn optional_crds(client: &Client) -> Option<(bool, bool)> {
    let monitoring = apply::prometheus_operator_installed(client).await.ok()?;
    let cnpg = apply::cnpg_installed(client).await.ok()?;
    Some((monitoring, cnpg))
}

/// Yields once each time the set of served optional CRDs changes (checked every `interval`),
/// so platforms waiting for the Prometheus Operator or CloudNativePG are reconciled as soon as
/// it is installed instead of at the next periodic requeue.
fn optional_crd_changes(
    client: Client,
    interval: Duration,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(None, move |last: Option<(bool, bool)>| {
        let client = client.clone();
        async move {
            let mut last = last;
            loop {
                // The first check (the baseline) runs at once; later ones every `interval`.
                if last.is_some() {
                    tokio::time::sleep(interval).await;
                }
                let Some(now) = optional_crds(&client).await else {
                    tokio::time::sleep(interval).await;
                    continue;
                };
                let changed = last.is_some_and(|l| l != now);
                last = Some(now);
                if changed {
                    info!(
                        prometheus_operator = now.0,
                        cloudnativepg = now.1,
                        "optional CRDs changed; reconciling every platform"
                    );
                    return Some(((), last));
                }
            }
        }
    })
}

/// Runs the controller until `shutdown` completes.
///
/// Watches `HealthcarePlatform`s (all namespaces, or `config.namespace`) and every owned kind
/// (labelled `app.kubernetes.io/managed-by=caduceus-operator`), so an edited or deleted child
/// triggers a reconcile within seconds. Leader election is the caller's business (see `main`).
pub async fn run_controller(
    client: Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    run_with_context(Arc::new(Context::new(client, config)), shutdown).await
}

/// [`run_controller`] with a context made by the caller (the benchmark reconciles with it
/// while the controller's watches fill its watch cache).
pub async fn run_with_context(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let config = &ctx.config;
    let platforms: Api<HealthcarePlatform> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(e) = platforms.list(&ListParams::default().limit(1)).await {
        return Err(match &e {
            kube::Error::Api(s) if s.code == 404 => ControllerError::CrdNotInstalled(describe(&e)),
            _ => ControllerError::Api(describe(&e)),
        });
    }
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = config.namespace.clone();
    let concurrency = config.concurrency;
    let crd_changes = optional_crd_changes(client.clone(), config.crd_recheck_interval);

    // graceful_shutdown_on needs a Sync future; bridge through a oneshot.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(());
    });

    info!("controller starting");
    // Every kind of the registry (`desired::kinds::child_kinds!`) is watched as it says there
    // (metadata only; Deployments and StatefulSets whole: their status is the platform's, the
    // cache keeps a summary; Jobs by their instance label: those of the backup CronJob are owned
    // by it, not by the platform) and recorded in the watch cache, which lets a reconcile skip
    // the apply of a child unchanged since its last apply. An edited or deleted child triggers a
    // reconcile of its platform.
    macro_rules! watch_kind {
        (Metadata, $ty:ty, $c:expr) => {
            $c.owns_stream(recorded_meta::<$ty>(&client, &ns, &owned, &ctx))
        };
        (Summary, $ty:ty, $c:expr) => {
            $c.owns_stream(recorded::<$ty, _>(
                watcher(api::<$ty>(&client, &ns), owned.clone()),
                ctx.clone(),
                <$ty as watch_cache::Summarized>::summary,
            ))
        };
        (ByInstanceLabel, $ty:ty, $c:expr) => {
            $c.watches(
                api::<$ty>(&client, &ns),
                owned.clone(),
                by_instance_label::<$ty>,
            )
        };
    }
    macro_rules! watch_all {
        ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {{
            let c = Controller::new(platforms, watcher::Config::default());
            $(let c = watch_kind!($watch, $ty, c);)*
            c
        }};
    }
    crate::desired::kinds::child_kinds!(watch_all)
        .reconcile_all_on(crd_changes)
        .with_config(RuntimeConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(async move {
            let _ = rx.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(platform = %obj.name, "reconciled"),
                Err(e) => debug!(error = %redact(&e.to_string()), "controller event"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// A watch event stream of kind `K` (objects `O`: `K` or its metadata), recorded in the watch
/// cache, as the touched objects the controller maps to their owners.
fn recorded<K, O>(
    events: impl futures::Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Send + 'static,
    ctx: Arc<Context>,
    keep: fn(&O) -> Option<Arc<dyn std::any::Any + Send + Sync>>,
) -> impl futures::Stream<Item = Result<O, watcher::Error>> + Send + 'static
where
    K: k8s_openapi::Resource,
    O: Resource + Clone + Send + 'static,
{
    events
        .default_backoff()
        .map_ok(move |event| {
            ctx.drift.watched.record(K::KIND, &event, keep);
            event
        })
        .touched_objects()
}

/// The metadata watch of owned kind `K` (label `managed-by`), recorded in the watch cache.
fn recorded_meta<K>(
    client: &Client,
    ns: &Option<String>,
    owned: &watcher::Config,
    ctx: &Arc<Context>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // `Api<PartialObjectMeta<K>>` makes metadata-only requests.
    let api: Api<PartialObjectMeta<K>> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    recorded::<K, _>(
        watcher(api, owned.clone()),
        ctx.clone(),
        watch_cache::versions_only::<PartialObjectMeta<K>>,
    )
}

/// The platform an object belongs to by its `app.kubernetes.io/instance` label (in its
/// namespace).
fn by_instance_label<K: Resource>(object: K) -> Option<ObjectRef<HealthcarePlatform>> {
    let ns = object.meta().namespace.as_deref()?;
    let name = object.meta().labels.as_ref()?.get(LABEL_INSTANCE)?;
    Some(ObjectRef::new(name).within(ns))
}

fn redact(s: &str) -> String {
    apply::redact_quoted(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = ControllerConfig {
            error_backoff_base: Duration::from_millis(100),
            error_backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        let first = backoff(&cfg, 1);
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(200));
        let third = backoff(&cfg, 3);
        assert!(third >= Duration::from_millis(400) && third < Duration::from_millis(500));
        let many = backoff(&cfg, 50);
        assert!(many >= Duration::from_secs(1) && many < Duration::from_millis(1100));
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(&cfg, 2)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn default_config_matches_documentation() {
        let c = ControllerConfig::default();
        assert_eq!(c.requeue_interval, Duration::from_secs(300));
        assert!(c.namespace.is_none());
    }

    #[test]
    fn error_reasons_are_stable_labels() {
        let e: Error = FinalizerError::ApplyFailed(ReconcileError::Apply(ApplyError::Discovery {
            detail: "x".into(),
        }));
        assert_eq!(error_reason(&e), "DiscoveryFailed");
        let e: Error = FinalizerError::CleanupFailed(ReconcileError::Cleanup("x".into()));
        assert_eq!(error_reason(&e), "CleanupFailed");
        let e: Error =
            FinalizerError::ApplyFailed(ReconcileError::Apply(ApplyError::StorageDecrease {
                name: "demo-postgres".into(),
                field: "spec.database.storage.size",
                claim: "data".into(),
                live: "20Gi".into(),
                desired: "10Gi".into(),
            }));
        assert_eq!(error_reason(&e), "StorageDecreaseRefused");
    }
}
