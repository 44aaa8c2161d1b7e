//! The operator's NetworkPolicies judged by a real NetworkPolicy engine, not by our own reading of
//! them: for every shipped example and for platforms restored from a backup (an S3 source with an
//! endpoint port, a claim source), `caduceus-operator render` gives the platform's objects; the
//! rendered NetworkPolicies go to Cyclonus (`cyclonus analyze --mode query-traffic`, built by
//! `scripts/netpol/build.sh`; policy-assistant's engine, see that script for why not
//! policy-assistant itself), together with one traffic entry per connection below, and Cyclonus
//! answers allowed or denied for each.
//!
//! The pods: the API, Postgres, Redis, backup and restore pods carry the labels of their rendered
//! pod templates (Deployment, StatefulSets, CronJob; the restore Job is not part of `render`, so
//! the restore pod carries the labels the operator gives its restore objects, read from the
//! rendered restore NetworkPolicy's metadata, plus the Job's `job-name` labels), CloudNativePG
//! instance pods the labels CloudNativePG gives them; ports come from the pod templates' named
//! container ports (`http`, `metrics`, `postgres`, `redis`) and, for external services and object
//! stores, from the spec. Around them: a client pod for every `networkPolicy.ingressFrom` peer,
//! CoreDNS in `kube-system`, Prometheus in the monitoring namespace, the operator in its
//! namespace, an attacker in a namespace of its own, and addresses outside the cluster for object
//! stores and external databases/caches.
//!
//! Every connection the platform needs must be allowed, and a sample of what it must not do must
//! be denied; a wrong verdict prints Cyclonus's explanation (which policy allowed or denied it).
//!
//! The engine: `CYCLONUS_BIN` (scripts/test.sh sets it), else `scripts/netpol/build.sh` is run
//! (it builds Cyclonus from the Go module proxy once, into `.tools/netpol/`).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use caduceus_e2e::{of_kind, render_example, repo_root, run, yaml_file};
use serde_json::{json, Value};

type Labels = BTreeMap<String, String>;

const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";
const COMPONENT: &str = "app.kubernetes.io/component";

/// Shipped examples judged here (any other `examples/*.yaml` is judged too).
const REQUIRED_EXAMPLES: [&str; 4] = [
    "minimal.yaml",
    "production.yaml",
    "external-database.yaml",
    "cloudnative-pg.yaml",
];

/// Restored from MinIO (the endpoint's port 9000) while new backups go to AWS S3 (443): each of
/// the two pods may use its own object store port only.
const RESTORED_FROM_S3: &str = r#"
apiVersion: caduceus.io/v1alpha1
kind: HealthcarePlatform
metadata:
  name: restored
  namespace: caduceus-restored
spec:
  database:
    bootstrap:
      fromBackup:
        name: latest
        secretRef: old-platform-backup-key
        source:
          s3:
            endpoint: https://minio.storage:9000
            bucket: old-phi-backups
            prefix: clinic
            region: eu-central-1
            credentialsSecretRef: old-backup-s3
            forcePathStyle: true
  backup:
    destination:
      s3:
        bucket: new-phi-backups
        prefix: clinic
        region: eu-central-1
        credentialsSecretRef: new-backup-s3
"#;

/// Restored from the backup claim of an old platform; backups to a claim as well: neither pod
/// needs an object store.
const RESTORED_FROM_CLAIM: &str = r#"
apiVersion: caduceus.io/v1alpha1
kind: HealthcarePlatform
metadata:
  name: moved
  namespace: caduceus-moved
spec:
  database:
    bootstrap:
      fromBackup:
        secretRef: old-platform-backup-key
        source:
          claimName: old-platform-backups
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Denied,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allowed => "ALLOWED",
            Verdict::Denied => "DENIED",
        })
    }
}

/// One end of a connection: a pod (namespace, namespace labels, pod labels) or an address
/// outside the cluster.
#[derive(Clone, Debug)]
struct Peer {
    name: String,
    ip: String,
    pod: Option<PodInfo>,
}

#[derive(Clone, Debug)]
struct PodInfo {
    namespace: String,
    namespace_labels: Labels,
    labels: Labels,
}

