//! flowlens-bench: the benchmark suite of issue 5. One command, run as root from the repository:
//!
//!     cargo run --release -p flowlens-bench -- [--quick]
//!
//! prints one table and writes it to BENCHMARKS.md with the machine, the date and the command:
//! what flowlens costs the host next to the floor (empty programs on the same hooks) and a peer
//! (bpftrace), how fast its userspace is, and how much memory it holds. Flags:
//!
//! - `--quick`: 3 rounds of 1 s per cell, fewer repetitions, a 60 s churn run for RSS flatness
//!   (the full run: 5 rounds of 3 s, a 10-minute churn run).
//! - `--rounds N`, `--secs S`: rounds and seconds per run of the cost-to-host section.
//! - `--flat-secs S`: length of the churn run of the RSS-flatness row.
//! - `--only LIST`: comma-separated sections to run: `host`, `progtime`, `userspace`, `sizing`,
//!   `live`, `dnat`, `memory`.
//! - `--out PATH`: where to write the table (default: BENCHMARKS.md at the repository root);
//!   `--no-write`: print only.
//!
//! `flowlens-bench agent --max-flows N` is the flowlens child the suite starts: the library's
//! collector (`flowlens::plugin::Flowlens`) gathering every second, its lines on stdout, until
//! stdin closes. `flowlens-bench sizing` prints the sizing table of docs/sizing.md (no root).
//! `flowlens-bench profile table | gather FLOWS [CONTAINERS] | encoder` runs one userspace
//! benchmark alone, to profile it (`perf record -g`, `valgrind --tool=callgrind`);
//! `flowlens-bench profile conntrack ENTRIES LOOKUPS` times conntrack lookups alone.
//! `flowlens-bench soak [--secs 3600] [--every 10]` is the hour-long soak run (src/soak.rs), by
//! hand, not part of the table: its summary and chart are in tests/bench/soak/.

mod conntrack;
mod floor;
mod host;
mod live;
mod memory;
mod progtime;
mod report;
mod sizing;
mod soak;
mod stats;
mod userspace;
mod variants;
mod workloads;

use anyhow::{bail, Context, Result};
use report::{Machine, Row};
use std::{
    io::{Read, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use variants::Variant;
use workloads::{Path, Workload};

/// Options of a run.
struct Options {
    quick: bool,
    rounds: usize,
    secs: f64,
    flat_secs: u64,
    sections: Vec<String>,
    out: Option<std::path::PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: flowlens-bench [--quick] [--rounds N] [--secs S] [--flat-secs S] \
         [--only host,progtime,userspace,sizing,live,dnat,memory] [--out PATH | --no-write]"
    );
    std::process::exit(2);
}

fn parse(args: &[String]) -> Options {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        quick,
        rounds: if quick { 3 } else { 5 },
        secs: if quick { 1.0 } else { 3.0 },
        flat_secs: if quick { 60 } else { 600 },
        sections: vec![
            "host".into(),
            "progtime".into(),
            "userspace".into(),
            "sizing".into(),
            "live".into(),
            "dnat".into(),
            "memory".into(),
        ],
        out: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .and_then(std::path::Path::parent)
                .expect("tests/bench is two levels down")
                .join("BENCHMARKS.md"),
        ),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => {}
            "--rounds" => o.rounds = value().parse().unwrap_or_else(|_| usage()),
            "--secs" => o.secs = value().parse().unwrap_or_else(|_| usage()),
            "--flat-secs" => o.flat_secs = value().parse().unwrap_or_else(|_| usage()),
            "--only" => o.sections = value().split(',').map(str::to_string).collect(),
            "--out" => o.out = Some(value().into()),
            "--no-write" => o.out = None,
            _ => usage(),
        }
    }
    if o.rounds == 0 || o.secs <= 0.0 {
        usage();
    }
    o
}

