//! Every child of a platform, in order: NetworkPolicies first, then Secrets and configuration,
//! the database and cache, the restore, the API, backups and monitoring.

use super::*;

impl Applier<'_> {
    /// Applies every child. `Children` is destructured without `..`: a new field is a compile
    /// error here until it is applied. `restore_job` is [`restore::job`] of the same platform.
    pub async fn apply_all(
        &self,
        p: &ValidatedPlatform,
        children: Children,
        restore_job: Option<Job>,
        cnpg_installed: bool,
    ) -> Result<Observed, ApplyError> {
        let Children {
            postgres_credentials,
            postgres_tls,
            redis_credentials,
            api_secrets,
            postgres,
            cnpg_cluster,
            redis,
            api_service_account,
            api_config,
            api_deployment,
            api_service,
            api_hpa,
            api_pdb,
            api_ingress,
            network_policies,
            backup,
            monitoring,
        } = children;
        let names = &p.names;
        let mut drift = Vec::new();
        let mut observed = Observed {
            cnpg_installed,
            ..Default::default()
        };

        // Network policies first: no platform pod ever runs unprotected.
        for np in &network_policies {
            self.apply_exact(
                np,
                "/spec",
                |live, want| same_network_policy_spec(live.spec.as_ref(), want.spec.as_ref()),
                &mut drift,
                false,
            )
            .await?;
        }
        let wanted: HashSet<String> = network_policies
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for name in names
            .all_network_policies()
            .into_iter()
            .chain(backup::all_network_policy_names(p))
            .chain(restore::all_network_policy_names(p))
        {
            if !wanted.contains(&name) {
                self.delete::<NetworkPolicy>(&name).await?;
            }
        }
        observed.network_policies = network_policies.len();

        observed.database = postgres_tls
            .as_ref()
            .and_then(crate::desired::secrets::database_status);
        // Secrets are applied with the data read from the cluster: never overwritten.
        for secret in [postgres_credentials, postgres_tls, redis_credentials]
            .into_iter()
            .flatten()
        {
            self.apply(&secret, &mut drift).await?;
        }
        self.apply(&api_secrets, &mut drift).await?;
        self.apply(&api_service_account, &mut drift).await?;
        self.apply(&api_config, &mut drift).await?;

        // A refused storage decrease leaves that StatefulSet as it is, applies everything else
        // and fails the apply stage at the end.
        let mut refused: Option<ApplyError> = None;
        let mut refuse = |result: Result<Option<StatefulSet>, ApplyError>| match result {
            Ok(live) => Ok(live),
            Err(e @ ApplyError::StorageDecrease { .. }) => {
                refused.get_or_insert(e);
                Ok(None)
            }
            Err(e) => Err(e),
        };
        if let Some(PostgresObjects {
            stateful_set,
            headless_service,
            service,
        }) = postgres
        {
            self.apply(&headless_service, &mut drift).await?;
            self.apply(&service, &mut drift).await?;
            // Boxed (like the backup objects): keeps the reconcile future small.
            observed.postgres = refuse(
                Box::pin(self.apply_stateful_set(
                    &stateful_set,
                    Component::Database,
                    "spec.database.storage.size",
                    names,
                    &mut drift,
                ))
                .await,
            )?;
        }
        if let Some(cluster) = cnpg_cluster {
            if cnpg_installed {
                observed.cnpg_cluster = Some(self.apply_dynamic(&cluster, &mut drift).await?);
            }
        }
        match redis {
            Some(RedisObjects {
                stateful_set,
                service,
            }) => {
                self.apply(&service, &mut drift).await?;
                observed.redis = refuse(
                    Box::pin(self.apply_stateful_set(
                        &stateful_set,
                        Component::Cache,
                        "spec.cache.persistence.size",
                        names,
                        &mut drift,
                    ))
                    .await,
                )?;
            }
            None => {
                self.delete::<StatefulSet>(&names.redis()).await?;
                self.delete::<Service>(&names.redis()).await?;
            }
        }

        // Before the Deployment: the restore runs while the API is held at 0 replicas.
        let database_ready = restore_database_ready(p, observed.postgres.as_ref());
        observed.restore = self
            .apply_restore(p, restore_job, database_ready, &mut drift)
            .await?;

        observed.deployment = self
            .apply_exact(
                &api_deployment,
                POD_SPEC,
                |live, want| same_pod_spec(deployment_pod(live), deployment_pod(want)),
                &mut drift,
                true,
            )
            .await?;
        self.apply(&api_service, &mut drift).await?;
        match api_hpa {
            Some(hpa) => {
                self.apply(&hpa, &mut drift).await?;
            }
            None => self.delete::<HorizontalPodAutoscaler>(&names.api()).await?,
        }
        match api_pdb {
            Some(pdb) => {
                self.apply(&pdb, &mut drift).await?;
            }
            None => self.delete::<PodDisruptionBudget>(&names.api()).await?,
        }
        match api_ingress {
            Some(ing) => {
                self.apply(&ing, &mut drift).await?;
            }
            None => self.delete::<Ingress>(&names.api()).await?,
        }
        // Boxed: keeps the reconcile future small enough for a worker thread's stack.
        Box::pin(self.apply_backup(p, backup, cnpg_installed, &mut observed, &mut drift)).await?;
        observed.monitoring = self.apply_monitoring(p, monitoring, &mut drift).await?;
        if let Some(e) = refused {
            return Err(e);
        }
        observed.drift_corrected = drift;
        Ok(observed)
    }

    /// Creates the restore Job once the database is ready (and never re-applies it: a Job's pod
    /// template is immutable, and a finished restore must not run again because the platform
    /// changed; deleting a failed Job retries). When no restore is wanted any more, a Job still
    /// there is deleted unless `status.restore` recorded its success (then its TTL removes it,
    /// and its logs stay readable until then). Returns where the restore stands.
    pub(super) async fn apply_restore(
        &self,
        p: &ValidatedPlatform,
        job: Option<Job>,
        database_ready: bool,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<restore::Progress, ApplyError> {
        let name = p.names.restore_job();
        let Some(job) = job else {
            if p.from_backup().is_none() || p.restore_pending {
                self.delete::<Job>(&name).await?;
            }
            return Ok(restore::Progress::NotRequested);
        };
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        let live = jobs.get_opt(&name).await.map_err(|e| ApplyError::Read {
            kind: "Job",
            name: name.clone(),
            detail: describe(&e),
        })?;
        let live = match live {
            Some(live) => Some(live),
            None if database_ready => self.apply(&job, drift).await?,
            None => None,
        };
        let pods = match &live {
            Some(_) => list_restore_pods(&self.client, p).await?,
            None => Vec::new(),
        };
        Ok(restore::progress(live.as_ref(), &pods))
    }

    /// Applies the backup objects, deletes the CronJob / ScheduledBackup when no longer wanted,
    /// creates the on-demand Job once and lists the backup Jobs and pods for the status.
    pub(super) async fn apply_backup(
        &self,
        p: &ValidatedPlatform,
        objects: BackupObjects,
        cnpg_installed: bool,
        observed: &mut Observed,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<(), ApplyError> {
        let BackupObjects {
            cron_job,
            key_secret,
            pvc,
            on_demand_job,
            scheduled_backup,
        } = objects;
        let names = &p.names;
        // Kept when no longer wanted: the key decrypts existing backups, the PVC holds them.
        if let Some(secret) = key_secret {
            self.apply(&secret, drift).await?;
        }
        if let Some(claim) = pvc {
            self.apply(&claim, drift).await?;
        }
        match cron_job {
            Some(cj) => {
                self.apply_exact(
                    &cj,
                    "/spec/jobTemplate/spec/template/spec",
                    |live, want| same_pod_spec(cron_job_pod(live), cron_job_pod(want)),
                    drift,
                    false,
                )
                .await?;
            }
            None => self.delete::<CronJob>(&names.backup_cron_job()).await?,
        }
        if p.spec.database.provider == DatabaseProvider::CloudNativePG && cnpg_installed {
            let sb = backup_cnpg::scheduled_backup_resource();
            match scheduled_backup {
                Some(obj) => {
                    self.apply_dynamic_as(&obj, &sb, SCHEDULED_BACKUP_KIND, drift)
                        .await?;
                }
                None => {
                    let name = names.cnpg_scheduled_backup();
                    self.delete_dynamic(&sb, SCHEDULED_BACKUP_KIND, &name)
                        .await?
                }
            }
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        if let Some(job) = on_demand_job {
            let name = job.metadata.name.clone().unwrap_or_default();
            // Created once: a Job's pod template is immutable, and a finished Job must not run
            // again because the platform changed.
            let exists = jobs
                .get_opt(&name)
                .await
                .map_err(|e| ApplyError::Read {
                    kind: "Job",
                    name: name.clone(),
                    detail: describe(&e),
                })?
                .is_some();
            if !exists {
                self.apply(&job, drift).await?;
            }
            observed.on_demand_job = Some(name);
        }
        if backup::agent_backups(p) {
            let (backup_jobs, backup_pods) = list_backup_jobs(&self.client, p).await?;
            observed.backup_jobs = backup_jobs;
            observed.backup_pods = backup_pods;
        }
        Ok(())
    }

    /// Applies the monitoring objects when the Prometheus Operator CRDs are served; removes
    /// them when monitoring is disabled.
    pub(super) async fn apply_monitoring(
        &self,
        p: &ValidatedPlatform,
        objects: Option<MonitoringObjects>,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<MonitoringState, ApplyError> {
        let installed = prometheus_operator_installed(&self.client).await?;
        let names = &p.names;
        match (objects, installed) {
            (Some(m), true) => {
                let sm = monitoring::service_monitor_resource();
                self.apply_dynamic_as(&m.api_service_monitor, &sm, "ServiceMonitor", drift)
                    .await?;
                self.apply_dynamic_as(&m.operator_service_monitor, &sm, "ServiceMonitor", drift)
                    .await?;
                let pr = monitoring::prometheus_rule_resource();
                self.apply_dynamic_as(&m.prometheus_rule, &pr, "PrometheusRule", drift)
                    .await?;
                self.apply(&m.dashboard, drift).await?;
                Ok(MonitoringState::Applied)
            }
            (Some(_), false) => {
                self.delete::<ConfigMap>(&names.dashboard()).await?;
                Ok(MonitoringState::PrometheusOperatorNotInstalled)
            }
            (None, _) => {
                if installed {
                    let sm = monitoring::service_monitor_resource();
                    for name in [
                        names.api_service_monitor(),
                        names.operator_service_monitor(),
                    ] {
                        self.delete_dynamic(&sm, "ServiceMonitor", &name).await?;
                    }
                    let pr = monitoring::prometheus_rule_resource();
                    self.delete_dynamic(&pr, "PrometheusRule", &names.prometheus_rule())
                        .await?;
                }
                self.delete::<ConfigMap>(&names.dashboard()).await?;
                Ok(MonitoringState::Disabled)
            }
        }
    }
}
