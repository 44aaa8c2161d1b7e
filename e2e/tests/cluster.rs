//! End-to-end suite against a real Kubernetes API server: this repository's control plane
//! (`scripts/cluster.sh up`: etcd, kube-apiserver with RBAC and PodSecurity admission,
//! kube-controller-manager, kube-scheduler, KWOK nodes) in CI, or kind/k3d/a cloud cluster.
//!
//! Only a cluster the user opted into is touched: the kubeconfig named by
//! `CADUCEUS_E2E_KUBECONFIG`, never `KUBECONFIG` or `~/.kube/config`. Without that variable the
//! suite prints one `e2e: SKIPPED (...)` line and passes.
//!
//! The run, in fresh namespaces labelled `pod-security.kubernetes.io/enforce: restricted`:
//! 1. `helm install --wait` of `charts/caduceus-operator` (with the ServiceMonitor when the
//!    cluster serves its CRD); every object it renders is admitted by the API server;
//! 2. the operator reconciling the release's `watchNamespace`. On KWOK nodes (annotation
//!    `kwok.x-k8s.io/node=fake`) no container runs, so the chart's pods are Ready but idle and
//!    the `caduceus-operator` binary runs as a local process with a TokenRequest token of the
//!    chart's ServiceAccount: the chart's RBAC authorizes every call (a 403 in its log fails the
//!    suite) and it wins the chart's leader-election Lease. Elsewhere the chart's own pods do;
//! 3. `examples/minimal.yaml` (deletionPolicy Delete) and a copy with deletionPolicy Retain reach
//!    phase Ready from the real Deployment/StatefulSet status;
//! 4. with containers (not on KWOK): through `kubectl port-forward`, a bootstrap admin
//!    (`caduceus-api create-admin`), login, create and read a patient;
//! 5. a deleted NetworkPolicy is restored; `spec.apiServer.autoscaling` changes reach the HPA;
//! 6. deletion: Delete removes the PVCs; Retain keeps the PVCs and the Secrets that unlock the
//!    data, with no owner left.
//!
//! Environment:
//! - `CADUCEUS_E2E_KUBECONFIG`: the cluster (required to run);
//! - `CADUCEUS_OPERATOR_BIN`: the operator binary for the local process (default
//!   `target/debug/caduceus-operator`, built by `cargo build -p caduceus-operator`);
//! - `CADUCEUS_E2E_OPERATOR_IMAGE` (`repo:tag`) overrides the chart's operator image;
//! - `CADUCEUS_E2E_API_IMAGE` (`repo:tag`) overrides the platform's API image;
//! - `CADUCEUS_E2E_KEEP=1` keeps the namespaces and the release for inspection.
//!
//! README ("End-to-end tests") gives the setup for both kinds of cluster.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use caduceus_e2e::{api_group, operator_bin, repo_root, run, tool, yaml_documents, yaml_file};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The chart's default `leaderElection.leaseName`.
const LEASE: &str = "caduceus-operator-leader";
/// The chart's name: `<release>-<chart>` is the full name of its objects.
const CHART: &str = "caduceus-operator";
/// The field manager of what the suite applies.
const MANAGER: &str = "caduceus-e2e";
/// Pause between two polls of a wait.
const POLL: Duration = Duration::from_secs(2);

/// kubectl and helm bound to the opted-in kubeconfig (flag and environment, so neither a
/// `KUBECONFIG` nor a `HELM_KUBECONTEXT` of the caller's shell can redirect them).
struct Kube {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
}

