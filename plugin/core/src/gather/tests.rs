//! Unit tests of the gather pipeline: fake sources, a sequence of gathers, the lines they write.

use super::*;
use crate::container::Runtime;
use crate::flows::Limits;
use crate::lineproto::Precision;
use crate::records::{self, COMM_LEN};

const SEC: u64 = 1_000_000_000;

use crate::internal::tests::{log, take_logged};

/// Sources as plain values, recording each call.
#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    kernel: bool,
    now_ns: u64,
    socks: Vec<(u64, FlSock)>,
    containers: FastMap<u64, Arc<ContainerInfo>>,
    dnat: bool,
    counters: KernelCounters,
    metadata: MetadataCounters,
    forgotten: Vec<u64>,
    before_1970: bool,
    /// The table the gather runs on: a call made while it is held says so ("(table held)").
    table: Option<Table>,
    /// Client flows that arrive (the reader applies them), one during each DNAT lookup.
    arrive_during_lookup: Vec<(u64, FlSock)>,
}

impl Fake {
    /// " (table held)" when the gather holds the table now.
    fn held(&self) -> &'static str {
        match &self.table {
            Some(t) if t.try_lock().is_err() => " (table held)",
            _ => "",
        }
    }
}

impl Sources for Fake {
    fn monotonic_ns(&mut self) -> u64 {
        self.calls.push("monotonic".into());
        self.now_ns
    }
    fn wall_clock_ns(&mut self) -> Option<i64> {
        self.calls.push("wall_clock".into());
        (!self.before_1970).then_some(1_700_000_000_000_000_000)
    }
    fn ifaces(&mut self) -> Vec<IfaceCounters> {
        self.calls.push(format!("ifaces{}", self.held()));
        vec![IfaceCounters {
            name: "eth0".into(),
            rx_bytes: 10,
            tx_bytes: 20,
            rx_packets: 1,
            tx_packets: 2,
        }]
    }
    fn has_kernel(&self) -> bool {
        self.kernel
    }
    fn apply_events(&mut self, _: &mut FlowTable) {
        self.calls.push("apply_events".into());
    }
    fn read_live(&mut self) {
        self.calls.push(format!("read_live{}", self.held()));
    }
    fn add_listen_drops(&mut self, _: &mut FlowTable) {
        self.calls.push("add_listen_drops".into());
    }
    fn snapshot(&mut self, limit: usize) -> Vec<(u64, FlSock)> {
        self.calls.push(format!("snapshot {limit}"));
        self.socks.clone()
    }
    fn forget(&mut self, cookies: &[u64]) {
        self.calls.push("forget".into());
        self.forgotten.extend_from_slice(cookies);
    }
    fn resolve(&mut self, cgroup_id: u64, _pid: u32) -> Option<Arc<ContainerInfo>> {
        self.calls.push(format!("resolve {cgroup_id}"));
        self.containers.get(&cgroup_id).cloned()
    }
    fn running_in_pod(&mut self, cgroup_id: u64, _: &ContainerInfo) -> Option<u64> {
        self.calls.push(format!("running_in_pod {cgroup_id}"));
        Some(1)
    }
    fn take_deferred(&mut self) -> Vec<u64> {
        self.calls.push("take_deferred".into());
        Vec::new()
    }
    fn serves_dnat(&self) -> bool {
        self.dnat
    }
    fn dnat_backend(&mut self, _: Proto, _: SocketAddr, remote: SocketAddr) -> Option<SocketAddr> {
        self.calls.push(format!("dnat {remote}{}", self.held()));
        if !self.arrive_during_lookup.is_empty() {
            let (cookie, sock) = self.arrive_during_lookup.remove(0);
            let table = self.table.as_ref().expect("flows arrive in a table");
            table
                .lock()
                .unwrap()
                .seed(cookie, &sock, crate::flows::Role::Client);
        }
        None
    }
    fn prune(&mut self, _: &FastSet<u64>) {
        self.calls.push("prune".into());
    }
    fn kernel_counters(&mut self) -> KernelCounters {
        self.calls.push("kernel_counters".into());
        self.counters
    }
    fn metadata_counters(&mut self) -> MetadataCounters {
        self.calls.push("metadata_counters".into());
        self.metadata
    }
}