impl Peer {
    /// Cyclonus's `TrafficPeer`.
    fn traffic_peer(&self) -> Value {
        match &self.pod {
            Some(pod) => json!({
                "Internal": {
                    "PodLabels": pod.labels,
                    "NamespaceLabels": pod.namespace_labels,
                    "Namespace": pod.namespace,
                },
                "IP": self.ip,
            }),
            None => json!({ "Internal": null, "IP": self.ip }),
        }
    }
}

/// Hands out pod IPs (10.244.0.0/16, like a pod network; outside every CIDR used here).
struct Cluster {
    next_ip: u32,
}

impl Cluster {
    fn new() -> Self {
        Cluster { next_ip: 10 }
    }

    fn pod(&mut self, name: impl Into<String>, namespace: &str, labels: Labels) -> Peer {
        self.pod_in(name, namespace, Labels::new(), labels)
    }

    /// A pod in a namespace with extra namespace labels (the API server always sets
    /// `kubernetes.io/metadata.name`).
    fn pod_in(
        &mut self,
        name: impl Into<String>,
        namespace: &str,
        mut namespace_labels: Labels,
        labels: Labels,
    ) -> Peer {
        namespace_labels.insert(NAMESPACE_NAME.into(), namespace.into());
        let n = self.next_ip;
        self.next_ip += 1;
        Peer {
            name: name.into(),
            ip: format!("10.244.{}.{}", n / 256, n % 256),
            pod: Some(PodInfo {
                namespace: namespace.into(),
                namespace_labels,
                labels,
            }),
        }
    }
}

fn external(name: impl Into<String>, ip: &str) -> Peer {
    Peer {
        name: name.into(),
        ip: ip.into(),
        pod: None,
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A connection and the verdict it must get.
struct Check {
    from: Peer,
    to: Peer,
    port: u16,
    protocol: &'static str,
    want: Verdict,
    why: String,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, want: Verdict, from: &Peer, to: &Peer, port: u16, why: impl Into<String>) {
        self.add_proto(want, from, to, port, "TCP", why);
    }

    fn add_proto(
        &mut self,
        want: Verdict,
        from: &Peer,
        to: &Peer,
        port: u16,
        protocol: &'static str,
        why: impl Into<String>,
    ) {
        self.0.push(Check {
            from: from.clone(),
            to: to.clone(),
            port,
            protocol,
            want,
            why: why.into(),
        });
    }

    fn allow(&mut self, from: &Peer, to: &Peer, port: u16, why: impl Into<String>) {
        self.add(Verdict::Allowed, from, to, port, why);
    }

    fn deny(&mut self, from: &Peer, to: &Peer, port: u16, why: impl Into<String>) {
        self.add(Verdict::Denied, from, to, port, why);
    }
}

// --- reading the platform and its rendered objects -------------------------------------------

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn label_map(v: &Value) -> Labels {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Pod template labels of the rendered workloads whose pods have `app.kubernetes.io/component`
/// `component` (Deployment/StatefulSet/Job templates, CronJob job templates).
fn pod_templates<'a>(objects: &'a [Value], component: &str) -> Vec<(&'a Value, &'a Value)> {
    let mut out = Vec::new();
    for obj in objects {
        let template = match (obj["apiVersion"].as_str(), obj["kind"].as_str()) {
            (Some("apps/v1"), Some("Deployment" | "StatefulSet"))
            | (Some("batch/v1"), Some("Job")) => &obj["spec"]["template"],
            (Some("batch/v1"), Some("CronJob")) => &obj["spec"]["jobTemplate"]["spec"]["template"],
            _ => continue,
        };
        if str_at(
            template,
            &format!("/metadata/labels/{}", COMPONENT.replace('/', "~1")),
        ) == Some(component)
        {
            out.push((obj, template));
        }
    }
    out
}

/// The single workload of a component: its object and pod template.
fn one_template<'a>(
    objects: &'a [Value],
    component: &str,
) -> Result<Option<(&'a Value, &'a Value)>> {
    let found = pod_templates(objects, component);
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => bail!("{n} rendered workloads run `{component}` pods; expected one"),
    }
}

/// The container port named `name` of a pod template.
fn named_port(template: &Value, name: &str) -> Result<u16> {
    template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("no container port named `{name}` in the pod template"))
}

