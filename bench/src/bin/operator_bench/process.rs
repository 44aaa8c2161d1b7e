//! The operator as a separate process: locating its binary, its RSS and CPU time, stopping
//! it, its metrics and its log.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;
use tokio::process::Child;

pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("binary has no directory"))?;
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        bail!(
            "{} not found; build it with `cargo build --release -p caduceus-operator` or pass --operator-bin",
            path.display()
        )
    }
}

/// (VmRSS, VmHWM) in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| anyhow!("{key} missing in /proc/{pid}/status"))?;
        let kb: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("malformed {key} line"))?
            .parse()
            .context("parsing kB")?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds (user + system) the process used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<f64>()
            .context("parsing /proc/PID/stat")
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state.
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// SIGTERM to the process this bench started, then SIGKILL after 10 s.
pub async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The operator's own counters from its /metrics (reconciles by result, errors, drift).
pub async fn operator_metrics(port: u16) -> anyhow::Result<String> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .context("reading the operator's /metrics")?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("caduceus_operator_reconciles_total")
                || l.starts_with("caduceus_operator_reconcile_errors_total")
                || l.starts_with("caduceus_operator_drift_corrections_total")
                || l.starts_with("caduceus_operator_reconcile_duration_seconds_count")
                || l.starts_with("caduceus_operator_reconcile_duration_seconds_sum")
        })
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

/// The operator's JSON log lines counted by level, and its most frequent messages (with the
/// error when there is one).
pub fn summarize_log(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            *levels.entry("unparsed".into()).or_default() += 1;
            continue;
        };
        *levels
            .entry(v["level"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let fields = &v["fields"];
        let mut message = fields["message"].as_str().unwrap_or_default().to_string();
        if let Some(e) = fields["error"].as_str() {
            // Object names vary per platform; the first 160 characters group them well enough.
            message = format!("{message}: {}", e.chars().take(160).collect::<String>());
        }
        *messages.entry(message).or_default() += 1;
    }
    if levels.is_empty() {
        return Ok("empty".into());
    }
    let mut top: Vec<(String, usize)> = messages.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(format!(
        "{}; most frequent: {}",
        levels
            .iter()
            .map(|(l, n)| format!("{n} {l}"))
            .collect::<Vec<_>>()
            .join(", "),
        top.iter()
            .take(3)
            .map(|(m, n)| format!("{n}× {m}"))
            .collect::<Vec<_>>()
            .join(" | ")
    ))
}
