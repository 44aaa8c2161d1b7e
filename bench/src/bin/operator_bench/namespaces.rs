//! Namespaces: unique per run (`bench-<pid>-<hex>`) and always deleted.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::ApiResource,
    Client,
};
use serde_json::json;

use crate::cluster::apply_manifest;

pub fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("caduceus.io", "v1alpha1", "HealthcarePlatform"),
        "healthcareplatforms",
    )
}

/// The namespaces this run created (deleted by [`Namespaces::delete_all`]).
#[derive(Clone, Default)]
pub struct Namespaces(Arc<Mutex<Vec<String>>>);

impl Namespaces {
    pub async fn create(&self, admin: &Client, purpose: &str) -> anyhow::Result<String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "bench-{}-{purpose}-{:06x}",
            std::process::id(),
            nanos & 0xff_ffff
        );
        // Registered first: a failed or interrupted create is still cleaned up.
        self.0.lock().expect("namespaces").push(name.clone());
        apply_manifest(
            admin,
            &json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "caduceus.io/bench": "true"
                }}
            }),
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Deletes the namespace and waits (bounded) until it is gone. Platforms lose their
    /// finalizer (the operator that would remove it is stopped by now).
    pub async fn delete(&self, admin: &Client, ns: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        match namespaces.delete(ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
        }
        let platforms: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), ns, &hcp_resource());
        loop {
            if namespaces.get_opt(ns).await?.is_none() {
                break;
            }
            let list = match platforms.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(e) => return Err(e).context("listing platforms to remove finalizers"),
            };
            let with_finalizers: Vec<String> = list
                .into_iter()
                .filter(|p| {
                    p.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| !f.is_empty())
                })
                .filter_map(|p| p.metadata.name)
                .collect();
            stream::iter(with_finalizers)
                .for_each_concurrent(8, |name| {
                    let platforms = platforms.clone();
                    async move {
                        let patch = json!({"metadata": {"finalizers": null}});
                        // 404 (deleted meanwhile) is fine; others show up as a slow deletion.
                        let _ = platforms
                            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await;
                    }
                })
                .await;
            if start.elapsed() > timeout {
                eprintln!(
                    "operator_bench: namespace {ns} still terminating after {} s; the cluster keeps deleting it",
                    timeout.as_secs()
                );
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.0.lock().expect("namespaces").retain(|n| n != ns);
        Ok(())
    }

    pub async fn delete_all(&self, admin: &Client, timeout: Duration) {
        let all = self.0.lock().expect("namespaces").clone();
        for ns in all {
            let t = Instant::now();
            match self.delete(admin, &ns, timeout).await {
                Ok(()) => println!(
                    "cleanup: namespace {ns} deleted in {:.1} s",
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("operator_bench: cleanup of {ns} failed: {e:#}"),
            }
        }
    }
}
