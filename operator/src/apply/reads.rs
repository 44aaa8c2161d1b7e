//! Reads of the apply and status stages: generated Secrets, discovery of optional CRDs, the
//! backup and restore Jobs and pods, the live workloads of a paused platform.

use super::*;

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
    // The TLS Secrets are read (so their CAs are kept) but are not in `generated_secret_names`: a
    // lost CA is simply reissued, it unlocks no stored data.
    let tls =
        (p.spec.database.provider == DatabaseProvider::Embedded).then(|| p.names.postgres_tls());
    let redis_tls = (p.spec.cache.provider == CacheProvider::Embedded).then(|| p.names.redis_tls());
    // The API's serving certificate exists for every platform.
    let api_tls = p.names.api_internal_tls();
    // The runtime role's password is read too (kept), but it unlocks nothing stored: a lost one
    // is generated again and set by db-setup / CloudNativePG.
    let app =
        (p.spec.database.provider != DatabaseProvider::External).then(|| p.names.postgres_app());
    // Read at once (never from a cache: a stale "absent" would regenerate a key).
    let reads = generated_secret_names(p)
        .into_iter()
        .chain(tls)
        .chain(redis_tls)
        .chain([api_tls])
        .chain(app)
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
    children
        .objects()
        .into_iter()
        .map(|d| d.object.meta().clone())
        .collect()
}