impl Kube {
    /// `Ok(None)` when the user did not opt in; an error when the opted-in cluster is unusable.
    fn opted_in() -> Result<Option<Self>> {
        let Some(path) = std::env::var_os("CADUCEUS_E2E_KUBECONFIG").filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let kubeconfig = PathBuf::from(path);
        if !kubeconfig.is_file() {
            bail!(
                "CADUCEUS_E2E_KUBECONFIG={} is not a file",
                kubeconfig.display()
            );
        }
        let kube = Self {
            kubeconfig,
            kubectl: tool("kubectl")?,
            helm: tool("helm")?,
        };
        kube.kubectl(&["get", "--raw", "/readyz", "--request-timeout=10s"])
            .with_context(|| {
                format!(
                    "the cluster of CADUCEUS_E2E_KUBECONFIG={} does not answer /readyz",
                    kube.kubeconfig.display()
                )
            })?;
        Ok(Some(kube))
    }

    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl_command().args(args))
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl {} output", args.join(" ")))
    }

    /// One object, or `None` when it does not exist.
    fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<Option<Value>> {
        let mut args = vec!["get", kind, name, "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args.extend(["-o", "json"]);
        let out = self.kubectl(&args)?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&out)?))
    }

    /// Names of the objects of a kind in a namespace matching a label selector.
    fn names(&self, kind: &str, namespace: &str, selector: &str) -> Result<Vec<String>> {
        let list = self.kubectl_json(&["get", kind, "-n", namespace, "-l", selector])?;
        Ok(items(&list)
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Server-side apply of one object.
    fn apply(&self, obj: &Value) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("object.json");
        std::fs::write(&file, serde_json::to_vec_pretty(obj)?)?;
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            MANAGER,
            "-f",
            &file.display().to_string(),
        ])
        .with_context(|| format!("applying {}", describe(obj)))?;
        Ok(())
    }

    fn helm(&self, args: &[&str]) -> Result<String> {
        run(Command::new(&self.helm)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("HELM_KUBECONTEXT")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    /// Nodes KWOK manages (annotation `kwok.x-k8s.io/node: fake`): no container runs on them.
    fn kwok_nodes(&self) -> Result<Vec<String>> {
        let nodes = self.kubectl_json(&["get", "nodes"])?;
        Ok(items(&nodes)
            .iter()
            .filter(|n| n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake")
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Whether the API server serves `resource` (plural) in `group`.
    fn serves(&self, group: &str, resource: &str) -> Result<bool> {
        let out = self.kubectl(&["api-resources", "--api-group", group, "-o", "name"])?;
        let full = format!("{resource}.{group}");
        Ok(out.lines().any(|l| l.trim() == full))
    }

    /// Warning Events of a namespace, one per line (diagnostics for a failed step).
    fn warnings(&self, namespace: &str) -> String {
        self.kubectl(&[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "type=Warning",
            "-o",
            "custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message",
        ])
        .unwrap_or_else(|e| format!("(cannot list Events: {e:#})"))
    }
}

fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn describe(obj: &Value) -> String {
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// A free local TCP port (bound, then released for the child to bind).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET http://127.0.0.1:{port}{path}`: status code and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {response:.80}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of a Prometheus sample line `name{labels} value` (labels as written).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// A kubeconfig for the cluster of `flattened` (the output of `kubectl config view --raw
/// --minify --flatten -o json`) whose only credential is `token`.
fn token_kubeconfig(flattened: &Value, user: &str, token: &str) -> Result<Value> {
    let cluster = flattened["clusters"]
        .as_array()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow!("the kubeconfig names no cluster"))?;
    let namespace = flattened["contexts"][0]["context"]["namespace"].clone();
    let mut context = json!({"cluster": cluster["name"], "user": user});
    if !namespace.is_null() {
        context["namespace"] = namespace;
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }))
}

/// `caduceus-operator run` as a local process with a kubeconfig holding a token of the chart's
/// ServiceAccount; killed on drop.
struct LocalOperator {
    child: Child,
    identity: String,
    metrics_port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl LocalOperator {
    fn start(
        kube: &Kube,
        release_namespace: &str,
        account: &str,
        watch_namespace: &str,
    ) -> Result<Self> {
        let bin = operator_bin()?;
        let token = kube
            .kubectl(&[
                "create",
                "token",
                account,
                "-n",
                release_namespace,
                "--duration=1h",
            ])
            .with_context(|| format!("TokenRequest for ServiceAccount {account}"))?;
        let flattened = kube.kubectl_json(&["config", "view", "--raw", "--minify", "--flatten"])?;
        let config = token_kubeconfig(
            &flattened,
            &format!("system:serviceaccount:{release_namespace}:{account}"),
            token.trim(),
        )?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("operator.kubeconfig");
        std::fs::write(&kubeconfig, serde_json::to_vec_pretty(&config)?)?;
        let log = dir.path().join("operator.log");
        let out = File::create(&log)?;
        let metrics_port = free_port()?;
        let identity = format!("e2e-local-{}", std::process::id());
        let child = Command::new(&bin)
            .arg("run")
            .env("KUBECONFIG", &kubeconfig)
            .env("CADUCEUS_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("CADUCEUS_LEADER_ELECTION", "true")
            .env("CADUCEUS_LEASE_NAME", LEASE)
            .env("POD_NAMESPACE", release_namespace)
            .env("POD_NAME", &identity)
            .env("CADUCEUS_WATCH_NAMESPACE", watch_namespace)
            .env("CADUCEUS_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        println!(
            "e2e: started {} run (pid {}) as ServiceAccount {release_namespace}/{account}, metrics on 127.0.0.1:{metrics_port}",
            bin.display(),
            child.id()
        );
        Ok(Self {
            child,
            identity,
            metrics_port,
            log,
            _dir: dir,
        })
    }

    /// An error with the end of its log when the process has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the local operator exited ({status}); its log ends with:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    fn log_lines(&self) -> Vec<String> {
        File::open(&self.log)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default()
    }

    fn log_tail(&self, n: usize) -> String {
        let lines = self.log_lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines that report a request the API server refused with 403 Forbidden.
    fn forbidden(&self) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|l| l.contains("is forbidden") || l.contains("code: 403"))
            .collect()
    }

    fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics_port, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one run creates; removed on drop (unless `CADUCEUS_E2E_KEEP=1`).
struct Suite {
    kube: Kube,
    release: String,
    release_namespace: String,
    namespace: String,
    operator: Mutex<Option<LocalOperator>>,
}

impl Suite {
    /// Polls `check` until it returns true or `timeout` passes; fails at once when the local
    /// operator has exited.
    fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_error = None;
        loop {
            self.check_operator()?;
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
            std::thread::sleep(POLL);
        }
    }

    fn check_operator(&self) -> Result<()> {
        match self.operator.lock().expect("operator lock").as_mut() {
            Some(op) => op.check_running(),
            None => Ok(()),
        }
    }

    fn with_operator<T>(&self, f: impl FnOnce(&LocalOperator) -> T) -> Option<T> {
        self.operator.lock().expect("operator lock").as_ref().map(f)
    }

    fn full_name(&self) -> String {
        format!("{}-{CHART}", self.release)
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        // Stop the local operator first: nothing may re-add a finalizer below.
        if let Some(op) = self.operator.lock().expect("operator lock").take() {
            drop(op);
            println!("e2e: stopped the local operator");
        }
        if std::env::var("CADUCEUS_E2E_KEEP").as_deref() == Ok("1") {
            println!(
                "e2e: keeping namespaces {} and {} and release {} (CADUCEUS_E2E_KEEP=1)",
                self.namespace, self.release_namespace, self.release
            );
            return;
        }
        let kube = &self.kube;
        // Platforms a failed run left behind: without their operator nobody would remove the
        // finalizer, and the namespace would stay Terminating.
        if let Ok(list) = kube.kubectl_json(&["get", "hcp", "-n", &self.namespace]) {
            for hcp in items(&list) {
                if let Some(name) = hcp["metadata"]["name"].as_str() {
                    let _ = kube.kubectl(&[
                        "delete",
                        "hcp",
                        "-n",
                        &self.namespace,
                        name,
                        "--wait=false",
                    ]);
                    let _ = kube.kubectl(&[
                        "patch",
                        "hcp",
                        "-n",
                        &self.namespace,
                        name,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ]);
                }
            }
        }
        let _ = kube.kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let _ = kube.helm(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.release_namespace,
            "--ignore-not-found",
        ]);
        let _ = kube.kubectl(&[
            "delete",
            "namespace",
            &self.release_namespace,
            "--ignore-not-found",
            "--wait=false",
        ]);
        println!(
            "e2e: removed release {} and namespaces {} and {}",
            self.release, self.namespace, self.release_namespace
        );
    }
}

/// `kubectl port-forward` on a free local port; killed on drop.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn start(kube: &Kube, namespace: &str, target: &str, remote: u16) -> Result<Self> {
        let mut child = kube
            .kubectl_command()
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

/// A namespace whose pods must meet the Pod Security Standard `restricted`.
fn restricted_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
                "app.kubernetes.io/part-of": "caduceus-e2e"
            }
        }
    })
}

