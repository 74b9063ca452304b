//! The soak run: the real `flowlens telegraf` process under an hour of mixed load (connection
//! churn, bulk transfers, real containerd pods and stand-in pods created and removed, a measured
//! pod's churn, bulk and UDP read with peeks, as a stand-in and as a real pod), its RSS, CPU
//! and open fds sampled at every gather, written as a CSV, a PNG chart and a summary table; at
//! the end, each measured pod's totals against its own count.
//!
//!     cargo build --release --workspace
//!     cargo run --release -p flowlens-bench -- soak [--secs 3600] [--every 10]
//!
//! The chart is drawn by tests/bench/soak_chart.py (matplotlib). Not part of CI: it runs by hand.

use crate::{
    memory::rss_kib,
    variants::{field, proc_cpu_secs},
    workloads::{self, Net, Path, Workload},
};
use anyhow::{bail, Context, Result};
use flowlens_tests::{
    cgroup2_root,
    runtimes::{Pod, RealRuntimes},
    session::batches,
    standins::StandIns,
    truth::{mkfifo, Driver, Moved, CLIENT, SERVER},
    NetnsPair, TempDir,
};
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// What a run is asked to do.
pub struct SoakOptions {
    /// Length of the run.
    pub secs: u64,
    /// Seconds between gathers (Telegraf's `interval`); every gather is a sample.
    pub every: u64,
    /// Where the CSV, the chart and the summary go.
    pub out_dir: PathBuf,
}

