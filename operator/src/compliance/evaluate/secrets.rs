//! Rule `no-secrets-in-config`, and the credential-name and URL-credential tests enforcement
//! shares ([`credential_like`], [`has_url_credentials`]).

use super::evidence::{all_containers, workloads};
use super::{fail, pass, Check, Inputs};

/// Whether an environment variable or ConfigMap key name looks like a credential: a segment
/// (split at `_`, `-`, `.`) is PASSWORD, PASSWD, SECRET, CREDENTIAL(S) or APIKEY, or the name
/// ends in TOKEN or KEY. Names ending in `_FILE` / `_PATH` point at mounted files and pass.
pub fn credential_like(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    let segments: Vec<&str> = n.split(['_', '-', '.']).filter(|s| !s.is_empty()).collect();
    match segments.last() {
        None | Some(&"FILE") | Some(&"PATH") => false,
        Some(last) => {
            ["TOKEN", "KEY"].contains(last)
                || segments.iter().any(|s| {
                    [
                        "PASSWORD",
                        "PASSWD",
                        "SECRET",
                        "CREDENTIAL",
                        "CREDENTIALS",
                        "APIKEY",
                    ]
                    .contains(s)
                })
        }
    }
}

/// Whether a value holds a URL with embedded credentials (`scheme://user:pass@host`).
pub fn has_url_credentials(value: &str) -> bool {
    value.split_whitespace().any(|word| {
        word.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        })
    })
}

pub(super) fn no_secrets_in_config(i: &Inputs<'_>) -> Check {
    let mut problems = Vec::new();
    for (k, v) in i.children.api_config.data.iter().flatten() {
        if credential_like(k) && !v.is_empty() {
            problems.push(format!("ConfigMap key {k} looks like a credential"));
        }
        if has_url_credentials(v) {
            problems.push(format!("ConfigMap key {k} holds a URL with credentials"));
        }
    }
    for (name, spec) in workloads(i.children, i.live) {
        for c in all_containers(spec) {
            for e in c.env.iter().flatten() {
                let Some(v) = e.value.as_deref() else {
                    continue;
                };
                if credential_like(&e.name) && !v.is_empty() {
                    problems.push(format!(
                        "{name}/{}: env {} has a literal value",
                        c.name, e.name
                    ));
                } else if has_url_credentials(v) {
                    problems.push(format!(
                        "{name}/{}: env {} holds a URL with credentials",
                        c.name, e.name
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        pass("credentials come only from Secrets")
    } else {
        fail(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_and_urls_are_recognised() {
        assert!(credential_like("STRIPE_API_KEY"));
        assert!(credential_like("db_password"));
        assert!(!credential_like("CADUCEUS_JWT_KEY_FILE"));
        assert!(!credential_like("CADUCEUS_LOG_LEVEL"));
        assert!(!credential_like("CADUCEUS_ACCESS_TOKEN_TTL_MINUTES"));
        assert!(credential_like("GITHUB_TOKEN"));
        assert!(credential_like("aws-secret-access-key"));
        assert!(has_url_credentials("postgres://u:p@h:5432/db"));
        assert!(!has_url_credentials("https://example.org/a@b"));
        assert!(!has_url_credentials("redis://host:6379/0"));
    }
}