/// The TCP port of an S3 endpoint (the same rule the AWS SDK follows): its explicit port, else
/// 80 for `http://`, else 443 (also without an endpoint: AWS S3).
fn object_store_port(s3: &Value) -> Result<u16> {
    let Some(endpoint) = s3["endpoint"].as_str() else {
        return Ok(443);
    };
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| anyhow!("S3 endpoint `{endpoint}` has no scheme"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    // `[v6]:port` or `host:port`
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, port)| port),
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .with_context(|| format!("S3 endpoint `{endpoint}`: bad port `{p}`"))
        })
        .transpose()?;
    Ok(port.unwrap_or(if scheme == "http" { 80 } else { 443 }))
}

fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u32)> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("`{cidr}` is not a CIDR"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("`{cidr}`: only IPv4 CIDRs are modelled here"))?;
    let len: u32 = len
        .parse()
        .with_context(|| format!("`{cidr}`: bad prefix"))?;
    if len > 32 {
        bail!("`{cidr}`: bad prefix");
    }
    Ok((addr, len))
}

fn mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// An address inside a CIDR (the tenth host when there is room).
fn host_in(cidr: &str) -> Result<String> {
    let (addr, len) = parse_cidr(cidr)?;
    let network = u32::from(addr) & mask(len);
    let offset = match len {
        0..=28 => 10,
        29..=31 => 1,
        _ => 0,
    };
    Ok(Ipv4Addr::from(network + offset).to_string())
}

fn in_cidr(ip: &str, cidr: &str) -> Result<bool> {
    let (addr, len) = parse_cidr(cidr)?;
    let ip: Ipv4Addr = ip.parse()?;
    Ok(u32::from(ip) & mask(len) == u32::from(addr) & mask(len))
}

/// `matchLabels` of a label selector; `matchExpressions` are not modelled (a clear error).
fn match_labels(selector: &Value, what: &str) -> Result<Labels> {
    if selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty())
    {
        bail!("{what}: matchExpressions are not modelled by this check; use matchLabels");
    }
    Ok(label_map(&selector["matchLabels"]))
}

