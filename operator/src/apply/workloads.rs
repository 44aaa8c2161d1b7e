//! The embedded database / cache StatefulSets: claim-template changes (re-creation), storage
//! growth of their PVCs, refusal of a decrease.

use super::*;

impl Applier<'_> {
    /// Applies an embedded database / cache StatefulSet whose volume claim templates may have
    /// changed (see [`volume_claims`]): templates that differ from the live ones make it be
    /// deleted (PVCs kept; pods too when they can be adopted) and created again;
    /// a grown storage request is then written to its existing PVCs; a smaller one is refused
    /// ([`ApplyError::StorageDecrease`]) without touching the StatefulSet. Its component label
    /// selects its PVCs and names the spec field of the request in messages. `None` when
    /// the old StatefulSet is still being deleted (the next reconcile creates it; its
    /// deletion triggers one).
    pub(super) async fn apply_stateful_set(
        &self,
        sts: &StatefulSet,
        names: &crate::names::Names,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<StatefulSet>, ApplyError> {
        let name = sts.metadata.name.clone().unwrap_or_default();
        let (component, storage_field) = match stateful_set_component(&sts.metadata) {
            Some(c @ Component::Database) => (c, "spec.database.storage.size"),
            Some(c @ Component::Cache) => (c, "spec.cache.persistence.size"),
            _ => {
                return Err(ApplyError::Apply {
                    kind: "StatefulSet",
                    name,
                    detail: "not labelled as the database or the cache".into(),
                })
            }
        };
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
        let applied = self
            .apply_exact(
                sts,
                <StatefulSet as ExactPart>::PATH,
                <StatefulSet as ExactPart>::same,
                drift,
                true,
            )
            .await?;
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
    pub(super) async fn delete_stateful_set(
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
    pub(super) async fn expand_claims(
        &self,
        sts: &StatefulSet,
        selector: &str,
    ) -> Result<(), ApplyError> {
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
}