impl SoakOptions {
    /// Parses `soak [--secs S] [--every S] [--out DIR]`.
    pub fn parse(args: &[String]) -> Result<SoakOptions> {
        let mut o = SoakOptions {
            secs: 3600,
            every: 10,
            out_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("soak"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let value = it.next().with_context(|| format!("{a} needs a value"))?;
            match a.as_str() {
                "--secs" => o.secs = value.parse()?,
                "--every" => o.every = value.parse()?,
                "--out" => o.out_dir = value.into(),
                _ => bail!("usage: flowlens-bench soak [--secs S] [--every S] [--out DIR]"),
            }
        }
        if o.every == 0 || o.secs < 4 * o.every {
            bail!("--secs must be at least 4 gathers (--every {})", o.every);
        }
        Ok(o)
    }
}

/// One sample, taken right after a gather.
struct Sample {
    secs: f64,
    rss_kib: u64,
    /// CPU used since the previous sample, in percent of one core.
    cpu_pct: f64,
    fds: u64,
    lines: u64,
    flows_active: u64,
    containers_tracked: u64,
    metadata_cache_entries: u64,
    events_lost: u64,
    conns: u64,
    pods: u64,
}

const CSV_HEADER: &str = "secs,rss_kib,cpu_pct,fds,lines,flows_active,containers_tracked,\
                          metadata_cache_entries,events_lost,conns,pods";

/// The config of the soaked process: container series expire within the run, so their whole
/// lifetime (created, active, idle, expired) repeats many times.
const CONFIG: &str = "log_level = \"warn\"\nseries_ttl_secs = 60\nudp_idle_timeout_secs = 30\n";

/// A stand-in pod's one container: a server and a client on its own loopback, 20 connections
/// with 10 kB each way, then idle until removed.
const POD_PROGRAM: &str = r#"
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print("ready", flush=True)
for _ in range(20):
    c = socket.create_connection(s.getsockname())
    a, _ = s.accept()
    c.sendall(b"x" * 10000)
    got = 0
    while got < 10000:
        got += len(a.recv(65536))
    a.sendall(b"y" * 10000)
    got = 0
    while got < 10000:
        got += len(c.recv(65536))
    c.close()
    a.close()
time.sleep(100000)
"#;

/// A real pod's one container (busybox): an echo server on its own loopback and 20 short
/// connections to it, then idle until removed.
const REAL_POD_PROGRAM: &str = "nc -ll -p 8080 -e /bin/cat & sleep 1; \
     for i in $(seq 20); do echo soak | nc 127.0.0.1 8080 >/dev/null; done; sleep 100000";

/// Creates a pod every 15 s, keeps each for 60 s: every other one a real containerd pod (CRI,
/// CNI network namespace, busybox), the others stand-in pods (cgroup, containerd bundle,
/// network namespace of their own).
fn pod_churn(stop: &AtomicBool, pods: Arc<AtomicU64>, rt: &RealRuntimes) -> Result<()> {
    struct Live {
        since: Instant,
        netns: String,
        _pod: StandIns,
    }
    let mut live: Vec<Live> = Vec::new();
    let mut real: Vec<(Instant, Pod)> = Vec::new();
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next && n % 2 == 1 {
            next += Duration::from_secs(15);
            let name = format!("soak-real-{n}");
            real.push((
                Instant::now(),
                rt.run_pod(&name, "soak", &[("app", REAL_POD_PROGRAM)]),
            ));
            n += 1;
            pods.store(n, Ordering::Relaxed);
        }
        real.retain(|(since, pod)| {
            if since.elapsed() < Duration::from_secs(60) {
                return true;
            }
            rt.remove_pod(pod);
            false
        });
        if Instant::now() >= next {
            next += Duration::from_secs(15);
            let netns = format!("flsoak{}-{n}", std::process::id());
            run("ip", &["netns", "add", &netns])?;
            run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
            let mut pod = StandIns::new();
            let uid = format!("5a0c0000-0000-4000-8000-{n:012x}");
            let name = format!("soak-{n}");
            let sandbox = pod.pod("soak", &name, &uid, &netns);
            pod.container(
                ("soak", &name, &uid, &sandbox),
                "app",
                &netns,
                POD_PROGRAM,
                &[],
            );
            live.push(Live {
                since: Instant::now(),
                netns,
                _pod: pod,
            });
            n += 1;
            pods.store(n, Ordering::Relaxed);
        }
        live.retain(|p| {
            if p.since.elapsed() < Duration::from_secs(60) {
                return true;
            }
            // The pod's processes, bundles and cgroups go with `_pod` (dropped after this).
            let _ = Command::new("ip").args(["netns", "del", &p.netns]).status();
            false
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, pod) in real {
        rt.remove_pod(&pod);
    }
    for p in live {
        drop(p._pod);
        let _ = Command::new("ip").args(["netns", "del", &p.netns]).status();
    }
    Ok(())
}

/// The measured pods: `truth/server-0` and `truth/client-0` (tests/support/truth.rs), in two
/// network namespaces joined by a veth pair; the client moves data only after flowlens started,
/// so its `container:traffic` must equal its own count at the end.
struct Truth {
    driver: Driver,
    cli_tag: String,
    // Dropped in this order: the pods' processes, then their namespaces and the FIFOs.
    _pods: StandIns,
    _pair: NetnsPair,
    _dir: TempDir,
}

impl Truth {
    fn start() -> Truth {
        let pair = NetnsPair::new("flsoakt", 172);
        let server = pair.addrs[1].clone();
        let dir = TempDir::new("soak-truth");
        let mut pods = StandIns::new();
        let srv_uid = "5a0c1000-0000-4000-8000-000000000001";
        let srv_pod = pods.pod("truth", "server-0", srv_uid, &pair.ns[1]);
        pods.container(
            ("truth", "server-0", srv_uid, &srv_pod),
            "srv",
            &pair.ns[1],
            SERVER,
            &[&server],
        );
        let cli_uid = "5a0c1000-0000-4000-8000-000000000002";
        let cli_pod = pods.pod("truth", "client-0", cli_uid, &pair.ns[0]);
        let (commands, answers) = (dir.join("commands"), dir.join("answers"));
        mkfifo(&commands);
        mkfifo(&answers);
        let cli = pods.container(
            ("truth", "client-0", cli_uid, &cli_pod),
            "cli",
            &pair.ns[0],
            CLIENT,
            &[
                &server,
                commands.to_str().unwrap(),
                answers.to_str().unwrap(),
            ],
        );
        Truth {
            driver: Driver::open(&commands, &answers),
            cli_tag: cli[..12].to_string(),
            _pods: pods,
            _pair: pair,
            _dir: dir,
        }
    }
}

/// The same measured pods as real containerd pods (`truth/real-server-0`,
/// `truth/real-client-0`: CRI sandboxes on the CNI bridge, cgroups under `/kubepods`): the
/// busybox image has no python, so each container runs the host's `/usr/bin/python3` from
/// read-only bind mounts of `/usr`, `/lib` and `/lib64`, with the scripts and the FIFOs in a
/// fourth.
struct RealTruth<'rt> {
    driver: Driver,
    cli_tag: String,
    rt: &'rt RealRuntimes,
    pods: [Pod; 2],
    _dir: TempDir,
}

impl<'rt> RealTruth<'rt> {
    fn start(rt: &'rt RealRuntimes) -> RealTruth<'rt> {
        let dir = TempDir::new("soak-real-truth");
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        std::fs::write(dir.join("client.py"), CLIENT).unwrap();
        let (commands, answers) = (dir.join("commands"), dir.join("answers"));
        mkfifo(&commands);
        mkfifo(&answers);
        // Debian's /lib64/ld-linux-x86-64.so.2 links to /lib/x86_64-linux-gnu/...: `/lib` too.
        let path = std::path::Path::new;
        let mounts = [
            (path("/usr"), "/usr"),
            (path("/usr/lib"), "/lib"),
            (path("/usr/lib64"), "/lib64"),
            (dir.0.as_path(), "/truth"),
        ];
        let server = rt.run_pod_mounting(
            "besteffort",
            "real-server-0",
            "truth",
            &[("srv", "exec /usr/bin/python3 /truth/server.py 0.0.0.0")],
            &mounts,
        );
        rt.wait_listening(server.id("srv"), 80);
        let client = rt.run_pod_mounting(
            "besteffort",
            "real-client-0",
            "truth",
            &[(
                "cli",
                &format!(
                    "exec /usr/bin/python3 /truth/client.py {} /truth/commands /truth/answers",
                    server.ip
                ),
            )],
            &mounts,
        );
        let cli_tag = client.id("cli")[..12].to_string();
        RealTruth {
            driver: Driver::open(&commands, &answers),
            cli_tag,
            rt,
            pods: [server, client],
            _dir: dir,
        }
    }
}

impl Drop for RealTruth<'_> {
    fn drop(&mut self) {
        for pod in self.pods.iter().rev() {
            self.rt.remove_pod(pod);
        }
    }
}

/// Drives the measured client until `stop`: four long-lived connections, then every 2 s 100
/// short connections, 200 kB each way on each long-lived one and 20 UDP datagrams (each answer
/// peeked at before it is read). Returns what it moved, by its own count.
fn truth_load(driver: &mut Driver, stop: &AtomicBool) -> Moved {
    let mut moved = driver.run("open 4");
    while !stop.load(Ordering::Relaxed) {
        for step in ["churn 100", "bulk 200000", "udp 20"] {
            moved = driver.run(step);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    moved
}

/// The measured client's `container:traffic` in a gather: (sent, received).
fn truth_counted(batch: &str, tag: &str) -> (i64, i64) {
    let prefix = format!("container:traffic,container={tag},");
    batch
        .lines()
        .find(|l| l.starts_with(&prefix))
        .map_or((0, 0), |l| {
            let get = |k: &str| field(l, k).unwrap_or(0.0) as i64;
            (get("bytes_sent"), get("bytes_rcvd"))
        })
}

/// The measured client's active TCP flows in a gather (its `container:peers` lines).
fn truth_tcp_active(batch: &str, tag: &str) -> i64 {
    let prefix = format!("container:peers,container={tag},");
    batch
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(",proto=tcp,"))
        .map(|l| field(l, "active").unwrap_or(0.0) as i64)
        .sum()
}

/// A measured client: where it ran, what it moved by its own count (out, in), and flowlens's
/// `container:traffic` (sent, received) at the last gather.
type MeasuredPod = (&'static str, (i64, i64), (i64, i64));

/// The comparison at the end of a run.
struct TruthReport {
    pods: [MeasuredPod; 2],
    events_lost: u64,
    flows_evicted: u64,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program).args(args).status()?;
    if !status.success() {
        bail!("{program} {args:?}: {status}");
    }
    Ok(())
}

/// Open fds of a process.
fn fd_count(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// Runs the soak and writes `soak.csv`, `soak.md` and (with matplotlib) `soak.png`.
pub fn soak(opts: &SoakOptions) -> Result<()> {
    // The stand-in pods' cgroups must exist where flowlens looks (fails early otherwise).
    let _ = cgroup2_root();
    let net = Net::new()?;
    // Real containerd (CRI) pods: the measured pair's twin and every other churned pod. Torn
    // down when `rt` is dropped, on every way out of this function.
    let rt = RealRuntimes::start();
    std::fs::create_dir_all(&opts.out_dir)?;
    let config = opts.out_dir.join("flowlens-soak.toml");
    let (task_dir, docker_dir) = rt.state_dirs();
    std::fs::write(
        &config,
        format!(
            "{CONFIG}containerd_state_dir = \"{}\"\ndocker_containers_dir = \"{}\"\n",
            task_dir.display(),
            docker_dir.display()
        ),
    )?;
    // The release `flowlens` next to this executable (target/release).
    let exe = std::env::current_exe()?.with_file_name("flowlens");
    let mut child = Command::new(&exe)
        .args(["--config", config.to_str().unwrap(), "telegraf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "start {} (cargo build --release --workspace)",
                exe.display()
            )
        })?;
    let pid = child.id();
    let gathers = batches(child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let warnings = Arc::new(AtomicU64::new(0));
    {
        let warnings = warnings.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                warnings.fetch_add(1, Ordering::Relaxed);
                eprintln!("flowlens: {line}");
            }
        });
    }
    let mut stdin = child.stdin.take().unwrap();