/// The HealthcarePlatform of `examples/minimal.yaml`, renamed and moved into `namespace`, its
/// NetworkPolicies admitting the operator from `operator_namespace`.
fn platform_from_example(
    example: &Value,
    name: &str,
    namespace: &str,
    operator_namespace: &str,
) -> Result<Value> {
    let mut platform = example.clone();
    let meta = platform["metadata"]
        .as_object_mut()
        .ok_or_else(|| anyhow!("the example has no metadata"))?;
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(namespace));
    platform["spec"]["networkPolicy"]["operatorNamespace"] = json!(operator_namespace);
    if let Ok(image) = std::env::var("CADUCEUS_E2E_API_IMAGE") {
        let (repo, tag) = split_image(&image)?;
        platform["spec"]["apiServer"]["image"] = json!({"repository": repo, "tag": tag});
    }
    Ok(platform)
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_lifecycle_on_a_real_cluster() {
    let kube = match Kube::opted_in() {
        Ok(Some(kube)) => kube,
        Ok(None) => {
            println!(
                "e2e: SKIPPED (set CADUCEUS_E2E_KUBECONFIG to the kubeconfig of a throw-away cluster, e.g. the one `scripts/cluster.sh up` prints; see README \"End-to-end tests\")"
            );
            return;
        }
        Err(e) => panic!("e2e failed: {e:#}"),
    };
    let suffix = unique_suffix();
    let suite = Suite {
        kube,
        release: format!("caduceus-e2e-{suffix}"),
        release_namespace: format!("caduceus-e2e-system-{suffix}"),
        namespace: format!("caduceus-e2e-{suffix}"),
        operator: Mutex::new(None),
    };
    if let Err(e) = lifecycle(&suite).await {
        let log = suite
            .with_operator(|op| op.log_tail(40))
            .map(|tail| format!("\nlast lines of the local operator's log:\n{tail}"))
            .unwrap_or_default();
        panic!("e2e failed: {e:#}{log}");
    }
}

