//! Apply stage: server-side apply of every child with field manager `caduceus-operator`
//! (`force`), deletion of children that must no longer exist, CloudNativePG discovery, reading
//! existing Secrets (so generated values are never overwritten), and drift detection.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::compliance::self_report::SelfReport;
use crate::crd::{CacheProvider, DatabaseProvider};
use crate::desired::backup_cnpg::SCHEDULED_BACKUP_KIND;
use crate::desired::monitoring::{self, MonitoringObjects};
use crate::desired::{
    backup, backup_cnpg, cnpg, restore, BackupObjects, Children, ExistingSecrets, PostgresObjects,
    RedisObjects,
};
use crate::drift::{prune, same_pod_spec};
use crate::names::{selector_string, Component, FIELD_MANAGER};
use crate::validate::ValidatedPlatform;
use crate::volume_claims::{self, TemplatePlan};
use crate::watch_cache::{child_key, WatchCache};

/// How long a child may go without a real apply although the watch shows it unchanged since the
/// last one (a safety net under the watch: past it, the next reconcile applies it again).
pub const REVERIFY_AFTER: Duration = Duration::from_secs(600);

/// Errors of the apply stage. Messages name the object, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {name} failed: {detail}")]
    Apply {
        kind: &'static str,
        name: String,
        detail: String,
    },
    #[error("deleting {kind} {name} failed: {detail}")]
    Delete {
        kind: &'static str,
        name: String,
        detail: String,
    },
    #[error("reading Secret {name} failed: {detail}")]
    ReadSecret { name: String, detail: String },
    #[error("discovering CloudNativePG failed: {detail}")]
    Discovery { detail: String },
    #[error("reading {kind} {name} failed: {detail}")]
    Read {
        kind: &'static str,
        name: String,
        detail: String,
    },
    /// The desired storage request of a StatefulSet's claim template is smaller than the live
    /// one. Nothing of that StatefulSet is changed; the other children are applied.
    #[error(
        "{field} asks for {desired} but StatefulSet {name} (volume claim template {claim}) has {live}: a PersistentVolumeClaim cannot shrink, so the decrease is not applied; set {field} back to at least {live}"
    )]
    StorageDecrease {
        name: String,
        field: &'static str,
        claim: String,
        live: String,
        desired: String,
    },
    #[error(
        "expanding PersistentVolumeClaim {name} from {from} to {to} failed: {detail} (its StorageClass must allow volume expansion)"
    )]
    VolumeExpansion {
        name: String,
        from: String,
        to: String,
        detail: String,
    },
}

impl ApplyError {
    /// Status condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Apply { .. } => "ApplyFailed",
            ApplyError::Delete { .. } => "DeleteFailed",
            ApplyError::ReadSecret { .. } => "SecretReadFailed",
            ApplyError::Discovery { .. } => "DiscoveryFailed",
            ApplyError::Read { .. } => "ReadFailed",
            ApplyError::StorageDecrease { .. } => "StorageDecreaseRefused",
            ApplyError::VolumeExpansion { .. } => "VolumeExpansionFailed",
        }
    }
}

/// Describes a kube error without echoing quoted values (which could be secret or PHI).
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!(
                "{} {}: {}",
                status.code,
                status.reason,
                redact_quoted(&status.message)
            )
        }
        other => redact_quoted(&other.to_string()),
    }
}

/// Replaces every `"..."` with `"…"`.
pub fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for ch in s.chars() {
        if ch == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(ch);
        }
    }
    out
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// What the last apply of an object looked like, to tell drift from our own changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    desired: String,
    uid: String,
    marker: String,
    /// resourceVersion the apply returned, and when it was applied.
    version: String,
    at: Instant,
}

/// In-memory record of applied objects, shared by all reconciles.
#[derive(Debug, Default)]
pub struct DriftTracker {
    applied: Mutex<HashMap<String, Fingerprint>>,
    known_absent: Mutex<HashSet<String>>,
    /// Objects (key → desired hash and generation) whose part still differed right after being
    /// replaced: the difference comes back on every write (e.g. a mutating admission webhook), so
    /// replacing again would only write (and report drift) on every reconcile. Replaced again
    /// once the object or the desired state changes.
    futile: Mutex<HashMap<String, (String, String)>>,
    /// What the controller's watches last saw of each child (see [`WatchCache`]).
    pub watched: WatchCache,
}

impl DriftTracker {
    /// Records an apply; returns true when the object had drifted (deleted or changed by someone
    /// else) although we applied the same desired state as last time.
    fn record(&self, key: String, fp: Fingerprint) -> bool {
        let mut map = match self.applied.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        // An empty marker is one a controller had not written yet (a new Deployment's revision
        // annotation): its first value is not someone else's change.
        let drifted = map.get(&key).is_some_and(|prev| {
            prev.desired == fp.desired
                && (prev.uid != fp.uid || (!prev.marker.is_empty() && prev.marker != fp.marker))
        });
        map.insert(key, fp);
        drifted
    }

    /// (uid, resourceVersion) of `key` when it cannot have changed since our last apply of the
    /// same `desired` state: the watch shows the object that apply returned, and that apply is
    /// less than [`REVERIFY_AFTER`] old. `None`: apply it.
    fn unchanged(&self, key: &str, desired: &str) -> Option<(String, String)> {
        let last = {
            let map = match self.applied.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            let fp = map.get(key)?;
            (fp.desired == desired && fp.at.elapsed() < REVERIFY_AFTER)
                .then(|| (fp.uid.clone(), fp.version.clone()))?
        };
        (self.watched.version(key)? == last).then_some(last)
    }

    /// Forgets the last apply of `key`, so the next reconcile applies it for real.
    fn forget_key(&self, key: &str) {
        match self.applied.lock() {
            Ok(mut m) => m.remove(key),
            Err(poisoned) => poisoned.into_inner().remove(key),
        };
    }

    /// The desired-state hash of the last apply of `key`, if any.
    fn last_desired(&self, key: &str) -> Option<String> {
        let map = match self.applied.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(key).map(|fp| fp.desired.clone())
    }

