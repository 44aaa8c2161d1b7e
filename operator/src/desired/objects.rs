//! The desired objects as one ordered list ([`Children::objects`]): what `render` prints, what
//! the apply stage applies (each the way its kind is registered in [`super::kinds`]) and what the
//! sweep keeps; every listing of the children derives from it. The order is the apply order
//! (NetworkPolicies first, then Secrets and configuration, the database and cache, the API,
//! backups, monitoring).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde_json::Value;

use super::kinds::child_kinds;
use super::monitoring::MonitoringObjects;
use super::{BackupObjects, Children, PostgresObjects, RedisObjects};

macro_rules! child_object {
    ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {
        /// One desired object, borrowed from [`Children`]: a variant per kind of
        /// [`child_kinds!`](super::kinds), and the custom resources.
        #[derive(Clone, Copy, Debug)]
        pub enum ChildObject<'a> {
            $($variant(&'a $ty),)*
            /// A custom resource (CloudNativePG Cluster / ScheduledBackup, ServiceMonitor,
            /// PrometheusRule): one of [`super::kinds::CUSTOM_KINDS`].
            Custom(&'a DynamicObject),
        }

        impl ChildObject<'_> {
            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Self::$variant(o) => &o.metadata,)*
                    Self::Custom(o) => &o.metadata,
                }
            }

            /// The object's kind.
            pub fn kind(&self) -> &str {
                match self {
                    $(Self::$variant(_) => <$ty as ::k8s_openapi::Resource>::KIND,)*
                    Self::Custom(o) => o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default(),
                }
            }

            /// The object as JSON (as it is applied).
            pub fn to_value(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Self::$variant(o) => serde_json::to_value(o),)*
                    Self::Custom(o) => serde_json::to_value(o),
                }
            }
        }
    };
}
child_kinds!(child_object);

/// What must be served for an object to be applied (otherwise it is left out, and the sweep
/// removes one that exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// The CloudNativePG CRDs (its Cluster and ScheduledBackup).
    CloudNativePG,
    /// The Prometheus Operator CRDs (the monitoring objects, dashboard included).
    PrometheusOperator,
}

/// A desired object and what it needs to be applied.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    pub object: ChildObject<'a>,
    pub needs: Needs,
}

impl Desired<'_> {
    /// Whether it is applied on a cluster that serves what it needs.
    pub fn applies(&self, cnpg: bool, prometheus_operator: bool) -> bool {
        match self.needs {
            Needs::Nothing => true,
            Needs::CloudNativePG => cnpg,
            Needs::PrometheusOperator => prometheus_operator,
        }
    }
}

impl Children {
    /// Every desired object, in apply order. `Children` is destructured without `..`: a new
    /// field is a compile error here until it is listed.
    pub fn objects(&self) -> Vec<Desired<'_>> {
        let Children {
            postgres_credentials,
            postgres_app,
            postgres_tls,
            redis_credentials,
            redis_tls,
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
                .chain(postgres_app)
                .chain(postgres_tls)
                .chain(redis_credentials)
                .chain(redis_tls)
                .chain(key_secret)
                .chain([api_secrets])
                .map(O::Secret),
        );
        out.push(O::ServiceAccount(api_service_account));
        out.push(O::ConfigMap(api_config));
        if let Some(PostgresObjects {
            hba,
            stateful_set,
            headless_service,
            service,
        }) = postgres
        {
            out.push(O::ConfigMap(hba));
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
                needs: match object {
                    O::Custom(o) => o
                        .types
                        .as_ref()
                        .and_then(|t| super::kinds::custom_kind(&t.kind))
                        .map_or(Needs::Nothing, |c| c.needs),
                    _ => Needs::Nothing,
                },
                object,
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
                    needs: Needs::PrometheusOperator,
                }),
            );
        }
        desired
    }
}
