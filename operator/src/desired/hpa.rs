//! `autoscaling/v2` HorizontalPodAutoscaler of the API (CPU and memory utilization).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::child_meta;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

fn utilization(resource: &str, percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// The HPA, or `None` when autoscaling is off or the platform is stopped.
pub fn build(p: &ValidatedPlatform) -> Option<HorizontalPodAutoscaler> {
    if !p.autoscaling() {
        return None;
    }
    let a = &p.spec.api_server.autoscaling;
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(p, p.names.api(), Component::ApiServer),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: p.names.api(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![
                utilization("cpu", a.target_cpu_utilization_percentage),
                utilization("memory", a.target_memory_utilization_percentage),
            ]),
            behavior: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn hpa_targets_deployment_with_cpu_and_memory() {
        let p = platform(|s| {
            s.api_server.autoscaling.enabled = true;
            s.api_server.autoscaling.min_replicas = 3;
            s.api_server.autoscaling.max_replicas = 7;
        });
        let spec = build(&p).unwrap().spec.unwrap();
        assert_eq!(spec.scale_target_ref.name, "demo-api");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 7));
        let m = spec.metrics.unwrap();
        assert_eq!(m[0].resource.as_ref().unwrap().name, "cpu");
        assert_eq!(
            m[0].resource.as_ref().unwrap().target.average_utilization,
            Some(70)
        );
        assert_eq!(m[1].resource.as_ref().unwrap().name, "memory");
    }

    #[test]
    fn no_hpa_when_disabled_or_stopped() {
        assert!(build(&platform(|_| {})).is_none());
        assert!(build(&platform(|s| {
            s.api_server.autoscaling.enabled = true;
            s.stopped = true;
        }))
        .is_none());
    }
}
