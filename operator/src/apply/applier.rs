//! Applying and deleting one child: server-side apply (skipped when unchanged), the exact
//! replacement of a part that still differs, deletion of an unwanted one.

use super::*;

impl Applier<'_> {
    /// Server-side apply of a child unless it is unchanged since the last apply (returns the
    /// live object when applied).
    pub(super) async fn apply<K>(
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
    pub(super) fn skip<K: Clone + 'static>(
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
    pub(super) async fn apply_child<K>(
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
        let live = self
            .patch_recorded(
                &api,
                kind,
                obj,
                desired,
                |live| change_marker(kind, live, obj),
                drift,
            )
            .await?;
        Ok(Applied::Written(live))
    }

    /// Server-side apply of `obj` (of kind `kind`) through `api`, recorded in the tracker with
    /// its desired-state hash and the `marker` of the live object that tells someone else's
    /// change from ours. Reports drift when the same desired state found the object changed.
    async fn patch_recorded<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        obj: &K,
        desired: String,
        marker: impl Fn(&K) -> String,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<K, ApplyError>
    where
        K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = api
            .patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| ApplyError::Apply {
                kind,
                name: name.clone(),
                detail: describe(&e),
            })?;
        let key = child_key(kind, self.namespace, &name);
        self.tracker.absent().remove(&key);
        let fp = Fingerprint {
            desired,
            uid: live.meta().uid.clone().unwrap_or_default(),
            marker: marker(&live),
            version: live.meta().resource_version.clone().unwrap_or_default(),
            at: Instant::now(),
        };
        if self.tracker.record(key, fp) {
            drift.push((kind, name));
        }
        Ok(live)
    }

    /// Server-side apply of a custom resource of one of the registered custom kinds
    /// ([`crate::desired::kinds::CUSTOM_KINDS`]).
    pub(super) async fn apply_custom(
        &self,
        obj: &DynamicObject,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<DynamicObject, ApplyError> {
        let name = obj.name_any();
        let kind_name = obj
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default();
        let Some(custom) = crate::desired::kinds::custom_kind(kind_name) else {
            return Err(ApplyError::Apply {
                kind: "custom resource",
                name,
                detail: format!("kind {kind_name:?} is not a registered custom kind"),
            });
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &(custom.resource)());
        let generation = |live: &DynamicObject| {
            live.metadata
                .generation
                .map(|g| g.to_string())
                .unwrap_or_default()
        };
        self.patch_recorded(&api, custom.kind, obj, desired_hash(obj), generation, drift)
            .await
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
    pub(super) async fn apply_exact<K>(
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

    /// Deletes an object that must not exist; 404 is success. Skips objects already known absent.
    pub(super) async fn delete<K>(&self, name: &str) -> Result<(), ApplyError>
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
}
