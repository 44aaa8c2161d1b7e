//! Resource requests: what platforms ask the scheduler for and the room the cluster has.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Container, Event as CoreEvent, Node, Pod, PodSpec},
};
use kube::{
    api::{Api, ListParams},
    Client,
};

/// What pods ask the scheduler for: CPU cores, memory bytes, pod slots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requests {
    cpu: f64,
    memory: f64,
    pods: f64,
}

impl Requests {
    fn plus(self, o: Requests) -> Requests {
        Requests {
            cpu: self.cpu + o.cpu,
            memory: self.memory + o.memory,
            pods: self.pods + o.pods,
        }
    }

    fn max(self, o: Requests) -> Requests {
        Requests {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            pods: self.pods.max(o.pods),
        }
    }

    fn times(self, n: f64) -> Requests {
        Requests {
            cpu: self.cpu * n,
            memory: self.memory * n,
            pods: self.pods * n,
        }
    }

    pub fn minus(self, o: Requests) -> Requests {
        Requests {
            cpu: (self.cpu - o.cpu).max(0.0),
            memory: (self.memory - o.memory).max(0.0),
            pods: (self.pods - o.pods).max(0.0),
        }
    }

    /// How many times `per` fits into `self`, and the resource that limits it.
    pub fn fits(self, per: Requests) -> (usize, &'static str) {
        let mut best = (usize::MAX, "nothing");
        for (have, need, what) in [
            (self.pods, per.pods, "pods"),
            (self.cpu, per.cpu, "cpu"),
            (self.memory, per.memory, "memory"),
        ] {
            if need > 0.0 {
                let n = (have / need).floor() as usize;
                if n < best.0 {
                    best = (n, what);
                }
            }
        }
        best
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.0} pods, {:.2} CPU, {:.2} GiB memory",
            self.pods,
            self.cpu,
            self.memory / (1u64 << 30) as f64
        )
    }
}

/// A Kubernetes quantity (`250m`, `1`, `512Mi`, `1e3`, `2G`) as a number.
fn parse_quantity(q: &str) -> anyhow::Result<f64> {
    let q = q.trim();
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let value: f64 = number
        .parse()
        .with_context(|| format!("not a Kubernetes quantity: {q:?}"))?;
    Ok(value * factor)
}

fn container_requests(c: &Container) -> anyhow::Result<Requests> {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |key: &str| -> anyhow::Result<f64> {
        requests
            .and_then(|r| r.get(key))
            .map(|q| parse_quantity(&q.0))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(Requests {
        cpu: get("cpu")?,
        memory: get("memory")?,
        pods: 0.0,
    })
}

/// What the scheduler reserves for a pod: the containers (and sidecars), or the largest init
/// container when that is more.
fn pod_requests(spec: &PodSpec) -> anyhow::Result<Requests> {
    let mut running = Requests::default();
    for c in &spec.containers {
        running = running.plus(container_requests(c)?);
    }
    let mut init = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            running = running.plus(container_requests(c)?);
        } else {
            init = init.max(container_requests(c)?);
        }
    }
    Ok(running.max(init).plus(Requests {
        pods: 1.0,
        ..Requests::default()
    }))
}

