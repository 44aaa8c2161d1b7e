//! Report printing of `api_bench`: a workload's table row and the PASS/FAIL verdicts.

use crate::load::Stats;

pub fn row(name: &str, conns: u64, s: &Stats) {
    println!(
        "{name:<34} {conns:>5} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8}",
        s.rps(),
        s.pct(0.50),
        s.pct(0.95),
        s.pct(0.99),
        s.errors
    );
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}
