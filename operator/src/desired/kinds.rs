//! The registry of the kinds a platform's children are made of: for each kind, how its objects
//! are applied, what happens to one the platform no longer wants, and how the controller watches
//! it. [`child_kinds!`] is the one list of the built-in Kubernetes kinds; the desired-object
//! enum ([`super::ChildObject`]), the apply stage's dispatch, the sweep of unwanted objects and
//! the controller's watches are all generated from it, so a new kind is one line there (plus
//! its builder). [`CUSTOM_KINDS`] lists the custom resources (CloudNativePG, Prometheus
//! Operator) the same way.

use kube::api::ApiResource;

use super::backup_cnpg::{self, SCHEDULED_BACKUP_KIND};
use super::{cnpg, monitoring, Needs};

/// How the objects of a kind are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Server-side apply, field manager `caduceus-operator`, forced (skipped while the watch
    /// shows the object our last apply of the same desired state returned).
    ServerSide,
    /// Server-side apply, then the kind's [exact part](crate::apply) (a NetworkPolicy's spec,
    /// a workload's pod spec) replaced as a whole when it still differs: fields set by someone
    /// else are removed.
    Exact,
    /// A StatefulSet with volume claim templates: [`ApplyMode::Exact`], plus re-creation when
    /// the templates change, growth of its PVCs and refusal of a decrease.
    StatefulSet,
    /// Created once and never applied again (a Job's pod template is immutable, and a finished
    /// Job must not run again because the platform changed).
    CreateOnce,
}

/// What happens to an object of the kind that the platform owns but no longer wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnwanted {
    /// Deleted by the sweep (objects labelled as the platform's and owned by it).
    Delete,
    /// Kept: it holds data or keys (Secrets, PVCs, the CloudNativePG cluster) or history (Jobs).
    /// The finalizer decides about them when the platform goes (`deletionPolicy`).
    Keep,
    /// Every platform always wants its objects of this kind (the API's Deployment and
    /// ServiceAccount): never listed by the sweep, and the operator needs no right to delete them.
    Never,
}

/// How the controller watches the kind (every watch selects `managed-by=caduceus-operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// Metadata only, mapped to the owning platform; the watch cache keeps uid and version.
    Metadata,
    /// Whole objects mapped to the owning platform; the watch cache keeps a summary of what the
    /// status reads (Deployments, StatefulSets).
    Summary,
    /// Whole objects mapped to the platform of their `app.kubernetes.io/instance` label (Jobs
    /// of the backup CronJob are owned by it, not by the platform).
    ByInstanceLabel,
}

/// The policy of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindPolicy {
    pub kind: &'static str,
    pub apply: ApplyMode,
    pub unwanted: WhenUnwanted,
}

/// The built-in Kubernetes kinds of a platform's children, in no particular order (the apply
/// order is [`super::Children::objects`]'s):
/// `(variant, type, apply mode, when unwanted, watch)`. Calls `$callback!` with the list.
macro_rules! child_kinds {
    ($callback:ident) => {
        $callback! {
            (NetworkPolicy, ::k8s_openapi::api::networking::v1::NetworkPolicy, Exact, Delete, Metadata),
            (Secret, ::k8s_openapi::api::core::v1::Secret, ServerSide, Keep, Metadata),
            (ServiceAccount, ::k8s_openapi::api::core::v1::ServiceAccount, ServerSide, Never, Metadata),
            (ConfigMap, ::k8s_openapi::api::core::v1::ConfigMap, ServerSide, Delete, Metadata),
            (Service, ::k8s_openapi::api::core::v1::Service, ServerSide, Delete, Metadata),
            (StatefulSet, ::k8s_openapi::api::apps::v1::StatefulSet, StatefulSet, Delete, Summary),
            (Deployment, ::k8s_openapi::api::apps::v1::Deployment, Exact, Never, Summary),
            (HorizontalPodAutoscaler, ::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler, ServerSide, Delete, Metadata),
            (PodDisruptionBudget, ::k8s_openapi::api::policy::v1::PodDisruptionBudget, ServerSide, Delete, Metadata),
            (Ingress, ::k8s_openapi::api::networking::v1::Ingress, ServerSide, Delete, Metadata),
            (PersistentVolumeClaim, ::k8s_openapi::api::core::v1::PersistentVolumeClaim, ServerSide, Keep, Metadata),
            (CronJob, ::k8s_openapi::api::batch::v1::CronJob, Exact, Delete, Metadata),
            (Job, ::k8s_openapi::api::batch::v1::Job, CreateOnce, Keep, ByInstanceLabel),
        }
    };
}
pub(crate) use child_kinds;

