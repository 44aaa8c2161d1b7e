//! End-to-end suite for a real cluster (kind, k3d, a cloud cluster). When `KUBECONFIG` (or
//! `~/.kube/config`) reaches a cluster it: installs the chart, applies `examples/minimal.yaml`,
//! waits for Ready, reaches the deployed API through `kubectl port-forward` (bootstrap admin via
//! `caduceus-api create-admin`, login, create and read a patient), deletes a NetworkPolicy and
//! sees it restored, scales via the CR and sees the HPA follow, then deletes the platform and
//! checks `deletionPolicy`. Without a cluster it prints one `e2e: SKIPPED` line and passes.
//!
//! Environment:
//! - `CADUCEUS_E2E_OPERATOR_IMAGE` (`repo:tag`) overrides the chart's operator image;
//! - `CADUCEUS_E2E_API_IMAGE` (`repo:tag`) overrides the platform's API image;
//! - `CADUCEUS_E2E_KEEP=1` keeps the namespaces and the release for inspection.
//!
//! README ("End-to-end tests on kind") gives the step-by-step setup.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use caduceus_e2e::{repo_root, run, tool, yaml_file};
use serde_json::{json, Value};

const RELEASE: &str = "caduceus-e2e";
const OPERATOR_NAMESPACE: &str = "caduceus-e2e-system";

struct Cluster {
    kubectl: PathBuf,
    helm: PathBuf,
}

impl Cluster {
    /// The cluster `KUBECONFIG` points at, when `kubectl cluster-info` answers within 10 s;
    /// otherwise why not.
    fn reachable() -> Result<Self, String> {
        let config_given = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
        let default_config = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kube/config"))
            .is_some_and(|p| p.is_file());
        if !config_given && !default_config {
            return Err("KUBECONFIG is unset and ~/.kube/config does not exist".to_string());
        }
        let kubectl = tool("kubectl").map_err(|e| e.to_string())?;
        let helm = tool("helm").map_err(|e| e.to_string())?;
        let ok = Command::new(&kubectl)
            .args(["cluster-info", "--request-timeout=10s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(Self { kubectl, helm })
        } else {
            Err(format!(
                "`kubectl cluster-info` did not answer within 10s (KUBECONFIG={})",
                std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".to_string())
            ))
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.kubectl).args(args))
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&all)?)?)
    }
}

