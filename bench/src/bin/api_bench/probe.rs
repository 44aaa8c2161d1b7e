//! Per-request resource accounting of `api_bench`: CPU seconds of the API, its Postgres
//! backends, Redis, the load generator and the machine (`/proc`), and round trips to Postgres
//! and Redis (TCP data segments, `ss -ti`).

use std::process::Command;

// --- resource accounting (robust to a loaded machine: per request, not per second) ----------

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`.
fn proc_cpu_secs(pid: u32, ticks_per_sec: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name: state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// Busy and total CPU seconds of the whole machine (`/proc/stat`).
fn machine_cpu_secs(ticks_per_sec: f64) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / ticks_per_sec, total / ticks_per_sec))
}

/// One established TCP socket as reported by `ss -tinp`.
struct Sock {
    local_port: u16,
    peer_port: u16,
    pid: Option<u32>,
    data_segs_out: u64,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

/// Established TCP sockets with owner pid and `data_segs_out` (iproute2 `ss`).
fn sockets() -> Vec<Sock> {
    let Ok(out) = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut socks: Vec<Sock> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let (Some(last), Some(v)) = (
                socks.last_mut(),
                line.split_whitespace()
                    .find_map(|t| t.strip_prefix("data_segs_out:")),
            ) {
                last.data_segs_out = v.parse().unwrap_or(0);
            }
            continue;
        }
        let addrs: Vec<&str> = line
            .split_whitespace()
            .filter(|t| t.contains(':') && !t.starts_with("users:"))
            .collect();
        let (Some(local), Some(peer)) = (
            addrs.first().and_then(|a| port_of(a)),
            addrs.get(1).and_then(|a| port_of(a)),
        ) else {
            continue;
        };
        let pid = line
            .split("pid=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        socks.push(Sock {
            local_port: local,
            peer_port: peer,
            pid,
            data_segs_out: 0,
        });
    }
    socks
}

/// What the resource snapshots look at.
#[derive(Clone, Copy)]
pub struct Probe {
    pub api_pid: u32,
    pub db_port: u16,
    pub redis_port: u16,
    pub ticks_per_sec: f64,
}

/// Cumulative counters at one instant.
pub struct Snapshot {
    api_cpu: f64,
    bench_cpu: f64,
    /// CPU of the Postgres backends serving the API, by pid.
    pg_cpu: Vec<(u32, f64)>,
    redis_cpu: f64,
    machine: (f64, f64),
    /// TCP data segments Postgres / Redis sent to the API: ≈ round trips (a server flushes its
    /// answer once per request batch; counting the client side would count sqlx's separate
    /// `Sync` write twice).
    db_segs: u64,
    redis_segs: u64,
}

impl Probe {
    pub fn snapshot(&self) -> Snapshot {
        let socks = sockets();
        let api_ports = |server_port: u16| -> Vec<u16> {
            socks
                .iter()
                .filter(|s| s.pid == Some(self.api_pid) && s.peer_port == server_port)
                .map(|s| s.local_port)
                .collect()
        };
        // the server ends of the API's connections
        let server_side = |server_port: u16| -> Vec<&Sock> {
            let ports = api_ports(server_port);
            socks
                .iter()
                .filter(|s| s.local_port == server_port && ports.contains(&s.peer_port))
                .collect()
        };
        let pg = server_side(self.db_port);
        let redis = server_side(self.redis_port);
        let pids = |side: &[&Sock]| -> Vec<u32> {
            let mut p: Vec<u32> = side.iter().filter_map(|s| s.pid).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        let cpu = |pid: u32| proc_cpu_secs(pid, self.ticks_per_sec).unwrap_or(0.0);
        Snapshot {
            api_cpu: cpu(self.api_pid),
            bench_cpu: cpu(std::process::id()),
            pg_cpu: pids(&pg).iter().map(|&p| (p, cpu(p))).collect(),
            redis_cpu: pids(&redis).iter().map(|&p| cpu(p)).sum(),
            machine: machine_cpu_secs(self.ticks_per_sec).unwrap_or((0.0, 0.0)),
            db_segs: pg.iter().map(|s| s.data_segs_out).sum(),
            redis_segs: redis.iter().map(|s| s.data_segs_out).sum(),
        }
    }
}

/// Resources used per request between two snapshots.
pub struct Usage {
    pub api_cpu_ms: f64,
    pub pg_cpu_ms: f64,
    pub redis_cpu_ms: f64,
    pub bench_cpu_ms: f64,
    pub machine_busy_ms: f64,
    pub machine_util: f64,
    pub db_round_trips: f64,
    pub redis_round_trips: f64,
}

pub fn usage(a: &Snapshot, b: &Snapshot, requests: u64) -> Option<Usage> {
    if requests == 0 {
        return None;
    }
    let n = requests as f64;
    // backends present in both snapshots (connections opened in between are not counted)
    let pg: f64 = b
        .pg_cpu
        .iter()
        .filter_map(|(pid, t)| {
            a.pg_cpu
                .iter()
                .find(|(p, _)| p == pid)
                .map(|(_, t0)| t - t0)
        })
        .sum();
    let busy = b.machine.0 - a.machine.0;
    let total = b.machine.1 - a.machine.1;
    Some(Usage {
        api_cpu_ms: (b.api_cpu - a.api_cpu) * 1000.0 / n,
        pg_cpu_ms: pg * 1000.0 / n,
        redis_cpu_ms: (b.redis_cpu - a.redis_cpu) * 1000.0 / n,
        bench_cpu_ms: (b.bench_cpu - a.bench_cpu) * 1000.0 / n,
        machine_busy_ms: busy * 1000.0 / n,
        machine_util: if total > 0.0 { busy / total } else { 0.0 },
        db_round_trips: b.db_segs.saturating_sub(a.db_segs) as f64 / n,
        redis_round_trips: b.redis_segs.saturating_sub(a.redis_segs) as f64 / n,
    })
}

pub fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn url_port(url: &str, default: u16) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(default)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