    fn futile(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        match self.futile.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether replacing `key` is known to be futile for this desired state and this version of
    /// the object (`version`: generation, else resourceVersion).
    fn replacement_futile(&self, key: &str, desired: &str, version: &str) -> bool {
        self.futile()
            .get(key)
            .is_some_and(|(d, v)| d == desired && v == version)
    }

    fn absent(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.known_absent.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets everything about a platform (after deletion).
    pub fn forget(&self, namespace: &str, platform: &str) {
        let needle = format!("/{namespace}/{platform}-");
        match self.applied.lock() {
            Ok(mut m) => m.retain(|k, _| !k.contains(&needle)),
            Err(poisoned) => poisoned.into_inner().retain(|k, _| !k.contains(&needle)),
        }
        self.absent().retain(|k| !k.contains(&needle));
        self.futile().retain(|k, _| !k.contains(&needle));
    }

    pub fn len(&self) -> usize {
        match self.applied.lock() {
            Ok(m) => m.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The objects apply returned (with their live status), for the status stage.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub deployment: Option<Deployment>,
    pub postgres: Option<StatefulSet>,
    pub redis: Option<StatefulSet>,
    pub cnpg_cluster: Option<DynamicObject>,
    /// Number of NetworkPolicies in place (0 when disabled).
    pub network_policies: usize,
    /// False when the CloudNativePG provider is requested but its CRD is not served.
    pub cnpg_installed: bool,
    /// Kinds whose drift was corrected in this reconcile.
    pub drift_corrected: Vec<(&'static str, String)>,
    /// What happened to the monitoring objects.
    pub monitoring: MonitoringState,
    /// The platform's backup Jobs (scheduled and on-demand) and their pods, for `status.backup`.
    pub backup_jobs: Vec<Job>,
    pub backup_pods: Vec<Pod>,
    /// The on-demand backup Job created (or found) for the current `caduceus.io/backup-now`
    /// token in this reconcile.
    pub on_demand_job: Option<String>,
    /// Expiry of the applied database certificates (embedded database).
    pub database: Option<crate::crd::DatabaseStatus>,
    /// Where the restore of `database.bootstrap.fromBackup` stands (its Job and pod).
    pub restore: restore::Progress,
    /// The API's compliance self-report read after apply (`None`: not read, because neither
    /// the compliance rules nor an External cache need it). Filled by the controller.
    pub self_report: Option<Result<SelfReport, String>>,
}

/// Outcome of the monitoring objects in one reconcile (condition `MonitoringReady`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MonitoringState {
    /// `monitoring.enabled` is false (or not reconciled yet).
    #[default]
    Disabled,
    /// ServiceMonitors, PrometheusRule and dashboard applied.
    Applied,
    /// `monitoring.coreos.com` is not served: nothing applied.
    PrometheusOperatorNotInstalled,
}

/// Applies children of one platform.
pub struct Applier<'a> {
    pub client: Client,
    pub namespace: &'a str,
    pub tracker: &'a DriftTracker,
}

/// Result of applying one child.
enum Applied<K> {
    /// Applied: the live object the API server returned.
    Written(K),
    /// Not applied: unchanged since the last apply of the same desired state (the watch's copy
    /// when one is kept and it was asked for).
    Unchanged(Option<K>),
}

impl<K> Applied<K> {
    fn live(self) -> Option<K> {
        match self {
            Applied::Written(k) => Some(k),
            Applied::Unchanged(k) => k,
        }
    }
}

impl Applier<'_> {
    /// Server-side apply of a child unless it is unchanged since the last apply (returns the
    /// live object when applied).
    async fn apply<K>(
        &self,
        obj: &K,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<K>, ApplyError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + 'static,
    {
        Ok(self.apply_child(obj, drift, false).await?.live())
    }

    /// The watch's copy of `key` when it is unchanged since the last apply of `desired`
    /// (`Some(None)` when the copy is not needed or not kept; then `need_live` is false).
    fn skip<K: Clone + 'static>(
        &self,
        key: &str,
        desired: &str,
        need_live: bool,
    ) -> Option<Option<K>> {
        let (uid, version) = self.tracker.unchanged(key, desired)?;
        if !need_live {
            return Some(None);
        }
        self.tracker
            .watched
            .object::<K>(key, &uid, &version)
            .map(Some)
    }

    /// Server-side apply of a child, skipped when it is unchanged since the last apply of the
    /// same desired state (with `need_live`, only when the watch kept a copy to return).
    async fn apply_child<K>(
        &self,
        obj: &K,
        drift: &mut Vec<(&'static str, String)>,
        need_live: bool,
    ) -> Result<Applied<K>, ApplyError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + 'static,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = child_key(kind, self.namespace, &name);
        let desired = desired_hash(obj);
        if let Some(copy) = self.skip::<K>(&key, &desired, need_live) {
            return Ok(Applied::Unchanged(copy));
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = api
            .patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| ApplyError::Apply {
                kind,
                name: name.clone(),
                detail: describe(&e),
            })?;
        self.tracker.absent().remove(&key);
        let marker = change_marker(kind, &live, obj);
        let fp = Fingerprint {
            desired,
            uid: live.meta().uid.clone().unwrap_or_default(),
            marker,
            version: live.meta().resource_version.clone().unwrap_or_default(),
            at: Instant::now(),
        };
        if self.tracker.record(key, fp) {
            drift.push((kind, name));
        }
        Ok(Applied::Written(live))
    }

    async fn apply_dynamic(
        &self,
        obj: &DynamicObject,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<DynamicObject, ApplyError> {
        self.apply_dynamic_as(obj, &cnpg::api_resource(), "Cluster", drift)
            .await
    }

    /// Server-side apply of a custom resource of kind `kind` (`ar`).
    async fn apply_dynamic_as(
        &self,
        obj: &DynamicObject,
        ar: &ApiResource,
        kind: &'static str,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<DynamicObject, ApplyError> {
        let name = obj.name_any();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace, ar);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = api
            .patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| ApplyError::Apply {
                kind,
                name: name.clone(),
                detail: describe(&e),
            })?;
        let key = format!("{kind}/{}/{name}", self.namespace);
        self.tracker.absent().remove(&key);
        let fp = Fingerprint {
            desired: desired_hash(obj),
            uid: live.metadata.uid.clone().unwrap_or_default(),
            marker: live
                .metadata
                .generation
                .map(|g| g.to_string())
                .unwrap_or_default(),
            version: live.metadata.resource_version.clone().unwrap_or_default(),
            at: Instant::now(),
        };
        if self.tracker.record(key, fp) {
            drift.push((kind, name));
        }
        Ok(live)
    }

    /// Applies a child, then makes the part at `path` exactly the desired one when `same` says
    /// the live object still differs from `obj` (returns the live object).
    ///
    /// Server-side apply never removes fields owned by another field manager: a key added by
    /// hand to a NetworkPolicy's `podSelector.matchLabels`, an env var added with `kubectl set
    /// env`, a `privileged: true` set by hand survive the apply. When the live object still
    /// differs after the apply, the part at `path` (a NetworkPolicy's spec, a workload's pod
    /// spec) is replaced as a whole with a JSON patch guarded by the generation, which drops
    /// such fields, and the correction counts as drift. In steady state `same` holds and nothing
    /// more is written.
    ///
    /// Skipped like [`Self::apply`] when unchanged since the last apply (which left the part
    /// exact, or found replacing it futile); `need_live` as in [`Self::apply_child`].
    async fn apply_exact<K>(
        &self,
        obj: &K,
        path: &str,
        same: fn(&K, &K) -> bool,
        drift: &mut Vec<(&'static str, String)>,
        need_live: bool,
    ) -> Result<Option<K>, ApplyError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + 'static,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = child_key(kind, self.namespace, &name);
        let previous = self.tracker.last_desired(&key);
        let live = match self.apply_child(obj, drift, need_live).await? {
            Applied::Written(live) => live,
            Applied::Unchanged(copy) => return Ok(copy),
        };
        let desired = desired_hash(obj);
        if same(&live, obj)
            || self
                .tracker
                .replacement_futile(&key, &desired, &object_version(live.meta()))
        {
            return Ok(Some(live));
        }
        let err = |detail: String| ApplyError::Apply {
            kind,
            name: name.clone(),
            detail: format!("building the replacement of {path}: {detail}"),
        };
        let replacement = serde_json::to_value(obj)
            .map_err(|e| err(e.to_string()))?
            .pointer(path)
            .cloned()
            .ok_or_else(|| err("absent from the desired object".into()))?;
        // Guarded: the replaced part is the one just compared. `generation` (bumped by spec
        // changes only) where the kind has one, so a status update by the workload's controller
        // in between does not fail the patch; otherwise the resourceVersion.
        let guard = match live.meta().generation {
            Some(g) if g > 0 => {
                serde_json::json!({"op": "test", "path": "/metadata/generation", "value": g})
            }
            _ => {
                serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": live.meta().resource_version})
            }
        };
        let ops = serde_json::json!([guard, {"op": "replace", "path": path, "value": replacement}]);
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|e| err(e.to_string()))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let replaced = api
            .patch(&name, &params, &Patch::Json::<()>(patch))
            .await
            .map_err(|e| ApplyError::Apply {
                kind,
                name: name.clone(),
                detail: describe(&e),
            })?;
        if !same(&replaced, obj) {
            warn!(
                kind,
                name = %name,
                "{path} still differs right after its replacement (a mutating admission webhook?); not replaced again until the desired state changes"
            );
            self.tracker.futile().insert(
                key.clone(),
                (desired.clone(), object_version(replaced.meta())),
            );
        }
        // A field the operator itself stopped setting can linger (co-owned by an earlier
        // replacement's update entry); removing it is not drift.
        let own_change = previous.is_some_and(|p| p != desired);
        self.tracker.record(
            key,
            Fingerprint {
                desired,
                uid: replaced.meta().uid.clone().unwrap_or_default(),
                marker: change_marker(kind, &replaced, obj),
                version: replaced.meta().resource_version.clone().unwrap_or_default(),
                at: Instant::now(),
            },
        );
        if !own_change && !drift.iter().any(|(k, n)| *k == kind && *n == name) {
            drift.push((kind, name));
        }
        Ok(Some(replaced))
    }