/// The flowlens child: gathers every second until stdin closes.
fn agent(args: &[String]) -> Result<()> {
    let (max_flows, rtt_source): (u32, &str) = match args {
        [flag, n] if flag == "--max-flows" => (n.parse()?, "gather"),
        [flag, n, rflag, r] if flag == "--max-flows" && rflag == "--rtt-source" => {
            (n.parse()?, r.as_str())
        }
        _ => bail!("usage: flowlens-bench agent --max-flows N [--rtt-source gather|segment]"),
    };
    let config = flowlens::config::Config::from_toml(
        &format!(
            "interval_secs = 1\nmax_flows = {max_flows}\nlog_level = \"warn\"\n\
             rtt_source = \"{rtt_source}\"\n"
        ),
        "flowlens-bench",
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let node = config.node().map_err(anyhow::Error::msg)?;
    let mut flowlens = flowlens::plugin::Flowlens::new(config, node);
    let mut out = Vec::with_capacity(1 << 20);
    let mut stdout = std::io::stdout().lock();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        flowlens
            .gather_into(&mut out)
            .map_err(|e| anyhow::anyhow!("gather: {}", e.message))?;
        if stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        next += Duration::from_secs(1);
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn parse_workload(name: &str) -> Result<Workload> {
    Ok(match name {
        "churn" => Workload::Churn,
        "bulk" => Workload::Bulk,
        "requests" => Workload::Requests,
        _ => bail!("workload: churn | bulk | requests"),
    })
}

fn parse_path(name: &str) -> Result<Path> {
    Ok(match name {
        "lo" => Path::Loopback,
        "veth" => Path::Veth,
        _ => bail!("path: lo | veth"),
    })
}

/// One benchmark alone, for `perf record` / `valgrind --tool=callgrind`, or to compare two
/// builds: `cpu` splits the CPU time per operation into the workload's and flowlens's own.
fn profile(args: &[String]) -> Result<()> {
    match args {
        [what] if what == "table" => {
            let (all, apply, refresh) = userspace::table_events(3, 50);
            eprintln!(
                "flow table: {:.2} M events/s; apply (open + close) {:.2} M/s; refresh {:.2} M entries/s",
                all.median / 1e6,
                apply.median / 1e6,
                refresh.median / 1e6
            );
        }
        [what, flows] if what == "gather" => profile_gather(flows.parse()?, 10_000)?,
        [what, flows, containers] if what == "gather" => {
            profile_gather(flows.parse()?, containers.parse()?)?
        }
        [what] if what == "encoder" => {
            let e = userspace::encoder_speed(100_000, 10);
            eprintln!("encoder: {:.2}x the builder", e.ratio.median);
        }
        [what, workload, path] if what == "cpu" => {
            let (w, p) = (parse_workload(workload)?, parse_path(path)?);
            let net = workloads::Net::new()?;
            workloads::run(&net, w, p, 0.3)?;
            let variants = [Variant::Baseline, Variant::Floor, Variant::Flowlens];
            for round in 0..4 {
                for v in variants {
                    let active = variants::Active::start(v)?;
                    let (cpu0, agent0) = (host::self_cpu_secs(), active.cpu_secs());
                    let outcome = workloads::run(&net, w, p, 3.0)?;
                    let (cpu, agent) = (host::self_cpu_secs() - cpu0, active.cpu_secs() - agent0);
                    let per_op = |secs: f64| secs * 1e9 / outcome.ops.max(1) as f64 * w.op_scale();
                    eprintln!(
                        "round {round} {:<9} {:>12} workload CPU {:>7.0} + agent CPU {:>6.0} ns/{}",
                        v.name(),
                        w.show_rate(outcome.rate()),
                        per_op(cpu),
                        per_op(agent),
                        w.op_unit().trim_start_matches("ns/"),
                    );
                }
            }
        }
        [what, n] if what == "hold-sockets" => live::hold(n.parse()?)?,
        [what, entries, lookups] if what == "conntrack" => {
            let c = conntrack::measure(entries.parse()?, lookups.parse()?, 11)?;
            eprintln!(
                "conntrack lookups against {} DNATed entries, batches of {}: hit {:.2} / {:.2} / \
                 {:.2} us, miss {:.2} / {:.2} / {:.2} us (min / median / max of 11)",
                c.entries,
                c.lookups,
                c.hit_us.min,
                c.hit_us.median,
                c.hit_us.max,
                c.miss_us.min,
                c.miss_us.median,
                c.miss_us.max
            );
        }
        [what, n] if what == "hold-listeners" => live::hold_listeners(n.parse()?)?,
        [what, n] if what == "listeners" => {
            let c = live::measure_listeners(n.parse()?, 11)?;
            eprintln!(
                "{} listeners found: iterator {:.2} / {:.2} / {:.2} ms (of which in the program \
                 {:.2} ms), listeners read {:.3} / {:.3} / {:.3} ms (min / median / max of 11)",
                c.found,
                c.iterator_ms[0],
                c.iterator_ms[1],
                c.iterator_ms[2],
                c.program_ms,
                c.take_ms[0],
                c.take_ms[1],
                c.take_ms[2]
            );
        }
        [what, sockets] if what == "sockets" => {
            let c = live::measure(sockets.parse()?, 11)?;
            eprintln!(
                "{} sockets tracked, {} open files on the host, {:.0} visited: iterator {:.1} / \
                 {:.1} / {:.1} ms (of which in the program {:.1} ms), map read {:.1} / {:.1} / \
                 {:.1} ms (min / median / max of 11)",
                c.tracked,
                c.host_files,
                c.files_visited,
                c.iterator_ms[0],
                c.iterator_ms[1],
                c.iterator_ms[2],
                c.program_ms,
                c.snapshot_ms[0],
                c.snapshot_ms[1],
                c.snapshot_ms[2]
            );
        }
        [what, workload, path] if what == "progtime" => {
            let (w, p) = (parse_workload(workload)?, parse_path(path)?);
            let net = workloads::Net::new()?;
            for v in [Variant::Floor, Variant::Flowlens] {
                let t = progtime::measure(&net, v, w, p, 2.0)?;
                eprintln!(
                    "{}: {:.0} {}",
                    v.name(),
                    t.ns_per_op * w.op_scale(),
                    w.op_unit()
                );
                for s in &t.programs {
                    eprintln!(
                        "  {:<16} {:>8.3} runs/op x {:>5.0} ns",
                        s.name, s.runs_per_op, s.ns_per_run
                    );
                }
            }
        }
        _ => bail!(
            "usage: flowlens-bench profile table | gather FLOWS | encoder | sockets N \
             | conntrack ENTRIES LOOKUPS | listeners N | progtime|cpu churn|bulk|requests lo|veth"
        ),
    }
    Ok(())
}

use flowlens_tests::is_root;

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn status(met: bool, detail: String) -> String {
    format!("{}: {detail}", if met { "met" } else { "MISSED" })
}

/// Rows of section 1.
fn host_rows(opts: &Options, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let net = workloads::Net::new()?;
    let peer_missing = variants::peer_unavailable();
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| *v != Variant::Peer || peer_missing.is_none())
        .collect();
    let (cells, foreign, runs) = host::cost(&net, &variants, opts.rounds, opts.secs)?;
    notes.push(format!(
        "Other flowlens collectors (not this suite's) were loaded on the host during {foreign} of \
         {runs} cost-to-host runs: they tax every variant, baseline included."
    ));
    let find = |w, p, v| {
        cells
            .iter()
            .find(|c| c.workload == w && c.path == p && c.variant == v)
    };
    for w in Workload::ALL {
        for p in Path::ALL {
            for v in Variant::ALL {
                let what = format!("1 cost: {} / {}", w.name(), p.name());
                let Some(c) = find(w, p, v) else {
                    rows.push(Row {
                        what,
                        case: v.name().into(),
                        result: "did not run".into(),
                        status: format!(
                            "n/a: {}",
                            peer_missing.clone().unwrap_or_default().replace('\n', " ")
                        ),
                        ..Row::default()
                    });
                    continue;
                };
                let rate = stats::Spread::of(&c.rates).median;
                let mut row = Row {
                    what,
                    case: v.name().into(),
                    result: w.show_rate(rate),
                    ..Row::default()
                };
                if v != Variant::Baseline {
                    row.ratio = format!(
                        "{}; CPU/op {}",
                        c.ratio().show(3),
                        stats::Spread::of(&c.cpu_ratios).show(2)
                    );
                }
                if v == Variant::Flowlens {
                    let floor = find(w, p, Variant::Floor).map_or(0.0, |c| c.cost());
                    let cost = c.cost();
                    // Half the spread of a variant's ratios over the rounds: a cost smaller
                    // than that is not told apart from the machine's noise.
                    let noise_of = |s: stats::Spread| (s.max - s.min) / 2.0;
                    if w == Workload::Bulk {
                        row.target = "throughput loss < 2%".into();
                        let noise = noise_of(c.ratio());
                        let detail = format!("loss {} (noise +-{})", pct(cost), pct(noise));
                        row.status = if cost >= 0.02 && cost < noise {
                            format!("inconclusive: {detail}")
                        } else {
                            status(cost < 0.02, detail)
                        };
                    } else {
                        let peer = find(w, p, Variant::Peer).map(|c| c.cost());
                        row.target = "cost <= 1.5x floor's, < peer's".into();
                        let vs_floor = cost <= 1.5 * floor;
                        let vs_peer = peer.is_none_or(|pc| cost < pc);
                        let f_spread = find(w, p, Variant::Floor).map(|c| c.ratio());
                        let noise = f_spread.map_or(0.0, |s| (s.max - s.min) / 2.0);
                        let mut detail = format!(
                            "cost {} vs floor {} ({})",
                            pct(cost),
                            pct(floor),
                            if floor > 0.0 {
                                format!("{:.1}x", cost / floor)
                            } else {
                                "floor <= 0".into()
                            }
                        );
                        if floor.abs() < noise {
                            let _ = std::fmt::Write::write_fmt(
                                &mut detail,
                                format_args!(", floor within noise (+-{})", pct(noise)),
                            );
                        }
                        let cpu = |v| {
                            find(w, p, v)
                                .map_or(f64::NAN, |c| stats::Spread::of(&c.cpu_ratios).median - 1.0)
                        };
                        let _ = std::fmt::Write::write_fmt(
                            &mut detail,
                            format_args!(
                                "; CPU/op: flowlens {} floor {} peer {}",
                                pct(cpu(Variant::Flowlens)),
                                pct(cpu(Variant::Floor)),
                                pct(cpu(Variant::Peer))
                            ),
                        );
                        match peer {
                            Some(pc) => {
                                let _ = std::fmt::Write::write_fmt(
                                    &mut detail,
                                    format_args!(", peer {}", pct(pc)),
                                );
                            }
                            None => detail.push_str(", no peer"),
                        }
                        // With the floor's cost at or below zero no cost passes the 1.5x
                        // rule; when flowlens's own cost is also inside the noise, the run
                        // cannot tell either way.
                        let own_noise = noise_of(c.ratio());
                        row.status = if !vs_floor
                            && vs_peer
                            && floor.abs() < noise
                            && cost.abs() < own_noise.max(noise)
                        {
                            format!("inconclusive: {detail}, flowlens within noise")
                        } else {
                            status(vs_floor && vs_peer, detail)
                        };
                    }
                }
                rows.push(row);
            }
        }
    }
    Ok(())
}

/// Rows of section 1b: time inside the programs per operation, per variant that has programs.
fn progtime_rows(opts: &Options, rows: &mut Vec<Row>) -> Result<()> {
    let net = workloads::Net::new()?;
    let peer_missing = variants::peer_unavailable();
    let reps = if opts.quick { 1 } else { 3 };
    let secs = opts.secs.min(2.0);
    for w in Workload::ALL {
        let scale = w.op_scale();
        for p in Path::ALL {
            let mut floor_ns = None;
            let mut medians: Vec<(Variant, f64, usize)> = Vec::new();
            for v in [
                Variant::Floor,
                Variant::Flowlens,
                Variant::FlowlensSegment,
                Variant::Peer,
            ] {
                if v == Variant::Peer && peer_missing.is_some() {
                    continue;
                }
                eprintln!("progtime: {} / {} / {}", w.name(), p.name(), v.name());
                let runs: Vec<progtime::ProgTime> = (0..reps)
                    .map(|_| progtime::measure(&net, v, w, p, secs))
                    .collect::<Result<_>>()?;
                let per_op: Vec<f64> = runs.iter().map(|r| r.ns_per_op).collect();
                let spread = stats::Spread::of(&per_op);
                // The programs of the median run.
                let median = runs
                    .iter()
                    .min_by(|a, b| {
                        (a.ns_per_op - spread.median)
                            .abs()
                            .total_cmp(&(b.ns_per_op - spread.median).abs())
                    })
                    .expect("at least one run");
                let programs = median
                    .programs
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {:.2}x{:.0}",
                            s.name,
                            s.runs_per_op * scale,
                            s.ns_per_run
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if v == Variant::Floor {
                    floor_ns = Some(spread.median);
                }
                medians.push((v, spread.median, rows.len()));
                rows.push(Row {
                    what: format!("1b BPF program time / op: {} / {}", w.name(), p.name()),
                    case: v.name().into(),
                    result: format!("{:.0} {}", spread.median * scale, w.op_unit()),
                    ratio: format!(
                        "{:.0} / {:.0} / {:.0}; runs/op x ns/run: {programs}",
                        spread.min * scale,
                        spread.median * scale,
                        spread.max * scale
                    ),
                    status: match (v, floor_ns) {
                        (Variant::Floor, _) | (_, None) => String::new(),
                        (_, Some(f)) => format!(
                            "+{:.0} {} over the floor",
                            (spread.median - f) * scale,
                            w.op_unit()
                        ),
                    },
                    ..Row::default()
                });
            }
            // The same target as section 1, on the kernel's accounting (which the machine's
            // noise moves much less): flowlens's program time against the empty programs' and
            // the peer's.
            let find = |v| medians.iter().find(|m| m.0 == v).map(|m| (m.1, m.2));
            if let (false, Some((ours, at)), Some((floor, _))) = (
                w == Workload::Bulk,
                find(Variant::Flowlens),
                find(Variant::Floor),
            ) {
                let peer = find(Variant::Peer).map(|m| m.0);
                let vs_floor = ours / floor;
                let row = &mut rows[at];
                row.target = "cost <= 1.5x floor's, < peer's".into();
                row.status = status(
                    vs_floor <= 1.5 && peer.is_none_or(|pn| ours < pn),
                    format!(
                        "{} = {:.1}x the floor's time, {}",
                        row.status,
                        vs_floor,
                        peer.map_or("no peer".into(), |pn| format!(
                            "{:.2}x the peer's",
                            ours / pn
                        ))
                    ),
                );
            }
        }
    }
    Ok(())
}

/// `profile gather FLOWS [CONTAINERS]`: one gather row alone.
fn profile_gather(flows: u64, containers: u64) -> Result<()> {
    let g = userspace::gather_encode(flows, containers, 11);
    eprintln!(
        "gather + encode (median of 11): {:.1} ms = refresh {:.1} + first pass {:.1} + containers {:.1} + encode {:.1}; raw encode {:.1}; ratio {:.2}",
        g.total.median, g.refresh.median, g.hosts.median, g.workloads.median, g.encode.median,
        g.raw_encode.median, g.ratio.median
    );
    Ok(())
}

/// Rows of section 2.
fn userspace_rows(opts: &Options, rows: &mut Vec<Row>) {
    let (reps, ticks) = if opts.quick { (3, 20) } else { (7, 50) };
    eprintln!("userspace: flow table events");
    let (all, apply, refresh) = userspace::table_events(reps, ticks);
    let target = 5e6;
    rows.push(Row {
        what: "2 flow table: events/s, one core".into(),
        case: "open + refresh + close (10k opens, 30k-entry refresh, 10k closes per tick)".into(),
        result: format!("{:.2} M/s", all.median / 1e6),
        ratio: format!("{} M/s (spread)", scaled(all, 1e-6, 2)),
        target: ">= 5 M events/s".into(),
        status: status(all.median >= target, format!("{:.2} M/s", all.median / 1e6)),
    });
    rows.push(Row {
        what: "2 flow table: events/s, one core".into(),
        case: "of which open + close (apply)".into(),
        result: format!("{:.2} M/s", apply.median / 1e6),
        ratio: format!("{} M/s (spread)", scaled(apply, 1e-6, 2)),
        ..Row::default()
    });
    rows.push(Row {
        what: "2 flow table: events/s, one core".into(),
        case: "of which refresh entries".into(),
        result: format!("{:.2} M/s", refresh.median / 1e6),
        ratio: format!("{} M/s (spread)", scaled(refresh, 1e-6, 2)),
        ..Row::default()
    });
    for (flows, containers, reps) in [
        (10_000u64, 1_000u64, if opts.quick { 5 } else { 21 }),
        (100_000, 1_000, if opts.quick { 5 } else { 11 }),
        (100_000, 10_000, if opts.quick { 5 } else { 11 }),
        (1_000_000, 10_000, if opts.quick { 3 } else { 5 }),
    ] {
        eprintln!("userspace: gather + encode, {flows} flows in {containers} containers");
        let g = userspace::gather_encode(flows, containers, reps);
        // Issue 20: the whole gather costs at most twice its unavoidable work.
        let target = "ratio <= 2x refresh + raw encode".to_string();
        let st = status(g.ratio.median <= 2.0, format!("{:.2}x", g.ratio.median));
        rows.push(Row {
            what: "2 gather + encode (userspace)".into(),
            case: format!(
                "{} flows, 10k addresses, {} containers",
                human(flows),
                human(containers)
            ),
            result: format!(
                "{:.1} ms = refresh {:.1} + first pass {:.1} + containers {:.1} + encode {:.1}; {} lines; raw encode {:.1} ms",
                g.total.median,
                g.refresh.median,
                g.hosts.median,
                g.workloads.median,
                g.encode.median,
                g.lines,
                g.raw_encode.median,
            ),
            ratio: format!(
                "{} ms (spread); ratio to refresh + raw encode {}x",
                g.total.show(1),
                g.ratio.show(2)
            ),
            target,
            status: st,
        });
    }
    eprintln!("userspace: encoder");
    let e = userspace::encoder_speed(100_000, if opts.quick { 5 } else { 15 });
    rows.push(Row {
        what: "2 encoder: lines/s".into(),
        case: "flowlens Encoder, 100k points".into(),
        result: format!("{:.2} M lines/s", e.ours.median / 1e6),
        ratio: format!(
            "{} x the builder{}",
            e.ratio.show(2),
            if e.identical {
                " (identical bytes)"
            } else {
                " (OUTPUT DIFFERS)"
            }
        ),
        target: ">= influxdb-line-protocol builder".into(),
        status: status(e.ratio.median >= 1.0, format!("{:.2}x", e.ratio.median)),
    });
    rows.push(Row {
        what: "2 encoder: lines/s".into(),
        case: "influxdb-line-protocol 2 LineProtocolBuilder, same points".into(),
        result: format!("{:.2} M lines/s", e.theirs.median / 1e6),
        ratio: "reference".into(),
        ..Row::default()
    });
}

/// Nodes and the interval of the fleet that the sizing rows scale a node's gather to.
const FLEET_NODES: u64 = 1_000;
const FLEET_INTERVAL_SECS: u64 = 10;

/// The node shapes of the sizing rows: (label, shape).
fn sizing_cases() -> Vec<(String, sizing::NodeShape)> {
    let shape = |pods, destinations, max_peers_per_container, ntopng_compat| sizing::NodeShape {
        pods,
        destinations,
        max_peers_per_container,
        ntopng_compat,
    };
    let mut cases = Vec::new();
    for pods in [30, 110, 250] {
        cases.push((
            format!("{pods} pods, 8 destinations per container"),
            shape(pods, 8, 32, false),
        ));
        cases.push((
            format!("{pods} pods, 40 destinations per container (peer budget full)"),
            shape(pods, 40, 32, false),
        ));
    }
    cases.push((
        "110 pods, 8 destinations, max_peers_per_container = 0".into(),
        shape(110, 8, 0, false),
    ));
    cases.push((
        "110 pods, 40 destinations, max_peers_per_container = 8".into(),
        shape(110, 40, 8, false),
    ));
    cases.push((
        "110 pods, 8 destinations, ntopng_compat = true".into(),
        shape(110, 8, 0, true),
    ));
    cases
}

/// A fleet's rates from one node's gather.
fn fleet(o: &sizing::NodeOutput) -> (f64, f64, u64) {
    let per_sec = (FLEET_NODES as f64) / FLEET_INTERVAL_SECS as f64;
    (
        o.lines as f64 * per_sec,
        o.bytes as f64 * per_sec,
        o.lines * FLEET_NODES,
    )
}

/// Rows of section 4: what a node writes per gather, and a fleet of 1,000 nodes at 10 s.
fn sizing_rows(rows: &mut Vec<Row>) {
    eprintln!("sizing");
    for (label, shape) in sizing_cases() {
        let o = sizing::node(shape);
        let (lines_s, bytes_s, series) = fleet(&o);
        rows.push(Row {
            what: "4 sizing: one gather of a node".into(),
            case: format!("{label}: {} containers, {} flows", o.containers, o.flows),
            result: format!(
                "{} lines (series), {:.0} KiB",
                o.lines,
                o.bytes as f64 / 1024.0
            ),
            ratio: format!(
                "1,000 nodes at 10 s: {:.0} lines/s, {:.1} MB/s, {} series",
                lines_s,
                bytes_s / 1e6,
                series
            ),
            ..Row::default()
        });
    }
}

/// `flowlens-bench sizing`: the sizing cases as markdown, with the lines per measurement.
fn print_sizing() {
    println!("| node | containers | flows | lines (series) per gather | bytes per gather | 1,000 nodes at 10 s: lines/s | bytes/s | series |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut detail = Vec::new();
    for (label, shape) in sizing_cases() {
        let o = sizing::node(shape);
        let (lines_s, bytes_s, series) = fleet(&o);
        println!(
            "| {label} | {} | {} | {} | {:.0} KiB | {:.0} | {:.1} MB/s | {} |",
            o.containers,
            o.flows,
            o.lines,
            o.bytes as f64 / 1024.0,
            lines_s,
            bytes_s / 1e6,
            series
        );
        detail.push((label, o));
    }
    // Per measurement, for the first shape of 110 pods (the others differ in counts only).
    for (label, o) in detail.into_iter().skip(2).take(1) {
        println!("\n{label}:");
        for (m, n) in &o.by_measurement {
            println!("- `{m}`: {n}");
        }
    }
}

fn scaled(s: stats::Spread, k: f64, digits: usize) -> String {
    stats::Spread {
        min: s.min * k,
        median: s.median * k,
        max: s.max * k,
        n: s.n,
    }
    .show(digits)
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Rows of section 2b: the kernel side of a gather with N real TCP sockets.
fn live_rows(opts: &Options, rows: &mut Vec<Row>) -> Result<()> {
    let reps = if opts.quick { 5 } else { 11 };
    for sockets in [10_000, 100_000] {
        eprintln!("live: {sockets} sockets");
        let c = live::measure(sockets, reps)?;
        rows.push(Row {
            what: "2b live TCP sockets at a gather (kernel side)".into(),
            case: format!(
                "{} real sockets tracked, {:.0} open files visited",
                human_flows(c.tracked as u64),
                c.files_visited
            ),
            result: format!(
                "iterator {:.1} ms (program {:.1} ms) + map read {:.1} ms",
                c.iterator_ms[1], c.program_ms, c.snapshot_ms[1]
            ),
            ratio: format!(
                "iterator {:.1} / {:.1} / {:.1} ms; map read {:.1} / {:.1} / {:.1} ms (spread)",
                c.iterator_ms[0],
                c.iterator_ms[1],
                c.iterator_ms[2],
                c.snapshot_ms[0],
                c.snapshot_ms[1],
                c.snapshot_ms[2]
            ),
            ..Row::default()
        });
    }
    Ok(())
}

/// Rows of section 2c: a conntrack lookup (the DNAT backends), hit and miss.
fn dnat_rows(opts: &Options, rows: &mut Vec<Row>) -> Result<()> {
    let rounds = if opts.quick { 5 } else { 11 };
    let c = conntrack::measure(10_000, 10_000, rounds)?;
    for (case, s) in [
        ("hit (an entry, DNATed)", &c.hit_us),
        ("miss (no entry)", &c.miss_us),
    ] {
        rows.push(Row {
            what: "2c DNAT backends: conntrack lookup (ctnetlink)".into(),
            case: format!(
                "{case}; {} entries, batches of {}",
                human_flows(c.entries as u64),
                human_flows(c.lookups as u64)
            ),
            result: format!("{:.2} us/lookup", s.median),
            ratio: format!("{:.2} / {:.2} / {:.2} us (spread)", s.min, s.median, s.max),
            ..Row::default()
        });
    }
    Ok(())
}

/// Rows of section 3.
fn memory_rows(opts: &Options, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let net = workloads::Net::new()?;
    eprintln!("memory: 0 / 10k / 100k flows");
    let points = memory::flows_memory(&net)?;
    for (i, p) in points.iter().enumerate() {
        let is_100k = i == 2;
        rows.push(Row {
            what: "3 memory of flowlens".into(),
            case: format!("{} active flows ({})", human_flows(p.flows), p.how),
            result: format!(
                "RSS {}, BPF maps {}",
                mib(p.rss_kib as f64),
                mib(p.maps_bytes as f64 / 1024.0)
            ),
            ratio: format!("whole gather {} ms", p.gather_ms.show(1)),
            target: if is_100k {
                "RSS < 64 MiB at 100k flows".into()
            } else {
                String::new()
            },
            status: if is_100k {
                status(
                    p.rss_kib < 64 * 1024,
                    format!("{} RSS", mib(p.rss_kib as f64)),
                )
            } else {
                String::new()
            },
        });
    }
    if let Some(p) = points.first() {
        notes.push(format!(
            "BPF maps of flowlens (max_flows = {}): {}.",
            memory::MEMORY_MAX_FLOWS,
            p.maps
                .iter()
                .map(|m| format!("{} {}", m.name, mib(m.memlock as f64 / 1024.0)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    eprintln!("memory: churn run of {} s", opts.flat_secs);
    let f = memory::flatness(&net, opts.flat_secs)?;
    let growth = f.late_kib - f.early_kib;
    rows.push(Row {
        what: "3 RSS over a churn run".into(),
        case: format!(
            "{} min of churn, {} connections",
            f.secs as f64 / 60.0,
            f.conns
        ),
        result: format!(
            "{} (2nd quarter) -> {} (last quarter), max {}",
            mib(f.early_kib),
            mib(f.late_kib),
            mib(f.max_kib as f64)
        ),
        ratio: format!("events lost {}", f.events_lost),
        target: "flat over 10 min (growth <= 1 MiB)".into(),
        status: if f.secs < 600 {
            format!("inconclusive (run shorter than 10 min): {growth:+.0} KiB")
        } else {
            status(growth <= 1024.0, format!("{growth:+.0} KiB"))
        },
    });
    let trace: Vec<String> = f
        .samples
        .iter()
        .step_by((f.samples.len() / 20).max(1))
        .map(|(t, r)| format!("{t:.0}s {:.1}", *r as f64 / 1024.0))
        .collect();
    notes.push(format!(
        "RSS (MiB) of the churn run, sampled: {}.",
        trace.join(", ")
    ));
    Ok(())
}

fn human_flows(n: u64) -> String {
    if n >= 1000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

fn run(args: Vec<String>) -> Result<()> {
    if args.first().map(String::as_str) == Some("agent") {
        return agent(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("soak") {
        return soak::soak(&soak::SoakOptions::parse(&args[1..])?);
    }
    if args.first().map(String::as_str) == Some("sizing") {
        print_sizing();
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("profile") {
        return profile(&args[1..]);
    }
    let opts = parse(&args);
    let command = format!(
        "cargo run --release -p flowlens-bench --{}",
        args.iter().map(|a| format!(" {a}")).collect::<String>()
    );
    let machine = Machine::here(command);
    // bpftrace and aya need locked memory on older kernels; harmless on newer ones.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let want = |s: &str| opts.sections.iter().any(|x| x == s);
    let failed = |rows: &mut Vec<Row>, what: &str, e: anyhow::Error| {
        eprintln!("flowlens-bench: {what}: {e:#}");
        rows.push(Row {
            what: what.into(),
            status: format!("FAILED: {e:#}"),
            ..Row::default()
        });
    };
    if want("host") {
        if is_root() {
            if let Err(e) = host_rows(&opts, &mut rows, &mut notes) {
                failed(&mut rows, "1 cost to the host", e);
            }
        } else {
            rows.push(Row {
                what: "1 cost to the host".into(),
                status: "skipped: needs root (eBPF, network namespaces)".into(),
                ..Row::default()
            });
        }
    }
    if want("progtime") {
        if is_root() {
            if let Err(e) = progtime_rows(&opts, &mut rows) {
                failed(&mut rows, "1b time in the BPF programs", e);
            }
        } else {
            rows.push(Row {
                what: "1b time in the BPF programs".into(),
                status: "skipped: needs root (eBPF, network namespaces)".into(),
                ..Row::default()
            });
        }
    }
    if want("userspace") {
        userspace_rows(&opts, &mut rows);
    }
    if want("sizing") {
        sizing_rows(&mut rows);
    }
    if want("live") {
        if is_root() {
            if let Err(e) = live_rows(&opts, &mut rows) {
                failed(&mut rows, "2b live TCP sockets", e);
            }
        } else {
            rows.push(Row {
                what: "2b live TCP sockets".into(),
                status: "skipped: needs root (eBPF)".into(),
                ..Row::default()
            });
        }
    }
    if want("dnat") {
        if is_root() {
            if let Err(e) = dnat_rows(&opts, &mut rows) {
                failed(&mut rows, "2c DNAT backends", e);
            }
        } else {
            rows.push(Row {
                what: "2c DNAT backends".into(),
                status: "skipped: needs root (network namespaces, CAP_NET_ADMIN)".into(),
                ..Row::default()
            });
        }
    }
    if want("memory") {
        if is_root() {
            if let Err(e) = memory_rows(&opts, &mut rows, &mut notes) {
                failed(&mut rows, "3 memory", e);
            }
        } else {
            rows.push(Row {
                what: "3 memory".into(),
                status: "skipped: needs root (eBPF)".into(),
                ..Row::default()
            });
        }
    }
    let table = report::table(&rows);
    println!("{}\n{table}", machine.header());
    if let Some(path) = &opts.out {
        let text = format!(
            "# Benchmarks\n\nWritten by `flowlens-bench` (tests/bench/; see README.md, \
             \"Benchmarks\"). Do not edit by hand: run the command again.\n\n{}\n{table}\n{}\n{}\n{}\n{}",
            machine.header(),
            LEGEND,
            notes.iter().map(|n| format!("- {n}\n")).collect::<String>(),
            SOAK,
            HISTORY
        );
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Earlier runs' numbers that a later change is judged against (tests/bench/history.md, written
/// under the table in BENCHMARKS.md).
const HISTORY: &str = include_str!("../history.md");

/// The latest soak run's summary and chart (`flowlens-bench soak`, written under the table).
const SOAK: &str = concat!(
    "## Soak: an hour of mixed load\n\n![RSS, CPU and open fds of flowlens over the soak run]\
     (tests/bench/soak/soak.png)\n\n",
    include_str!("../soak/soak.md")
);

/// How to read the table (written under it in BENCHMARKS.md).
const LEGEND: &str = "\
How to read it:

- Section 1 runs each workload over loopback (inside a network namespace of its own) and over a
  veth pair between two namespaces, under: nothing attached (baseline); the tracepoints the
  collector hooks on this kernel (`tp_btf/inet_sock_set_state`, `tcp_destroy_sock`,
  `sock_send_length`, `sock_recv_length`) with empty programs (floor); flowlens (the library's
  collector in a child process, gathering every second: its per-gather iterator `fl_refresh` is
  counted too); and the
  peer, bpftrace 0.17 counting the same three events (classic tracepoints: this bpftrace has no
  rawtracepoint, and kprobes/fentry are refused by this kernel) per cgroup and printing its maps
  every second. Every round runs the variants of a cell back to back in a rotating order; the
  ratio is each round's rate over the same round's baseline rate, shown min / median / max over
  the rounds. Cost = 1 - median ratio. CPU/op: CPU time (workload process plus the variant's own
  process) per operation over the baseline's, median.
- Section 1b runs each workload once more per variant with the kernel's BPF run-time accounting
  on (`BPF_ENABLE_STATS`): the time spent inside the programs per operation, and per program how
  many runs an operation costs and how long a run takes (median of the runs). It counts program
  bodies only, not the cost of entering a hook (the floor's, in section 1); the accounting itself
  adds about 70-90 ns to every run (the empty programs' time). It moves much less with the
  machine's noise than throughput (about +-10 % run to run here): it is the number to watch when
  a program changes.
- The machine is shared and noisy (other builds and tests run on its 2 cores): read the spread
  before reading a difference of a few percent.
- Section 2 is single-threaded (pinned to one core), on synthetic values: no kernel involved.
  Gather + encode = `FlowTable::refresh` with a snapshot of every flow + `first_pass` (hosts, then
  cgroups) + the container, pod and peer aggregation + `metrics::encode`, timed in the thread's CPU time
  (the machine is shared). The ratio (issue 20) is that over refresh + the encoder's raw time
  for the same lines (parsed back beforehand, written by one `Encoder` with each series' tags
  set once).
- Section 4 (sizing) counts what one gather of a node writes, through the same code, for pods
  of 1 to 3 containers with the default peer budget, and scales it to 1,000 nodes at a 10 s
  interval (docs/sizing.md).
- Section 2b is the kernel side of a gather with real TCP sockets (loopback connections held by
  child processes, every socket in the collector's map): one run of the `iter/task_file`
  program that reads the live sockets' counters (every open file of the host is visited; the
  program's own time from `BPF_ENABLE_STATS`), then the batched read of the map. Median of 11
  runs, spread min / median / max.
- Section 2c is one conntrack lookup of the DNAT backends (`Conntrack::backend`: a ctnetlink
  GET and its reply, with CAP_NET_ADMIN), from the node's namespace of kube-proxy's shape
  (tests/support/kube_proxy.rs) whose table holds 10k DNATed UDP flows: a hit looks up one of
  them (each must give the backend that answered it), a miss a flow that never was. Time per
  lookup over a batch of 10k, median of 11 batches, spread min / median / max. flowlens makes
  one per new client connection, in the gather thread.
- Section 3 reads the flowlens child's VmRSS and the `memlock` of its BPF map fds; 100k flows are
  10k real loopback sockets plus 90k entries written into its `socks` map (adopted by its next
  gather as pre-existing connections). \"whole gather\" is the child's own `gather_duration_ms`,
  which includes reading the kernel map.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(args) {
        eprintln!("flowlens-bench: {e:#}");
        std::process::exit(1);
    }
}
