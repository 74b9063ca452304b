//! Cost to the host: every workload on every path under every variant, interleaved (each round
//! runs the variants of a cell back to back, in an order that rotates from round to round) and
//! repeated, so that each variant is compared with the baseline of its own round.

use crate::{
    stats::Spread,
    variants::{Active, Variant},
    workloads::{self, Net, Path, Workload},
};
use anyhow::{Context, Result};

/// The results of one (workload, path, variant) over the rounds.
pub struct Cell {
    /// The workload.
    pub workload: Workload,
    /// The path.
    pub path: Path,
    /// The variant.
    pub variant: Variant,
    /// Rate of each round.
    pub rates: Vec<f64>,
    /// Rate / the same round's baseline rate.
    pub ratios: Vec<f64>,
    /// CPU seconds per operation (workload process + the variant's own process) / the baseline's.
    pub cpu_ratios: Vec<f64>,
}

impl Cell {
    /// Throughput ratio to the baseline.
    pub fn ratio(&self) -> Spread {
        Spread::of(&self.ratios)
    }

    /// Cost: the share of the baseline's throughput lost (1 - ratio), median.
    pub fn cost(&self) -> f64 {
        1.0 - self.ratio().median
    }
}

/// How many `fl_send` programs (flowlens's real send probe) are loaded on the host: other
/// flowlens instances (tests, other users) run on shared machines and tax every variant.
pub fn collectors_loaded() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("fl_send"))
        .count()
}

/// CPU time (user + system) of this process, all threads, in seconds.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the rounds. `variants` lists those that can run here (the baseline first). Also returns
/// how many runs had another flowlens collector loaded on the host, of how many.
pub fn cost(
    net: &Net,
    variants: &[Variant],
    rounds: usize,
    secs: f64,
) -> Result<(Vec<Cell>, usize, usize)> {
    let (mut foreign, mut runs) = (0, 0);
    let cells: Vec<(Workload, Path)> = Workload::ALL
        .iter()
        .flat_map(|w| Path::ALL.iter().map(move |p| (*w, *p)))
        .collect();
    // Warm-up: every cell once, unmeasured.
    for &(w, p) in &cells {
        workloads::run(net, w, p, 0.3)?;
    }
    let mut out: Vec<Cell> = cells
        .iter()
        .flat_map(|&(workload, path)| {
            variants.iter().map(move |&variant| Cell {
                workload,
                path,
                variant,
                rates: Vec::new(),
                ratios: Vec::new(),
                cpu_ratios: Vec::new(),
            })
        })
        .collect();
    for round in 0..rounds {
        for (ci, &(w, p)) in cells.iter().enumerate() {
            let mut order: Vec<usize> = (0..variants.len()).collect();
            order.rotate_left((round + ci) % variants.len());
            let mut results = vec![(0.0, 0.0); variants.len()];
            for vi in order {
                let variant = variants[vi];
                let active = Active::start(variant)
                    .with_context(|| format!("cannot attach {}", variant.name()))?;
                let (cpu0, vcpu0) = (self_cpu_secs(), active.cpu_secs());
                let ours = usize::from(matches!(
                    variant,
                    Variant::Flowlens | Variant::FlowlensSegment
                ));
                runs += 1;
                if collectors_loaded() > ours {
                    foreign += 1;
                }
                let outcome = workloads::run(net, w, p, secs)
                    .with_context(|| format!("{} over {} failed", w.name(), p.name()))?;
                let cpu = self_cpu_secs() - cpu0 + active.cpu_secs() - vcpu0;
                drop(active);
                results[vi] = (outcome.rate(), cpu / outcome.ops.max(1) as f64);
            }
            eprintln!(
                "round {}/{rounds} {:<26} {:<8} {}",
                round + 1,
                w.name(),
                p.name(),
                variants
                    .iter()
                    .zip(&results)
                    .map(|(v, r)| format!("{}={}", v.name(), w.show_rate(r.0)))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let (base_rate, base_cpu) = results[0];
            for (vi, &(rate, cpu)) in results.iter().enumerate() {
                let cell = out
                    .iter_mut()
                    .find(|c| c.workload == w && c.path == p && c.variant == variants[vi])
                    .expect("every cell exists");
                cell.rates.push(rate);
                cell.ratios.push(rate / base_rate);
                cell.cpu_ratios.push(cpu / base_cpu);
            }
        }
    }
    Ok((out, foreign, runs))
}
