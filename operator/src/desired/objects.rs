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
use super::{BackupObjects, PostgresObjects, RedisObjects};

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

/// A field of [`Children`]: pushes its desired objects, in apply order.
pub trait IntoDesired {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>);
}

impl<T: IntoDesired> IntoDesired for Option<T> {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        if let Some(t) = self {
            t.push_into(out);
        }
    }
}

impl<T: IntoDesired> IntoDesired for Vec<T> {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        for t in self {
            t.push_into(out);
        }
    }
}

macro_rules! into_desired {
    ($(($variant:ident, $ty:ty, $apply:ident, $unwanted:ident, $watch:ident)),* $(,)?) => {
        $(impl IntoDesired for $ty {
            fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
                out.push(Desired {
                    object: ChildObject::$variant(self),
                    needs: Needs::Nothing,
                });
            }
        })*
    };
}
child_kinds!(into_desired);

impl IntoDesired for DynamicObject {
    /// A custom resource needs the CRDs of its registered kind.
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        let needs = self
            .types
            .as_ref()
            .and_then(|t| super::kinds::custom_kind(&t.kind))
            .map_or(Needs::Nothing, |c| c.needs);
        out.push(Desired {
            object: ChildObject::Custom(self),
            needs,
        });
    }
}

impl IntoDesired for PostgresObjects {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        self.hba.push_into(out);
        self.headless_service.push_into(out);
        self.service.push_into(out);
        self.stateful_set.push_into(out);
    }
}

impl IntoDesired for RedisObjects {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        self.service.push_into(out);
        self.stateful_set.push_into(out);
    }
}

impl IntoDesired for BackupObjects {
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        self.key_secret.push_into(out);
        self.pvc.push_into(out);
        self.cron_job.push_into(out);
        self.on_demand_job.push_into(out);
        self.scheduled_backup.push_into(out);
    }
}

impl IntoDesired for MonitoringObjects {
    /// Applied only where the Prometheus Operator's CRDs are served (the dashboard too).
    fn push_into<'a>(&'a self, out: &mut Vec<Desired<'a>>) {
        let from = out.len();
        self.api_service_monitor.push_into(out);
        self.operator_service_monitor.push_into(out);
        self.prometheus_rule.push_into(out);
        self.dashboard.push_into(out);
        for d in &mut out[from..] {
            d.needs = Needs::PrometheusOperator;
        }
    }
}