async fn lifecycle(suite: &Suite) -> Result<()> {
    let kube = &suite.kube;
    let root = repo_root();
    let kwok = kube.kwok_nodes()?;
    if kwok.is_empty() {
        println!(
            "e2e: no KWOK node: the chart's operator pods and the platform's API run for real"
        );
    } else {
        println!(
            "e2e: KWOK nodes ({}): pods become Ready without running containers",
            kwok.join(", ")
        );
    }

    // 1. The chart, into a fresh restricted namespace, watching a second one.
    for ns in [&suite.release_namespace, &suite.namespace] {
        kube.apply(&restricted_namespace(ns))?;
    }
    let mut helm_args: Vec<String> = [
        "install",
        &suite.release,
        &root.join("charts/caduceus-operator").display().to_string(),
        "--namespace",
        &suite.release_namespace,
        "--wait",
        "--timeout",
        "5m",
        "--set",
        &format!("watchNamespace={}", suite.namespace),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let service_monitor = service_monitor_served(kube)?;
    if service_monitor {
        helm_args.extend(["--set".into(), "metrics.serviceMonitor.enabled=true".into()]);
    }
    if let Ok(image) = std::env::var("CADUCEUS_E2E_OPERATOR_IMAGE") {
        let (repo, tag) = split_image(&image)?;
        helm_args.extend([
            "--set".into(),
            format!("image.repository={repo}"),
            "--set".into(),
            format!("image.tag={tag}"),
        ]);
    }
    let helm_args: Vec<&str> = helm_args.iter().map(String::as_str).collect();
    kube.helm(&helm_args).map_err(|e| {
        anyhow!(
            "helm install of charts/caduceus-operator into {}: {e:#}\nWarning Events there:\n{}",
            suite.release_namespace,
            kube.warnings(&suite.release_namespace)
        )
    })?;
    check_release(suite, service_monitor, !kwok.is_empty())?;

    // 2. The operator.
    let account = suite.full_name();
    let holder = if kwok.is_empty() {
        None
    } else {
        let op = LocalOperator::start(kube, &suite.release_namespace, &account, &suite.namespace)?;
        let identity = op.identity.clone();
        let port = op.metrics_port;
        *suite.operator.lock().expect("operator lock") = Some(op);
        suite.wait_until(
            "the local operator answers /readyz",
            Duration::from_secs(60),
            || Ok(http_get(port, "/readyz")?.0 == 200),
        )?;
        Some(identity)
    };
    let release_pods = format!("app.kubernetes.io/instance={}", suite.release);
    suite.wait_until(
        &format!(
            "the operator holds Lease {}/{LEASE}",
            suite.release_namespace
        ),
        Duration::from_secs(120),
        || {
            let Some(lease) = kube.get("lease", Some(&suite.release_namespace), LEASE)? else {
                return Ok(false);
            };
            let current = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
            Ok(match &holder {
                Some(identity) => current == identity,
                None => kube
                    .names("pods", &suite.release_namespace, &release_pods)?
                    .iter()
                    .any(|p| p == current),
            })
        },
    )?;

    // 3. The minimal platform (deletionPolicy Delete) and a copy with deletionPolicy Retain.
    let example = yaml_file(&root.join("examples/minimal.yaml"))?
        .into_iter()
        .find(|o| o["kind"] == "HealthcarePlatform")
        .ok_or_else(|| anyhow!("examples/minimal.yaml has no HealthcarePlatform"))?;
    let name = example["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("examples/minimal.yaml: platform without a name"))?
        .to_string();
    if example["spec"]["deletionPolicy"] != "Delete" {
        bail!(
            "examples/minimal.yaml no longer says deletionPolicy Delete; this suite relies on it"
        );
    }
    let retained = format!("{name}-retain");
    let minimal =
        platform_from_example(&example, &name, &suite.namespace, &suite.release_namespace)?;
    let mut retain = platform_from_example(
        &example,
        &retained,
        &suite.namespace,
        &suite.release_namespace,
    )?;
    retain["spec"]["deletionPolicy"] = json!("Retain");
    kube.apply(&minimal)?;
    kube.apply(&retain)?;
    println!(
        "e2e: applied examples/minimal.yaml as {ns}/{name} and a copy with deletionPolicy Retain as {ns}/{retained}",
        ns = suite.namespace
    );
    for platform in [&name, &retained] {
        wait_ready(suite, platform)?;
    }

    // 4. The API through a port-forward: needs containers.
    if kwok.is_empty() {
        live_api(kube, &suite.namespace, &name).await?;
    } else {
        println!(
            "e2e: SKIPPED on this control plane: port-forward to the live API, bootstrap admin, login, patient create/read (the pods run on KWOK nodes, no container runs); they run on kind/k3d"
        );
    }

    // 5. A deleted NetworkPolicy comes back; the HPA follows the CR.
    restore_network_policy(suite, &name)?;
    hpa_follows(suite, &name)?;

    // 6. Deletion under both policies.
    delete_with_delete(suite, &name)?;
    delete_with_retain(suite, &retained)?;

    if let Some(refused) = suite.with_operator(LocalOperator::forbidden) {
        if !refused.is_empty() {
            bail!(
                "the chart's RBAC refused {} request(s) of the operator:\n{}",
                refused.len(),
                refused.join("\n")
            );
        }
        println!("e2e: the chart's RBAC granted every request of the operator (no 403 in its log)");
    }
    println!("e2e: all steps passed");
    Ok(())
}

/// Whether the release can include its ServiceMonitor. On this repository's control plane the
/// Prometheus Operator CRD it links beside the kubeconfig is installed when missing, so CI always
/// covers it; elsewhere it is used only when the cluster already serves it.
fn service_monitor_served(kube: &Kube) -> Result<bool> {
    if kube.serves("monitoring.coreos.com", "servicemonitors")? {
        println!("e2e: the cluster serves ServiceMonitors: the chart's is enabled");
        return Ok(true);
    }
    let crd = kube
        .kubeconfig
        .parent()
        .map(|d| d.join("third-party-crds/monitoring.coreos.com_servicemonitors.yaml"))
        .filter(|p| p.is_file());
    let Some(crd) = crd else {
        println!("e2e: the cluster serves no ServiceMonitor: the chart's stays disabled");
        return Ok(false);
    };
    install_crd(kube, &crd)?;
    println!(
        "e2e: installed the ServiceMonitor CRD from {}: the chart's is enabled",
        crd.display()
    );
    Ok(true)
}

fn install_crd(kube: &Kube, path: &Path) -> Result<()> {
    for crd in yaml_file(path)? {
        kube.apply(&crd)?;
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        kube.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{name}"),
            "--timeout=60s",
        ])?;
    }
    Ok(())
}

