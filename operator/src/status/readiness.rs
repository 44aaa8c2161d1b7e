//! Readiness of the workloads (Deployment, StatefulSets, CloudNativePG Cluster, External cache)
//! from what their controllers report; the running API version.

use super::*;

pub(super) struct Readiness {
    pub(super) ready: bool,
    pub(super) progressing: bool,
    pub(super) reason: String,
    pub(super) message: String,
}

pub(super) fn stateful_set_readiness(
    what: &str,
    sts: Option<&StatefulSet>,
    stopped: bool,
) -> Readiness {
    let Some(sts) = sts else {
        return Readiness {
            ready: false,
            progressing: true,
            reason: REASON_NOT_CREATED.into(),
            message: format!("{what} has not been created yet"),
        };
    };
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    if stopped {
        return Readiness {
            ready: false,
            progressing: status.replicas > 0,
            reason: REASON_STOPPED.into(),
            message: format!("{what} is scaled to zero (platform stopped); data is kept"),
        };
    }
    if observed && ready >= desired && updated >= desired {
        Readiness {
            ready: true,
            progressing: false,
            reason: REASON_PODS_READY.into(),
            message: format!("{what}: {ready}/{desired} pods ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: REASON_PODS_NOT_READY.into(),
            message: format!("{what}: {ready}/{desired} pods ready"),
        }
    }
}

pub(super) fn deployment_readiness(d: Option<&Deployment>, stopped: bool) -> (Readiness, i32, i32) {
    let Some(d) = d else {
        return (
            Readiness {
                ready: false,
                progressing: true,
                reason: REASON_NOT_CREATED.into(),
                message: "the API Deployment has not been created yet".into(),
            },
            0,
            0,
        );
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let deadline = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some(REASON_PROGRESS_DEADLINE_EXCEEDED)
    });
    if stopped {
        return (
            Readiness {
                ready: false,
                progressing: total > 0,
                reason: REASON_STOPPED.into(),
                message: "the API is scaled to zero (platform stopped)".into(),
            },
            ready,
            desired,
        );
    }
    let r = if deadline {
        Readiness {
            ready: false,
            progressing: false,
            reason: REASON_PROGRESS_DEADLINE_EXCEEDED.into(),
            message: format!(
                "the API rollout is stuck ({ready}/{desired} pods ready); check the pods' events and logs"
            ),
        }
    } else if observed && desired > 0 && ready >= desired && updated >= desired && total <= desired
    {
        Readiness {
            ready: true,
            progressing: false,
            reason: REASON_PODS_READY.into(),
            message: format!("{ready}/{desired} API pods ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: REASON_ROLLING_OUT.into(),
            message: format!("{ready}/{desired} API pods ready, {updated} updated"),
        }
    };
    (r, ready, desired)
}

/// Running API version: the image tag, once every desired pod runs the current template.
pub(super) fn running_version(
    d: Option<&Deployment>,
    api_ready: bool,
    previous: Option<&str>,
) -> Option<String> {
    if !api_ready {
        return previous.map(str::to_string);
    }
    let image = d?
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "api")?
        .image
        .clone()?;
    image.rsplit_once(':').map(|(_, tag)| tag.to_string())
}

pub(super) fn cnpg_readiness(obs: &Observed, p: &ValidatedPlatform, stopped: bool) -> Readiness {
    let Some(cluster) = obs.cnpg_cluster.as_ref() else {
        return Readiness {
            ready: false,
            progressing: true,
            reason: REASON_NOT_CREATED.into(),
            message: "the CloudNativePG Cluster has not been created yet".into(),
        };
    };
    if stopped {
        return Readiness {
            ready: false,
            progressing: false,
            reason: REASON_HIBERNATING.into(),
            message: "the CloudNativePG Cluster is hibernated (platform stopped)".into(),
        };
    }
    let st = cluster.data.get("status");
    let ready_instances = st
        .and_then(|s| s.get("readyInstances"))
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let want = i64::from(p.spec.database.instances);
    let phase = st
        .and_then(|s| s.get("phase"))
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    if ready_instances >= want {
        Readiness {
            ready: true,
            progressing: false,
            reason: REASON_PODS_READY.into(),
            message: format!("CloudNativePG: {ready_instances}/{want} instances ready"),
        }
    } else {
        Readiness {
            ready: false,
            progressing: true,
            reason: REASON_PODS_NOT_READY.into(),
            message: format!("CloudNativePG: {ready_instances}/{want} instances ready ({phase})"),
        }
    }
}

/// `CacheReady` of an External cache, from the API's latest self-report: the API pings Redis,
/// but its readiness does not depend on Redis (the rate limiter falls back to per-pod limits),
/// so a ready API says nothing about the cache.
pub(super) fn external_cache_readiness(report: Option<&Result<SelfReport, String>>) -> Readiness {
    let not_verified = |why: String| Readiness {
        ready: false,
        progressing: false,
        reason: REASON_EXTERNAL_NOT_VERIFIED.into(),
        message: format!("external Redis not verified: {why}"),
    };
    let report = match report {
        None => return not_verified("no API self-report was read yet".into()),
        Some(Err(e)) => return not_verified(format!("no API self-report yet ({e})")),
        Some(Ok(r)) => r,
    };
    match &report.cache {
        None => not_verified(format!(
            "the API (version {}) does not report the cache in its self-report",
            report.version
        )),
        Some(c) if c.configured && c.reachable => Readiness {
            ready: true,
            progressing: false,
            reason: REASON_EXTERNAL_REACHABLE.into(),
            message: "external Redis: the API's latest self-report says it answers".into(),
        },
        Some(c) => Readiness {
            ready: false,
            progressing: false,
            reason: REASON_EXTERNAL_UNREACHABLE.into(),
            message: if c.configured {
                "external Redis: the API's latest self-report says it does not answer (rate limits fall back to per-pod limits); check the URL Secret and the network path".into()
            } else {
                "external Redis: the API reports no Redis configured (rate limits are per pod); check cache.secretRef".into()
            },
        },
    }
}