fn container(id_char: char, name: &str) -> Arc<ContainerInfo> {
    let id: String = std::iter::repeat_n(id_char, 64).collect();
    Arc::new(ContainerInfo {
        short_id: id[..12].to_string(),
        id,
        runtime: Runtime::Containerd,
        name: Some(name.into()),
        pod: Some(format!("{name}-pod")),
        namespace: Some("shop".into()),
        pod_uid: None,
        sandbox_id: None,
        is_sandbox: false,
        qos: None,
    })
}

/// A client TCP socket of `cgroup_id` from `local` to `remote`, with `sent` bytes sent.
fn client(cgroup_id: u64, local: &str, remote: &str, sent: u64) -> FlSock {
    let local: SocketAddr = local.parse().unwrap();
    let remote: SocketAddr = remote.parse().unwrap();
    FlSock {
        bytes_sent: sent,
        bytes_rcvd: 0,
        first_ns: 1,
        last_ns: 1,
        cgroup_id,
        netns: 4026531840,
        pid: 0,
        srtt_us: 0,
        rttvar_us: 0,
        retrans: 0,
        sport: local.port(),
        dport: remote.port(),
        saddr: records::ip_to_kernel(local.ip()),
        daddr: records::ip_to_kernel(remote.ip()),
        family: 2,
        protocol: records::IPPROTO_TCP,
        role: records::ROLE_CLIENT,
        flags: 0,
        comm: [0; COMM_LEN],
        base_retrans: 0,
        sk: 0,
        base_acked: 0,
        base_rcvd: 0,
    }
}

/// The flow table, shared as the plugin shares it with its event reader.
type Table = Arc<Mutex<FlowTable>>;

fn table(ttl_secs: u64) -> Table {
    Arc::new(Mutex::new(FlowTable::new(Limits {
        max_flows: 100,
        max_hosts: 10,
        series_ttl_ns: ttl_secs * SEC,
        udp_idle_timeout_ns: 60 * SEC,
        hosts_by_netns: true,
        max_peers_per_container: 4,
    })))
}

fn gather(ttl_secs: u64, max_containers: usize) -> Gather {
    let shape = metrics::Shape {
        ifid: "0".into(),
        node: "n".into(),
        precision: Precision::Ns,
        ntopng_compat: false,
    };
    Gather::new(
        shape,
        50,
        WorkloadTracker::new(ttl_secs, max_containers),
        log,
    )
}

/// Runs one gather at `now_secs`, returning its lines and the sources' calls.
fn run(g: &mut Gather, t: &Table, fake: &mut Fake, now_secs: u64) -> (String, Vec<String>) {
    fake.now_ns = now_secs * SEC;
    fake.calls.clear();
    let mut out = Vec::new();
    let written = g.run(t, fake, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(written.lines as usize, out.lines().count());
    (out, std::mem::take(&mut fake.calls))
}

/// The lines of `measurement`, without their fields and timestamp.
fn series<'a>(out: &'a str, measurement: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.split(',').next() == Some(measurement))
        .map(|l| l.split(' ').next().unwrap())
        .collect()
}

/// An integer field of the `flowlens:internal` line; None when it is not written.
fn internal(out: &str, field: &str) -> Option<i64> {
    let line = out.lines().find(|l| l.starts_with("flowlens:internal,"))?;
    let fields = line.split(' ').nth(1)?;
    fields.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == field).then(|| v.trim_end_matches('i').parse().unwrap())
    })
}

