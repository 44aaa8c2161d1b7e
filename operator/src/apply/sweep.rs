//! The sweep: objects the platform owns (its instance labels and its owner reference) that the
//! desired list no longer has are deleted, for every kind registered as deleted when unwanted
//! ([`crate::desired::kinds`]); kinds kept when unwanted (Secrets, PVCs — the StatefulSets'
//! PVCs carry the instance labels too —, Jobs, the CloudNativePG cluster) are never listed.
//!
//! A kind is listed only when its wanted names changed since its last clean sweep, or that
//! sweep is older than [`REVERIFY_AFTER`] (and on the operator's first reconcile of the
//! platform): an unchanged platform costs no request.

use futures::future::BoxFuture;

use super::*;
use crate::desired::kinds::{child_kinds, WhenUnwanted, CUSTOM_KINDS};
use crate::desired::{ChildObject, Needs};

/// Pushes the sweep of `$ty` when unwanted objects of it are deleted.
macro_rules! sweep_if {
    (Delete, $ty:ty, $out:ident, $run:expr) => {
        $out.push(Box::pin($run.sweep_kind(
            Api::<$ty>::namespaced($run.applier.client.clone(), $run.applier.namespace),
            <$ty as ::k8s_openapi::Resource>::KIND,
        )));
    };
    ($keep_or_never:ident, $ty:ty, $out:ident, $run:expr) => {};
}

macro_rules! typed_sweeps {
    ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {
        /// The sweeps of the built-in kinds deleted when unwanted.
        #[allow(clippy::vec_init_then_push)]
        fn typed_sweeps<'a>(run: &'a Sweep<'a>) -> Vec<BoxFuture<'a, Result<(), ApplyError>>> {
            let mut out: Vec<BoxFuture<'a, Result<(), ApplyError>>> = Vec::new();
            $(sweep_if!($unwanted, $ty, out, run);)*
            out
        }
    };
}
child_kinds!(typed_sweeps);

/// One platform's sweep.
struct Sweep<'a> {
    applier: &'a Applier<'a>,
    platform: &'a ValidatedPlatform,
    uid: &'a str,
    selector: String,
    wanted: &'a [ChildObject<'a>],
}

impl Applier<'_> {
    /// Deletes every object of a kind deleted when unwanted that carries the platform's labels
    /// and owner reference and is not in `wanted`. Custom kinds whose CRDs are not served
    /// (`cnpg`, `prometheus_operator`) have no objects and are not listed.
    pub(super) async fn sweep(
        &self,
        p: &ValidatedPlatform,
        wanted: &[ChildObject<'_>],
        cnpg: bool,
        prometheus_operator: bool,
    ) -> Result<(), ApplyError> {
        // Rendering offline has no uid, and nothing to sweep.
        let Some(uid) = p.uid.as_deref() else {
            return Ok(());
        };
        let run = Sweep {
            applier: self,
            platform: p,
            uid,
            selector: selector_string(&p.names.platform_selector()),
            wanted,
        };
        let mut sweeps = typed_sweeps(&run);
        for custom in CUSTOM_KINDS {
            let served = match custom.needs {
                Needs::CloudNativePG => cnpg,
                Needs::PrometheusOperator => prometheus_operator,
                Needs::Nothing => true,
            };
            if custom.unwanted == WhenUnwanted::Delete && served {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), self.namespace, &(custom.resource)());
                sweeps.push(Box::pin(run.sweep_kind(api, custom.kind)));
            }
        }
        futures::future::try_join_all(sweeps).await?;
        Ok(())
    }
}

impl Sweep<'_> {
    /// Sweeps one kind (`api`) when due.
    async fn sweep_kind<K>(&self, api: Api<K>, kind: &'static str) -> Result<(), ApplyError>
    where
        K: Resource + Clone + Debug + DeserializeOwned,
    {
        let wanted: BTreeSet<&str> = self
            .wanted
            .iter()
            .filter(|o| o.kind() == kind)
            .filter_map(|o| o.meta().name.as_deref())
            .collect();
        let tracker = self.applier.tracker;
        let key = sweep_key(kind, self.applier.namespace, &self.platform.name);
        let wanted_hash = desired_hash(&wanted);
        if !tracker.sweep_due(&key, &wanted_hash) {
            return Ok(());
        }
        let listed = match api
            .list_metadata(&ListParams::default().labels(&self.selector))
            .await
        {
            Ok(list) => list.items,
            // The custom kind's CRD is not served: nothing of it exists.
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => {
                return Err(ApplyError::Read {
                    kind,
                    name: self.selector.clone(),
                    detail: describe(&e),
                })
            }
        };
        for meta in listed.iter().map(|o| &o.metadata) {
            let name = meta.name.as_deref().unwrap_or_default();
            let owned = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == self.uid);
            if !owned || wanted.contains(name) || meta.deletion_timestamp.is_some() {
                continue;
            }
            // Guarded by the uid: an object created again under the same name in between is not
            // the one listed.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: meta.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(e)
                    if is_not_found(&e) || matches!(&e, kube::Error::Api(s) if s.code == 409) => {}
                Err(e) => {
                    return Err(ApplyError::Delete {
                        kind,
                        name: name.to_string(),
                        detail: describe(&e),
                    })
                }
            }
            tracker.forget_key(&child_key(kind, self.applier.namespace, name));
            info!(
                namespace = self.applier.namespace,
                kind, name, "no longer wanted by its platform: deleted"
            );
        }
        tracker.swept(key, wanted_hash);
        Ok(())
    }
}

/// The tracker's key of one kind's sweep of one platform.
pub(super) fn sweep_key(kind: &str, namespace: &str, platform: &str) -> String {
    format!("sweep/{kind}/{namespace}/{platform}")
}