/// Every object of the release's manifest exists (the API server admitted it), the kinds the
/// chart must ship are among them, and the operator pods are Ready.
fn check_release(suite: &Suite, service_monitor: bool, kwok: bool) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.release_namespace.as_str();
    let manifest = kube.helm(&["get", "manifest", &suite.release, "--namespace", ns])?;
    let objects = yaml_documents(&manifest).context("helm get manifest")?;
    let mut kinds = BTreeSet::new();
    for obj in &objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let group = api_group(obj);
        let resource = if group.is_empty() {
            kind.to_lowercase()
        } else {
            format!("{}.{group}", kind.to_lowercase())
        };
        let namespace = obj["metadata"]["namespace"].as_str();
        if kube.get(&resource, namespace, name)?.is_none() {
            bail!("helm install succeeded, but {kind} {name} does not exist");
        }
        kinds.insert(kind.to_string());
    }
    let mut required = vec![
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ];
    if service_monitor {
        required.push("ServiceMonitor");
    }
    let missing: Vec<_> = required.iter().filter(|k| !kinds.contains(**k)).collect();
    if !missing.is_empty() {
        bail!("the release has no {missing:?} (it has {kinds:?})");
    }
    let full = suite.full_name();
    let deployment = kube
        .get("deployment", Some(ns), &full)?
        .ok_or_else(|| anyhow!("the release has no Deployment {full}"))?;
    let want = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = deployment["status"]["readyReplicas"].as_i64().unwrap_or(0);
    if ready != want {
        bail!("helm install --wait returned with {ready}/{want} operator pods ready");
    }
    println!(
        "e2e: release {} installed in {ns} (PodSecurity restricted): {} objects admitted ({}), {ready}/{want} operator pods Ready{}",
        suite.release,
        objects.len(),
        kinds.iter().cloned().collect::<Vec<_>>().join(", "),
        if kwok { " on KWOK nodes (no container runs)" } else { "" }
    );
    Ok(())
}

