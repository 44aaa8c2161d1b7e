//! docs/contracts.md is tested against the contract: every setting, its default, the self-report
//! path and every condition type are documented there, and every `CADUCEUS_*` setting of the
//! API's environment table exists in the contract.

use caduceus_contract::{conditions, self_report, settings};

fn contracts_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contracts.md");
    std::fs::read_to_string(path).expect("docs/contracts.md")
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let doc = contracts_md();
    for name in settings::ALL {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/contracts.md"
        );
    }
    for n in settings::NUMBERS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", n.name)))
            .unwrap_or_else(|| panic!("{} has no row in the environment table", n.name));
        assert!(
            row.contains(&format!("| `{}` |", n.default)),
            "{}: the documented default is not {}: {row}",
            n.name,
            n.default
        );
    }
}

#[test]
fn every_documented_setting_is_in_the_contract() {
    let doc = contracts_md();
    for line in doc.lines().filter(|l| l.starts_with("| `CADUCEUS_")) {
        let name = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            settings::ALL.contains(&name),
            "docs/contracts.md documents {name}, which the contract does not define"
        );
    }
}

fn repo_file(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

const CONDITION_TYPES: [&str; 12] = [
    conditions::READY,
    conditions::PROGRESSING,
    conditions::DEGRADED,
    conditions::DATABASE_READY,
    conditions::CACHE_READY,
    conditions::API_SERVER_READY,
    conditions::NETWORK_POLICY_READY,
    conditions::MONITORING_READY,
    conditions::BACKUP_HEALTHY,
    conditions::COMPLIANT,
    conditions::RECONCILIATION_PAUSED,
    conditions::STOPPED,
];

#[test]
fn the_self_report_path_is_documented() {
    assert!(contracts_md().contains(self_report::SELF_REPORT_PATH));
}

/// The operator's conditions table (docs/operator.md, what clients read) has a row for every
/// condition type.
#[test]
fn every_condition_type_is_documented() {
    let operator_md = repo_file("docs/operator.md");
    for c in CONDITION_TYPES {
        let row = format!("| `{c}` |");
        assert!(
            operator_md.contains(&row),
            "condition {c} has no row in docs/operator.md"
        );
    }
}

/// The ArgoCD health check reads conditions by type: only types the operator writes.
#[test]
fn the_argocd_health_check_reads_only_contract_conditions() {
    let lua = repo_file(
        "examples/argocd/resource-customizations/caduceus.io/HealthcarePlatform/health.lua",
    );
    let read: Vec<&str> = lua
        .split("condition(conditions, \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!read.is_empty(), "the health check reads no condition");
    for c in read {
        assert!(
            CONDITION_TYPES.contains(&c),
            "health.lua reads condition {c}"
        );
    }
}