#[test]
fn a_gather_reads_its_sources_in_order() {
    let mut fake = Fake {
        kernel: true,
        dnat: true,
        socks: vec![(1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100))],
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    let (mut g, t) = (gather(2, 10), table(2));
    // Calls made while the table is held say so: the interfaces, the live sockets' read and
    // the DNAT lookup are not.
    fake.table = Some(Arc::clone(&t));
    let (out, calls) = run(&mut g, &t, &mut fake, 10);
    assert_eq!(
        calls,
        [
            "monotonic",
            "wall_clock",
            "ifaces",
            "read_live",
            "apply_events",
            "add_listen_drops",
            "snapshot 100",
            "monotonic",
            "forget",
            "resolve 7",
            "running_in_pod 7",
            "monotonic",
            "take_deferred",
            "dnat 10.96.0.1:80",
            "prune",
            "kernel_counters",
            "metadata_counters",
            "monotonic",
        ]
    );
    assert_eq!(
        series(&out, "container:traffic"),
        ["container:traffic,container=aaaaaaaaaaaa,container_name=web,ifid=0,namespace=shop,node=n,pod=web-pod"]
    );
    assert_eq!(internal(&out, "flows_active"), Some(1));
    // The flow is known now: no second DNAT lookup.
    let (_, calls) = run(&mut g, &t, &mut fake, 11);
    assert!(!calls.iter().any(|c| c.starts_with("dnat")), "{calls:?}");
    take_logged();
}

#[test]
fn flows_arriving_during_the_dnat_lookups_are_looked_up_in_another_round() {
    // While the gather waits for the first lookup (the table released), the reader applies a
    // new client flow: the gather looks it up too, again with the table released, and skips
    // none.
    let mut fake = Fake {
        kernel: true,
        dnat: true,
        socks: vec![(1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100))],
        arrive_during_lookup: vec![(2, client(7, "10.0.0.1:40001", "10.96.0.2:80", 50))],
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    let (mut g, t) = (gather(2, 10), table(2));
    fake.table = Some(Arc::clone(&t));
    let (out, calls) = run(&mut g, &t, &mut fake, 10);
    let lookups: Vec<&String> = calls.iter().filter(|c| c.starts_with("dnat")).collect();
    assert_eq!(lookups, ["dnat 10.96.0.1:80", "dnat 10.96.0.2:80"]);
    assert_eq!(internal(&out, "dnat_lookups_skipped"), Some(0), "{out}");
    // Both flows have their peer series.
    assert_eq!(series(&out, "container:peers").len(), 2, "{out}");
    take_logged();
}

#[test]
fn flows_arriving_during_the_last_round_go_without_a_backend_and_are_counted() {
    // A reader that adds a flow during every lookup: after the last round, the newest flow is
    // assigned without a lookup (the table is not released again), counted as skipped.
    let mut fake = Fake {
        kernel: true,
        dnat: true,
        socks: vec![(1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100))],
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    let (mut g, t) = (gather(2, 10), table(2));
    fake.table = Some(Arc::clone(&t));
    // One flow arrives during each lookup: DNAT_ROUNDS lookups, and the flow that arrived
    // during the last one is left.
    let arrivals: Vec<(u64, FlSock)> = (0..DNAT_ROUNDS as u16)
        .map(|i| {
            let local = format!("10.0.0.1:{}", 40001 + i);
            let remote = format!("10.96.0.{}:80", 2 + i);
            (2 + u64::from(i), client(7, &local, &remote, 10))
        })
        .collect();
    fake.arrive_during_lookup = arrivals;
    let (out, calls) = run(&mut g, &t, &mut fake, 10);
    let lookups = calls.iter().filter(|c| c.starts_with("dnat")).count();
    assert_eq!(lookups, DNAT_ROUNDS, "{calls:?}");
    assert_eq!(internal(&out, "dnat_lookups_skipped"), Some(1), "{out}");
    take_logged();
}