    let mut truth = Truth::start();
    let mut real_truth = RealTruth::start(&rt);
    let stop = AtomicBool::new(false);
    let conns = AtomicU64::new(0);
    let pods = Arc::new(AtomicU64::new(0));
    eprintln!(
        "soak: {} s, a gather every {} s, writing to {}",
        opts.secs,
        opts.every,
        opts.out_dir.display()
    );
    let samples = std::thread::scope(|scope| -> Result<(Vec<Sample>, Moved, Moved)> {
        // Churn on loopback half of the time (1 s on, 1 s off).
        let churn = scope.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let out = workloads::run(&net, Workload::Churn, Path::Loopback, 1.0)?;
                conns.fetch_add(out.ops, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        });
        let pod_thread = {
            let pods = pods.clone();
            let (stop, rt) = (&stop, &rt);
            scope.spawn(move || pod_churn(stop, pods, rt))
        };
        let driver = &mut truth.driver;
        let stop_ref = &stop;
        let truth_thread = scope.spawn(move || truth_load(driver, stop_ref));
        let real_driver = &mut real_truth.driver;
        let real_thread = scope.spawn(move || truth_load(real_driver, stop_ref));
        let sampled = sample_gathers(opts, pid, &net, &mut stdin, &gathers, &conns, &pods);
        stop.store(true, Ordering::Relaxed);
        let moved = truth_thread
            .join()
            .map_err(|_| anyhow::anyhow!("measured client thread panicked"))?;
        let real_moved = real_thread
            .join()
            .map_err(|_| anyhow::anyhow!("measured real client thread panicked"))?;
        churn
            .join()
            .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
        pod_thread
            .join()
            .map_err(|_| anyhow::anyhow!("pod thread panicked"))??;
        Ok((sampled?, moved, real_moved))
    })?;
    let (samples, moved, real_moved) = samples;
    // The measured client is idle now: the first gather where its short connections have all
    // ended holds everything it moved (a socket its process closed has no file for the
    // iterator to read: its counters come with its close record, once the server's FIN came).
    let mut last = String::new();
    for _ in 0..60 {
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        last = gathers
            .recv_timeout(Duration::from_secs(30))
            .context("no last gather within 30 s")?
            .1;
        if truth_tcp_active(&last, &truth.cli_tag) == 4
            && truth_tcp_active(&last, &real_truth.cli_tag) == 4
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let internal = last
        .lines()
        .find(|l| l.starts_with("flowlens:internal"))
        .context("a gather without flowlens:internal")?;
    let truth_report = TruthReport {
        pods: [
            (
                "stand-in pods",
                (moved.total(0), moved.total(1)),
                truth_counted(&last, &truth.cli_tag),
            ),
            (
                "real containerd pods",
                (real_moved.total(0), real_moved.total(1)),
                truth_counted(&last, &real_truth.cli_tag),
            ),
        ],
        events_lost: field(internal, "events_lost").unwrap_or(0.0) as u64,
        flows_evicted: field(internal, "flows_evicted").unwrap_or(0.0) as u64,
    };
    drop(real_truth);
    drop(truth);
    drop(stdin);
    let status = child.wait()?;
    if !status.success() {
        bail!("flowlens exited with {status}");
    }
    write_outputs(
        opts,
        &samples,
        warnings.load(Ordering::Relaxed),
        &truth_report,
    )
}