/// The pods and addresses a platform talks to, and what it needs.
fn checks_for(label: &str, platform: &Value, objects: &[Value]) -> Result<Checks> {
    let name = str_at(platform, "/metadata/name").ok_or_else(|| anyhow!("platform has no name"))?;
    let namespace = str_at(platform, "/metadata/namespace").unwrap_or("default");
    let spec = &platform["spec"];
    let np = &spec["networkPolicy"];
    if np["enabled"] == false {
        bail!("{label}: networkPolicy.enabled is false: nothing to judge");
    }
    let monitoring_ns = str_at(np, "/monitoringNamespace").unwrap_or("monitoring");
    let operator_ns = str_at(np, "/operatorNamespace").unwrap_or("caduceus-system");
    let db_provider = str_at(spec, "/database/provider").unwrap_or("Embedded");
    let cache_provider = str_at(spec, "/cache/provider").unwrap_or("Embedded");

    let mut cluster = Cluster::new();
    let mut checks = Checks::default();

    // The platform's own pods, with the labels of their rendered pod templates.
    let (_, api_template) = one_template(objects, "api-server")?
        .ok_or_else(|| anyhow!("{label}: no API Deployment rendered"))?;
    let api = cluster.pod(
        "api",
        namespace,
        label_map(&api_template["metadata"]["labels"]),
    );
    let http = named_port(api_template, "http").context("API pods")?;
    let metrics = named_port(api_template, "metrics").context("API pods")?;

    let postgres = match one_template(objects, "database")? {
        Some((_, t)) => Some((
            cluster.pod("postgres", namespace, label_map(&t["metadata"]["labels"])),
            named_port(t, "postgres").context("Postgres pods")?,
        )),
        None => None,
    };
    let redis = match one_template(objects, "cache")? {
        Some((_, t)) => Some((
            cluster.pod("redis", namespace, label_map(&t["metadata"]["labels"])),
            named_port(t, "redis").context("Redis pods")?,
        )),
        None => None,
    };
    // Kubernetes adds the Job's name to its pods' labels.
    let job_labels = |mut l: Labels, job: &str| {
        l.insert("batch.kubernetes.io/job-name".into(), job.into());
        l.insert("job-name".into(), job.into());
        l
    };
    // Backup pods: those of the CronJob (and of any rendered Job).
    let mut backups = Vec::new();
    for (workload, t) in pod_templates(objects, "backup") {
        let workload_name = str_at(workload, "/metadata/name").unwrap_or(name);
        let (pod_name, job) = match workload["kind"].as_str() {
            Some("CronJob") => ("backup".to_string(), format!("{workload_name}-29000000")),
            _ => (format!("backup {workload_name}"), workload_name.to_string()),
        };
        backups.push(cluster.pod(
            pod_name,
            namespace,
            job_labels(label_map(&t["metadata"]["labels"]), &job),
        ));
    }
    let from_backup = &spec["database"]["bootstrap"]["fromBackup"];
    let restore = if from_backup.is_object() && db_provider != "CloudNativePG" {
        let restore_labels = match one_template(objects, "restore")? {
            Some((_, t)) => label_map(&t["metadata"]["labels"]),
            None => {
                // `render` prints no restore Job: its pod carries the labels the operator gives
                // every restore object, as on the restore NetworkPolicies' own metadata.
                let (policy, l) = of_kind(objects, "networking.k8s.io", "NetworkPolicy")
                    .into_iter()
                    .map(|p| (p, label_map(&p["metadata"]["labels"])))
                    .find(|(_, l)| l.get(COMPONENT).map(String::as_str) == Some("restore"))
                    .ok_or_else(|| {
                        anyhow!(
                            "{label}: fromBackup is set but no restore object is rendered \
                             (neither a Job nor a NetworkPolicy with {COMPONENT}=restore)"
                        )
                    })?;
                println!(
                    "{label}: no restore Job rendered; restore pod labels from the metadata of \
                     NetworkPolicy {}",
                    str_at(policy, "/metadata/name").unwrap_or("?")
                );
                l
            }
        };
        Some(cluster.pod(
            "restore",
            namespace,
            job_labels(restore_labels, &format!("{name}-restore")),
        ))
    } else {
        None
    };

    // The database and cache the platform's pods use.
    let cidrs = |of: &str| -> Vec<String> {
        spec[of]["externalCidrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect()
    };
    let db_cidrs = cidrs("database");
    let cache_cidrs = cidrs("cache");
    let database = match db_provider {
        "Embedded" => postgres
            .clone()
            .ok_or_else(|| anyhow!("{label}: Embedded database but no Postgres StatefulSet"))?,
        "CloudNativePG" => {
            let clusters = of_kind(objects, "postgresql.cnpg.io", "Cluster");
            let cnpg = clusters
                .first()
                .and_then(|c| str_at(c, "/metadata/name"))
                .ok_or_else(|| anyhow!("{label}: CloudNativePG database but no Cluster"))?;
            // The labels CloudNativePG gives the primary instance pod.
            let pod = cluster.pod(
                format!("cnpg {cnpg}-1"),
                namespace,
                labels([
                    ("cnpg.io/cluster", cnpg),
                    ("cnpg.io/instanceName", &format!("{cnpg}-1")),
                    ("cnpg.io/podRole", "instance"),
                    ("cnpg.io/instanceRole", "primary"),
                    ("role", "primary"),
                ]),
            );
            (pod, 5432)
        }
        "External" => {
            let ip = match db_cidrs.first() {
                Some(cidr) => host_in(cidr)?,
                None => "198.51.100.10".to_string(),
            };
            let port = spec["database"]["externalPort"].as_u64().unwrap_or(5432);
            (
                external(format!("external database {ip}"), &ip),
                u16::try_from(port)?,
            )
        }
        other => bail!("{label}: unknown database provider {other}"),
    };
    let cache = match cache_provider {
        "Embedded" => Some(
            redis
                .clone()
                .ok_or_else(|| anyhow!("{label}: Embedded cache but no Redis StatefulSet"))?,
        ),
        "External" => {
            let ip = match cache_cidrs.first() {
                Some(cidr) => host_in(cidr)?,
                None => "198.51.100.30".to_string(),
            };
            let port = spec["cache"]["externalPort"].as_u64().unwrap_or(6379);
            Some((
                external(format!("external cache {ip}"), &ip),
                u16::try_from(port)?,
            ))
        }
        "Disabled" => None,
        other => bail!("{label}: unknown cache provider {other}"),
    };

    // Object stores (outside the cluster): the backup destination's, the restore source's.
    let backup_s3 = &spec["backup"]["destination"]["s3"];
    let backup_store = match (backups.is_empty(), backup_s3.is_object()) {
        (false, true) => Some((
            external("backup object store 203.0.113.10", "203.0.113.10"),
            object_store_port(backup_s3)?,
        )),
        _ => None,
    };
    let restore_s3 = &from_backup["source"]["s3"];
    let restore_store = match (&restore, restore_s3.is_object()) {
        (Some(_), true) => Some((
            external("restore object store 203.0.113.20", "203.0.113.20"),
            object_store_port(restore_s3)?,
        )),
        _ => None,
    };
    let internet = external("internet 203.0.113.99", "203.0.113.99");

    // Everyone else.
    let dns = cluster.pod("kube-dns", "kube-system", labels([("k8s-app", "kube-dns")]));
    let prometheus = cluster.pod(
        format!("prometheus ({monitoring_ns})"),
        monitoring_ns,
        labels([("app.kubernetes.io/name", "prometheus")]),
    );
    let operator = cluster.pod(
        format!("operator ({operator_ns})"),
        operator_ns,
        labels([("app.kubernetes.io/name", "caduceus-operator")]),
    );
    let attacker = cluster.pod(
        "attacker (ns attacker)",
        "attacker",
        labels([("app.kubernetes.io/name", "attacker")]),
    );

    // Clients: one per `ingressFrom` peer (default: every pod of the platform's namespace), and
    // for a peer that picks pods by label, a pod beside it without those labels.
    let default_from = json!([{ "podSelector": {} }]);
    let ingress_from = np
        .get("ingressFrom")
        .filter(|v| !v.is_null())
        .unwrap_or(&default_from);
    let mut clients = Vec::new();
    let mut outsiders = Vec::new();
    let mut attacker_admitted = false;
    for (i, peer) in ingress_from
        .as_array()
        .ok_or_else(|| anyhow!("{label}: networkPolicy.ingressFrom is not a list"))?
        .iter()
        .enumerate()
    {
        let what = format!("{label}: networkPolicy.ingressFrom[{i}]");
        if let Some(cidr) = str_at(peer, "/ipBlock/cidr") {
            let ip = host_in(cidr)?;
            clients.push(external(format!("client {ip}"), &ip));
            // An ipBlock applies to pod addresses too.
            if in_cidr(&attacker.ip, cidr)? {
                attacker_admitted = true;
            }
            continue;
        }
        let pod_labels = match peer.get("podSelector") {
            Some(sel) => match_labels(sel, &what)?,
            None => Labels::new(),
        };
        let (ns, ns_labels) = match peer.get("namespaceSelector") {
            Some(sel) => {
                let l = match_labels(sel, &what)?;
                if l.is_empty() && pod_labels.is_empty() {
                    attacker_admitted = true;
                }
                let ns = l
                    .get(NAMESPACE_NAME)
                    .cloned()
                    .unwrap_or_else(|| format!("ingress-clients-{i}"));
                (ns, l)
            }
            None => (namespace.to_string(), Labels::new()),
        };
        let client_labels = if pod_labels.is_empty() {
            labels([("app.kubernetes.io/name", "client")])
        } else {
            pod_labels.clone()
        };
        clients.push(cluster.pod_in(
            format!("client ({ns})"),
            &ns,
            ns_labels.clone(),
            client_labels,
        ));
        if !pod_labels.is_empty() {
            outsiders.push(cluster.pod_in(
                format!("other pod ({ns})"),
                &ns,
                ns_labels,
                labels([("app.kubernetes.io/name", "not-the-client")]),
            ));
        }
    }

    // --- what the platform needs ---------------------------------------------------------------
    for client in &clients {
        checks.allow(client, &api, http, "ingressFrom → API http");
    }
    checks.allow(&prometheus, &api, metrics, "monitoring scrapes API metrics");
    checks.allow(
        &operator,
        &api,
        metrics,
        "operator reads the compliance self-report",
    );
    checks.allow(&api, &database.0, database.1, "API → database");
    if let Some((cache, port)) = &cache {
        checks.allow(&api, cache, *port, "API → cache");
    }
    for backup in &backups {
        checks.allow(backup, &database.0, database.1, "backup → database");
        if let Some((store, port)) = &backup_store {
            checks.allow(backup, store, *port, "backup → its object store");
        }
    }
    if let Some(restore) = &restore {
        checks.allow(restore, &database.0, database.1, "restore → database");
        if let Some((store, port)) = &restore_store {
            checks.allow(restore, store, *port, "restore → its S3 source");
        }
    }
    let own: Vec<&Peer> = [Some(&api)]
        .into_iter()
        .chain([
            postgres.as_ref().map(|p| &p.0),
            redis.as_ref().map(|r| &r.0),
            restore.as_ref(),
        ])
        .flatten()
        .chain(&backups)
        .collect();
    for pod in &own {
        checks.add_proto(Verdict::Allowed, pod, &dns, 53, "UDP", "DNS");
        checks.add_proto(Verdict::Allowed, pod, &dns, 53, "TCP", "DNS");
    }

    // --- what it must not do -------------------------------------------------------------------
    if attacker_admitted {
        println!("{label}: ingressFrom admits every namespace: attacker → API http not judged");
    } else {
        checks.deny(&attacker, &api, http, "not in ingressFrom");
    }
    checks.deny(
        &attacker,
        &api,
        metrics,
        "admin port: monitoring and operator only",
    );
    for outsider in &outsiders {
        checks.deny(outsider, &api, http, "ingressFrom namespace, other pod");
    }
    if let Some((pg, port)) = &postgres {
        checks.deny(&attacker, pg, *port, "Postgres: platform pods only");
        checks.deny(pg, &internet, 443, "Postgres needs DNS only");
    }
    if let Some((redis, port)) = &redis {
        checks.deny(&attacker, redis, *port, "Redis: API only");
        checks.deny(redis, &api, http, "Redis needs DNS only");
        checks.deny(redis, &internet, 443, "Redis needs DNS only");
        checks.deny(redis, &attacker, 8080, "Redis needs DNS only");
        if let Some((pg, port)) = &postgres {
            checks.deny(redis, pg, *port, "Redis needs DNS only");
        }
        for backup in &backups {
            checks.deny(backup, redis, *port, "backup needs no cache");
        }
    }
    let stores: Vec<&(Peer, u16)> = backup_store.iter().chain(restore_store.iter()).collect();
    if stores.is_empty() {
        checks.deny(&api, &internet, 443, "API needs no object store");
    }
    for (store, port) in &stores {
        checks.deny(&api, store, *port, "API needs no object store");
    }
    if let Some(first) = db_cidrs.first() {
        let outside = "192.0.2.50";
        for cidr in &db_cidrs {
            if in_cidr(outside, cidr)? {
                bail!("{label}: {outside} is inside externalCidrs {cidr}: pick another address");
            }
        }
        checks.deny(
            &api,
            &external(format!("{outside} (outside {first})"), outside),
            database.1,
            "database port outside externalCidrs",
        );
    }
    if let (Some(first), Some((_, port))) = (cache_cidrs.first(), &cache) {
        let outside = "192.0.2.60";
        for cidr in &cache_cidrs {
            if in_cidr(outside, cidr)? {
                bail!(
                    "{label}: {outside} is inside cache externalCidrs {cidr}: pick another address"
                );
            }
        }
        checks.deny(
            &api,
            &external(format!("{outside} (outside {first})"), outside),
            *port,
            "cache port outside externalCidrs",
        );
    }
    for backup in &backups {
        checks.deny(&attacker, backup, 8080, "backup pods take no connections");
        if backup_store.is_none() {
            checks.deny(backup, &internet, 443, "claim destination: no object store");
        }
        if let Some((store, port)) = &restore_store {
            if backup_store.as_ref().map(|b| b.1) != Some(*port) {
                checks.deny(backup, store, *port, "backup: its own store's port only");
            }
        }
    }
    if let Some(restore) = &restore {
        for from in [&attacker, &prometheus, &dns]
            .into_iter()
            .chain(clients.iter().filter(|c| c.pod.is_some()))
        {
            checks.deny(from, restore, 8080, "restore pod takes no connections");
        }
        checks.deny(
            &prometheus,
            restore,
            metrics,
            "restore pod takes no connections",
        );
        match &restore_store {
            None => checks.deny(restore, &internet, 443, "claim source: no object store"),
            Some((_, port)) => {
                let other = backup_store.as_ref().map(|b| b.1).unwrap_or(443);
                if other != *port {
                    checks.deny(restore, &internet, other, "restore: its source's port only");
                }
            }
        }
        if let Some((redis, port)) = &redis {
            checks.deny(restore, redis, *port, "restore needs no cache");
        }
        checks.deny(
            restore,
            &api,
            http,
            "restore needs database and source only",
        );
    }
    Ok(checks)
}

// --- the engine --------------------------------------------------------------------------------

/// The Cyclonus binary: `CYCLONUS_BIN`, else what `scripts/netpol/build.sh` builds (or has).
fn cyclonus() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CYCLONUS_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "CYCLONUS_BIN={} does not exist: run scripts/netpol/build.sh",
                path.display()
            );
        }
        return Ok(path);
    }
    let script = repo_root().join("scripts/netpol/build.sh");
    let out = run(&mut Command::new(&script))
        .with_context(|| format!("{} could not build Cyclonus", script.display()))?;
    let path = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("CYCLONUS_BIN="))
        .ok_or_else(|| anyhow!("{} printed no CYCLONUS_BIN= line:\n{out}", script.display()))?;
    Ok(PathBuf::from(path))
}

