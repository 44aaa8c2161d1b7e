//! The field checks `check_spec` shares between sections: secret refs, image repositories and
//! tags, resource requests and limits, quantities, external CIDRs and the backup schedule. Each
//! records its failures in the `Checker`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{BackupImageSpec, ResourcesSpec, DEFAULT_BACKUP_IMAGE};

use super::syntax::{is_cidr, parse_quantity};
use super::Checker;

/// A standard 5-field cron expression (what a CronJob's `schedule` and the backup status's
/// next-run computation read), checked by the `croner` parser: fields in range, valid names and
/// steps; no seconds, no year.
pub(super) fn valid_schedule(schedule: &str) -> bool {
    use croner::parser::{CronParser, Seconds, Year};
    schedule.split_whitespace().count() == 5
        && CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(schedule)
            .is_ok()
}

/// `spec.<section>.secretRef` is given exactly when `<section>.provider` is External.
pub(super) fn check_secret_ref(c: &mut Checker, section: &str, external: bool, given: bool) {
    if external && !given {
        c.fail(
            format!("spec.{section}.secretRef"),
            format!("is required when {section}.provider is External"),
        );
    } else if !external && given {
        c.fail(
            format!("spec.{section}.secretRef"),
            format!("is only allowed when {section}.provider is External"),
        );
    }
}

/// An image repository field (`path`): without tag or digest (a registry port is fine), as the
/// CRD's pattern and CEL rule require, so the `repository:tag` the operator builds is valid.
/// `example` is a valid value for the message, `tag_hint` says where the tag comes from.
pub(super) fn check_repository(
    c: &mut Checker,
    path: &str,
    repo: &str,
    example: &str,
    tag_hint: &str,
) {
    let last_segment = repo.rsplit('/').next().unwrap_or_default();
    if repo.is_empty()
        || repo.len() > 255
        || !repo.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        || !repo.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        || repo.contains("//")
        || !repo
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-/:@".contains(ch))
    {
        c.fail(
            path,
            format!(
                "must be an image repository such as {example} (lowercase, no whitespace, at most 255 characters)"
            ),
        );
    } else if repo.contains('@') {
        c.fail(path, format!("must not contain a digest; {tag_hint}"));
    } else if last_segment.contains(':') {
        c.fail(path, format!("must not contain a tag; {tag_hint}"));
    }
}

/// `spec.backup.image`: a repository without tag or digest (a registry port is fine) and a pinned
/// tag (not `latest`), so the image reference the operator builds is valid.
pub(super) fn check_backup_image(c: &mut Checker, image: &BackupImageSpec) {
    check_repository(
        c,
        "spec.backup.image.repository",
        &image.repository,
        DEFAULT_BACKUP_IMAGE,
        "use backup.image.tag",
    );
    if let Some(tag) = &image.tag {
        let path = "spec.backup.image.tag";
        if tag == "latest" {
            c.fail(
                path,
                "the `latest` tag is not allowed; pin a version such as 0.1.0-pg16",
            );
        } else if tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '-')
            || tag.starts_with(['.', '-'])
        {
            c.fail(
                path,
                "is not a valid image tag (letters, digits, `_`, `.`, `-`; at most 128), e.g. 0.1.0-pg16",
            );
        }
    }
}

pub(super) fn check_resources(c: &mut Checker, path: &str, r: &ResourcesSpec) {
    let pairs = [
        ("cpu", &r.requests.cpu, &r.limits.cpu),
        ("memory", &r.requests.memory, &r.limits.memory),
    ];
    for (kind, request, limit) in pairs {
        let req = check_quantity(c, &format!("{path}.requests.{kind}"), request, true);
        let lim = check_quantity(c, &format!("{path}.limits.{kind}"), limit, true);
        if let (Some(req), Some(lim)) = (req, lim) {
            if req > lim {
                c.fail(
                    format!("{path}.requests.{kind}"),
                    format!(
                        "must not exceed limits.{kind} ({} > {})",
                        request.0, limit.0
                    ),
                );
            }
        }
    }
}

pub(super) fn check_quantity(
    c: &mut Checker,
    path: &str,
    q: &Quantity,
    positive: bool,
) -> Option<f64> {
    match parse_quantity(&q.0) {
        Some(v) if !positive || v > 0.0 => Some(v),
        Some(_) => {
            c.fail(path, "must be greater than zero");
            None
        }
        None => {
            c.fail(
                path,
                format!(
                    "`{}` is not a Kubernetes quantity (e.g. 500m, 2, 256Mi, 10Gi)",
                    q.0
                ),
            );
            None
        }
    }
}
/// CIDRs the API may reach an external service in: each a CIDR, and at least one when `required`
/// (an External provider with network policies: an empty list would allow any address).
pub(super) fn check_external_cidrs(
    c: &mut Checker,
    field: &str,
    cidrs: &[String],
    required: bool,
    what: &str,
) {
    if required && cidrs.is_empty() {
        c.fail(
            field,
            format!("must list the CIDRs of {what} the API may reach (e.g. [10.40.0.0/16]); write [0.0.0.0/0, \"::/0\"] to allow any address explicitly"),
        );
    }
    for (i, cidr) in cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            c.fail(format!("{field}[{i}]"), "must be a CIDR such as 10.0.0.0/8");
        }
    }
}
