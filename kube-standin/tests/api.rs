//! The stand-in driven by a real `kube::Client` over HTTP.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, PersistentVolumeClaim},
};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    core::{DynamicObject, GroupVersionKind},
    discovery::{self, ApiResource},
    runtime::{watcher, WatchStreamExt},
    Client,
};
use kube_standin::StandIn;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

async fn setup() -> (StandIn, Client) {
    let standin = StandIn::start().await.expect("stand-in starts");
    let client = standin.client().expect("client");
    (standin, client)
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "min": {"type": "integer", "minimum": 0, "default": 1},
                                "max": {"type": "integer", "default": 3},
                                "mode": {"type": "string", "enum": ["Fast", "Safe"]}
                            },
                            "x-kubernetes-validations": [{"rule": "self.max >= self.min", "message": "max must be >= min"}]
                        },
                        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                    }
                }}
            }]
        }
    })
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

async fn install_widget_crd(client: &Client) {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
}

#[tokio::test]
async fn crud_list_selectors_and_resource_versions() {
    let (standin, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let a = api
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "x", "tier": "web"})),
        )
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", json!({"app": "y"})))
        .await
        .unwrap();
    let uid = a.metadata.uid.clone().unwrap();
    assert!(a.metadata.creation_timestamp.is_some());
    let err = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    let got = api.get("a").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));

    let by_eq = api
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(by_eq.items.len(), 1);
    let by_set = api
        .list(&ListParams::default().labels("app in (x,y),!tier"))
        .await
        .unwrap();
    assert_eq!(
        by_set
            .items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    let paged = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    let token = paged.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items[0].metadata.name.as_deref(), Some("b"));

    // Replace with a stale resourceVersion conflicts; with the current one it succeeds.
    let mut stale = got.clone();
    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        got.metadata.resource_version
    );
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    // A no-op write does not move the resourceVersion.
    let rv = standin.resource_version();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    assert_eq!(standin.resource_version(), rv);

    // JSON patch.
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "add", "path": "/data/extra", "value": "1"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap().get("extra").map(String::as_str),
        Some("1")
    );

    let calls = standin.calls();
    assert_eq!(calls.get("create", "ConfigMap"), 3);
    assert_eq!(calls.get("update", "ConfigMap"), 2);
    assert!(calls.writes() >= 7);
}

#[tokio::test]
async fn server_side_apply_field_ownership_and_conflicts() {
    let (_standin, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let ssa = PatchParams::apply("op");
    let applied = api
        .patch("c", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})))
        .await
        .unwrap();
    let mf = applied.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("op"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Fields no longer applied are removed.
    let applied = api
        .patch("c", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap().len(), 1);

    // Someone else edits "a": a non-forced apply conflicts, a forced one wins.
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"a": "9"}})),
    )
    .await
    .unwrap();
    let err = api
        .patch("c", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("conflict with \"kubectl-edit\""),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let forced = api
        .patch("c", &ssa.clone().force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap().get("a").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (standin, client) = setup().await;
    let api: Api<Deployment> = Api::default_namespaced(client);
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
        "status": {"readyReplicas": 5}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));

    // Status through the main endpoint is ignored; labels do not bump generation.
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"x": "y"}}, "status": {"readyReplicas": 7}}),
            ),
        )
        .await
        .unwrap();
    assert!(p.status.is_none());
    assert_eq!(p.metadata.generation, Some(1));
    // Spec changes bump generation.
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    // The status subresource changes only status.
    let s = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"observedGeneration": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(3));
    assert_eq!(s.status.unwrap().observed_generation, Some(2));
    assert_eq!(s.metadata.generation, Some(2));

    assert_eq!(standin.mark_workloads_ready(), 1);
    let ready = api.get_status("web").await.unwrap().status.unwrap();
    assert_eq!(ready.ready_replicas, Some(3));
    assert_eq!(standin.mark_workloads_ready(), 0, "already ready");
}