/// One verdict of `cyclonus analyze --mode query-traffic` and the text that explains it.
struct Answer {
    verdict: Verdict,
    explanation: String,
}

/// Runs Cyclonus on the policies and the connections; one answer per connection, in order.
fn ask(engine: &Path, policies: &[&Value], checks: &Checks) -> Result<Vec<Answer>> {
    let dir = tempfile::tempdir()?;
    let policy_dir = dir.path().join("policies");
    fs::create_dir(&policy_dir)?;
    for (i, np) in policies.iter().enumerate() {
        let name = np["metadata"]["name"].as_str().unwrap_or("unnamed");
        // JSON is YAML; Cyclonus reads one NetworkPolicy per file, strictly.
        fs::write(
            policy_dir.join(format!("{i:02}-{name}.json")),
            serde_json::to_string_pretty(np)?,
        )?;
    }
    let traffic: Vec<Value> = checks
        .0
        .iter()
        .map(|c| {
            json!({
                "Source": c.from.traffic_peer(),
                "Destination": c.to.traffic_peer(),
                "Protocol": c.protocol,
                "ResolvedPort": c.port,
                "ResolvedPortName": "",
            })
        })
        .collect();
    let traffic_path = dir.path().join("traffic.json");
    fs::write(&traffic_path, serde_json::to_string_pretty(&traffic)?)?;
    let out = run(Command::new(engine)
        .args(["analyze", "--mode", "query-traffic", "--policy-path"])
        .arg(&policy_dir)
        .arg("--traffic-path")
        .arg(&traffic_path))?;
    let answers = parse_answers(&out)?;
    if answers.len() != checks.0.len() {
        bail!(
            "Cyclonus answered {} of {} connections:\n{out}",
            answers.len(),
            checks.0.len()
        );
    }
    Ok(answers)
}

