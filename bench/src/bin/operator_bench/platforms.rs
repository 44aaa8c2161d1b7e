//! Platforms: the spec, creating one, watching phases, and the children's resourceVersions.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, Context as _};
use futures::StreamExt;
use kube::{
    api::{Api, ListParams, PostParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    runtime::{watcher, WatchStreamExt},
    Client,
};
use serde_json::{json, Value};
use tokio::{
    sync::{oneshot, Notify},
    task::JoinHandle,
};

use crate::cluster::repo_file;
use crate::namespaces::hcp_resource;

/// The platform used throughout: `examples/minimal.yaml`'s spec.
pub fn platform_spec() -> anyhow::Result<Value> {
    let text = repo_file("examples/minimal.yaml")?;
    let doc: Value = serde_norway::from_str(&text).context("parsing examples/minimal.yaml")?;
    doc.get("spec")
        .cloned()
        .ok_or_else(|| anyhow!("examples/minimal.yaml has no spec"))
}

/// Creates through the dynamic API so the body is the manifest (as kubectl would send it).
pub async fn create_platform(
    client: &Client,
    ns: &str,
    name: &str,
    spec: &Value,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &hcp_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))?;
    api.create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating platform {ns}/{name}"))?;
    Ok(())
}

/// The phase of every platform of a namespace, kept by a watch (no polling of the API).
pub struct PhaseWatch {
    phases: Arc<Mutex<BTreeMap<String, String>>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl PhaseWatch {
    pub async fn start(admin: &Client, ns: &str) -> anyhow::Result<PhaseWatch> {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
        let phases = Arc::new(Mutex::new(BTreeMap::new()));
        let changed = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (p, c) = (phases.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            let phase_of = |o: &DynamicObject| {
                o.data["status"]["phase"]
                    .as_str()
                    .unwrap_or("(none)")
                    .to_string()
            };
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        eprintln!("operator_bench: platform watch: {e}");
                        continue;
                    }
                };
                {
                    let mut map = p.lock().expect("phases");
                    match &ev {
                        watcher::Event::Init => map.clear(),
                        watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                            map.insert(o.metadata.name.clone().unwrap_or_default(), phase_of(o));
                        }
                        watcher::Event::Delete(o) => {
                            map.remove(o.metadata.name.as_deref().unwrap_or_default());
                        }
                        watcher::Event::InitDone => {}
                    }
                }
                if matches!(ev, watcher::Event::InitDone) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                c.notify_waiters();
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the platform watch did not start within 30 s")?
            .context("the platform watch ended")?;
        Ok(PhaseWatch {
            phases,
            changed,
            task,
        })
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.phases.lock().expect("phases").get(name).cloned()
    }

    pub fn histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for phase in self.phases.lock().expect("phases").values() {
            *h.entry(phase.clone()).or_default() += 1;
        }
        h
    }

    /// Waits for a change (or `at_most`).
    pub async fn changed(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.changed.notified()).await;
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn describe_histogram(h: &BTreeMap<String, usize>) -> String {
    h.iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every kind the operator creates children of: (group, version, kind, plural).
const CHILD_KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
];

/// One child as found in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildVersion {
    pub resource_version: String,
    /// Managers of its managedFields with their last write, for a changed child's report.
    pub managers: Vec<String>,
}

/// `Kind/name` → resourceVersion of every object owned by the platform (ownerReference to its
/// UID), plus the platform itself (`HealthcarePlatform/<name>`).
pub async fn child_versions(
    admin: &Client,
    ns: &str,
    platform: &str,
) -> anyhow::Result<BTreeMap<String, ChildVersion>> {
    let hcp: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &hcp_resource());
    let p = hcp
        .get(platform)
        .await
        .with_context(|| format!("reading platform {ns}/{platform}"))?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let version = |o: &DynamicObject| ChildVersion {
        resource_version: o.metadata.resource_version.clone().unwrap_or_default(),
        managers: o
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} {} {}",
                    m.manager.as_deref().unwrap_or("?"),
                    m.operation.as_deref().unwrap_or("?"),
                    m.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
                )
            })
            .collect(),
    };
    let mut out = BTreeMap::new();
    out.insert(format!("HealthcarePlatform/{platform}"), version(&p));
    for (group, v, kind, plural) in CHILD_KINDS {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, v, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing {kind} in {ns}"))?;
        for o in list.items {
            let owned = o
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid);
            if owned {
                let name = o.metadata.name.clone().unwrap_or_default();
                out.insert(format!("{kind}/{name}"), version(&o));
            }
        }
    }
    Ok(out)
}
