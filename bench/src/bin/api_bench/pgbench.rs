//! The `pgbench` baseline of `api_bench`: `pgbench -S` (select-only) and `pgbench` (TPC-B) on
//! the same Postgres in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Result};

use crate::setup::run;

pub fn find_pgbench() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PGBENCH") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pgbench"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/pgbench"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow!("pgbench not found (Debian: postgresql-15 / postgresql-contrib; or set PGBENCH)")
    })
}

/// One pgbench result.
pub struct PgbenchResult {
    pub tps: f64,
    pub latency_avg_ms: f64,
}

fn parse_pgbench(out: &str) -> Result<PgbenchResult> {
    let num_after = |prefix: &str| -> Option<f64> {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Ok(PgbenchResult {
        tps: num_after("tps").ok_or_else(|| anyhow!("no tps in pgbench output"))?,
        latency_avg_ms: num_after("latency average").unwrap_or(f64::NAN),
    })
}

pub fn pgbench(
    bin: &Path,
    url: &str,
    select_only: bool,
    conns: u64,
    secs: u64,
) -> Result<PgbenchResult> {
    let mut cmd = Command::new(bin);
    if select_only {
        cmd.arg("-S");
    }
    cmd.args([
        "-n",
        "-c",
        &conns.to_string(),
        "-j",
        "2",
        "-T",
        &secs.to_string(),
        url,
    ]);
    parse_pgbench(&run(&mut cmd, "pgbench")?)
}
