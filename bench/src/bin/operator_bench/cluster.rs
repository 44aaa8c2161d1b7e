//! The cluster: the kubeconfig to use, the CRD and the chart's RBAC applied, the admin and
//! ServiceAccount clients, and the operator process's kubeconfig.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use k8s_openapi::{
    api::core::v1::ServiceAccount,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
    core::{DynamicObject, GroupVersionKind},
    Client, Config,
};
use serde_json::{json, Value};

use crate::{Args, HCP_CRD, MANAGER, OPERATOR_NS};

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub fn repo_file(rel: &str) -> anyhow::Result<String> {
    let path = repo_path(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The kubeconfig to use and where it came from (never the current context).
pub fn kubeconfig_path(args: &Args) -> anyhow::Result<(PathBuf, &'static str)> {
    if let Some(p) = args
        .kubeconfig
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        return Ok((p.clone(), "--kubeconfig / CADUCEUS_BENCH_KUBECONFIG"));
    }
    let script = repo_path("scripts/cluster.sh");
    eprintln!("operator_bench: no --kubeconfig: running `scripts/cluster.sh up`");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("up")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("`scripts/cluster.sh up` failed ({}): {stdout}", out.status);
    }
    let last = stdout.lines().last().unwrap_or_default();
    let path = last.strip_prefix("export KUBECONFIG=").ok_or_else(|| {
        anyhow!("`scripts/cluster.sh up` did not end with `export KUBECONFIG=<path>`: {last:?}")
    })?;
    Ok((PathBuf::from(path), "scripts/cluster.sh up"))
}

/// A tool installed by `scripts/tools.sh`, else from PATH.
fn tool(name: &str) -> PathBuf {
    let local = repo_path(&format!(".tools/bin/{name}"));
    if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// Multi-document YAML as JSON values (empty documents dropped).
fn yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).context("parsing a YAML document")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The ServiceAccount and RBAC objects of the operator chart, as `helm template` renders them.
fn chart_rbac() -> anyhow::Result<Vec<Value>> {
    let helm = tool("helm");
    let out = std::process::Command::new(&helm)
        .args(["template", "caduceus-operator"])
        .arg(repo_path("charts/caduceus-operator"))
        .args(["--namespace", OPERATOR_NS])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac.yaml"])
        .output()
        .with_context(|| format!("running {} (scripts/tools.sh installs it)", helm.display()))?;
    if !out.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    yaml_documents(&String::from_utf8_lossy(&out.stdout)).context("helm template output")
}

/// Server-side applies a manifest of any served kind as the bench, forcing conflicts.
pub async fn apply_manifest(client: &Client, obj: &Value) -> anyhow::Result<DynamicObject> {
    let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: obj["apiVersion"].as_str().unwrap_or_default().into(),
        kind: obj["kind"].as_str().unwrap_or_default().into(),
    })
    .context("apiVersion/kind of a manifest")?;
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("{gvk:?} is not served"))?;
    let name = obj["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("{} without metadata.name", gvk.kind))?;
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        (kube::discovery::Scope::Namespaced, None) => {
            Api::default_namespaced_with(client.clone(), &ar)
        }
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .with_context(|| format!("applying {} {name}", gvk.kind))
}

async fn wait_crd_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let crd = api
            .get(name)
            .await
            .with_context(|| format!("reading CRD {name}"))?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("CRD {name} not Established within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Config that authenticates with a fresh token of the ServiceAccount, and the token.
async fn token_config(
    admin: &Client,
    admin_config: &Config,
    account: &str,
    seconds: u64,
) -> anyhow::Result<(Config, String)> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NS);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds}
    });
    let answer: Value = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {OPERATOR_NS}/{account}"))?;
    let token = answer["status"]["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in the TokenRequest status"))?
        .to_string();
    let mut config = admin_config.clone();
    config.auth_info = AuthInfo {
        token: Some(token.clone().into()),
        ..AuthInfo::default()
    };
    Ok((config, token))
}

/// What the measurements share: the admin client and the operator's identity.
pub struct Cluster {
    pub server: String,
    pub admin: Client,
    admin_config: Config,
    account: String,
}

impl Cluster {
    /// Installs the CRD from `crds/` and the chart's ServiceAccount and RBAC (idempotent:
    /// server-side apply of the same manifests the operator tests apply).
    pub async fn prepare(kubeconfig: &Path) -> anyhow::Result<Cluster> {
        let kc = Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        let admin_config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", kubeconfig.display()))?;
        let server = admin_config.cluster_url.to_string();
        let admin = Client::try_from(admin_config.clone()).context("admin client")?;
        let version = admin
            .apiserver_version()
            .await
            .with_context(|| format!("the API server at {server} does not answer"))?;
        println!(
            "cluster: {server} (Kubernetes {}), kubeconfig {}",
            version.git_version,
            kubeconfig.display()
        );

        let crd: CustomResourceDefinition =
            serde_norway::from_str(&repo_file("crds/caduceus.io_healthcareplatforms.yaml")?)
                .context("parsing the CRD")?;
        apply_manifest(&admin, &serde_json::to_value(crd)?)
            .await
            .context("installing the HealthcarePlatform CRD")?;
        wait_crd_established(&admin, HCP_CRD).await?;
        apply_manifest(
            &admin,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}}),
        )
        .await?;
        let rbac = tokio::task::spawn_blocking(chart_rbac)
            .await
            .context("helm task")??;
        let mut account = None;
        for obj in &rbac {
            if obj["kind"] == "ServiceAccount" {
                account = obj["metadata"]["name"].as_str().map(str::to_string);
            }
            apply_manifest(&admin, obj)
                .await
                .context("the chart's RBAC")?;
        }
        let account = account.ok_or_else(|| anyhow!("the chart renders no ServiceAccount"))?;
        Ok(Cluster {
            server,
            admin,
            admin_config,
            account,
        })
    }

    pub async fn operator_config(&self, seconds: u64) -> anyhow::Result<(Config, String)> {
        token_config(&self.admin, &self.admin_config, &self.account, seconds).await
    }
}

/// A kubeconfig file for the operator process: the cluster's address and CA, the token.
pub fn write_operator_kubeconfig(config: &Config, token: &str, path: &Path) -> anyhow::Result<()> {
    let mut cluster = json!({"server": config.cluster_url.to_string()});
    let ca_pem = match (&config.root_cert_file, &config.root_cert) {
        (Some(file), _) => Some(
            std::fs::read(file).with_context(|| format!("reading the CA {}", file.display()))?,
        ),
        (None, Some(ders)) => Some(
            ders.iter()
                .map(|d| der_to_pem(d))
                .collect::<String>()
                .into(),
        ),
        (None, None) => None,
    };
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    if config.accept_invalid_certs {
        cluster["insecure-skip-tls-verify"] = json!(true);
    }
    if let Some(name) = &config.tls_server_name {
        cluster["tls-server-name"] = json!(name);
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "operator"}}],
        "current-context": "bench",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
