//! Access-control rules: `session-idle-timeout` and `access-token-ttl` (`minutes_at_most`),
//! `mfa-required` (with [`HIPAA_MFA_ROLES`]) and `rate-limiting`.

use caduceus_contract::settings;

use super::super::self_report::SelfReport;
use super::evidence::{api_setting, env_overridden, int_setting, self_report};
use super::{fail, pass, Check, Inputs, MAX_LOGIN_ATTEMPTS_PER_MINUTE, MAX_SESSION_MINUTES};

pub(super) fn minutes_at_most(
    i: &Inputs<'_>,
    env: &str,
    what: &str,
    reported: impl Fn(&SelfReport) -> i64,
) -> Check {
    let configured = match int_setting(i.children, env) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let max = i64::from(MAX_SESSION_MINUTES);
    if configured > max || configured < 1 {
        return fail(format!("{what} is {configured} min (must be 1..={max})"));
    }
    if let Ok(r) = self_report(i) {
        let live = reported(r);
        if live > max || live < 1 {
            return fail(format!(
                "the API reports an {what} of {live} min (must be 1..={max})"
            ));
        }
    }
    pass(format!("{what} is {configured} min"))
}

/// Roles the HIPAA profile requires MFA of.
pub const HIPAA_MFA_ROLES: [&str; 2] = ["admin", "physician"];

pub(super) fn mfa_required(i: &Inputs<'_>) -> Check {
    let hipaa = i
        .platform
        .spec
        .compliance
        .profiles
        .contains(&crate::crd::ComplianceProfile::HIPAA);
    let Some(policy) = api_setting(i.children, settings::MFA) else {
        return fail(format!("{} is not set", settings::MFA));
    };
    let roles = api_setting(i.children, settings::MFA_REQUIRED_ROLES).unwrap_or_default();
    let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
    match policy.trim() {
        "disabled" => fail("multi-factor authentication is disabled"),
        "optional" if hipaa => fail(
            "multi-factor authentication is optional; the HIPAA profile requires it of admin and physician accounts",
        ),
        "optional" => pass("multi-factor authentication is offered to every account (optional)"),
        "required" => {
            let missing: Vec<&str> = HIPAA_MFA_ROLES
                .into_iter()
                .filter(|r| !roles.contains(r))
                .collect();
            if hipaa && !missing.is_empty() {
                fail(format!(
                    "multi-factor authentication is not required of: {}",
                    missing.join(", ")
                ))
            } else {
                pass(format!(
                    "multi-factor authentication required of: {}",
                    roles.join(", ")
                ))
            }
        }
        _ => fail(format!(
            "{} is not one of {}",
            settings::MFA,
            settings::MFA_POLICIES.join(", ")
        )),
    }
}

pub(super) fn rate_limiting(i: &Inputs<'_>) -> Check {
    let rpm = match int_setting(i.children, settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let login = match int_setting(i.children, settings::RATE_LIMIT_LOGIN_PER_MINUTE.name) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let overridden: Vec<&str> = [
        settings::RATE_LIMIT_REQUESTS_PER_MINUTE.name,
        settings::RATE_LIMIT_LOGIN_PER_MINUTE.name,
    ]
    .into_iter()
    .filter(|n| env_overridden(i.children, n))
    .collect();
    if !overridden.is_empty() {
        return fail(format!(
            "apiServer.env overrides the rate limits: {}",
            overridden.join(", ")
        ));
    }
    if rpm < 1 || login < 1 {
        return fail("rate limits must be positive");
    }
    if login > i64::from(MAX_LOGIN_ATTEMPTS_PER_MINUTE) {
        return fail(format!(
            "{login} login attempts per minute allowed (at most {MAX_LOGIN_ATTEMPTS_PER_MINUTE})"
        ));
    }
    if let Ok(r) = self_report(i) {
        if !r.rate_limit.enabled {
            return fail("the API reports rate limiting disabled");
        }
        return pass(format!(
            "{rpm} requests and {login} logins per minute, enforced by the {} backend",
            r.rate_limit.backend
        ));
    }
    pass(format!(
        "{rpm} requests and {login} logins per minute configured"
    ))
}
