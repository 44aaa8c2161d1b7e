//! The finalizer's cleanup: applies `deletionPolicy` (Retain: children unowned and kept;
//! Delete: removed with their data).

use super::*;

/// Merge-patches `ownerReferences` of one object so it no longer points at the platform.
pub(super) async fn detach<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs = obj.meta().owner_references.clone().unwrap_or_default();
    if !refs.iter().any(|r| r.uid == owner_uid) {
        return Ok(false);
    }
    let remaining: Vec<_> = refs.into_iter().filter(|r| r.uid != owner_uid).collect();
    let patch = if remaining.is_empty() {
        json!({"metadata": {"ownerReferences": null}})
    } else {
        json!({"metadata": {"ownerReferences": remaining}})
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

/// Finalizer: applies `deletionPolicy` before the platform goes away.
pub(super) async fn cleanup(
    hp: Arc<HealthcarePlatform>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let ns = hp.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = hp.name_any();
    let uid = hp.uid().unwrap_or_default();
    let names = Names::new(name.clone());
    let err = |e: kube::Error| ReconcileError::Cleanup(describe(&e));
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let claims = pvcs
        .list(&ListParams::default().labels(&names.platform_selector_string()))
        .await
        .map_err(err)?;
    let claim_names: Vec<String> = claims.items.iter().map(|c| c.name_any()).collect();

    match hp.spec.deletion_policy {
        DeletionPolicy::Retain => {
            for claim in &claims.items {
                detach(&pvcs, claim, &uid).await.map_err(err)?;
            }
            // Credentials, keys and certificates must survive with the data they unlock.
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let mut kept_secrets = Vec::new();
            for secret_name in names.retained_secrets() {
                if let Some(s) = secrets.get_opt(&secret_name).await.map_err(err)? {
                    detach(&secrets, &s, &uid).await.map_err(err)?;
                    kept_secrets.push(secret_name);
                }
            }
            let mut kept_cluster = String::new();
            if hp.spec.database.provider == DatabaseProvider::CloudNativePG
                && apply::cnpg_installed(&ctx.client).await?
            {
                let clusters: Api<DynamicObject> =
                    Api::namespaced_with(ctx.client.clone(), &ns, &cnpg::api_resource());
                if let Some(c) = clusters.get_opt(&names.cnpg_cluster()).await.map_err(err)? {
                    detach(&clusters, &c, &uid).await.map_err(err)?;
                    kept_cluster = format!(" and CloudNativePG Cluster {}", names.cnpg_cluster());
                }
            }
            publish(
                ctx,
                &hp,
                EventType::Normal,
                "DataRetained",
                format!(
                    "deletionPolicy Retain: kept PVC(s) [{}], Secret(s) [{}]{kept_cluster}; delete them by hand when the data is no longer needed",
                    claim_names.join(", "),
                    kept_secrets.join(", ")
                ),
            )
            .await;
            info!(platform = %key(&hp), pvcs = claim_names.len(), "platform deleted, data retained");
        }
        DeletionPolicy::Delete => {
            for claim in &claim_names {
                match pvcs.delete(claim, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(err(e)),
                }
            }
            publish(
                ctx,
                &hp,
                EventType::Normal,
                "DataDeleted",
                format!(
                    "deletionPolicy Delete: deleted PVC(s) [{}]; other children are removed by garbage collection",
                    claim_names.join(", ")
                ),
            )
            .await;
            info!(platform = %key(&hp), pvcs = claim_names.len(), "platform deleted with its data");
        }
    }
    ctx.drift.forget(&ns, &name);
    ctx.metrics.set_phase(&key(&hp), None);
    ctx.metrics.compliance.forget_platform(&key(&hp));
    Ok(Action::await_change())
}
