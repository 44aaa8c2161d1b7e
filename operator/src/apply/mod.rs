//! Apply stage: server-side apply of every child with field manager `caduceus-operator`
//! (`force`), deletion of children that must no longer exist, CloudNativePG discovery, reading
//! existing Secrets (so generated values are never overwritten), and drift detection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::compliance::self_report::SelfReport;
use crate::crd::{CacheProvider, DatabaseProvider};
use crate::desired::monitoring;
use crate::desired::{backup, cnpg, restore, Children, ExistingSecrets};
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

pub(super) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
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
pub(super) enum Applied<K> {
    /// Applied: the live object the API server returned.
    Written(K),
    /// Not applied: unchanged since the last apply of the same desired state (the watch's copy
    /// when one is kept and it was asked for).
    Unchanged(Option<K>),
}

impl<K> Applied<K> {
    pub(super) fn live(self) -> Option<K> {
        match self {
            Applied::Written(k) => Some(k),
            Applied::Unchanged(k) => k,
        }
    }
}

mod applier;
mod children;
mod markers;
mod reads;
mod sweep;
mod tracker;
mod workloads;

pub use markers::*;
pub use reads::*;
pub use tracker::*;

#[cfg(test)]
mod tests;
