//! The desired objects as one ordered list ([`Children::objects`]): what `render` prints and
//! every listing of the children derives from it. The order is the apply order (NetworkPolicies
//! first, then Secrets and configuration, the database and cache, the API, backups, monitoring).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde_json::Value;

use super::monitoring::MonitoringObjects;
use super::{BackupObjects, Children, PostgresObjects, RedisObjects};

/// One desired object, borrowed from [`Children`].
#[derive(Clone, Copy, Debug)]
pub enum ChildObject<'a> {
    NetworkPolicy(&'a NetworkPolicy),
    Secret(&'a Secret),
    ServiceAccount(&'a ServiceAccount),
    ConfigMap(&'a ConfigMap),
    Service(&'a Service),
    StatefulSet(&'a StatefulSet),
    Deployment(&'a Deployment),
    HorizontalPodAutoscaler(&'a HorizontalPodAutoscaler),
    PodDisruptionBudget(&'a PodDisruptionBudget),
    Ingress(&'a Ingress),
    PersistentVolumeClaim(&'a PersistentVolumeClaim),
    CronJob(&'a CronJob),
    Job(&'a Job),
    /// A custom resource (CloudNativePG Cluster / ScheduledBackup, ServiceMonitor,
    /// PrometheusRule).
    Custom(&'a DynamicObject),
}

/// A desired object and whether it exists only where the Prometheus Operator CRDs are served
/// (the monitoring objects: the apply stage applies them only then).
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    pub object: ChildObject<'a>,
    pub needs_prometheus_operator: bool,
}

impl ChildObject<'_> {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::NetworkPolicy(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
            Self::HorizontalPodAutoscaler(o) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
            Self::Ingress(o) => &o.metadata,
            Self::PersistentVolumeClaim(o) => &o.metadata,
            Self::CronJob(o) => &o.metadata,
            Self::Job(o) => &o.metadata,
            Self::Custom(o) => &o.metadata,
        }
    }

    /// The object as JSON (as it is applied).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::NetworkPolicy(o) => serde_json::to_value(o),
            Self::Secret(o) => serde_json::to_value(o),
            Self::ServiceAccount(o) => serde_json::to_value(o),
            Self::ConfigMap(o) => serde_json::to_value(o),
            Self::Service(o) => serde_json::to_value(o),
            Self::StatefulSet(o) => serde_json::to_value(o),
            Self::Deployment(o) => serde_json::to_value(o),
            Self::HorizontalPodAutoscaler(o) => serde_json::to_value(o),
            Self::PodDisruptionBudget(o) => serde_json::to_value(o),
            Self::Ingress(o) => serde_json::to_value(o),
            Self::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Self::CronJob(o) => serde_json::to_value(o),
            Self::Job(o) => serde_json::to_value(o),
            Self::Custom(o) => serde_json::to_value(o),
        }
    }
}

impl Children {
    /// Every desired object, in apply order. `Children` is destructured without `..`: a new
    /// field is a compile error here until it is listed.
    pub fn objects(&self) -> Vec<Desired<'_>> {
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
        } = self;
        let BackupObjects {
            cron_job,
            key_secret,
            pvc,
            on_demand_job,
            scheduled_backup,
        } = backup;
        use ChildObject as O;
        let mut out: Vec<ChildObject<'_>> = Vec::new();
        out.extend(network_policies.iter().map(O::NetworkPolicy));
        out.extend(
            postgres_credentials
                .iter()
                .chain(postgres_tls)
                .chain(redis_credentials)
                .chain(key_secret)
                .chain([api_secrets])
                .map(O::Secret),
        );
        out.push(O::ServiceAccount(api_service_account));
        out.push(O::ConfigMap(api_config));
        if let Some(PostgresObjects {
            stateful_set,
            headless_service,
            service,
        }) = postgres
        {
            out.push(O::Service(headless_service));
            out.push(O::Service(service));
            out.push(O::StatefulSet(stateful_set));
        }
        out.extend(cnpg_cluster.iter().map(O::Custom));
        if let Some(RedisObjects {
            stateful_set,
            service,
        }) = redis
        {
            out.push(O::Service(service));
            out.push(O::StatefulSet(stateful_set));
        }
        out.push(O::Deployment(api_deployment));
        out.push(O::Service(api_service));
        out.extend(api_hpa.iter().map(O::HorizontalPodAutoscaler));
        out.extend(api_pdb.iter().map(O::PodDisruptionBudget));
        out.extend(api_ingress.iter().map(O::Ingress));
        out.extend(pvc.iter().map(O::PersistentVolumeClaim));
        out.extend(cron_job.iter().map(O::CronJob));
        out.extend(on_demand_job.iter().map(O::Job));
        out.extend(scheduled_backup.iter().map(O::Custom));
        let mut desired: Vec<Desired<'_>> = out
            .into_iter()
            .map(|object| Desired {
                object,
                needs_prometheus_operator: false,
            })
            .collect();
        if let Some(MonitoringObjects {
            api_service_monitor,
            operator_service_monitor,
            prometheus_rule,
            dashboard,
        }) = monitoring
        {
            desired.extend(
                [
                    O::Custom(api_service_monitor),
                    O::Custom(operator_service_monitor),
                    O::Custom(prometheus_rule),
                    O::ConfigMap(dashboard),
                ]
                .map(|object| Desired {
                    object,
                    needs_prometheus_operator: true,
                }),
            );
        }
        desired
    }
}