/// Waits for phase Ready of the current generation, then checks the workloads' real status.
fn wait_ready(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    let mut last_phase = String::new();
    let waited = suite.wait_until(
        &format!("platform {ns}/{name} is Ready"),
        Duration::from_secs(600),
        || {
            let Some(hcp) = kube.get("hcp", Some(ns), name)? else {
                return Ok(false);
            };
            last_phase = hcp["status"]["phase"].as_str().unwrap_or("").to_string();
            Ok(last_phase == "Ready"
                && hcp["status"]["observedGeneration"] == hcp["metadata"]["generation"])
        },
    );
    if let Err(e) = waited {
        let conditions = kube
            .get("hcp", Some(ns), name)
            .ok()
            .flatten()
            .map(|h| h["status"]["conditions"].to_string())
            .unwrap_or_default();
        bail!(
            "{e:#}; last phase {last_phase:?}, conditions {conditions}\nWarning Events in {ns}:\n{}",
            kube.warnings(ns)
        );
    }
    for (kind, workload) in [
        ("deployment", format!("{name}-api")),
        ("statefulset", format!("{name}-postgres")),
        ("statefulset", format!("{name}-redis")),
    ] {
        let obj = kube
            .get(kind, Some(ns), &workload)?
            .ok_or_else(|| anyhow!("Ready, but {kind} {workload} does not exist"))?;
        let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
        if ready < want.min(1) {
            bail!(
                "platform {name} is Ready, but {kind} {workload} has {ready}/{want} ready replicas"
            );
        }
    }
    Ok(())
}