    /// Applies an embedded database / cache StatefulSet with its pod spec made exact.
    async fn apply_workload(
        &self,
        sts: &StatefulSet,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<StatefulSet>, ApplyError> {
        self.apply_exact(
            sts,
            POD_SPEC,
            |live, want| same_pod_spec(stateful_set_pod(live), stateful_set_pod(want)),
            drift,
            true,
        )
        .await
    }

    /// Applies an embedded database / cache StatefulSet whose volume claim templates may have
    /// changed (see [`volume_claims`]): templates that differ from the live ones make it be
    /// deleted (PVCs kept; pods too when they can be adopted) and created again;
    /// a grown storage request is then written to its existing PVCs; a smaller one is refused
    /// ([`ApplyError::StorageDecrease`]) without touching the StatefulSet. `component` selects
    /// its PVCs; `storage_field` names the spec field of the request in messages. `None` when
    /// the old StatefulSet is still being deleted (the next reconcile creates it; its
    /// deletion triggers one).
    async fn apply_stateful_set(
        &self,
        sts: &StatefulSet,
        component: Component,
        storage_field: &'static str,
        names: &crate::names::Names,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<StatefulSet>, ApplyError> {
        let name = sts.metadata.name.clone().unwrap_or_default();
        let key = child_key("StatefulSet", self.namespace, &name);
        // Unchanged since its last apply, which also planned its claim templates and grew its
        // PVCs: nothing to read or write.
        if let Some(Some(copy)) = self.skip::<StatefulSet>(&key, &desired_hash(sts), true) {
            return Ok(Some(copy));
        }
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), self.namespace);
        let live = api.get_opt(&name).await.map_err(|e| ApplyError::Read {
            kind: "StatefulSet",
            name: name.clone(),
            detail: describe(&e),
        })?;
        match volume_claims::plan(live.as_ref(), sts) {
            TemplatePlan::Keep => {}
            TemplatePlan::Refuse(d) => {
                return Err(ApplyError::StorageDecrease {
                    name,
                    field: storage_field,
                    claim: d.claim,
                    live: d.live,
                    desired: d.desired,
                })
            }
            TemplatePlan::Recreate { keep_pods } => {
                if let Some(live) = &live {
                    if !self.delete_stateful_set(&api, live, keep_pods).await? {
                        return Ok(None);
                    }
                }
            }
        }
        let applied = self.apply_workload(sts, drift).await?;
        if sts.spec.as_ref().is_some_and(|s| {
            s.volume_claim_templates
                .as_ref()
                .is_some_and(|t| !t.is_empty())
        }) {
            if let Err(e) = self
                .expand_claims(sts, &selector_string(&names.selector(component)))
                .await
            {
                // Not skipped next time: the expansion is retried.
                self.tracker.forget_key(&key);
                return Err(e);
            }
        }
        Ok(applied)
    }