/// (allocatable on schedulable Ready nodes, requested by the pods not finished anywhere).
pub async fn cluster_room(admin: &Client) -> anyhow::Result<(Requests, Requests)> {
    let nodes = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let mut allocatable = Requests::default();
    for n in nodes.items {
        let spec = n.spec.unwrap_or_default();
        if spec.unschedulable == Some(true)
            || spec
                .taints
                .iter()
                .flatten()
                .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        {
            continue;
        }
        let status = n.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let a = status.allocatable.unwrap_or_default();
        let get = |key: &str| -> anyhow::Result<f64> {
            a.get(key)
                .map(|q| parse_quantity(&q.0))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        allocatable = allocatable.plus(Requests {
            cpu: get("cpu")?,
            memory: get("memory")?,
            pods: get("pods")?,
        });
    }
    let lp = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let pods = Api::<Pod>::all(admin.clone())
        .list(&lp)
        .await
        .context("listing pods")?;
    let mut used = Requests::default();
    for p in &pods.items {
        if let Some(spec) = &p.spec {
            used = used.plus(pod_requests(spec)?);
        }
    }
    Ok((allocatable, used))
}

/// What one platform's workloads (its Deployments and StatefulSets: replicas × pod template)
/// ask the scheduler for, once the operator created `expected` of them (waits up to `timeout`),
/// and `Kind/name replicas` of each.
pub async fn platform_requests(
    admin: &Client,
    ns: &str,
    platform: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<(Requests, usize, String)> {
    let start = Instant::now();
    let prefix = format!("{platform}-");
    loop {
        let deployments = Api::<Deployment>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("listing Deployments")?;
        let statefulsets = Api::<StatefulSet>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("listing StatefulSets")?;
        let mut workloads: Vec<(String, i32, Option<PodSpec>)> = Vec::new();
        for d in deployments.items {
            let name = d.metadata.name.unwrap_or_default();
            if let (true, Some(spec)) = (name.starts_with(&prefix), d.spec) {
                let replicas = spec.replicas.unwrap_or(1);
                workloads.push((format!("Deployment/{name}"), replicas, spec.template.spec));
            }
        }
        for s in statefulsets.items {
            let name = s.metadata.name.unwrap_or_default();
            if let (true, Some(spec)) = (name.starts_with(&prefix), s.spec) {
                let replicas = spec.replicas.unwrap_or(1);
                workloads.push((format!("StatefulSet/{name}"), replicas, spec.template.spec));
            }
        }
        if workloads.len() >= expected {
            let mut total = Requests::default();
            for (_, replicas, spec) in &workloads {
                if let Some(spec) = spec {
                    total = total.plus(pod_requests(spec)?.times(f64::from(*replicas)));
                }
            }
            let text = workloads
                .iter()
                .map(|(w, r, _)| format!("{w} {r}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Ok((total, workloads.len(), text));
        }
        if start.elapsed() > timeout {
            bail!(
                "platform {ns}/{platform}: {} of {expected} workloads after {} s",
                workloads.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn count_pods(admin: &Client, ns: &str, fields: &str) -> anyhow::Result<usize> {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let lp = ListParams::default().fields(fields);
    Ok(api
        .list_metadata(&lp)
        .await
        .context("listing pods")?
        .items
        .len())
}

/// The most frequent scheduler complaints in the namespace (why pods stay Pending).
pub async fn scheduling_failures(admin: &Client, ns: &str) -> anyhow::Result<String> {
    let events = Api::<CoreEvent>::namespaced(admin.clone(), ns)
        .list(&ListParams::default().fields("reason=FailedScheduling"))
        .await
        .context("listing FailedScheduling events")?;
    let mut by_message: BTreeMap<String, i32> = BTreeMap::new();
    for e in events.items {
        *by_message.entry(e.message.unwrap_or_default()).or_default() += e.count.unwrap_or(1);
    }
    let mut top: Vec<(String, i32)> = by_message.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(top
        .into_iter()
        .take(3)
        .map(|(m, n)| format!("{n}× {m}"))
        .collect::<Vec<_>>()
        .join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [
            ("250m", 0.25),
            ("1", 1.0),
            ("1.5", 1.5),
            ("32", 32.0),
            ("512Mi", 512.0 * 1024.0 * 1024.0),
            ("256Gi", 256.0 * 1024f64.powi(3)),
            ("2G", 2e9),
            ("1e3", 1000.0),
            ("100k", 100_000.0),
        ];
        for (q, want) in cases {
            let got = parse_quantity(q).unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{q}: {got} != {want}"
            );
        }
        assert!(parse_quantity("lots").is_err());
    }

    #[test]
    fn room_is_limited_by_the_scarcest_resource() {
        let free = Requests {
            cpu: 96.0,
            memory: 768.0 * 1024f64.powi(3),
            pods: 1374.0,
        };
        let per = Requests {
            cpu: 0.85,
            memory: 1.5 * 1024f64.powi(3),
            pods: 4.0,
        };
        assert_eq!(free.fits(per), (112, "cpu"));
        let small = Requests { cpu: 0.04, ..per };
        assert_eq!(free.fits(small), (343, "pods"));
    }
}