/// Bootstrap admin, login, create and read a patient through a port-forward to the API Service
/// (HTTPS, verified against the operator-issued CA for the Service name).
async fn live_api(kube: &Kube, namespace: &str, name: &str) -> Result<()> {
    let api = format!("{name}-api");
    let email = format!("e2e-admin-{}@example.com", unique_suffix());
    let password = format!("E2e-{}-{}-pass!", unique_suffix(), unique_suffix());
    let mut exec = kube
        .kubectl_command()
        .args(["exec", "-i", "-n", namespace])
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
    let forward = PortForward::start(kube, namespace, &format!("service/{api}"), 8080)?;
    // The API serves HTTPS only, with the operator-issued certificate for its Service name:
    // trust only the `ca.crt` of `<name>-api-internal-tls`, and reach that name through the
    // port-forward.
    let ca = kube.kubectl(&[
        "get",
        "secret",
        &format!("{name}-api-internal-tls"),
        "-n",
        namespace,
        "-o",
        r#"go-template={{index .data "ca.crt" | base64decode}}"#,
    ])?;
    let host = format!("{api}.{namespace}.svc");
    let base = format!("https://{host}:{}", forward.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .resolve(
            &host,
            std::net::SocketAddr::from(([127, 0, 0, 1], forward.port)),
        )
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
    Ok(())
}

fn restore_network_policy(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    let policy_name = format!("{name}-default-deny");
    let policy = kube
        .get("networkpolicy", Some(ns), &policy_name)?
        .ok_or_else(|| anyhow!("platform {name} has no NetworkPolicy {policy_name}"))?;
    let old_uid = policy["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let series = r#"caduceus_operator_drift_corrections_total{kind="NetworkPolicy"}"#;
    let before = suite
        .with_operator(|op| op.metrics())
        .transpose()?
        .map(|m| sample(&m, series).unwrap_or(0.0));
    kube.kubectl(&["delete", "networkpolicy", "-n", ns, &policy_name])?;
    suite.wait_until(
        &format!("NetworkPolicy {policy_name} is restored after its deletion"),
        Duration::from_secs(180),
        || {
            Ok(kube
                .get("networkpolicy", Some(ns), &policy_name)?
                .is_some_and(|p| p["metadata"]["uid"] != old_uid.as_str()))
        },
    )?;
    if let Some(before) = before {
        suite.wait_until(
            "the operator counts the NetworkPolicy drift correction",
            Duration::from_secs(60),
            || {
                let metrics = suite
                    .with_operator(|op| op.metrics())
                    .transpose()?
                    .unwrap_or_default();
                Ok(sample(&metrics, series).unwrap_or(0.0) > before)
            },
        )?;
    }
    Ok(())
}

fn hpa_follows(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    let api = format!("{name}-api");
    for (min, max) in [(3, 5), (2, 4)] {
        let patch = json!({"spec": {"apiServer": {"autoscaling": {
            "enabled": true, "minReplicas": min, "maxReplicas": max}}}});
        kube.kubectl(&[
            "patch",
            "-n",
            ns,
            &format!("healthcareplatform/{name}"),
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ])?;
        suite.wait_until(
            &format!("HPA {api} has minReplicas {min} and maxReplicas {max}"),
            Duration::from_secs(180),
            || {
                Ok(kube
                    .get("horizontalpodautoscaler", Some(ns), &api)?
                    .is_some_and(|h| {
                        h["spec"]["minReplicas"] == min
                            && h["spec"]["maxReplicas"] == max
                            && h["spec"]["scaleTargetRef"]["name"] == api.as_str()
                    }))
            },
        )?;
    }
    Ok(())
}

/// PVC names of a platform (its instance label), checked to include the database's claim (the
/// StatefulSet controller creates it; the cache of `minimal.yaml` keeps no data).
fn platform_pvcs(kube: &Kube, namespace: &str, name: &str) -> Result<Vec<String>> {
    let pvcs = kube.names(
        "pvc",
        namespace,
        &format!("app.kubernetes.io/instance={name}"),
    )?;
    let database = format!("-{name}-postgres-0");
    if !pvcs.iter().any(|p| p.ends_with(&database)) {
        bail!("platform {name} has no PVC of StatefulSet {name}-postgres (its PVCs: {pvcs:?})");
    }
    Ok(pvcs)
}

/// Whether an object lists the object with this uid among its owners.
fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Deletes a platform and waits until it is gone (its finalizer ran).
fn delete_platform(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    kube.kubectl(&["delete", "hcp", "-n", ns, name, "--wait=false"])?;
    suite.wait_until(
        &format!("platform {name} is deleted"),
        Duration::from_secs(300),
        || Ok(kube.get("hcp", Some(ns), name)?.is_none()),
    )
}

fn delete_with_delete(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    let pvcs = platform_pvcs(kube, ns, name)?;
    delete_platform(suite, name)?;
    suite.wait_until(
        &format!(
            "deletionPolicy Delete removed the {} PVC(s) of {name}",
            pvcs.len()
        ),
        Duration::from_secs(300),
        || {
            for pvc in &pvcs {
                if kube.get("pvc", Some(ns), pvc)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
}

fn delete_with_retain(suite: &Suite, name: &str) -> Result<()> {
    let kube = &suite.kube;
    let ns = suite.namespace.as_str();
    let pvcs = platform_pvcs(kube, ns, name)?;
    let secrets = [
        format!("{name}-api-secrets"),
        format!("{name}-postgres-credentials"),
        format!("{name}-postgres-tls"),
        format!("{name}-redis-credentials"),
    ];
    let uid = kube
        .get("hcp", Some(ns), name)?
        .and_then(|h| h["metadata"]["uid"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("platform {name} does not exist"))?;
    // What the wait below watches for: the children carry the platform as their owner.
    let api = format!("{name}-api");
    let owned = kube
        .get("deployment", Some(ns), &api)?
        .is_some_and(|d| owned_by(&d, &uid));
    if !owned {
        bail!("Deployment {api} is not owned by platform {name} (uid {uid})");
    }
    delete_platform(suite, name)?;
    // The garbage collector has processed the platform's dependents once none is left.
    suite.wait_until(
        &format!("the garbage collector removed what platform {name} owned"),
        Duration::from_secs(300),
        || {
            for kind in [
                "deployments",
                "statefulsets",
                "services",
                "configmaps",
                "networkpolicies",
                "secrets",
                "persistentvolumeclaims",
            ] {
                let list = kube.kubectl_json(&["get", kind, "-n", ns])?;
                if items(&list).iter().any(|o| owned_by(o, &uid)) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    for (kind, name) in pvcs
        .iter()
        .map(|p| ("pvc", p))
        .chain(secrets.iter().map(|s| ("secret", s)))
    {
        let obj = kube
            .get(kind, Some(ns), name)?
            .ok_or_else(|| anyhow!("deletionPolicy Retain, but {kind} {name} was deleted"))?;
        if !obj["metadata"]["deletionTimestamp"].is_null() {
            bail!("deletionPolicy Retain, but {kind} {name} is being deleted");
        }
        let owners = &obj["metadata"]["ownerReferences"];
        if owners.as_array().is_some_and(|o| !o.is_empty()) {
            bail!("deletionPolicy Retain, but {kind} {name} still has owners: {owners}");
        }
    }
    println!(
        "e2e: deletionPolicy Retain kept {} PVC(s) and Secrets {} of {name}, unowned",
        pvcs.len(),
        secrets.join(", ")
    );
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

#[test]
fn token_kubeconfig_keeps_the_cluster_and_only_the_token() {
    let flattened = json!({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
            "certificate-authority-data": "Q0E="}}],
        "users": [{"name": "admin", "user": {"client-certificate-data": "x", "client-key-data": "y"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "admin"}}],
        "current-context": "ctx"
    });
    let config = token_kubeconfig(&flattened, "sa", "t0ken").expect("kubeconfig");
    assert_eq!(config["clusters"][0], flattened["clusters"][0]);
    assert_eq!(
        config["users"],
        json!([{"name": "sa", "user": {"token": "t0ken"}}])
    );
    assert_eq!(
        config["contexts"][0]["context"],
        json!({"cluster": "c", "user": "sa"})
    );
    assert_eq!(config["current-context"], "sa");
    assert!(token_kubeconfig(&json!({}), "sa", "t").is_err());
}

#[test]
fn sample_reads_one_series() {
    let metrics = "# HELP x\nx_total{kind=\"NetworkPolicy\"} 2\nx_total{kind=\"Deployment\"} 5\n";
    assert_eq!(
        sample(metrics, r#"x_total{kind="NetworkPolicy"}"#),
        Some(2.0)
    );
    assert_eq!(sample(metrics, r#"x_total{kind="Service"}"#), None);
}

#[test]
fn the_platform_moves_into_the_test_namespace() {
    let example = json!({"apiVersion": "caduceus.io/v1alpha1", "kind": "HealthcarePlatform",
        "metadata": {"name": "demo", "namespace": "caduceus-demo"},
        "spec": {"deletionPolicy": "Delete"}});
    let p = platform_from_example(&example, "demo-retain", "ns1", "ops").expect("platform");
    assert_eq!(
        p["metadata"],
        json!({"name": "demo-retain", "namespace": "ns1"})
    );
    assert_eq!(p["spec"]["networkPolicy"]["operatorNamespace"], "ops");
    assert_eq!(p["spec"]["deletionPolicy"], "Delete");
}