    /// Deletes a StatefulSet (guarded by its uid) so it can be created again with new claim
    /// templates — `propagationPolicy: Orphan` when `keep_pods` (pods and PVCs keep running),
    /// otherwise `Background` (its pods go with it; its PVCs are retained by its retention
    /// policy) — and waits a few seconds until it is gone. Returns whether it is gone.
    async fn delete_stateful_set(
        &self,
        api: &Api<StatefulSet>,
        live: &StatefulSet,
        keep_pods: bool,
    ) -> Result<bool, ApplyError> {
        /// Checks for the StatefulSet to be gone (with `Orphan` the garbage collector removes the
        /// owner references of its pods first), 250 ms apart.
        const POLLS: usize = 40;
        let name = live.metadata.name.clone().unwrap_or_default();
        if live.metadata.deletion_timestamp.is_none() {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..if keep_pods {
                    DeleteParams::orphan()
                } else {
                    DeleteParams::background()
                }
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                // Already gone, or replaced by someone else since it was read.
                Err(e)
                    if is_not_found(&e) || matches!(&e, kube::Error::Api(s) if s.code == 409) => {}
                Err(e) => {
                    return Err(ApplyError::Delete {
                        kind: "StatefulSet",
                        name,
                        detail: describe(&e),
                    })
                }
            }
            info!(
                namespace = self.namespace,
                name = %name,
                keep_pods,
                "volume claim templates changed: StatefulSet deleted (PVCs kept), to be created again"
            );
        }
        // Our own deletion: the re-created object is no drift.
        let key = format!("StatefulSet/{}/{name}", self.namespace);
        match self.tracker.applied.lock() {
            Ok(mut m) => m.remove(&key),
            Err(poisoned) => poisoned.into_inner().remove(&key),
        };
        for _ in 0..POLLS {
            let current = api.get_opt(&name).await.map_err(|e| ApplyError::Read {
                kind: "StatefulSet",
                name: name.clone(),
                detail: describe(&e),
            })?;
            match current {
                None => return Ok(true),
                // Someone else created it again already.
                Some(s) if s.metadata.uid != live.metadata.uid => return Ok(true),
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
        warn!(
            namespace = self.namespace,
            name = %name,
            "the StatefulSet is still being deleted; it is created again by a later reconcile"
        );
        Ok(false)
    }

    /// Grows the storage request of every PVC of `sts` (selected by `selector`) that is smaller
    /// than its claim template's (merge patch, field manager `caduceus-operator`).
    async fn expand_claims(&self, sts: &StatefulSet, selector: &str) -> Result<(), ApplyError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), self.namespace);
        let claims = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| ApplyError::Read {
                kind: "PersistentVolumeClaim",
                name: selector.to_string(),
                detail: describe(&e),
            })?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for grow in volume_claims::expansions(sts, &claims.items) {
            let patch = serde_json::json!({
                "spec": {"resources": {"requests": {volume_claims::STORAGE: grow.to}}}
            });
            api.patch(&grow.pvc, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| ApplyError::VolumeExpansion {
                    name: grow.pvc.clone(),
                    from: grow.from.clone(),
                    to: grow.to.0.clone(),
                    detail: describe(&e),
                })?;
            info!(
                namespace = self.namespace,
                pvc = %grow.pvc,
                from = %grow.from,
                to = %grow.to.0,
                "PersistentVolumeClaim expanded"
            );
        }
        Ok(())
    }

    /// Deletes a custom resource that must not exist; 404 is success. Skips objects already
    /// known absent.
    async fn delete_dynamic(
        &self,
        ar: &ApiResource,
        kind: &'static str,
        name: &str,
    ) -> Result<(), ApplyError> {
        let key = format!("{kind}/{}/{name}", self.namespace);
        if self.tracker.absent().contains(&key) {
            return Ok(());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace, ar);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(ApplyError::Delete {
                    kind,
                    name: name.to_string(),
                    detail: describe(&e),
                })
            }
        }
        match self.tracker.applied.lock() {
            Ok(mut m) => m.remove(&key),
            Err(poisoned) => poisoned.into_inner().remove(&key),
        };
        self.tracker.absent().insert(key);
        Ok(())
    }

    /// Applies the monitoring objects when the Prometheus Operator CRDs are served; removes
    /// them when monitoring is disabled.
    async fn apply_monitoring(
        &self,
        p: &ValidatedPlatform,
        objects: Option<MonitoringObjects>,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<MonitoringState, ApplyError> {
        let installed = prometheus_operator_installed(&self.client).await?;
        let names = &p.names;
        match (objects, installed) {
            (Some(m), true) => {
                let sm = monitoring::service_monitor_resource();
                self.apply_dynamic_as(&m.api_service_monitor, &sm, "ServiceMonitor", drift)
                    .await?;
                self.apply_dynamic_as(&m.operator_service_monitor, &sm, "ServiceMonitor", drift)
                    .await?;
                let pr = monitoring::prometheus_rule_resource();
                self.apply_dynamic_as(&m.prometheus_rule, &pr, "PrometheusRule", drift)
                    .await?;
                self.apply(&m.dashboard, drift).await?;
                Ok(MonitoringState::Applied)
            }
            (Some(_), false) => {
                self.delete::<ConfigMap>(&names.dashboard()).await?;
                Ok(MonitoringState::PrometheusOperatorNotInstalled)
            }
            (None, _) => {
                if installed {
                    let sm = monitoring::service_monitor_resource();
                    for name in [
                        names.api_service_monitor(),
                        names.operator_service_monitor(),
                    ] {
                        self.delete_dynamic(&sm, "ServiceMonitor", &name).await?;
                    }
                    let pr = monitoring::prometheus_rule_resource();
                    self.delete_dynamic(&pr, "PrometheusRule", &names.prometheus_rule())
                        .await?;
                }
                self.delete::<ConfigMap>(&names.dashboard()).await?;
                Ok(MonitoringState::Disabled)
            }
        }
    }

    /// Deletes an object that must not exist; 404 is success. Skips objects already known absent.
    async fn delete<K>(&self, name: &str) -> Result<(), ApplyError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let key = format!(
            "{}/{}/{name}",
            <K as k8s_openapi::Resource>::KIND,
            self.namespace
        );
        if self.tracker.absent().contains(&key) {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(ApplyError::Delete {
                    kind: <K as k8s_openapi::Resource>::KIND,
                    name: name.to_string(),
                    detail: describe(&e),
                })
            }
        }
        match self.tracker.applied.lock() {
            Ok(mut m) => m.remove(&key),
            Err(poisoned) => poisoned.into_inner().remove(&key),
        };
        self.tracker.absent().insert(key);
        Ok(())
    }

    /// Applies every child. `Children` is destructured without `..`: a new field is a compile
    /// error here until it is applied. `restore_job` is [`restore::job`] of the same platform.
    pub async fn apply_all(
        &self,
        p: &ValidatedPlatform,
        children: Children,
        restore_job: Option<Job>,
        cnpg_installed: bool,
    ) -> Result<Observed, ApplyError> {
        let Children {
            postgres_credentials,
            postgres_tls,
            redis_credentials,
            api_secrets,
            postgres,
            cnpg_cluster,
            redis,
            api_service_account,
            api_config,
            api_deployment,
            api_service,
            api_hpa,
            api_pdb,
            api_ingress,
            network_policies,
            backup,
            monitoring,
        } = children;
        let names = &p.names;
        let mut drift = Vec::new();
        let mut observed = Observed {
            cnpg_installed,
            ..Default::default()
        };

        // Network policies first: no platform pod ever runs unprotected.
        for np in &network_policies {
            self.apply_exact(
                np,
                "/spec",
                |live, want| same_network_policy_spec(live.spec.as_ref(), want.spec.as_ref()),
                &mut drift,
                false,
            )
            .await?;
        }
        let wanted: HashSet<String> = network_policies
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for name in names
            .all_network_policies()
            .into_iter()
            .chain(backup::all_network_policy_names(p))
            .chain(restore::all_network_policy_names(p))
        {
            if !wanted.contains(&name) {
                self.delete::<NetworkPolicy>(&name).await?;
            }
        }
        observed.network_policies = network_policies.len();

        observed.database = postgres_tls
            .as_ref()
            .and_then(crate::desired::secrets::database_status);
        // Secrets are applied with the data read from the cluster: never overwritten.
        for secret in [postgres_credentials, postgres_tls, redis_credentials]
            .into_iter()
            .flatten()
        {
            self.apply(&secret, &mut drift).await?;
        }
        self.apply(&api_secrets, &mut drift).await?;
        self.apply(&api_service_account, &mut drift).await?;
        self.apply(&api_config, &mut drift).await?;

        // A refused storage decrease leaves that StatefulSet as it is, applies everything else
        // and fails the apply stage at the end.
        let mut refused: Option<ApplyError> = None;
        let mut refuse = |result: Result<Option<StatefulSet>, ApplyError>| match result {
            Ok(live) => Ok(live),
            Err(e @ ApplyError::StorageDecrease { .. }) => {
                refused.get_or_insert(e);
                Ok(None)
            }
            Err(e) => Err(e),
        };
        if let Some(PostgresObjects {
            stateful_set,
            headless_service,
            service,
        }) = postgres
        {
            self.apply(&headless_service, &mut drift).await?;
            self.apply(&service, &mut drift).await?;
            // Boxed (like the backup objects): keeps the reconcile future small.
            observed.postgres = refuse(
                Box::pin(self.apply_stateful_set(
                    &stateful_set,
                    Component::Database,
                    "spec.database.storage.size",
                    names,
                    &mut drift,
                ))
                .await,
            )?;
        }
        if let Some(cluster) = cnpg_cluster {
            if cnpg_installed {
                observed.cnpg_cluster = Some(self.apply_dynamic(&cluster, &mut drift).await?);
            }
        }
        match redis {
            Some(RedisObjects {
                stateful_set,
                service,
            }) => {
                self.apply(&service, &mut drift).await?;
                observed.redis = refuse(
                    Box::pin(self.apply_stateful_set(
                        &stateful_set,
                        Component::Cache,
                        "spec.cache.persistence.size",
                        names,
                        &mut drift,
                    ))
                    .await,
                )?;
            }
            None => {
                self.delete::<StatefulSet>(&names.redis()).await?;
                self.delete::<Service>(&names.redis()).await?;
            }
        }

        // Before the Deployment: the restore runs while the API is held at 0 replicas.
        let database_ready = restore_database_ready(p, observed.postgres.as_ref());
        observed.restore = self
            .apply_restore(p, restore_job, database_ready, &mut drift)
            .await?;

        observed.deployment = self
            .apply_exact(
                &api_deployment,
                POD_SPEC,
                |live, want| same_pod_spec(deployment_pod(live), deployment_pod(want)),
                &mut drift,
                true,
            )
            .await?;
        self.apply(&api_service, &mut drift).await?;
        match api_hpa {
            Some(hpa) => {
                self.apply(&hpa, &mut drift).await?;
            }
            None => self.delete::<HorizontalPodAutoscaler>(&names.api()).await?,
        }
        match api_pdb {
            Some(pdb) => {
                self.apply(&pdb, &mut drift).await?;
            }
            None => self.delete::<PodDisruptionBudget>(&names.api()).await?,
        }
        match api_ingress {
            Some(ing) => {
                self.apply(&ing, &mut drift).await?;
            }
            None => self.delete::<Ingress>(&names.api()).await?,
        }
        // Boxed: keeps the reconcile future small enough for a worker thread's stack.
        Box::pin(self.apply_backup(p, backup, cnpg_installed, &mut observed, &mut drift)).await?;
        observed.monitoring = self.apply_monitoring(p, monitoring, &mut drift).await?;
        if let Some(e) = refused {
            return Err(e);
        }
        observed.drift_corrected = drift;
        Ok(observed)
    }

    /// Creates the restore Job once the database is ready (and never re-applies it: a Job's pod
    /// template is immutable, and a finished restore must not run again because the platform
    /// changed; deleting a failed Job retries). When no restore is wanted any more, a Job still
    /// there is deleted unless `status.restore` recorded its success (then its TTL removes it,
    /// and its logs stay readable until then). Returns where the restore stands.
    async fn apply_restore(
        &self,
        p: &ValidatedPlatform,
        job: Option<Job>,
        database_ready: bool,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<restore::Progress, ApplyError> {
        let name = p.names.restore_job();
        let Some(job) = job else {
            if p.from_backup().is_none() || p.restore_pending {
                self.delete::<Job>(&name).await?;
            }
            return Ok(restore::Progress::NotRequested);
        };
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        let live = jobs.get_opt(&name).await.map_err(|e| ApplyError::Read {
            kind: "Job",
            name: name.clone(),
            detail: describe(&e),
        })?;
        let live = match live {
            Some(live) => Some(live),
            None if database_ready => self.apply(&job, drift).await?,
            None => None,
        };
        let pods = match &live {
            Some(_) => list_restore_pods(&self.client, p).await?,
            None => Vec::new(),
        };
        Ok(restore::progress(live.as_ref(), &pods))
    }

    /// Applies the backup objects, deletes the CronJob / ScheduledBackup when no longer wanted,
    /// creates the on-demand Job once and lists the backup Jobs and pods for the status.
    async fn apply_backup(
        &self,
        p: &ValidatedPlatform,
        objects: BackupObjects,
        cnpg_installed: bool,
        observed: &mut Observed,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<(), ApplyError> {
        let BackupObjects {
            cron_job,
            key_secret,
            pvc,
            on_demand_job,
            scheduled_backup,
        } = objects;
        let names = &p.names;
        // Kept when no longer wanted: the key decrypts existing backups, the PVC holds them.
        if let Some(secret) = key_secret {
            self.apply(&secret, drift).await?;
        }
        if let Some(claim) = pvc {
            self.apply(&claim, drift).await?;
        }
        match cron_job {
            Some(cj) => {
                self.apply_exact(
                    &cj,
                    "/spec/jobTemplate/spec/template/spec",
                    |live, want| same_pod_spec(cron_job_pod(live), cron_job_pod(want)),
                    drift,
                    false,
                )
                .await?;
            }
            None => self.delete::<CronJob>(&names.backup_cron_job()).await?,
        }
        if p.spec.database.provider == DatabaseProvider::CloudNativePG && cnpg_installed {
            let sb = backup_cnpg::scheduled_backup_resource();
            match scheduled_backup {
                Some(obj) => {
                    self.apply_dynamic_as(&obj, &sb, SCHEDULED_BACKUP_KIND, drift)
                        .await?;
                }
                None => {
                    let name = names.cnpg_scheduled_backup();
                    self.delete_dynamic(&sb, SCHEDULED_BACKUP_KIND, &name)
                        .await?
                }
            }
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        if let Some(job) = on_demand_job {
            let name = job.metadata.name.clone().unwrap_or_default();
            // Created once: a Job's pod template is immutable, and a finished Job must not run
            // again because the platform changed.
            let exists = jobs
                .get_opt(&name)
                .await
                .map_err(|e| ApplyError::Read {
                    kind: "Job",
                    name: name.clone(),
                    detail: describe(&e),
                })?
                .is_some();
            if !exists {
                self.apply(&job, drift).await?;
            }
            observed.on_demand_job = Some(name);
        }
        if backup::agent_backups(p) {
            let (backup_jobs, backup_pods) = list_backup_jobs(&self.client, p).await?;
            observed.backup_jobs = backup_jobs;
            observed.backup_pods = backup_pods;
        }
        Ok(())
    }
}

/// The platform's backup Jobs and their pods (label selector of the backup component), whose
/// termination messages carry the agent's result line.
pub async fn list_backup_jobs(
    client: &Client,
    p: &ValidatedPlatform,
) -> Result<(Vec<Job>, Vec<Pod>), ApplyError> {
    let selector = p.names.backup_selector_string();
    let params = ListParams::default().labels(&selector);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &p.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
    // Both at once: independent reads.
    let (listed, pod_list) = futures::future::join(jobs.list(&params), pods.list(&params)).await;
    let listed = listed.map_err(|e| ApplyError::Read {
        kind: "Job",
        name: selector.clone(),
        detail: describe(&e),
    })?;
    let pod_list = pod_list.map_err(|e| ApplyError::Read {
        kind: "Pod",
        name: selector.clone(),
        detail: describe(&e),
    })?;
    Ok((listed.items, pod_list.items))
}

/// The restore Job's pod(s) (label selector of the restore component), whose termination
/// message carries the agent's result line.
pub async fn list_restore_pods(
    client: &Client,
    p: &ValidatedPlatform,
) -> Result<Vec<Pod>, ApplyError> {
    let selector = p.names.restore_selector_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
    pods.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .map_err(|e| ApplyError::Read {
            kind: "Pod",
            name: selector.clone(),
            detail: describe(&e),
        })
}

/// Whether the database accepts the restore: the embedded Postgres has a ready pod (the Job
/// would otherwise use up its retries while Postgres starts); an External database is assumed
/// up (it is the user's). Pure.
pub fn restore_database_ready(p: &ValidatedPlatform, postgres: Option<&StatefulSet>) -> bool {
    match p.spec.database.provider {
        DatabaseProvider::Embedded => {
            postgres
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                > 0
        }
        DatabaseProvider::External => true,
        // CloudNativePG restores with its own recovery (fromBackup is refused).
        DatabaseProvider::CloudNativePG => false,
    }
}

/// Where a Deployment's or StatefulSet's pod spec is.
const POD_SPEC: &str = "/spec/template/spec";

fn deployment_pod(d: &Deployment) -> Option<&PodSpec> {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref())
}

fn stateful_set_pod(s: &StatefulSet) -> Option<&PodSpec> {
    s.spec.as_ref().and_then(|s| s.template.spec.as_ref())
}

fn cron_job_pod(c: &CronJob) -> Option<&PodSpec> {
    c.spec
        .as_ref()
        .and_then(|s| s.job_template.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
}

/// Whether two NetworkPolicy specs mean the same (an empty list or map equals an absent one,
/// as the API server may drop empty fields).
pub fn same_network_policy_spec(
    a: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>,
    b: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>,
) -> bool {
    let norm = |s: Option<&k8s_openapi::api::networking::v1::NetworkPolicySpec>| {
        s.and_then(|s| serde_json::to_value(s).ok()).and_then(prune)
    };
    norm(a) == norm(b)
}

/// Which field shows that someone else changed an object: `generation` where the kind has one,
/// otherwise a hash of the object without `metadata` and `status` (controllers keep writing
/// the status of generation-less kinds, e.g. the HPA controller, which is not a change).
fn change_marker<K: Resource + Serialize>(kind: &str, live_obj: &K, desired: &K) -> String {
    let live = live_obj.meta();
    // With autoscaling the HPA changes `replicas` (and so `generation`); the revision annotation
    // changes only when the pod template does.
    if kind == "Deployment" {
        let autoscaled = serde_json::to_value(desired)
            .ok()
            .is_some_and(|v| v.pointer("/spec/replicas").is_none());
        if autoscaled {
            return live
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .cloned()
                .unwrap_or_default();
        }
    }
    match live.generation {
        Some(g) if g > 0 => g.to_string(),
        _ => content_hash(kind, live_obj),
    }
}

/// Hash of an object without `metadata` and `status`; for a claim also without the volume the
/// PV binder fills in.
fn content_hash<K: Serialize>(kind: &str, obj: &K) -> String {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    if kind == "PersistentVolumeClaim" {
        if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.remove("volumeName");
        }
    }
    desired_hash(&v)
}

/// `generation` where the kind has one, otherwise `resourceVersion`.
fn object_version(meta: &ObjectMeta) -> String {
    match meta.generation {
        Some(g) if g > 0 => g.to_string(),
        _ => meta.resource_version.clone().unwrap_or_default(),
    }
}

fn desired_hash<T: Serialize>(obj: &T) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    let digest = Sha256::digest(bytes);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Names of the Secrets the operator generates for this platform (the backup key only when the
/// operator generates it: agent backups without `encryptionKeySecretRef`).
pub fn generated_secret_names(p: &ValidatedPlatform) -> Vec<String> {
    let mut names = vec![p.names.api_secrets()];
    if backup::agent_backups(p) && p.spec.backup.encryption_key_secret_ref.is_none() {
        names.push(p.names.backup_key());
    }
    if p.spec.database.provider == DatabaseProvider::Embedded {
        names.push(p.names.postgres_credentials());
    }
    if p.spec.cache.provider == CacheProvider::Embedded {
        names.push(p.names.redis_credentials());
    }
    names
}

/// Data of the generated Secrets that already exist (so they are never regenerated).
pub async fn read_existing_secrets(
    client: &Client,
    p: &ValidatedPlatform,
) -> Result<ExistingSecrets, ApplyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &p.namespace);
    let mut existing = ExistingSecrets::default();
    // The TLS Secret is read (so its CA is kept) but is not in `generated_secret_names`: a lost
    // CA is simply reissued, it unlocks no stored data.
    let tls =
        (p.spec.database.provider == DatabaseProvider::Embedded).then(|| p.names.postgres_tls());
    // Read at once (never from a cache: a stale "absent" would regenerate a key).
    let reads = generated_secret_names(p)
        .into_iter()
        .chain(tls)
        .map(|name| {
            let api = api.clone();
            async move {
                let secret = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| ApplyError::ReadSecret {
                        name: name.clone(),
                        detail: describe(&e),
                    })?;
                Ok::<_, ApplyError>((name, secret))
            }
        });
    for (name, secret) in futures::future::try_join_all(reads).await? {
        if let Some(data) = secret.and_then(|s| s.data) {
            existing.insert(name, data);
        }
    }
    Ok(existing)
}

