//! PodDisruptionBudget of the API, when more than one API pod runs.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_meta;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

/// `maxUnavailable: 1` when the platform runs at least two API pods; otherwise `None` (a PDB on
/// a single pod would block node drains forever).
pub fn build(p: &ValidatedPlatform) -> Option<PodDisruptionBudget> {
    if p.api_min_replicas() <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: child_meta(p, p.names.api(), Component::ApiServer),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(p.names.selector(Component::ApiServer)),
                ..Default::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn pdb_only_with_more_than_one_replica() {
        let spec = build(&platform(|_| {})).unwrap().spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(build(&platform(|s| s.api_server.replicas = 1)).is_none());
        assert!(build(&platform(|s| s.stopped = true)).is_none());
        let autoscaled = platform(|s| {
            s.api_server.replicas = 1;
            s.api_server.autoscaling.enabled = true;
            s.api_server.autoscaling.min_replicas = 2;
        });
        assert!(build(&autoscaled).is_some());
    }
}