macro_rules! policy_table {
    ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {
        /// The policy of every built-in kind of [`child_kinds!`].
        pub const TYPED_KINDS: &[KindPolicy] = &[$(KindPolicy {
            kind: <$ty as ::k8s_openapi::Resource>::KIND,
            apply: ApplyMode::$apply,
            unwanted: WhenUnwanted::$unwanted,
        }),*];
    };
}
child_kinds!(policy_table);

/// A custom resource kind a platform's children may include. Applied server-side; only when its
/// CRD is served (see [`super::Needs`]).
#[derive(Clone, Copy, Debug)]
pub struct CustomKind {
    pub kind: &'static str,
    pub resource: fn() -> ApiResource,
    pub unwanted: WhenUnwanted,
    /// Whose CRDs serve it.
    pub needs: Needs,
}

/// Every custom resource kind of a platform's children.
pub const CUSTOM_KINDS: &[CustomKind] = &[
    // The database itself: never deleted because the spec stopped asking for it.
    CustomKind {
        kind: cnpg::KIND,
        resource: cnpg::api_resource,
        unwanted: WhenUnwanted::Keep,
        needs: Needs::CloudNativePG,
    },
    CustomKind {
        kind: SCHEDULED_BACKUP_KIND,
        resource: backup_cnpg::scheduled_backup_resource,
        unwanted: WhenUnwanted::Delete,
        needs: Needs::CloudNativePG,
    },
    CustomKind {
        kind: monitoring::SERVICE_MONITOR_KIND,
        resource: monitoring::service_monitor_resource,
        unwanted: WhenUnwanted::Delete,
        needs: Needs::PrometheusOperator,
    },
    CustomKind {
        kind: monitoring::PROMETHEUS_RULE_KIND,
        resource: monitoring::prometheus_rule_resource,
        unwanted: WhenUnwanted::Delete,
        needs: Needs::PrometheusOperator,
    },
];

/// The custom kind named `kind`.
pub fn custom_kind(kind: &str) -> Option<&'static CustomKind> {
    CUSTOM_KINDS.iter().find(|c| c.kind == kind)
}

/// The policy of the built-in kind named `kind`.
pub fn typed_kind(kind: &str) -> Option<&'static KindPolicy> {
    TYPED_KINDS.iter().find(|k| k.kind == kind)
}

/// What happens to an unwanted object of `kind` (custom or built-in); `None` for a kind that is
/// not registered.
pub fn when_unwanted(kind: &str) -> Option<WhenUnwanted> {
    typed_kind(kind)
        .map(|k| k.unwanted)
        .or_else(|| custom_kind(kind).map(|c| c.unwanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once() {
        let mut kinds: Vec<&str> = TYPED_KINDS
            .iter()
            .map(|k| k.kind)
            .chain(CUSTOM_KINDS.iter().map(|c| c.kind))
            .collect();
        let n = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), n, "a kind is registered twice");
    }

    #[test]
    fn data_keys_and_history_are_kept_when_unwanted() {
        for kind in ["Secret", "PersistentVolumeClaim", "Job", "Cluster"] {
            assert_eq!(when_unwanted(kind), Some(WhenUnwanted::Keep), "{kind}");
        }
        for kind in [
            "NetworkPolicy",
            "StatefulSet",
            "Service",
            "Ingress",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "CronJob",
            "ScheduledBackup",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
        ] {
            assert_eq!(when_unwanted(kind), Some(WhenUnwanted::Delete), "{kind}");
        }
        for kind in ["Deployment", "ServiceAccount"] {
            assert_eq!(when_unwanted(kind), Some(WhenUnwanted::Never), "{kind}");
        }
        assert_eq!(when_unwanted("Pod"), None);
    }

    #[test]
    fn the_custom_kinds_resources_are_theirs() {
        for c in CUSTOM_KINDS {
            assert_eq!((c.resource)().kind, c.kind);
        }
    }
}