/// Whether the CloudNativePG `clusters` resource is served by the API server.
pub async fn cnpg_installed(client: &Client) -> Result<bool, ApplyError> {
    match client
        .list_api_group_resources(&format!("{}/{}", cnpg::GROUP, cnpg::VERSION))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == cnpg::PLURAL)),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(ApplyError::Discovery {
            detail: describe(&e),
        }),
    }
}

/// Whether the Prometheus Operator's `servicemonitors` and `prometheusrules` are served.
pub async fn prometheus_operator_installed(client: &Client) -> Result<bool, ApplyError> {
    match client
        .list_api_group_resources(&format!("{}/{}", monitoring::GROUP, monitoring::VERSION))
        .await
    {
        Ok(list) => Ok(["servicemonitors", "prometheusrules"]
            .iter()
            .all(|plural| list.resources.iter().any(|r| r.name == *plural))),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(ApplyError::Discovery {
            detail: describe(&e),
        }),
    }
}

/// Reads the live workloads without changing anything (paused platforms).
pub async fn observe(client: &Client, p: &ValidatedPlatform) -> Result<Observed, ApplyError> {
    let ns = &p.namespace;
    let read = |kind: &'static str, name: String| {
        move |e: kube::Error| ApplyError::Read {
            kind,
            name,
            detail: describe(&e),
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let mut observed = Observed {
        cnpg_installed: true,
        ..Default::default()
    };
    observed.deployment = deployments
        .get_opt(&p.names.api())
        .await
        .map_err(read("Deployment", p.names.api()))?;
    if p.spec.database.provider == DatabaseProvider::Embedded {
        observed.postgres = sets
            .get_opt(&p.names.postgres())
            .await
            .map_err(read("StatefulSet", p.names.postgres()))?;
    }
    if p.spec.database.provider == DatabaseProvider::CloudNativePG {
        observed.cnpg_installed = cnpg_installed(client).await?;
        if observed.cnpg_installed {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &cnpg::api_resource());
            observed.cnpg_cluster = api
                .get_opt(&p.names.cnpg_cluster())
                .await
                .map_err(read("Cluster", p.names.cnpg_cluster()))?;
        }
    }
    if p.spec.cache.provider == CacheProvider::Embedded {
        observed.redis = sets
            .get_opt(&p.names.redis())
            .await
            .map_err(read("StatefulSet", p.names.redis()))?;
    }
    if backup::agent_backups(p) {
        let (jobs, pods) = list_backup_jobs(client, p).await?;
        observed.backup_jobs = jobs;
        observed.backup_pods = pods;
    }
    if restore::wanted(p).is_some() {
        let name = p.names.restore_job();
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let job = jobs
            .get_opt(&name)
            .await
            .map_err(read("Job", name.clone()))?;
        let pods = match &job {
            Some(_) => list_restore_pods(client, p).await?,
            None => Vec::new(),
        };
        observed.restore = restore::progress(job.as_ref(), &pods);
    }
    if p.spec.network_policy.enabled {
        for name in [p.names.netpol_default_deny()] {
            if policies
                .get_opt(&name)
                .await
                .map_err(read("NetworkPolicy", name.clone()))?
                .is_some()
            {
                observed.network_policies += 1;
            }
        }
    }
    Ok(observed)
}