/// Asks for a gather every `opts.every` seconds until the run's end (a 1 s bulk transfer over
/// the veth pair every 10 s in between) and samples the process after each.
#[allow(clippy::too_many_arguments)]
fn sample_gathers(
    opts: &SoakOptions,
    pid: u32,
    net: &Net,
    stdin: &mut impl Write,
    gathers: &flowlens_tests::session::Batches,
    conns: &AtomicU64,
    pods: &AtomicU64,
) -> Result<Vec<Sample>> {
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut cpu_before = proc_cpu_secs(pid).unwrap_or(0.0);
    let mut last = start;
    let mut next_bulk = start;
    while start.elapsed().as_secs() < opts.secs {
        let due = last + Duration::from_secs(opts.every);
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            if now >= next_bulk {
                next_bulk += Duration::from_secs(10);
                workloads::run(net, Workload::Bulk, Path::Veth, 1.0)?;
                continue;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
        }
        let interval = last.elapsed().as_secs_f64();
        last = Instant::now();
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        let (_, batch) = gathers
            .recv_timeout(Duration::from_secs(30))
            .context("no gather within 30 s")?;
        let internal = batch
            .lines()
            .find(|l| l.starts_with("flowlens:internal"))
            .context("a gather without flowlens:internal")?;
        let get = |k: &str| field(internal, k).unwrap_or(0.0) as u64;
        let cpu = proc_cpu_secs(pid).context("flowlens exited")?;
        let sample = Sample {
            secs: start.elapsed().as_secs_f64(),
            rss_kib: rss_kib(pid)?,
            cpu_pct: 100.0 * (cpu - cpu_before) / interval.max(1e-3),
            fds: fd_count(pid)?,
            lines: batch.lines().count() as u64,
            flows_active: get("flows_active"),
            containers_tracked: get("containers_tracked"),
            metadata_cache_entries: get("metadata_cache_entries"),
            events_lost: get("events_lost"),
            conns: conns.load(Ordering::Relaxed),
            pods: pods.load(Ordering::Relaxed),
        };
        cpu_before = cpu;
        if samples.len().is_multiple_of(30) {
            eprintln!(
                "soak: {:>5.0} s  rss {} KiB  cpu {:.1} %  fds {}  flows {}  containers {}  pods {}",
                sample.secs,
                sample.rss_kib,
                sample.cpu_pct,
                sample.fds,
                sample.flows_active,
                sample.containers_tracked,
                sample.pods
            );
        }
        samples.push(sample);
    }
    Ok(samples)
}

