//! NetworkPolicies: default-deny ingress and egress for every platform pod, then only
//! - allowed sources (`networkPolicy.ingressFrom`) → API 8080,
//! - the monitoring namespace → API 9090,
//! - caduceus-operator pods (`networkPolicy.operatorNamespace`) → API 9090 (compliance self-report),
//! - API → database 5432 and cache 6379 (embedded pods, CloudNativePG pods, or the external port),
//! - every platform pod → DNS (port 53 in `kube-system`).
//!
//! Nothing else. CloudNativePG instance pods are not selected (CloudNativePG manages their
//! traffic); only the API's egress to them is opened.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_meta;
use crate::crd::{CacheProvider, DatabaseProvider};
use crate::names::{
    Component, API_HTTP_PORT, API_METRICS_PORT, LABEL_CNPG_CLUSTER, LABEL_NAME, OPERATOR_APP_NAME,
    POSTGRES_PORT, REDIS_PORT,
};
use crate::validate::ValidatedPlatform;

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

pub(crate) fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

fn pods(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector(labels)),
        ..Default::default()
    }
}

fn namespace(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            name.to_string(),
        )]))),
        ..Default::default()
    }
}

/// One NetworkPolicy of `component` selecting the pods with `pod_selector`. A direction given
/// (`Some`) is named in `policyTypes`, so an empty rule list denies all of it.
pub(crate) fn policy(
    p: &ValidatedPlatform,
    name: String,
    component: Component,
    pod_selector: BTreeMap<String, String>,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let mut types = Vec::new();
    if ingress.is_some() {
        types.push("Ingress".to_string());
    }
    if egress.is_some() {
        types.push("Egress".to_string());
    }
    // An empty rule list denies everything, exactly as an absent one does once `policyTypes`
    // names the direction; the API server stores it as absent, so it is sent as absent (an
    // applied `[]` differs from the stored object on every apply and bumps its generation).
    NetworkPolicy {
        metadata: child_meta(p, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(pod_selector)),
            policy_types: Some(types),
            ingress: ingress.filter(|rules| !rules.is_empty()),
            egress: egress.filter(|rules| !rules.is_empty()),
        }),
    }
}

/// Egress to the cluster DNS (port 53 in `kube-system`).
pub fn dns_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![namespace("kube-system")]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }
}

/// All NetworkPolicies of the platform (empty when `networkPolicy.enabled` is false).
pub fn build(p: &ValidatedPlatform) -> Vec<NetworkPolicy> {
    let np = &p.spec.network_policy;
    if !np.enabled {
        return Vec::new();
    }
    let names = &p.names;
    let api = names.selector(Component::ApiServer);
    let mut out = vec![
        // Default deny: empty rule lists for both directions.
        policy(
            p,
            names.netpol_default_deny(),
            Component::Platform,
            names.platform_selector(),
            Some(Vec::new()),
            Some(Vec::new()),
        ),
        policy(
            p,
            names.netpol_dns_egress(),
            Component::Platform,
            names.platform_selector(),
            None,
            Some(vec![dns_egress()]),
        ),
        policy(
            p,
            names.netpol_api_ingress(),
            Component::Platform,
            api.clone(),
            Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(np.ingress_from.clone()),
                    ports: Some(vec![port(API_HTTP_PORT, "TCP")]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![namespace(&np.monitoring_namespace)]),
                    ports: Some(vec![port(API_METRICS_PORT, "TCP")]),
                },
                // The operator reads the compliance self-report on the admin port.
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: namespace(&np.operator_namespace).namespace_selector,
                        pod_selector: Some(selector(BTreeMap::from([(
                            LABEL_NAME.to_string(),
                            OPERATOR_APP_NAME.to_string(),
                        )]))),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port(API_METRICS_PORT, "TCP")]),
                },
            ]),
            None,
        ),
    ];

    let mut api_egress = vec![database_egress(p)];
    let cache = &p.spec.cache;
    match cache.provider {
        CacheProvider::Embedded => api_egress.push(NetworkPolicyEgressRule {
            to: Some(vec![pods(names.selector(Component::Cache))]),
            ports: Some(vec![port(REDIS_PORT, "TCP")]),
        }),
        CacheProvider::External => api_egress.push(NetworkPolicyEgressRule {
            to: ip_blocks(&cache.external_cidrs),
            ports: Some(vec![port(cache.external_port, "TCP")]),
        }),
        CacheProvider::Disabled => {}
    }
    out.push(policy(
        p,
        names.netpol_api_egress(),
        Component::Platform,
        api.clone(),
        None,
        Some(api_egress),
    ));

    if p.spec.database.provider == DatabaseProvider::Embedded {
        out.push(postgres_admits(
            p,
            names.netpol_postgres_ingress(),
            Component::Platform,
            api.clone(),
        ));
    }
    if cache.provider == CacheProvider::Embedded {
        out.push(policy(
            p,
            names.netpol_redis_ingress(),
            Component::Platform,
            names.selector(Component::Cache),
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![pods(api)]),
                ports: Some(vec![port(REDIS_PORT, "TCP")]),
            }]),
            None,
        ));
    }
    out
}