/// Polls `check` every 3 s until it returns true or `timeout` passes.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => {
                println!("e2e: {what} ({}s)", start.elapsed().as_secs());
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {}s waiting until {what}{}",
                timeout.as_secs(),
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Removes what the suite created, unless CADUCEUS_E2E_KEEP=1.
struct Cleanup<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if std::env::var("CADUCEUS_E2E_KEEP").as_deref() == Ok("1") {
            println!(
                "e2e: keeping namespace {} and release {RELEASE} (CADUCEUS_E2E_KEEP=1)",
                self.namespace
            );
            return;
        }
        let _ = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let _ = run(Command::new(&self.cluster.helm).args([
            "uninstall",
            RELEASE,
            "--namespace",
            OPERATOR_NAMESPACE,
            "--ignore-not-found",
        ]));
        let _ = self.cluster.kubectl(&[
            "delete",
            "namespace",
            OPERATOR_NAMESPACE,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// `kubectl port-forward` on a free local port; killed on drop.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn start(cluster: &Cluster, namespace: &str, target: &str, remote: u16) -> Result<Self> {
        let mut child = Command::new(&cluster.kubectl)
            .args(["port-forward", "-n", namespace, target])
            .arg(format!("0:{remote}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("kubectl port-forward")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        // Keep draining: kubectl prints a line per connection and dies of SIGPIPE if nobody reads.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let port = line
            .split_whitespace()
            .nth(2)
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("unexpected port-forward output: {line:?}"))?;
        Ok(Self { child, port })
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}", (nanos as u64) ^ u64::from(std::process::id()))
        .chars()
        .rev()
        .take(6)
        .collect()
}

/// `repo:tag` split at the last colon after the last slash.
fn split_image(image: &str) -> Result<(&str, &str)> {
    let slash = image.rfind('/').unwrap_or(0);
    let colon = image[slash..]
        .rfind(':')
        .map(|i| i + slash)
        .ok_or_else(|| anyhow!("image {image} has no tag"))?;
    Ok((&image[..colon], &image[colon + 1..]))
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_lifecycle_on_a_real_cluster() {
    let cluster = match Cluster::reachable() {
        Ok(cluster) => cluster,
        Err(why) => {
            println!(
                "e2e: SKIPPED: no Kubernetes cluster reachable ({why}); see README \"End-to-end tests on kind\""
            );
            return;
        }
    };
    if let Err(e) = lifecycle(&cluster).await {
        panic!("e2e failed: {e:#}");
    }
}

async fn lifecycle(cluster: &Cluster) -> Result<()> {
    let root = repo_root();
    let namespace = format!("caduceus-e2e-{}", unique_suffix());
    let _cleanup = Cleanup {
        cluster,
        namespace: namespace.clone(),
    };

    // 1. The chart.
    let mut helm = Command::new(&cluster.helm);
    helm.args(["upgrade", "--install", RELEASE])
        .arg(root.join("charts/caduceus-operator"))
        .args([
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ]);
    if let Ok(image) = std::env::var("CADUCEUS_E2E_OPERATOR_IMAGE") {
        let (repo, tag) = split_image(&image)?;
        helm.args(["--set", &format!("image.repository={repo}")])
            .args(["--set", &format!("image.tag={tag}")]);
    }
    run(&mut helm).context("helm install of charts/caduceus-operator")?;
    println!("e2e: chart installed in {OPERATOR_NAMESPACE}");

    // 2. The minimal platform, in a fresh namespace.
    let mut platform = yaml_file(&root.join("examples/minimal.yaml"))?
        .into_iter()
        .find(|o| o["kind"] == "HealthcarePlatform")
        .ok_or_else(|| anyhow!("examples/minimal.yaml has no HealthcarePlatform"))?;
    let name = platform["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("platform without a name"))?
        .to_string();
    if let Some(meta) = platform["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    // The platform's NetworkPolicies admit the operator (compliance self-report) from this
    // namespace only.
    platform["spec"]["networkPolicy"]["operatorNamespace"] = json!(OPERATOR_NAMESPACE);
    if let Ok(image) = std::env::var("CADUCEUS_E2E_API_IMAGE") {
        let (repo, tag) = split_image(&image)?;
        platform["spec"]["apiServer"]["image"] = json!({"repository": repo, "tag": tag});
    }
    cluster.kubectl(&["create", "namespace", &namespace])?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("platform.json");
    std::fs::write(&manifest, serde_json::to_string_pretty(&platform)?)?;
    cluster.kubectl(&[
        "apply",
        "-n",
        &namespace,
        "-f",
        &manifest.display().to_string(),
    ])?;
    println!("e2e: applied examples/minimal.yaml as {namespace}/{name}");

    // 3. Ready.
    cluster
        .kubectl(&[
            "wait",
            "-n",
            &namespace,
            &format!("healthcareplatform/{name}"),
            "--for=condition=Ready",
            "--timeout=15m",
        ])
        .context("waiting for the platform to become Ready")?;
    let hcp = cluster.kubectl_json(&["get", "-n", &namespace, "hcp", &name])?;
    if hcp["status"]["observedGeneration"] != hcp["metadata"]["generation"] {
        bail!("Ready but status.observedGeneration != metadata.generation");
    }
    println!("e2e: platform Ready (phase {})", hcp["status"]["phase"]);

    // 4. The API through a port-forward: bootstrap admin, login, create and read a patient.
    let api = format!("{name}-api");
    let email = format!("e2e-admin-{}@example.com", unique_suffix());
    let password = format!("E2e-{}-{}-pass!", unique_suffix(), unique_suffix());
    let mut exec = Command::new(&cluster.kubectl)
        .args(["exec", "-i", "-n", &namespace])
        .arg(format!("deployment/{api}"))
        .args([
            "--",
            "/usr/local/bin/caduceus-api",
            "create-admin",
            "--email",
            &email,
            "--password-file",
            "/dev/stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("kubectl exec create-admin")?;
    exec.stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(password.as_bytes())?;
    let out = exec.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "caduceus-api create-admin failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let forward = PortForward::start(cluster, &namespace, &format!("service/{api}"), 8080)?;
    let base = format!("http://127.0.0.1:{}", forward.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let ready = http.get(format!("{base}/health/ready")).send().await?;
    if !ready.status().is_success() {
        bail!("/health/ready answered {}", ready.status());
    }
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    if !login.status().is_success() {
        bail!("login answered {}", login.status());
    }
    let token: Value = login.json().await?;
    let token = token["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("login response without access_token"))?
        .to_string();
    let mrn = format!("E2E-{}", unique_suffix());
    let created = http
        .post(format!("{base}/api/v1/patients"))
        .bearer_auth(&token)
        .json(&json!({
            "mrn": mrn,
            "given_name": "Test",
            "family_name": "Patient",
            "birth_date": "1980-01-02",
            "sex": "unknown"
        }))
        .send()
        .await?;
    if created.status().as_u16() != 201 {
        bail!("create patient answered {}", created.status());
    }
    let created: Value = created.json().await?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("created patient without id"))?;
    let read = http
        .get(format!("{base}/api/v1/patients/{id}"))
        .bearer_auth(&token)
        .send()
        .await?;
    if !read.status().is_success() {
        bail!("read patient answered {}", read.status());
    }
    let read: Value = read.json().await?;
    if read["mrn"] != mrn.as_str() || read["family_name"] != "Patient" {
        bail!("the patient read back differs from the one created");
    }
    drop(forward);
    println!("e2e: logged in as the bootstrap admin, created and read a patient");

    // 5. A deleted NetworkPolicy comes back.
    let selector = format!("app.kubernetes.io/instance={name}");
    let policies =
        cluster.kubectl_json(&["get", "networkpolicy", "-n", &namespace, "-l", &selector])?;
    let policy = policies["items"]
        .as_array()
        .and_then(|items| items.first())
        .ok_or_else(|| anyhow!("the platform has no NetworkPolicy"))?;
    let policy_name = policy["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let old_uid = policy["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    cluster.kubectl(&["delete", "networkpolicy", "-n", &namespace, &policy_name])?;
    wait_until(
        &format!("NetworkPolicy {policy_name} is restored"),
        Duration::from_secs(180),
        || {
            let out = cluster.kubectl(&[
                "get",
                "networkpolicy",
                "-n",
                &namespace,
                &policy_name,
                "--ignore-not-found",
                "-o",
                "jsonpath={.metadata.uid}",
            ])?;
            Ok(!out.trim().is_empty() && out.trim() != old_uid)
        },
    )?;

    // 6. Scaling through the CR: the HPA follows.
    for (min, max) in [(3, 5), (2, 4)] {
        let patch = json!({"spec": {"apiServer": {"autoscaling": {
            "enabled": true, "minReplicas": min, "maxReplicas": max}}}});
        cluster.kubectl(&[
            "patch",
            "-n",
            &namespace,
            &format!("healthcareplatform/{name}"),
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ])?;
        wait_until(
            &format!("HPA {api} has minReplicas {min} and maxReplicas {max}"),
            Duration::from_secs(180),
            || {
                let hpa = cluster.kubectl_json(&[
                    "get",
                    "horizontalpodautoscaler",
                    "-n",
                    &namespace,
                    &api,
                    "--ignore-not-found",
                ]);
                Ok(match hpa {
                    Ok(h) => h["spec"]["minReplicas"] == min && h["spec"]["maxReplicas"] == max,
                    Err(_) => false,
                })
            },
        )?;
    }

    // 7. Deleting the platform applies its deletionPolicy.
    let hcp = cluster.kubectl_json(&["get", "-n", &namespace, "hcp", &name])?;
    let policy = hcp["spec"]["deletionPolicy"]
        .as_str()
        .unwrap_or("Retain")
        .to_string();
    let pvcs = cluster.kubectl_json(&["get", "pvc", "-n", &namespace, "-l", &selector])?;
    let pvc_names: Vec<String> = pvcs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    cluster.kubectl(&[
        "delete",
        "-n",
        &namespace,
        &format!("healthcareplatform/{name}"),
        "--timeout=5m",
    ])?;
    wait_until("the platform is gone", Duration::from_secs(300), || {
        let out =
            cluster.kubectl(&["get", "-n", &namespace, "hcp", &name, "--ignore-not-found"])?;
        Ok(out.trim().is_empty())
    })?;
    match policy.as_str() {
        "Retain" => {
            if pvc_names.is_empty() {
                bail!("deletionPolicy Retain, but the platform had no PVC to retain");
            }
            // Give the garbage collector time to (wrongly) remove them.
            std::thread::sleep(Duration::from_secs(20));
            for pvc in &pvc_names {
                let p = cluster.kubectl_json(&["get", "pvc", "-n", &namespace, pvc])?;
                if !p["metadata"]["deletionTimestamp"].is_null() {
                    bail!("deletionPolicy Retain, but PVC {pvc} is being deleted");
                }
            }
            println!("e2e: deletionPolicy Retain kept {} PVC(s)", pvc_names.len());
        }
        "Delete" => {
            wait_until(
                "the platform's PVCs are deleted (deletionPolicy Delete)",
                Duration::from_secs(300),
                || {
                    let left =
                        cluster.kubectl_json(&["get", "pvc", "-n", &namespace, "-l", &selector])?;
                    Ok(left["items"].as_array().is_none_or(Vec::is_empty))
                },
            )?;
        }
        other => bail!("unknown deletionPolicy {other}"),
    }
    println!("e2e: all steps passed");
    Ok(())
}

#[test]
fn split_image_handles_registry_ports() {
    assert_eq!(
        split_image("localhost:5000/caduceus/api:0.1.0").expect("split"),
        ("localhost:5000/caduceus/api", "0.1.0")
    );
    assert_eq!(
        split_image("ghcr.io/caduceus-health/caduceus-api:0.1.0").expect("split"),
        ("ghcr.io/caduceus-health/caduceus-api", "0.1.0")
    );
    assert!(split_image("localhost:5000/caduceus/api").is_err());
}