#[tokio::test]
async fn watch_streams_events_and_resumes() {
    let (standin, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("pre", json!({"w": "1"})))
        .await
        .unwrap();
    let stream = watcher(api.clone(), watcher::Config::default().labels("w=1")).applied_objects();
    let mut stream = Box::pin(stream);
    let first = tokio::time::timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("pre"));
    api.create(&PostParams::default(), &cm("other", json!({"w": "2"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("post", json!({"w": "1"})))
        .await
        .unwrap();
    let next = tokio::time::timeout(T, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.metadata.name.as_deref(),
        Some("post"),
        "filtered by label"
    );

    // Raw watch from a resourceVersion replays what happened after it.
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    api.patch(
        "pre",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    api.delete("other", &DeleteParams::default()).await.unwrap();
    let mut raw = Box::pin(
        api.watch(&kube::api::WatchParams::default().timeout(5), &rv)
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(T, raw.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            kube::core::WatchEvent::Modified(o) => {
                seen.push(format!("MODIFIED {}", o.metadata.name.unwrap()))
            }
            kube::core::WatchEvent::Deleted(o) => {
                seen.push(format!("DELETED {}", o.metadata.name.unwrap()))
            }
            kube::core::WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec!["MODIFIED pre", "DELETED other"]);

    // The streaming-list mode (sendInitialEvents) works too.
    let streaming = watcher(
        api,
        watcher::Config::default().streaming_lists().labels("w=1"),
    )
    .applied_objects();
    let names: Vec<String> = tokio::time::timeout(
        T,
        Box::pin(streaming)
            .take(2)
            .map(|o| o.unwrap().metadata.name.unwrap())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(names.len(), 2);
    assert!(standin.calls().verb("watch") >= 3);
}

#[tokio::test]
async fn finalizers_and_deletion() {
    let (_standin, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut c = cm("f", json!({}));
    c.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("f").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let err = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "x/y"]}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let gone = api.get_opt("f").await.unwrap();
    assert!(gone.is_none(), "removed when the last finalizer is gone");
}

#[tokio::test]
async fn json_patch_test_ops_as_kube_runtime_finalizer_uses_them() {
    let (_standin, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &cm("j", json!({})))
        .await
        .unwrap();
    let add_first = |name: &str| {
        serde_json::from_value::<json_patch::Patch>(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [name]}
        ]))
        .unwrap()
    };
    let p = api
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::<()>::Json(add_first("a/b")),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers, Some(vec!["a/b".to_string()]));
    // The same "finalizers are absent" test now fails: someone else changed them.
    let err = api
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::<()>::Json(add_first("c/d")),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_collection_cascades_and_statefulset_pvcs() {
    let (standin, client) = setup().await;
    let owners: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = owners
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let sts_api: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap(), "controller": true}]},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }))
    .unwrap();
    sts_api.create(&PostParams::default(), &sts).await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let pvc = pvcs
        .get("data-db-0")
        .await
        .expect("the StatefulSet controller model created the PVC");
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));

    owners
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        sts_api.get_opt("db").await.unwrap().is_none(),
        "dependent collected"
    );
    assert!(
        pvcs.get_opt("data-db-0").await.unwrap().is_some(),
        "PVCs outlive their StatefulSet (Retain)"
    );

    // Namespaces must exist for namespaced objects.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = other
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nope"}})).unwrap(),
    )
    .await
    .unwrap();
    other
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let _ = standin;
}

#[tokio::test]
async fn crds_are_discovered_and_admitted_against_their_schema() {
    let (standin, client) = setup().await;
    assert!(
        discovery::group(&client, "example.com").await.is_err(),
        "not served before the CRD exists"
    );
    install_widget_crd(&client).await;
    let group = discovery::group(&client, "example.com")
        .await
        .expect("group served");
    let (ar, caps) = group.recommended_kind("Widget").expect("Widget served");
    assert_eq!(ar.plural, "widgets");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "widgets/status")
            || caps.scope == discovery::Scope::Namespaced
    );

    let api: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &widget_resource());
    let ok: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"mode": "Fast", "junk": true}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &ok).await.unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"min": 1, "max": 3, "mode": "Fast"}),
        "defaulted and pruned"
    );

    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"min": 5, "max": 2}
    }))
    .unwrap();
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert_eq!(s.reason, "Invalid");
            assert!(s.message.contains("max must be >= min"), "{}", s.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    let bad_enum = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Reckless"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad_enum, kube::Error::Api(ref s) if s.code == 422),
        "{bad_enum:?}"
    );

    // Status subresource for custom resources; strategic merge patch is refused like the real server.
    let st = api
        .patch_status("w1", &PatchParams::apply("ctl").force(), &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "status": {"phase": "Ready"}})))
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    let err = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"min": 2}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 415),
        "{err:?}"
    );

    // Deleting the CRD removes the kind and its objects.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert!(discovery::group(&client, "example.com").await.is_err());
    assert!(standin.list("example.com/v1", "Widget", None).is_empty());
}

#[tokio::test]
async fn leases_and_injected_failures() {
    let (standin, client) = setup().await;
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    standin.inject_failure("get", "Lease", 500, 1);
    let err = leases.get("leader").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    let got = leases.get("leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("a"));
}
