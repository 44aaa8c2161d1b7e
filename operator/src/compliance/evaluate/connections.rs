//! Rules on the platform's connections other than HTTPS to the API (that is `transport`):
//! `ingress-tls`, `database-tls` (with the embedded database's certificate) and `redis-auth`.

use super::evidence::{
    api_container, command_line, pod_spec_of_sts, secret_value, self_report, tls_secret_problem,
};
use super::{fail, not_evaluated, pass, Check, Inputs};
use crate::crd::{CacheProvider, DatabaseProvider};
use crate::names::REDIS_AUTH_CONF_KEY;

pub(super) fn ingress_tls(i: &Inputs<'_>) -> Check {
    let Some(ing) = &i.children.api_ingress else {
        return pass("no Ingress: the API is reachable only inside the cluster");
    };
    let spec = ing.spec.clone().unwrap_or_default();
    let hosts: Vec<String> = spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| r.host.clone())
        .collect();
    let tls = spec.tls.unwrap_or_default();
    let uncovered: Vec<&String> = hosts
        .iter()
        .filter(|h| {
            !tls.iter().any(|t| {
                t.secret_name.as_deref().is_some_and(|s| !s.is_empty())
                    && t.hosts.iter().flatten().any(|th| th == *h)
            })
        })
        .collect();
    if hosts.is_empty() || !uncovered.is_empty() {
        fail(format!(
            "the Ingress serves host(s) without TLS: {}",
            uncovered
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        pass(format!("Ingress TLS covers {}", hosts.join(", ")))
    }
}

pub(super) fn database_tls(i: &Inputs<'_>) -> Check {
    let p = i.platform;
    let report = self_report(i);
    if let Ok(r) = &report {
        if !r.database_tls {
            return fail("the API reports its database connection is not TLS-verified");
        }
    }
    match p.spec.database.provider {
        DatabaseProvider::Embedded => {
            // The API connects as its runtime role (`<platform>-postgres-app`).
            let Some(creds) = &i.children.postgres_app else {
                return fail("the API's database role has no credentials Secret");
            };
            let url = secret_value(creds, crate::names::PG_URL_KEY)
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default();
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
            let params: Vec<&str> = query.split('&').collect();
            let verify_full = params.contains(&"sslmode=verify-full");
            let root = params.iter().any(|p| p.starts_with("sslrootcert="));
            let server_ssl = i.children.postgres.as_ref().is_some_and(|pg| {
                pod_spec_of_sts(&pg.stateful_set)
                    .map(|s| {
                        s.containers
                            .iter()
                            .any(|c| command_line(c).contains("ssl=on"))
                    })
                    .unwrap_or(false)
            });
            match (verify_full && root, server_ssl) {
                (true, true) => match certificate_problem(i) {
                    Some(problem) => fail(problem),
                    None => pass(
                        "the API connects with sslmode=verify-full to Postgres running with ssl=on",
                    ),
                },
                (false, _) => {
                    fail("the API's DATABASE_URL does not use sslmode=verify-full with sslrootcert")
                }
                (true, false) => fail("the embedded Postgres does not run with ssl=on"),
            }
        }
        _ => match report {
            Ok(_) => pass("the API reports a TLS-verified database connection"),
            Err(e) => not_evaluated(format!(
                "external and CloudNativePG databases are judged by the API self-report: {e}"
            )),
        },
    }
}

/// What is wrong with the embedded database's certificate Secret, if anything (nothing to say
/// offline, where the values are placeholders).
pub(super) fn certificate_problem(i: &Inputs<'_>) -> Option<String> {
    let Some(secret) = &i.children.postgres_tls else {
        return Some("the embedded database has no TLS Secret".into());
    };
    tls_secret_problem(secret, "database", i.now)
}

pub(super) fn redis_auth(i: &Inputs<'_>) -> Check {
    match i.platform.spec.cache.provider {
        CacheProvider::Disabled => pass("no cache runs (the API rate-limits per pod)"),
        CacheProvider::External => not_evaluated(
            "external Redis: authentication is configured by its provider and cannot be verified by the operator",
        ),
        CacheProvider::Embedded => {
            let Some(creds) = &i.children.redis_credentials else {
                return fail("the embedded Redis has no credentials Secret");
            };
            let conf = secret_value(creds, REDIS_AUTH_CONF_KEY)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default();
            let has_pass = conf
                .lines()
                .any(|l| l.trim_start().starts_with("requirepass ") && l.trim().len() > "requirepass \"\"".len());
            let loads_conf = i.children.redis.as_ref().is_some_and(|r| {
                pod_spec_of_sts(&r.stateful_set).is_some_and(|s| {
                    s.containers
                        .iter()
                        .any(|c| command_line(c).contains(REDIS_AUTH_CONF_KEY))
                })
            });
            let url_from_secret = api_container(i.children).is_some_and(|c| {
                c.env.iter().flatten().any(|e| {
                    e.name == "REDIS_URL"
                        && e.value.is_none()
                        && e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).is_some()
                })
            });
            match (has_pass, loads_conf, url_from_secret) {
                (true, true, true) => pass("Redis loads requirepass from its Secret; the API authenticates with the Secret's URL"),
                (false, _, _) => fail("the Redis auth.conf has no requirepass"),
                (_, false, _) => fail("the Redis container does not load auth.conf"),
                (_, _, false) => fail("the API's REDIS_URL does not come from a Secret"),
            }
        }
    }
}