#[test]
fn without_the_kernel_only_interfaces_and_internal_are_written() {
    let mut fake = Fake::default();
    let (mut g, t) = (gather(2, 10), table(2));
    let (out, calls) = run(&mut g, &t, &mut fake, 10);
    assert_eq!(calls, ["monotonic", "wall_clock", "ifaces", "monotonic"]);
    let measurements: FastSet<&str> = out.lines().map(|l| l.split(',').next().unwrap()).collect();
    let mut measurements: Vec<&str> = measurements.into_iter().collect();
    measurements.sort();
    assert_eq!(
        measurements,
        [
            "flowlens:internal",
            "iface:packets",
            "iface:traffic",
            "iface:traffic_rxtx"
        ]
    );
    assert_eq!(internal(&out, "events_received"), None);
    assert_eq!(internal(&out, "series_dropped"), Some(0));
}

#[test]
fn containers_beyond_the_limit_fold_into_other_and_are_counted_and_logged_once() {
    take_logged();
    let mut fake = Fake {
        kernel: true,
        socks: vec![
            (1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100)),
            (2, client(8, "10.0.0.2:40000", "10.96.0.1:80", 100)),
        ],
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    fake.containers.insert(8, container('b', "api"));
    let (mut g, t) = (gather(2, 1), table(2));
    let (out, _) = run(&mut g, &t, &mut fake, 10);
    let traffic = series(&out, "container:traffic");
    assert_eq!(traffic.len(), 2, "{traffic:?}");
    assert_eq!(
        traffic
            .iter()
            .filter(|s| s.contains("container=other"))
            .count(),
        1,
        "{traffic:?}"
    );
    assert_eq!(internal(&out, "series_dropped"), Some(1));
    assert_eq!(internal(&out, "containers_tracked"), Some(2));
    let logged = take_logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("series_dropped"), "{logged:?}");
    // Still folded at the next gather: counted again (per gather), logged within the minute no more.
    let (out, _) = run(&mut g, &t, &mut fake, 11);
    assert_eq!(internal(&out, "series_dropped"), Some(1));
    assert!(take_logged().is_empty());
    assert_eq!(g.events().total(Event::SeriesDropped), 2);
}

#[test]
fn series_end_after_their_ttl_and_keep_their_counters_until_then() {
    let mut fake = Fake {
        kernel: true,
        socks: vec![(1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100))],
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    let (mut g, t) = (gather(2, 10), table(2));
    let (out, _) = run(&mut g, &t, &mut fake, 10);
    assert_eq!(series(&out, "container:traffic").len(), 1);
    assert_eq!(series(&out, "host:traffic").len(), 1);
    let bytes = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("container:traffic,"))
            .map(|l| l.split(' ').nth(1).unwrap().to_string())
    };
    let first = bytes(&out).unwrap();
    assert!(first.contains("bytes_sent=100i"), "{first}");
    // The socket is gone: the flow ends (missed by the snapshots), its bytes stay counted.
    fake.socks.clear();
    for now in [11, 12] {
        let (out, _) = run(&mut g, &t, &mut fake, now);
        assert_eq!(bytes(&out).as_deref(), Some(first.as_str()), "at {now} s");
    }
    assert_eq!(
        fake.forgotten,
        Vec::<u64>::new(),
        "TCP entries are the kernel's to remove"
    );
    // Long after the last activity: no series left.
    let (out, _) = run(&mut g, &t, &mut fake, 30);
    let (out2, _) = run(&mut g, &t, &mut fake, 31);
    for out in [out, out2] {
        assert!(series(&out, "container:traffic").is_empty(), "{out}");
        assert!(series(&out, "host:traffic").is_empty(), "{out}");
        assert_eq!(internal(&out, "containers_tracked"), Some(0));
        assert_eq!(internal(&out, "flows_active"), Some(0));
    }
    take_logged();
}

