//! What the controller's watches last saw of each child: its uid and resourceVersion, and for the
//! workloads whose status the platform's status reads (Deployments, StatefulSets) a summary of
//! the object: what the status stage reads of it, nothing else (memory: a full workload object
//! is tens of KiB in memory, and there are three per platform).
//!
//! The apply stage uses it to skip the server-side apply of a child that cannot have changed
//! since the operator's own last apply of the same desired state: same uid, same
//! resourceVersion as that apply returned (see `apply::Applier`). Any write by anyone (an edit,
//! a deletion, a controller's status update) changes the resourceVersion; the same watch event
//! that records it triggers a reconcile, which then applies for real. A watch that restarts
//! (`Init` … `InitDone`) forgets the objects its re-list no longer has.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use kube::Resource;

/// The key of a child: `Kind/namespace/name` (the drift tracker uses the same).
pub fn child_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// One watched object as last seen.
#[derive(Clone)]
pub struct Seen {
    pub uid: String,
    pub version: String,
    object: Option<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("uid", &self.uid)
            .field("version", &self.version)
            .field("object", &self.object.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct State {
    seen: HashMap<String, Seen>,
    /// Keys listed since a watch of that kind restarted (until its `InitDone`).
    relisting: HashMap<&'static str, HashSet<String>>,
}

/// Shared by the controller's watch streams (writers) and every reconcile (readers).
#[derive(Debug, Default)]
pub struct WatchCache {
    state: Mutex<State>,
}

/// Keeps no object, only uid and resourceVersion.
pub fn versions_only<O>(_: &O) -> Option<Arc<dyn Any + Send + Sync>> {
    None
}

/// The metadata the status stage reads: identity, versions, generation.
fn summary_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        ..ObjectMeta::default()
    }
}

