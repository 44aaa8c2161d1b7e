//! Pure format predicates (DNS labels, host names, versions, CIDRs, trusted-proxy entries) and
//! the Kubernetes quantity parser.

/// Parses a Kubernetes quantity to a plain number (cores or bytes).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    Some(value * factor)
}

pub(super) fn is_dns1035_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|ch: char| ch.is_ascii_lowercase())
        && s.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

pub(super) fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && s.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

pub(super) fn is_hostname(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns1123_label)
}

/// `16`, `16.6`, `7.4.2`; `max_parts` 0 means up to three parts.
pub(super) fn is_version(s: &str, major_digits: usize) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return false;
    }
    if major_digits > 0 && (parts[0].len() != major_digits || parts.len() > 2) {
        return false;
    }
    parts
        .iter()
        .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|ch| ch.is_ascii_digit()))
}
/// A trusted-proxy entry as the API parses `CADUCEUS_TRUSTED_PROXIES` (a CIDR, or an address
/// meaning that one host), without the surrounding whitespace the comma-separated list would
/// tolerate (the CRD's CEL `isCIDR`/`isIP` does not).
pub(super) fn is_proxy(s: &str) -> bool {
    s.len() <= 64
        && s.trim() == s
        && (s.parse::<ipnet::IpNet>().is_ok() || s.parse::<std::net::IpAddr>().is_ok())
}

pub(super) fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("1Gb"), None);
    }

    #[test]
    fn cidrs_and_versions() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(is_version("16.6", 2));
        assert!(is_version("16", 2));
        assert!(!is_version("9.6", 2));
        assert!(is_version("7.4.2", 0));
    }
}