/// Egress to the platform's database: the embedded Postgres pods, the CloudNativePG instance
/// pods, or an External database's port (and CIDRs, when given). Shared by the API, backup and
/// restore pods.
pub fn database_egress(p: &ValidatedPlatform) -> NetworkPolicyEgressRule {
    let names = &p.names;
    let db = &p.spec.database;
    match db.provider {
        DatabaseProvider::Embedded => NetworkPolicyEgressRule {
            to: Some(vec![pods(names.selector(Component::Database))]),
            ports: Some(vec![port(POSTGRES_PORT, "TCP")]),
        },
        DatabaseProvider::CloudNativePG => NetworkPolicyEgressRule {
            to: Some(vec![pods(BTreeMap::from([(
                LABEL_CNPG_CLUSTER.to_string(),
                names.cnpg_cluster(),
            )]))]),
            ports: Some(vec![port(POSTGRES_PORT, "TCP")]),
        },
        DatabaseProvider::External => NetworkPolicyEgressRule {
            to: ip_blocks(&db.external_cidrs),
            ports: Some(vec![port(db.external_port, "TCP")]),
        },
    }
}

/// The embedded Postgres admits pods with `labels` on its port (a policy of `component`): the
/// API's, and the one the backup and restore pods need besides their own egress.
pub fn postgres_admits(
    p: &ValidatedPlatform,
    name: String,
    component: Component,
    labels: BTreeMap<String, String>,
) -> NetworkPolicy {
    policy(
        p,
        name,
        component,
        p.names.selector(Component::Database),
        Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![pods(labels)]),
            ports: Some(vec![port(POSTGRES_PORT, "TCP")]),
        }]),
        None,
    )
}

/// Peers of the given CIDRs (validation requires at least one; `None` only for a spec that
/// skipped validation).
fn ip_blocks(cidrs: &[String]) -> Option<Vec<NetworkPolicyPeer>> {
    (!cidrs.is_empty()).then(|| {
        cidrs
            .iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..Default::default()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::desired::test_support::{platform, ports};

    fn by_name(list: &[NetworkPolicy], name: &str) -> NetworkPolicySpec {
        list.iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing"))
            .spec
            .clone()
            .unwrap()
    }

    #[test]
    fn default_deny_covers_all_platform_pods_both_ways() {
        let p = platform(|_| {});
        let list = build(&p);
        let deny = by_name(&list, "demo-default-deny");
        assert_eq!(deny.policy_types.unwrap(), ["Ingress", "Egress"]);
        // No rules in either direction, sent as absent lists (as the API server stores them).
        assert!(deny.ingress.is_none());
        assert!(deny.egress.is_none());
        assert_eq!(
            deny.pod_selector.unwrap().match_labels.unwrap(),
            p.names.platform_selector()
        );
        // Every platform pod is selected by the default deny.
        for component in [Component::ApiServer, Component::Database, Component::Cache] {
            let labels = p.names.labels(component, "x");
            assert!(p
                .names
                .platform_selector()
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v)));
        }
    }

    #[test]
    fn only_the_documented_flows_are_allowed() {
        let p = platform(|_| {});
        let list = build(&p);
        assert_eq!(list.len(), 6);
        let api_in = by_name(&list, "demo-allow-api-ingress").ingress.unwrap();
        assert_eq!(ports(&api_in[0].ports), [8080]);
        assert_eq!(ports(&api_in[1].ports), [9090]);
        let ns = api_in[1].from.clone().unwrap()[0]
            .namespace_selector
            .clone()
            .unwrap();
        assert_eq!(
            ns.match_labels.unwrap()["kubernetes.io/metadata.name"],
            "monitoring"
        );
        // The operator's pods (and only them) may read the compliance self-report.
        assert_eq!(ports(&api_in[2].ports), [9090]);
        let op = api_in[2].from.clone().unwrap()[0].clone();
        assert_eq!(
            op.namespace_selector.unwrap().match_labels.unwrap()["kubernetes.io/metadata.name"],
            "caduceus-system"
        );
        assert_eq!(
            op.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
            "caduceus-operator"
        );
        let api_out = by_name(&list, "demo-allow-api-egress").egress.unwrap();
        assert_eq!(api_out.len(), 2);
        assert_eq!(ports(&api_out[0].ports), [5432]);
        assert_eq!(ports(&api_out[1].ports), [6379]);
        let dns = by_name(&list, "demo-allow-dns-egress").egress.unwrap();
        assert_eq!(ports(&dns[0].ports), [53, 53]);
        let pg = by_name(&list, "demo-allow-postgres-ingress")
            .ingress
            .unwrap();
        assert_eq!(ports(&pg[0].ports), [5432]);
        assert_eq!(
            pg[0].from.clone().unwrap()[0]
                .pod_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap(),
            p.names.selector(Component::ApiServer)
        );
        let redis = by_name(&list, "demo-allow-redis-ingress").ingress.unwrap();
        assert_eq!(ports(&redis[0].ports), [6379]);
    }

    #[test]
    fn external_database_and_disabled_cache() {
        let p = platform(|s| {
            s.database.provider = DatabaseProvider::External;
            s.database.secret_ref = Some(SecretKeyRef {
                name: "db".into(),
                key: "url".into(),
            });
            s.database.external_cidrs = vec!["10.20.0.0/16".into()];
            s.cache.provider = CacheProvider::Disabled;
        });
        let list = build(&p);
        assert_eq!(list.len(), 4);
        let out = by_name(&list, "demo-allow-api-egress").egress.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].to.clone().unwrap()[0].ip_block.clone().unwrap().cidr,
            "10.20.0.0/16"
        );
    }

    #[test]
    fn cnpg_egress_targets_cluster_pods_and_disabled_builds_none() {
        let p = platform(|s| s.database.provider = DatabaseProvider::CloudNativePG);
        let out = by_name(&build(&p), "demo-allow-api-egress").egress.unwrap();
        let sel = out[0].to.clone().unwrap()[0].pod_selector.clone().unwrap();
        assert_eq!(sel.match_labels.unwrap()["cnpg.io/cluster"], "demo-db");
        assert!(build(&platform(|s| s.network_policy.enabled = false)).is_empty());
    }
}