/// Metadata of every child (tests, finalizer bookkeeping).
pub fn all_metas(children: &Children) -> Vec<ObjectMeta> {
    let Children {
        postgres_credentials,
        postgres_tls,
        redis_credentials,
        api_secrets,
        postgres,
        cnpg_cluster,
        redis,
        api_service_account,
        api_config,
        api_deployment,
        api_service,
        api_hpa,
        api_pdb,
        api_ingress,
        network_policies,
        backup,
        monitoring,
    } = children;
    let BackupObjects {
        cron_job,
        key_secret,
        pvc,
        on_demand_job,
        scheduled_backup,
    } = backup;
    let mut out = Vec::new();
    out.extend(postgres_credentials.iter().map(|s| s.metadata.clone()));
    out.extend(postgres_tls.iter().map(|s| s.metadata.clone()));
    out.extend(redis_credentials.iter().map(|s| s.metadata.clone()));
    out.push(api_secrets.metadata.clone());
    if let Some(pg) = postgres {
        out.push(pg.stateful_set.metadata.clone());
        out.push(pg.headless_service.metadata.clone());
        out.push(pg.service.metadata.clone());
    }
    out.extend(cnpg_cluster.iter().map(|c| c.metadata.clone()));
    if let Some(r) = redis {
        out.push(r.stateful_set.metadata.clone());
        out.push(r.service.metadata.clone());
    }
    out.push(api_service_account.metadata.clone());
    out.push(api_config.metadata.clone());
    out.push(api_deployment.metadata.clone());
    out.push(api_service.metadata.clone());
    out.extend(api_hpa.iter().map(|h| h.metadata.clone()));
    out.extend(api_pdb.iter().map(|h| h.metadata.clone()));
    out.extend(api_ingress.iter().map(|h| h.metadata.clone()));
    out.extend(network_policies.iter().map(|n| n.metadata.clone()));
    out.extend(cron_job.iter().map(|c| c.metadata.clone()));
    out.extend(key_secret.iter().map(|s| s.metadata.clone()));
    out.extend(pvc.iter().map(|c| c.metadata.clone()));
    out.extend(on_demand_job.iter().map(|j| j.metadata.clone()));
    out.extend(scheduled_backup.iter().map(|b| b.metadata.clone()));
    if let Some(m) = monitoring {
        out.push(m.api_service_monitor.metadata.clone());
        out.push(m.operator_service_monitor.metadata.clone());
        out.push(m.prometheus_rule.metadata.clone());
        out.push(m.dashboard.metadata.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact_quoted(r#"env[0].value: Invalid value: "hunter2": bad"#),
            r#"env[0].value: Invalid value: "…": bad"#
        );
        assert_eq!(redact_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn network_policy_specs_compare_by_meaning() {
        use k8s_openapi::api::networking::v1::NetworkPolicySpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        use std::collections::BTreeMap;
        let spec = |labels: &[(&str, &str)], ingress: Option<Vec<_>>| NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress,
            egress: None,
        };
        let want = spec(&[("app", "demo")], None);
        assert!(same_network_policy_spec(
            Some(&want),
            Some(&spec(&[("app", "demo")], Some(vec![])))
        ));
        assert!(!same_network_policy_spec(
            Some(&want),
            Some(&spec(&[("app", "demo"), ("nothing", "here")], None))
        ));
        assert!(!same_network_policy_spec(Some(&want), None));
    }

    #[test]
    fn a_futile_replacement_is_skipped_only_for_the_same_desired_state_and_object_version() {
        let t = DriftTracker::default();
        let key = "Deployment/clinic/demo-api";
        assert!(!t.replacement_futile(key, "d1", "3"));
        t.futile().insert(key.into(), ("d1".into(), "3".into()));
        assert!(t.replacement_futile(key, "d1", "3"));
        assert!(
            !t.replacement_futile(key, "d2", "3"),
            "desired state changed"
        );
        assert!(!t.replacement_futile(key, "d1", "4"), "object edited since");
        t.forget("clinic", "demo");
        assert!(!t.replacement_futile(key, "d1", "3"));
    }

    #[test]
    fn an_apply_is_skipped_only_while_the_watch_shows_what_it_returned() {
        use kube::runtime::watcher::Event;
        let t = DriftTracker::default();
        let key = "ConfigMap/clinic/demo-config";
        let cm = |uid: &str, rv: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some("demo-config".into()),
                namespace: Some("clinic".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let seen = |c: ConfigMap| {
            t.watched.record(
                "ConfigMap",
                &Event::Apply(c),
                crate::watch_cache::versions_only,
            )
        };
        let applied = |desired: &str, at: Instant| Fingerprint {
            desired: desired.into(),
            uid: "u1".into(),
            marker: String::new(),
            version: "10".into(),
            at,
        };
        assert_eq!(t.unchanged(key, "d1"), None, "never applied");
        t.record(key.into(), applied("d1", Instant::now()));
        assert_eq!(t.unchanged(key, "d1"), None, "not seen by the watch yet");
        seen(cm("u1", "10"));
        assert_eq!(t.unchanged(key, "d1"), Some(("u1".into(), "10".into())));
        assert_eq!(t.unchanged(key, "d2"), None, "desired state changed");
        seen(cm("u1", "11"));
        assert_eq!(t.unchanged(key, "d1"), None, "written since (by anyone)");
        seen(cm("u2", "10"));
        assert_eq!(t.unchanged(key, "d1"), None, "deleted and created again");
        t.watched.record(
            "ConfigMap",
            &Event::Delete(cm("u2", "10")),
            crate::watch_cache::versions_only,
        );
        assert_eq!(t.unchanged(key, "d1"), None, "deleted");
        seen(cm("u1", "10"));
        if let Some(long_ago) = Instant::now().checked_sub(REVERIFY_AFTER) {
            t.record(key.into(), applied("d1", long_ago));
            assert_eq!(t.unchanged(key, "d1"), None, "applied too long ago");
        }
        t.record(key.into(), applied("d1", Instant::now()));
        t.forget_key(key);
        assert_eq!(t.unchanged(key, "d1"), None, "forgotten");
    }

    #[test]
    fn drift_needs_same_desired_state_and_a_changed_object() {
        let t = DriftTracker::default();
        let fp = |desired: &str, uid: &str, marker: &str| Fingerprint {
            desired: desired.into(),
            uid: uid.into(),
            marker: marker.into(),
            version: "1".into(),
            at: Instant::now(),
        };
        assert!(
            !t.record("k".into(), fp("d1", "u1", "1")),
            "first apply is not drift"
        );
        assert!(!t.record("k".into(), fp("d1", "u1", "1")), "no-op apply");
        assert!(
            t.record("k".into(), fp("d1", "u1", "3")),
            "edited and restored"
        );
        assert!(
            t.record("k".into(), fp("d1", "u2", "1")),
            "deleted and recreated"
        );
        assert!(
            !t.record("k".into(), fp("d2", "u2", "2")),
            "our own spec change"
        );
        t.forget("ns", "demo");
        assert_eq!(t.len(), 1);
        // A marker a controller writes after creation (a Deployment's first revision) is not
        // someone else's change.
        assert!(!t.record("new".into(), fp("d1", "u3", "")));
        assert!(!t.record("new".into(), fp("d1", "u3", "1")));
        assert!(
            t.record("new".into(), fp("d1", "u3", "2")),
            "a later change is"
        );
    }

    #[test]
    fn generation_less_kinds_change_only_when_more_than_their_status_does() {
        use k8s_openapi::api::autoscaling::v2::{
            HorizontalPodAutoscalerSpec, HorizontalPodAutoscalerStatus,
        };
        let hpa = |max: i32, current: Option<i32>, rv: &str| HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                max_replicas: max,
                ..HorizontalPodAutoscalerSpec::default()
            }),
            status: current.map(|c| HorizontalPodAutoscalerStatus {
                current_replicas: Some(c),
                ..HorizontalPodAutoscalerStatus::default()
            }),
        };
        let desired = hpa(4, None, "");
        let applied = change_marker("HorizontalPodAutoscaler", &hpa(4, None, "1"), &desired);
        // The HPA controller writes its status (a new resourceVersion): not drift.
        assert_eq!(
            change_marker("HorizontalPodAutoscaler", &hpa(4, Some(3), "2"), &desired),
            applied
        );
        // Someone edits the spec: drift.
        assert_ne!(
            change_marker("HorizontalPodAutoscaler", &hpa(9, Some(3), "3"), &desired),
            applied
        );
    }

    #[test]
    fn the_restore_starts_once_the_embedded_database_has_a_ready_pod() {
        use crate::crd::SecretKeyRef;
        use crate::desired::test_support::platform;
        use k8s_openapi::api::apps::v1::StatefulSetStatus;
        let p = platform(|_| {});
        let sts = |ready: i32| StatefulSet {
            status: Some(StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!restore_database_ready(&p, None));
        assert!(!restore_database_ready(&p, Some(&sts(0))));
        assert!(restore_database_ready(&p, Some(&sts(1))));
        let external = platform(|s| {
            s.database.provider = DatabaseProvider::External;
            s.database.secret_ref = Some(SecretKeyRef {
                name: "ext".into(),
                key: "url".into(),
            });
        });
        assert!(restore_database_ready(&external, None));
    }

    #[test]
    fn volume_errors_are_status_reasons_with_a_clear_message() {
        use crate::crd::HealthcarePlatform;
        use crate::status::{compute, Outcome};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let decrease = ApplyError::StorageDecrease {
            name: "demo-postgres".into(),
            field: "spec.database.storage.size",
            claim: "data".into(),
            live: "20Gi".into(),
            desired: "10Gi".into(),
        };
        assert_eq!(decrease.reason(), "StorageDecreaseRefused");
        let expansion = ApplyError::VolumeExpansion {
            name: "data-demo-postgres-0".into(),
            from: "10Gi".into(),
            to: "20Gi".into(),
            detail: "403 Forbidden: only dynamically provisioned pvc can be resized".into(),
        };
        assert_eq!(expansion.reason(), "VolumeExpansionFailed");
        let hp = HealthcarePlatform::new("demo", Default::default());
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = compute(&hp, Outcome::ApplyFailed(&decrease), now);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "StorageDecreaseRefused")
        );
        for part in [
            "spec.database.storage.size",
            "10Gi",
            "20Gi",
            "cannot shrink",
        ] {
            assert!(ready.message.contains(part), "{}", ready.message);
        }
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(degraded.reason, "StorageDecreaseRefused");
    }

    #[test]
    fn the_generated_backup_key_is_a_generated_secret() {
        use crate::desired::test_support::platform;
        let p = platform(|_| {});
        assert!(generated_secret_names(&p).contains(&p.names.backup_key()));
        let own = platform(|s| s.backup.encryption_key_secret_ref = Some("mine".into()));
        assert!(!generated_secret_names(&own).contains(&own.names.backup_key()));
        let off = platform(|s| s.backup.enabled = false);
        assert!(!generated_secret_names(&off).contains(&off.names.backup_key()));
    }
}
