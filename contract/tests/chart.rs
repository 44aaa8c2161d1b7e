//! The Helm chart sets exactly the operator's settings of the contract (`operator_env`), and the
//! chart's default values are the contract's defaults.

use caduceus_contract::operator_env as env;
use serde_norway::Value;

fn chart_file(rel: &str) -> String {
    let path = format!(
        "{}/../charts/caduceus-operator/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The names of the `env:` entries of the operator container in the Deployment template.
fn chart_env_names() -> Vec<String> {
    let template = chart_file("templates/deployment.yaml");
    let start = template
        .find("          env:\n")
        .expect("the operator container has an env list");
    template[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("          ports:"))
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_chart_sets_exactly_the_operators_settings() {
    let mut set = chart_env_names();
    set.sort();
    let mut want: Vec<String> = env::ALL.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        set, want,
        "chart env vs caduceus_contract::operator_env::ALL"
    );
}

#[test]
fn the_charts_defaults_are_the_contracts() {
    let values: Value = serde_norway::from_str(&chart_file("values.yaml")).expect("values.yaml");
    let le = &values["leaderElection"];
    assert_eq!(le["enabled"].as_bool(), Some(env::DEFAULT_LEADER_ELECTION));
    assert_eq!(le["leaseName"].as_str(), Some(env::DEFAULT_LEASE_NAME));
    assert_eq!(
        le["leaseDurationSeconds"].as_u64(),
        Some(env::DEFAULT_LEASE_DURATION_SECONDS)
    );
    assert_eq!(values["logLevel"].as_str(), Some(env::DEFAULT_LOG_LEVEL));
    assert_eq!(
        values["concurrency"].as_u64(),
        Some(u64::from(env::DEFAULT_CONCURRENCY))
    );
    assert_eq!(
        values["requeueSeconds"].as_u64(),
        Some(env::DEFAULT_REQUEUE_SECONDS)
    );
    assert_eq!(
        values["metrics"]["port"].as_u64(),
        Some(u64::from(env::DEFAULT_METRICS_PORT))
    );
}