fn write_outputs(
    opts: &SoakOptions,
    samples: &[Sample],
    warnings: u64,
    truth: &TruthReport,
) -> Result<()> {
    let mut csv = format!("{CSV_HEADER}\n");
    for s in samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{:.2},{},{},{},{},{},{},{},{}",
            s.secs,
            s.rss_kib,
            s.cpu_pct,
            s.fds,
            s.lines,
            s.flows_active,
            s.containers_tracked,
            s.metadata_cache_entries,
            s.events_lost,
            s.conns,
            s.pods
        );
    }
    let csv_path = opts.out_dir.join("soak.csv");
    std::fs::write(&csv_path, csv)?;
    let png = opts.out_dir.join("soak.png");
    let chart = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/soak_chart.py"))
        .arg(&csv_path)
        .arg(&png)
        .status();
    if !chart.is_ok_and(|s| s.success()) {
        eprintln!("soak: no chart (needs python3 with matplotlib: pip install matplotlib)");
    }
    let mut md = summary(opts, samples, warnings);
    let _ = writeln!(
        md,
        "\nGround truth: the measured client pod (`truth/client-0`: 100 short connections, \
         200 kB each way on each of 4 long-lived ones and 20 UDP datagrams read after a peek, \
         every 2 s), run twice side by side: as a stand-in pod and as a real containerd pod \
         (`truth/real-client-0`, CRI, CNI bridge). Its own count against flowlens's \
         `container:traffic` at the last gather (losses counted over the run: events_lost {}, \
         flows_evicted {}):\n\n\
         | measured pod | moved out | moved in | flowlens sent | flowlens received | result |\n\
         | --- | --- | --- | --- | --- | --- |",
        truth.events_lost, truth.flows_evicted
    );
    for (place, moved, counted) in &truth.pods {
        let _ = writeln!(
            md,
            "| {place} | {} | {} | {} | {} | {} |",
            moved.0,
            moved.1,
            counted.0,
            counted.1,
            if counted == moved {
                "equal".to_string()
            } else {
                format!(
                    "differences {:+} and {:+}",
                    counted.0 - moved.0,
                    counted.1 - moved.1
                )
            }
        );
    }
    println!("{md}");
    std::fs::write(opts.out_dir.join("soak.md"), md)?;
    eprintln!("soak: wrote {}", opts.out_dir.display());
    Ok(())
}