/// Splits query-traffic output into its `Traffic:` blocks and reads each block's
/// `| IS ALLOWED? | TRUE |` footer.
fn parse_answers(out: &str) -> Result<Vec<Answer>> {
    let mut answers = Vec::new();
    for block in out.split("\nTraffic:\n").skip(1) {
        let line = block
            .lines()
            .find(|l| l.contains("IS ALLOWED?"))
            .ok_or_else(|| anyhow!("no `IS ALLOWED?` line in Cyclonus's answer:\n{block}"))?;
        let verdict = match line.split('|').nth(2).map(str::trim) {
            Some("TRUE") => Verdict::Allowed,
            Some("FALSE") => Verdict::Denied,
            other => bail!("unreadable verdict {other:?} in `{line}`"),
        };
        answers.push(Answer {
            verdict,
            explanation: format!("Traffic:\n{}", block.trim_end()),
        });
    }
    Ok(answers)
}

// --- the test ----------------------------------------------------------------------------------

/// Renders one platform file and judges its NetworkPolicies; returns the wrong verdicts.
fn judge(engine: &Path, label: &str, path: &Path) -> Result<Vec<String>> {
    let platforms = of_kind(&yaml_file(path)?, "caduceus.io", "HealthcarePlatform")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let [platform] = platforms.as_slice() else {
        bail!(
            "{label}: expected one HealthcarePlatform, found {}",
            platforms.len()
        );
    };
    let objects = render_example(path).with_context(|| format!("{label}: render"))?;
    let policies = of_kind(&objects, "networking.k8s.io", "NetworkPolicy");
    if policies.is_empty() {
        bail!("{label}: render printed no NetworkPolicy");
    }
    let checks = checks_for(label, platform, &objects)?;
    let answers = ask(engine, &policies, &checks).with_context(|| format!("{label}: Cyclonus"))?;

    println!(
        "\n{label}: {} NetworkPolicies, {} connections judged by Cyclonus",
        policies.len(),
        checks.0.len()
    );
    println!(
        "  {:<4} {:<34} {:<34} {:<9} {:<8} {:<8} why",
        "", "from", "to", "port", "want", "got"
    );
    let mut wrong = Vec::new();
    for (check, answer) in checks.0.iter().zip(&answers) {
        let ok = check.want == answer.verdict;
        let port = format!("{}/{}", check.port, check.protocol);
        println!(
            "  {:<4} {:<34} {:<34} {:<9} {:<8} {:<8} {}",
            if ok { "ok" } else { "FAIL" },
            check.from.name,
            check.to.name,
            port,
            check.want.to_string(),
            answer.verdict.to_string(),
            check.why
        );
        if !ok {
            wrong.push(format!(
                "{label}: {} → {} {port} ({}): want {}, Cyclonus says {}\n{}",
                check.from.name,
                check.to.name,
                check.why,
                check.want,
                answer.verdict,
                answer.explanation
            ));
        }
    }
    Ok(wrong)
}