#[test]
fn internal_counters_add_the_kernels_the_tables_and_the_readers_and_log_their_drops() {
    take_logged();
    let mut fake = Fake {
        kernel: true,
        dnat: true,
        socks: vec![
            (1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100)),
            (2, client(7, "10.0.0.1:40001", "10.96.0.1:80", 100)),
            (3, client(7, "10.0.0.1:40002", "10.96.0.2:80", 100)),
        ],
        counters: KernelCounters {
            events_received: 10,
            events_lost: 2,
            flows_evicted: 1,
            probes_attached: 5,
            probes_failed: 1,
        },
        metadata: MetadataCounters {
            cache_entries: 4,
            skipped: 2,
            names_dropped: 1,
        },
        ..Fake::default()
    };
    fake.containers.insert(7, container('a', "web"));
    let (mut g, t) = (gather(2, 10), table(2));
    g.dnat_budget = 1;
    // The start-up scan's sockets beyond the table's room.
    t.lock().unwrap().count_evicted(3);
    let (out, calls) = run(&mut g, &t, &mut fake, 10);
    assert_eq!(calls.iter().filter(|c| c.starts_with("dnat")).count(), 1);
    let expected = [
        ("events_received", 10),
        ("events_lost", 2),
        ("flows_evicted", 4),
        ("probes_attached", 5),
        ("probes_failed", 1),
        ("metadata_cache_entries", 4),
        ("metadata_skipped", 2),
        ("names_dropped", 1),
        ("dnat_lookups_skipped", 2),
        ("connects_failed", 0),
        ("flows_active", 3),
    ];
    for (field, value) in expected {
        assert_eq!(internal(&out, field), Some(value), "{field}");
    }
    let logged = take_logged();
    for field in [
        "events_lost",
        "flows_evicted",
        "metadata_skipped",
        "names_dropped",
        "dnat_lookups_skipped",
    ] {
        let n = logged
            .iter()
            .filter(|l| l.ends_with(&format!(",{field})")))
            .count();
        assert_eq!(n, 1, "{field}: {logged:?}");
    }
    assert_eq!(logged.len(), 5, "{logged:?}");
    // The kernel's totals move on: the counters follow; nothing logged within the minute.
    fake.counters.events_received = 15;
    fake.counters.flows_evicted = 2;
    let (out, _) = run(&mut g, &t, &mut fake, 20);
    assert_eq!(internal(&out, "events_received"), Some(15));
    assert_eq!(internal(&out, "flows_evicted"), Some(5));
    assert_eq!(internal(&out, "dnat_lookups_skipped"), Some(2));
    assert!(take_logged().is_empty());
    // A minute after the last line: logged again, with the count since.
    fake.counters.flows_evicted = 3;
    run(&mut g, &t, &mut fake, 71);
    let logged = take_logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].contains(": 2 since the last report (6 since start"),
        "{logged:?}"
    );
}

#[test]
fn idle_udp_flows_end_and_leave_the_kernel_map() {
    let mut udp = client(7, "10.0.0.1:5353", "10.0.0.53:53", 40);
    udp.protocol = records::IPPROTO_UDP;
    udp.last_ns = 5 * SEC;
    let mut fake = Fake {
        kernel: true,
        socks: vec![(9, udp)],
        ..Fake::default()
    };
    let (mut g, t) = (gather(2, 10), table(300));
    let (out, _) = run(&mut g, &t, &mut fake, 10);
    assert_eq!(internal(&out, "flows_active"), Some(1));
    assert!(fake.forgotten.is_empty());
    // Idle for longer than udp_idle_timeout (60 s): ended, and its entry removed.
    let (out, _) = run(&mut g, &t, &mut fake, 70);
    assert_eq!(internal(&out, "flows_active"), Some(0));
    assert_eq!(fake.forgotten, [9]);
}

#[test]
fn a_clock_before_1970_writes_nothing() {
    let mut fake = Fake {
        kernel: true,
        before_1970: true,
        socks: vec![(1, client(7, "10.0.0.1:40000", "10.96.0.1:80", 100))],
        ..Fake::default()
    };
    let (mut g, t) = (gather(2, 10), table(2));
    let mut out = Vec::new();
    assert_eq!(g.run(&t, &mut fake, &mut out), Err(ClockBefore1970));
    assert!(out.is_empty());
    assert_eq!(fake.calls, ["monotonic", "wall_clock"]);
    assert!(t.lock().unwrap().is_empty(), "the kernel is not read");
}