/// The summary table: each quantity in the first and the last quarter of the run (after a
/// quarter of warm-up, RSS and fds should not grow), and its largest value.
fn summary(opts: &SoakOptions, samples: &[Sample], warnings: u64) -> String {
    let quarter = |q: usize, f: &dyn Fn(&Sample) -> f64| {
        let n = samples.len();
        let part = &samples[n * q / 4..(n * (q + 1) / 4).max(n * q / 4 + 1).min(n)];
        part.iter().map(f).sum::<f64>() / part.len() as f64
    };
    let max = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let last = samples.last().expect("at least 4 samples");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "One run of `flowlens-bench soak --secs {} --every {}` ({} samples): the release \
         `flowlens telegraf` with `series_ttl_secs = 60`, a gather every {} s, under connection \
         churn on loopback half of the time ({} connections in all), a 1 s bulk transfer over \
         a veth pair every 10 s, and a pod created every 15 s and removed after 60 s ({} \
         pods: every other one a real containerd pod through the CRI, the others stand-in pods \
         with a cgroup, a containerd bundle and a network namespace; 20 connections each). \
         {} lines on flowlens's stderr.\n",
        opts.secs,
        opts.every,
        samples.len(),
        opts.every,
        last.conns,
        last.pods,
        warnings
    );
    md.push_str(
        "| quantity | 2nd quarter (mean) | 4th quarter (mean) | growth | largest |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    type Getter = fn(&Sample) -> f64;
    let rows: [(&str, Getter); 6] = [
        ("RSS (KiB)", |s| s.rss_kib as f64),
        ("open fds", |s| s.fds as f64),
        ("CPU (% of a core)", |s| s.cpu_pct),
        ("flows in the table", |s| s.flows_active as f64),
        ("containers with series", |s| s.containers_tracked as f64),
        ("metadata cache entries", |s| {
            s.metadata_cache_entries as f64
        }),
    ];
    for (name, get) in rows {
        let (early, late) = (quarter(1, &get), quarter(3, &get));
        let growth = if early > 0.0 {
            format!("{:+.1} %", 100.0 * (late - early) / early)
        } else {
            "-".into()
        };
        let _ = writeln!(
            md,
            "| {name} | {early:.1} | {late:.1} | {growth} | {:.1} |",
            max(&get)
        );
    }
    let _ = writeln!(
        md,
        "\nEvents lost over the run: {} (the ring buffer was full or a probe run was skipped).",
        last.events_lost
    );
    md
}
