//! Every child of a platform, in the order of [`Children::objects`] (NetworkPolicies first, then
//! Secrets and configuration, the database and cache, the restore, the API, backups and
//! monitoring), each applied the way its kind is registered in [`crate::desired::kinds`]; then
//! the sweep of what the platform owns but no longer wants.

use super::*;
use crate::desired::kinds::child_kinds;
use crate::desired::ChildObject;

/// Whether the apply of a kind returns the live object even when it skips the write (the kinds
/// whose status the platform's status reads; the watch keeps a summary of them).
macro_rules! need_live {
    (Summary) => {
        true
    };
    ($other:ident) => {
        false
    };
}

/// The apply of one object of type `$ty` in mode `$apply`.
macro_rules! apply_as {
    (ServerSide, $ty:ty, $watch:ident, $s:expr, $o:expr, $p:expr, $d:expr) => {
        $s.apply_child($o, $d, need_live!($watch)).await?.live()
    };
    (Exact, $ty:ty, $watch:ident, $s:expr, $o:expr, $p:expr, $d:expr) => {
        $s.apply_exact(
            $o,
            <$ty as ExactPart>::PATH,
            <$ty as ExactPart>::same,
            $d,
            need_live!($watch),
        )
        .await?
    };
    (StatefulSet, $ty:ty, $watch:ident, $s:expr, $o:expr, $p:expr, $d:expr) => {
        Box::pin($s.apply_stateful_set($o, &$p.names, $d)).await?
    };
    (CreateOnce, $ty:ty, $watch:ident, $s:expr, $o:expr, $p:expr, $d:expr) => {
        $s.create_once($o, $d).await?
    };
}

macro_rules! dispatch {
    ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {
        /// What applying one desired object returned: the live object, when it was written or
        /// the watch kept it. (Every kind has a variant; the status reads only some of them.)
        /// Moved once per object: its size does not matter.
        #[allow(dead_code, clippy::large_enum_variant)]
        pub(super) enum Live {
            $($variant(Option<$ty>),)*
            Custom(DynamicObject),
        }

        impl Applier<'_> {
            /// Applies one desired object the way its kind is registered.
            pub(super) async fn apply_object(
                &self,
                p: &ValidatedPlatform,
                object: ChildObject<'_>,
                drift: &mut Vec<(&'static str, String)>,
            ) -> Result<Live, ApplyError> {
                Ok(match object {
                    $(ChildObject::$variant(o) => {
                        Live::$variant(apply_as!($apply, $ty, $watch, self, o, p, drift))
                    })*
                    ChildObject::Custom(o) => Live::Custom(self.apply_custom(o, drift).await?),
                })
            }
        }
    };
}
child_kinds!(dispatch);

impl Applier<'_> {
    /// Applies every wanted child, then sweeps the unwanted ones. `restore_job` is
    /// [`restore::job`] of the same platform (applied right before the API's Deployment).
    pub async fn apply_all(
        &self,
        p: &ValidatedPlatform,
        children: Children,
        restore_job: Option<Job>,
        cnpg_installed: bool,
    ) -> Result<Observed, ApplyError> {
        let mut drift = Vec::new();
        // Checked also when monitoring is off: the sweep removes monitoring objects left over.
        let prometheus_operator = prometheus_operator_installed(&self.client).await?;
        let mut observed = Observed {
            cnpg_installed,
            database: children
                .postgres_tls
                .as_ref()
                .and_then(crate::desired::secrets::database_status),
            monitoring: match (&children.monitoring, prometheus_operator) {
                (None, _) => MonitoringState::Disabled,
                (Some(_), true) => MonitoringState::Applied,
                (Some(_), false) => MonitoringState::PrometheusOperatorNotInstalled,
            },
            ..Default::default()
        };
        let wanted: Vec<ChildObject<'_>> = children
            .objects()
            .into_iter()
            .filter(|d| d.applies(cnpg_installed, prometheus_operator))
            .map(|d| d.object)
            .collect();

        // A refused storage decrease leaves that StatefulSet as it is, applies everything else
        // and fails the apply stage at the end.
        let mut refused: Option<ApplyError> = None;
        let mut restore_job = Some(restore_job);
        for object in &wanted {
            // Before the Deployment: the restore runs while the API is held at 0 replicas.
            if matches!(object, ChildObject::Deployment(_)) {
                if let Some(job) = restore_job.take() {
                    let ready = restore_database_ready(p, observed.postgres.as_ref());
                    observed.restore = self.apply_restore(p, job, ready, &mut drift).await?;
                }
            }
            // Boxed: keeps the reconcile future small enough for a worker thread's stack.
            let live = match Box::pin(self.apply_object(p, *object, &mut drift)).await {
                Ok(live) => live,
                Err(e @ ApplyError::StorageDecrease { .. }) => {
                    refused.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            observe(&mut observed, object, live);
        }
        if let Some(job) = restore_job {
            let ready = restore_database_ready(p, observed.postgres.as_ref());
            observed.restore = self.apply_restore(p, job, ready, &mut drift).await?;
        }
        Box::pin(self.sweep(p, &wanted, cnpg_installed, prometheus_operator)).await?;
        if backup::agent_backups(p) {
            let (backup_jobs, backup_pods) = list_backup_jobs(&self.client, p).await?;
            observed.backup_jobs = backup_jobs;
            observed.backup_pods = backup_pods;
        }
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

    /// Creates a Job unless it exists (returns the live Job when it was created).
    pub(super) async fn create_once(
        &self,
        job: &Job,
        drift: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<Job>, ApplyError> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), self.namespace);
        let exists = jobs
            .get_opt(&name)
            .await
            .map_err(|e| ApplyError::Read {
                kind: "Job",
                name: name.clone(),
                detail: describe(&e),
            })?
            .is_some();
        if exists {
            return Ok(None);
        }
        self.apply(job, drift).await
    }
}

/// Records what the status stage needs of one applied object.
fn observe(observed: &mut Observed, object: &ChildObject<'_>, live: Live) {
    match live {
        Live::NetworkPolicy(_) => observed.network_policies += 1,
        Live::Deployment(d) => observed.deployment = d,
        Live::StatefulSet(s) => match stateful_set_component(object.meta()) {
            Some(Component::Database) => observed.postgres = s,
            Some(Component::Cache) => observed.redis = s,
            _ => {}
        },
        Live::Custom(c) if object.kind() == cnpg::KIND => observed.cnpg_cluster = Some(c),
        // The only Job of the list: the on-demand backup of `caduceus.io/backup-now`.
        Live::Job(_) => observed.on_demand_job = object.meta().name.clone(),
        _ => {}
    }
}
