//! Time spent inside the BPF programs per workload operation, from the kernel's own accounting
//! (`BPF_ENABLE_STATS`: `run_time_ns` and `run_cnt` of every program). Unlike throughput ratios
//! this moves little with the machine's noise, so it is where a change to a program shows.
//! It counts the programs' bodies only: the cost of entering a hook at all is the floor's, seen
//! in section 1. Run in a pass of its own: accounting adds two clock reads to every run.

use crate::{
    variants::{Active, Variant},
    workloads::{self, Net, Path, Workload},
};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashSet};

/// One program's share of a run.
#[derive(Debug, Clone)]
pub struct ProgShare {
    /// The program's name (the kernel keeps 15 bytes of it).
    pub name: String,
    /// Runs per workload operation.
    pub runs_per_op: f64,
    /// Mean time per run, ns.
    pub ns_per_run: f64,
}

/// The programs of one variant during one workload run.
#[derive(Debug, Clone)]
pub struct ProgTime {
    /// Time in all its programs per operation, ns.
    pub ns_per_op: f64,
    /// Per program, by name.
    pub programs: Vec<ProgShare>,
}

/// (run_time_ns, run_cnt, name) of every loaded program not in `skip`, by id.
fn counters(skip: &HashSet<u32>) -> BTreeMap<u32, (u64, u64, String)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !skip.contains(&p.id()))
        .map(|p| {
            let name = p.name_as_str().unwrap_or("?").to_string();
            (
                p.id(),
                (p.run_time().as_nanos() as u64, p.run_count(), name),
            )
        })
        .collect()
}

/// Measures `variant`'s programs over one `secs`-long run of `workload` on `path`.
pub fn measure(
    net: &Net,
    variant: Variant,
    workload: Workload,
    path: Path,
    secs: f64,
) -> Result<ProgTime> {
    let before: HashSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect();
    let active = Active::start(variant).with_context(|| format!("attach {}", variant.name()))?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (needs CAP_SYS_ADMIN)")?;
    let start = counters(&before);
    let outcome = workloads::run(net, workload, path, secs)?;
    let end = counters(&before);
    drop(stats);
    drop(active);
    let ops = outcome.ops.max(1) as f64;
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, (time, runs, name)) in &end {
        let (t0, r0) = start.get(id).map_or((0, 0), |(t, r, _)| (*t, *r));
        let e = by_name.entry(name.clone()).or_default();
        e.0 += time.saturating_sub(t0);
        e.1 += runs.saturating_sub(r0);
    }
    let programs: Vec<ProgShare> = by_name
        .into_iter()
        .filter(|(_, (_, runs))| *runs > 0)
        .map(|(name, (time, runs))| ProgShare {
            name,
            runs_per_op: runs as f64 / ops,
            ns_per_run: time as f64 / runs as f64,
        })
        .collect();
    let ns_per_op = programs.iter().map(|p| p.runs_per_op * p.ns_per_run).sum();
    Ok(ProgTime {
        ns_per_op,
        programs,
    })
}