#[test]
fn rendered_network_policies_allow_what_the_platform_needs_and_nothing_else() {
    let engine = cyclonus().unwrap_or_else(|e| panic!("no NetworkPolicy engine: {e:#}"));
    let root = repo_root();
    let examples = root.join("examples");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for name in REQUIRED_EXAMPLES {
        let path = examples.join(name);
        assert!(path.is_file(), "examples/{name} is missing");
        files.push((format!("examples/{name}"), path));
    }
    for path in caduceus_e2e::yaml_files(&examples).expect("examples/") {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !REQUIRED_EXAMPLES.contains(&name.as_str()) {
            files.push((format!("examples/{name}"), path));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("restored-from-s3.yaml", RESTORED_FROM_S3),
        ("restored-from-claim.yaml", RESTORED_FROM_CLAIM),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, text).expect("write platform");
        files.push((name.to_string(), path));
    }

    let mut failures = Vec::new();
    for (label, path) in &files {
        match judge(&engine, label, path) {
            Ok(wrong) => failures.extend(wrong),
            Err(e) => failures.push(format!("{label}: {e:#}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong verdict(s) or error(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn verdicts_are_read_from_cyclonus_output() {
    let out = "query traffic:\nTraffic:\n+---+\n| 80 |\n+---+\n\nIs traffic allowed?\n\
               +-------------+--------+--------+\n| IS ALLOWED? |  TRUE  |         \n\
               +-------------+--------+--------+\n\n\n\nTraffic:\n+---+\n\nIs traffic allowed?\n\
               | Egress      | Deny   | namespace: y  |\n| IS ALLOWED? | FALSE  |         \n";
    let answers = parse_answers(out).expect("parses");
    let verdicts: Vec<Verdict> = answers.iter().map(|a| a.verdict).collect();
    assert_eq!(verdicts, [Verdict::Allowed, Verdict::Denied]);
    assert!(answers[1].explanation.contains("Egress      | Deny"));
    assert!(parse_answers("query traffic:\nTraffic:\n| IS ALLOWED? | MAYBE |\n").is_err());
}

#[test]
fn object_store_ports_and_cidrs() {
    let port = |e: Value| object_store_port(&json!({ "endpoint": e })).unwrap();
    assert_eq!(object_store_port(&json!({})).unwrap(), 443);
    assert_eq!(port(json!("https://minio.storage:9000")), 9000);
    assert_eq!(port(json!("http://minio.storage/")), 80);
    assert_eq!(port(json!("https://s3.example")), 443);
    assert_eq!(port(json!("https://[fd00::1]:8443")), 8443);
    assert_eq!(port(json!("https://[fd00::1]")), 443);
    assert_eq!(host_in("10.40.0.0/16").unwrap(), "10.40.0.10");
    assert_eq!(host_in("10.40.7.9/32").unwrap(), "10.40.7.9");
    assert!(in_cidr("10.40.0.10", "10.40.0.0/16").unwrap());
    assert!(!in_cidr("192.0.2.50", "10.40.0.0/16").unwrap());
    assert!(host_in("fd00::/64").is_err());
}