/// A pod template reduced to its containers' names and images (the running API version).
fn summary_template(template: &PodTemplateSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: None,
        spec: template.spec.as_ref().map(|spec| PodSpec {
            containers: spec
                .containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
    }
}

/// A kind the watch cache keeps a summary of (the status stage reads it).
pub trait Summarized {
    fn summary(&self) -> Option<Arc<dyn Any + Send + Sync>>;
}

impl Summarized for Deployment {
    fn summary(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        deployment_summary(self)
    }
}

impl Summarized for StatefulSet {
    fn summary(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        stateful_set_summary(self)
    }
}

/// Keeps what the status stage reads of a Deployment: generation, replicas, container images
/// and the whole status.
pub fn deployment_summary(d: &Deployment) -> Option<Arc<dyn Any + Send + Sync>> {
    Some(Arc::new(Deployment {
        metadata: summary_meta(&d.metadata),
        spec: d.spec.as_ref().map(|s| DeploymentSpec {
            replicas: s.replicas,
            template: summary_template(&s.template),
            ..DeploymentSpec::default()
        }),
        status: d.status.clone(),
    }))
}

/// Keeps what the status stage reads of a StatefulSet: generation, replicas, container images
/// and the whole status.
pub fn stateful_set_summary(s: &StatefulSet) -> Option<Arc<dyn Any + Send + Sync>> {
    Some(Arc::new(StatefulSet {
        metadata: summary_meta(&s.metadata),
        spec: s.spec.as_ref().map(|spec| StatefulSetSpec {
            replicas: spec.replicas,
            template: summary_template(&spec.template),
            ..StatefulSetSpec::default()
        }),
        status: s.status.clone(),
    }))
}

impl WatchCache {
    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records one watch event of kind `kind`; `keep` decides what is kept of the object.
    pub fn record<O: Resource>(
        &self,
        kind: &'static str,
        event: &Event<O>,
        keep: fn(&O) -> Option<Arc<dyn Any + Send + Sync>>,
    ) {
        let key_of = |o: &O| {
            child_key(
                kind,
                o.meta().namespace.as_deref().unwrap_or_default(),
                o.meta().name.as_deref().unwrap_or_default(),
            )
        };
        let seen_of = |o: &O| Seen {
            uid: o.meta().uid.clone().unwrap_or_default(),
            version: o.meta().resource_version.clone().unwrap_or_default(),
            object: keep(o),
        };
        let mut state = self.state();
        match event {
            Event::Apply(o) => {
                state.seen.insert(key_of(o), seen_of(o));
            }
            Event::Delete(o) => {
                state.seen.remove(&key_of(o));
            }
            Event::Init => {
                state.relisting.insert(kind, HashSet::new());
            }
            Event::InitApply(o) => {
                let key = key_of(o);
                state.relisting.entry(kind).or_default().insert(key.clone());
                state.seen.insert(key, seen_of(o));
            }
            Event::InitDone => {
                let listed = state.relisting.remove(kind).unwrap_or_default();
                let prefix = format!("{kind}/");
                state
                    .seen
                    .retain(|k, _| !k.starts_with(&prefix) || listed.contains(k));
            }
        }
    }

    /// uid and resourceVersion of `key` as last seen (`None`: not seen, or deleted).
    pub fn version(&self, key: &str) -> Option<(String, String)> {
        self.state()
            .seen
            .get(key)
            .map(|s| (s.uid.clone(), s.version.clone()))
    }

    /// The kept copy of `key` when it is a `K` and was seen at (`uid`, `version`).
    pub fn object<K: Clone + 'static>(&self, key: &str, uid: &str, version: &str) -> Option<K> {
        let state = self.state();
        let seen = state.seen.get(key)?;
        if seen.uid != uid || seen.version != version {
            return None;
        }
        seen.object.as_ref()?.downcast_ref::<K>().cloned()
    }

    /// Number of objects seen (the benchmark reports it).
    pub fn len(&self) -> usize {
        self.state().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn cm(name: &str, uid: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn apply_and_delete_events_update_the_version() {
        let c = WatchCache::default();
        let key = child_key("ConfigMap", "ns", "a");
        c.record(
            "ConfigMap",
            &Event::Apply(cm("a", "u1", "5")),
            versions_only,
        );
        assert_eq!(c.version(&key), Some(("u1".into(), "5".into())));
        c.record(
            "ConfigMap",
            &Event::Apply(cm("a", "u1", "7")),
            versions_only,
        );
        assert_eq!(c.version(&key), Some(("u1".into(), "7".into())));
        c.record(
            "ConfigMap",
            &Event::Delete(cm("a", "u1", "8")),
            versions_only,
        );
        assert_eq!(c.version(&key), None);
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_the_watch_was_down() {
        let c = WatchCache::default();
        c.record(
            "ConfigMap",
            &Event::Apply(cm("a", "u1", "5")),
            versions_only,
        );
        c.record(
            "ConfigMap",
            &Event::Apply(cm("b", "u2", "6")),
            versions_only,
        );
        c.record("Secret", &Event::Apply(cm("a", "u3", "6")), versions_only);
        c.record("ConfigMap", &Event::<ConfigMap>::Init, versions_only);
        c.record(
            "ConfigMap",
            &Event::InitApply(cm("b", "u2", "9")),
            versions_only,
        );
        // Until the re-list is complete, what was seen stays.
        assert!(c.version(&child_key("ConfigMap", "ns", "a")).is_some());
        c.record("ConfigMap", &Event::<ConfigMap>::InitDone, versions_only);
        assert_eq!(c.version(&child_key("ConfigMap", "ns", "a")), None);
        assert_eq!(
            c.version(&child_key("ConfigMap", "ns", "b")),
            Some(("u2".into(), "9".into()))
        );
        // Other kinds are not touched by this kind's re-list.
        assert!(c.version(&child_key("Secret", "ns", "a")).is_some());
    }

    #[test]
    fn kept_summaries_hold_what_the_status_reads_and_match_only_their_version() {
        let c = WatchCache::default();
        let mut d = Deployment {
            metadata: ObjectMeta {
                name: Some("api".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                resource_version: Some("3".into()),
                generation: Some(4),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                labels: Some([("a".to_string(), "b".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta::default()),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "api".into(),
                            image: Some("caduceus-api:1.2.3".into()),
                            args: Some(vec!["serve".into()]),
                            ..Container::default()
                        }],
                        service_account_name: Some("sa".into()),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(2),
                observed_generation: Some(4),
                ..DeploymentStatus::default()
            }),
        };
        c.record("Deployment", &Event::Apply(d.clone()), deployment_summary);
        let key = child_key("Deployment", "ns", "api");
        let kept: Deployment = c.object(&key, "u", "3").expect("kept");
        assert!(kept.metadata.managed_fields.is_none());
        assert!(kept.metadata.labels.is_none());
        assert_eq!(kept.metadata.generation, Some(4));
        assert_eq!(kept.status, d.status, "the whole status");
        let spec = kept.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.service_account_name, None);
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("caduceus-api:1.2.3")
        );
        assert_eq!(pod.containers[0].args, None);
        assert!(c.object::<Deployment>(&key, "u", "4").is_none());
        assert!(c.object::<Deployment>(&key, "other", "3").is_none());
        assert!(
            c.object::<ConfigMap>(&key, "u", "3").is_none(),
            "wrong type"
        );
        d.metadata.resource_version = Some("4".into());
        c.record("Deployment", &Event::Apply(d), versions_only);
        assert!(c.object::<Deployment>(&key, "u", "4").is_none(), "not kept");
    }
}
