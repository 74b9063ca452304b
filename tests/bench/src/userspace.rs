//! Userspace speed with synthetic values: flow-table events per second on one core, gather and
//! encode time for 10k/100k/1M flows, and the encoder against `influxdb-line-protocol`'s builder.

use crate::stats::Spread;
use flowlens_core::{
    first_pass,
    lineproto::{self, Encoder, FieldValue, Precision, TagSet},
    peer_series_into, peer_values_into,
    records::{self, FlSock, COMM_LEN},
    ActiveByCgroup, ContainerInfo, FastMap, FlowTable, Limits, Runtime, Scope, Shape, Snapshot,
    Update, WorkloadTracker,
};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

/// Pins the calling thread to the CPU it runs on ("one core").
pub fn pin_to_current_cpu() {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is zeroed then filled.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The calling thread's CPU time so far, in ms: on a machine shared with other work, a time
/// that stops while the thread waits for the core (wall time would count the other work).
pub fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Lets the thread run on every CPU again.
pub fn unpin() {
    // SAFETY: as above.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Number of distinct containers (cgroups) and local addresses the synthetic flows spread over.
pub const CONTAINERS: u64 = 10_000;

/// A synthetic TCP socket: flow `i` belongs to container `i % 10k` (its own address), talks to
/// one of a few services, and has moved some bytes with an RTT sample.
pub fn synthetic_sock(i: u64) -> FlSock {
    let c = (i % CONTAINERS) as u32;
    let local = Ipv4Addr::from(0x0a_40_00_00 | c);
    let remote = Ipv4Addr::from(0x0a_80_00_00 | ((i / CONTAINERS) % 4096) as u32);
    let client = !i.is_multiple_of(3);
    let service = [80u16, 443, 5432, 6379][(i % 4) as usize];
    let ephemeral = 32768 + (i % 28000) as u16;
    let mut comm = [0u8; COMM_LEN];
    comm[..5].copy_from_slice(b"nginx");
    FlSock {
        bytes_sent: 1000 + i % 7919,
        bytes_rcvd: 2000 + i % 104_729,
        first_ns: 1,
        last_ns: 1_000 + i,
        cgroup_id: 100_000 + u64::from(c),
        netns: 4_026_531_840 + c,
        pid: 1000 + c,
        srtt_us: 200 + (i % 5000) as u32,
        rttvar_us: 50 + (i % 700) as u32,
        retrans: u32::from(i.is_multiple_of(11)),
        sport: if client { ephemeral } else { service },
        dport: if client { service } else { ephemeral },
        saddr: records::ip_to_kernel(IpAddr::V4(local)),
        daddr: records::ip_to_kernel(IpAddr::V4(remote)),
        family: 2,
        protocol: records::IPPROTO_TCP,
        role: if client {
            records::ROLE_CLIENT
        } else {
            records::ROLE_SERVER
        },
        flags: 0,
        comm,
        base_retrans: 0,
        sk: 0,
        base_acked: 0,
        base_rcvd: 0,
    }
}

/// Limits large enough for `flows`, with the default `max_hosts`.
fn limits(flows: usize) -> Limits {
    Limits {
        max_flows: flows.max(1 << 16),
        max_hosts: 1_024,
        series_ttl_ns: 300_000_000_000,
        udp_idle_timeout_ns: 60_000_000_000,
        hosts_by_netns: true,
        max_peers_per_container: 32,
    }
}

/// Flow-table ingest on one core: ticks of `batch` opens, one refresh of the `window` active
/// flows, and `batch` closes (the shape of one gather interval). Returns events/s per repetition
/// for (all events, open+close only, refresh entries only), in the thread's CPU time.
pub fn table_events(reps: usize, ticks: u64) -> (Spread, Spread, Spread) {
    const WINDOW: u64 = 20_000;
    const BATCH: u64 = 10_000;
    let pool: Vec<FlSock> = (0..65_536).map(synthetic_sock).collect();
    let sock = |cookie: u64| &pool[(cookie % pool.len() as u64) as usize];
    pin_to_current_cpu();
    let (mut all, mut apply, mut refresh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let mut t = FlowTable::new(limits(1 << 20));
        let mut next = 0u64;
        for _ in 0..WINDOW {
            t.apply(Update::Open, next, sock(next));
            next += 1;
        }
        let mut snapshot: Vec<(u64, FlSock)> = Vec::with_capacity((WINDOW + BATCH) as usize);
        let (mut n_apply, mut n_refresh) = (0u64, 0u64);
        let (mut t_apply, mut t_refresh) = (0f64, 0f64);
        for tick in 0..ticks {
            let start = thread_cpu_ms();
            for _ in 0..BATCH {
                t.apply(Update::Open, next, sock(next));
                next += 1;
            }
            t_apply += (thread_cpu_ms() - start) / 1e3;
            snapshot.clear();
            let oldest = next - WINDOW - BATCH;
            snapshot.extend((oldest..next).map(|c| {
                let mut s = *sock(c);
                s.bytes_sent += tick;
                (c, s)
            }));
            let start = thread_cpu_ms();
            let expired = t.refresh(snapshot.iter().map(|(c, s)| (*c, s)), 2_000 + tick);
            t_refresh += (thread_cpu_ms() - start) / 1e3;
            debug_assert!(expired.is_empty());
            // The gather's peer assignment (timed in the gather rows, not here): the flows
            // closed below carry their peer slot, as flows older than a gather do.
            t.assign_peers(Scope::Series, |_, _, _| None, 2_000 + tick);
            let start = thread_cpu_ms();
            for c in oldest..oldest + BATCH {
                t.apply(Update::Close, c, sock(c));
            }
            t_apply += (thread_cpu_ms() - start) / 1e3;
            n_apply += 2 * BATCH;
            n_refresh += WINDOW + BATCH;
        }
        assert_eq!(t.len() as u64, WINDOW);
        all.push((n_apply + n_refresh) as f64 / (t_apply + t_refresh));
        apply.push(n_apply as f64 / t_apply);
        refresh.push(n_refresh as f64 / t_refresh);
    }
    unpin();
    (Spread::of(&all), Spread::of(&apply), Spread::of(&refresh))
}

/// Times of one gather's userspace work on a table of `flows` flows, in ms: the map snapshot
/// folded into the table (`refresh`), aggregation (`first_pass`, containers, pods and peers)
/// and encoding.
pub struct GatherTimes {
    /// refresh + aggregation + encode.
    pub total: Spread,
    /// refresh alone.
    pub refresh: Spread,
    /// The first pass over the flows: host values and the cgroups' sums (`first_pass`).
    pub hosts: Spread,
    /// Container/pod aggregation (`WorkloadTracker`).
    pub workloads: Spread,
    /// encode alone.
    pub encode: Spread,
    /// The encoder's raw time for the same lines: the written lines parsed back into points
    /// beforehand, then written by one [`Encoder`] (what no gather can avoid).
    pub raw_encode: Spread,
    /// total / (refresh + raw_encode), per repetition: what the gather costs over its
    /// unavoidable work.
    pub ratio: Spread,
    /// Lines written.
    pub lines: u64,
}

/// The synthetic cgroups (10k, one per address) as `containers` containers, two per pod.
fn synthetic_containers(containers: u64) -> FastMap<u64, Arc<ContainerInfo>> {
    let infos: Vec<Arc<ContainerInfo>> = (0..containers)
        .map(|k| {
            let id = format!("{:064x}", 0x1edb_6c16_0000_u64 + k);
            Arc::new(ContainerInfo {
                short_id: id[..12].to_string(),
                id,
                runtime: Runtime::Containerd,
                name: Some(format!("app-{}", k % 2)),
                pod: Some(format!("web-{}", k / 2)),
                namespace: Some("bench".into()),
                pod_uid: None,
                sandbox_id: None,
                is_sandbox: false,
                qos: None,
            })
        })
        .collect();
    (0..CONTAINERS)
        .map(|c| (100_000 + c, infos[(c % containers) as usize].clone()))
        .collect()
}

/// The written lines, parsed back into one contiguous arena (read in order, as a gather reads
/// its values), for [`encode_points`].
#[derive(Default)]
struct RawLines {
    /// Every name and tag value, back to back.
    text: String,
    /// Per line: measurement, tags (a range of `tags`), fields (a range of `fields`), and
    /// whether its tags differ from the previous line's (a new series).
    lines: Vec<RawLine>,
    /// (key, value) ranges of `text`.
    tags: Vec<(Range, Range)>,
    /// (key range of `text`, value).
    fields: Vec<(Range, RawValue)>,
}

type Range = (u32, u32);

struct RawLine {
    measurement: Range,
    tags: Range,
    fields: Range,
    new_series: bool,
}

enum RawValue {
    Int(i64),
    Float(f64),
}

impl RawLines {
    fn parse(out: &[u8]) -> RawLines {
        let points = lineproto::parse_lines(std::str::from_utf8(out).expect("utf-8"))
            .expect("the gather writes valid lines");
        let mut raw = RawLines::default();
        let push = |text: &mut String, s: &str| {
            let at = text.len() as u32;
            text.push_str(s);
            (at, text.len() as u32)
        };
        for (i, p) in points.iter().enumerate() {
            let measurement = push(&mut raw.text, &p.measurement);
            let tags_at = raw.tags.len() as u32;
            for (k, v) in &p.tags {
                let k = push(&mut raw.text, k);
                let v = push(&mut raw.text, v);
                raw.tags.push((k, v));
            }
            let fields_at = raw.fields.len() as u32;
            for (k, v) in &p.fields {
                let k = push(&mut raw.text, k);
                let v = match v {
                    FieldValue::Int(v) => RawValue::Int(*v),
                    FieldValue::Float(v) => RawValue::Float(*v),
                    other => panic!("the gather writes numbers only: {other:?}"),
                };
                raw.fields.push((k, v));
            }
            raw.lines.push(RawLine {
                measurement,
                tags: (tags_at, raw.tags.len() as u32),
                fields: (fields_at, raw.fields.len() as u32),
                new_series: i == 0 || points[i - 1].tags != p.tags,
            });
        }
        raw
    }

    fn str(&self, (a, b): Range) -> &str {
        &self.text[a as usize..b as usize]
    }
}

/// Writes `raw` with one [`Encoder`] at `TS` (the gather's timestamp), each series' tags
/// escaped and sorted once ([`TagSet`]) for its lines, as the gather does: the encoder's raw
/// time for these lines, what writing them costs at the least.
fn encode_points(raw: &RawLines, out: &mut Vec<u8>) {
    let mut enc = Encoder::new(out, Precision::Ns, TS);
    let mut tags = TagSet::default();
    let mut tag_refs: Vec<(&str, &str)> = Vec::new();
    for l in &raw.lines {
        if l.new_series {
            tag_refs.clear();
            tag_refs.extend(
                raw.tags[l.tags.0 as usize..l.tags.1 as usize]
                    .iter()
                    .map(|&(k, v)| (raw.str(k), raw.str(v))),
            );
            tags.set(&tag_refs);
        }
        let mut line = enc.line_tagged(raw.str(l.measurement), &tags);
        for (k, v) in &raw.fields[l.fields.0 as usize..l.fields.1 as usize] {
            line = match v {
                RawValue::Int(v) => line.field_i64(raw.str(*k), *v),
                RawValue::Float(v) => line.field_f64(raw.str(*k), *v),
            };
        }
        line.finish();
    }
}

/// Gather + encode of `flows` synthetic flows from 10k addresses/cgroups that belong to
/// `containers` containers (two per pod): refresh, host and container/pod aggregation, encoding.
pub fn gather_encode(flows: u64, containers: u64, reps: usize) -> GatherTimes {
    let resolved = synthetic_containers(containers);
    let mut tracker = WorkloadTracker::new(300, containers as usize);
    let mut active = ActiveByCgroup::default();
    let mut table = FlowTable::new(limits(flows as usize));
    let mut socks: Vec<(u64, FlSock)> = (0..flows).map(|i| (i + 1, synthetic_sock(i))).collect();
    for (cookie, sock) in &socks {
        table.apply(Update::Open, *cookie, sock);
    }
    // The kernel's map comes in its hash order, unrelated to the table's: shuffle (fixed seed).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..socks.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        socks.swap(i, ((state >> 33) % (i as u64 + 1)) as usize);
    }
    let shape = Shape {
        ifid: "0".into(),
        node: "bench-node".into(),
        precision: Precision::Ns,
        ntopng_compat: false,
    };
    let mut out = Vec::new();
    let (mut total, mut refresh, mut hosts, mut workloads_ms, mut encode) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut raw_encode, mut ratio) = (Vec::new(), Vec::new());
    let mut raw = Vec::new();
    let mut lines = 0;
    let (mut peer_slots, mut peer_buf) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        out.clear();
        let t0 = thread_cpu_ms();
        let expired = table.refresh(socks.iter().map(|(c, s)| (*c, s)), 2_000 + rep as u64);
        let t1 = thread_cpu_ms();
        // The gather's first pass: hosts, then cgroups.
        let values = first_pass(&table, &mut active);
        let t_hosts = thread_cpu_ms();
        let touched = table.take_touched_cgroups();
        let mut workloads = tracker.update(
            &mut table,
            &active,
            &resolved,
            &touched,
            &HashMap::new(),
            rep as u64,
        );
        // Peers as the plugin does them: assigned, valued, named.
        let scopes: FastMap<u64, Scope> = resolved
            .iter()
            .map(|(cgroup_id, info)| (*cgroup_id, tracker.scope(info)))
            .collect();
        table.assign_peers(|cg| scopes[&cg], |_, _, _| None, rep as u64);
        // Into the last gather's buffers, as the gather does.
        peer_values_into(&mut table, &mut peer_slots);
        workloads.peers = std::mem::take(&mut peer_buf);
        peer_series_into(
            &table,
            &peer_slots,
            &resolved,
            &tracker,
            &workloads.containers,
            &mut workloads.peers,
        );
        workloads.series_dropped += table.take_peers_folded();
        let t2 = thread_cpu_ms();
        let snapshot = Snapshot {
            flows: Some(values),
            workloads: Some(workloads),
            ..Snapshot::default()
        };
        lines = flowlens_core::encode(&snapshot, &shape, TS, &mut out);
        let t3 = thread_cpu_ms();
        assert!(expired.is_empty());
        if let Some(workloads) = snapshot.workloads {
            peer_buf = workloads.peers;
            peer_buf.clear();
        }
        // The same lines, written by the encoder alone.
        let points = RawLines::parse(&out);
        raw.clear();
        raw.reserve(out.len());
        let t4 = thread_cpu_ms();
        encode_points(&points, &mut raw);
        let t5 = thread_cpu_ms();
        assert_eq!(raw, out, "the raw encoding writes the gather's bytes");
        drop(points);
        let ms = |a: f64, b: f64| b - a;
        raw_encode.push(ms(t4, t5));
        ratio.push(ms(t0, t3) / (ms(t0, t1) + ms(t4, t5)));
        total.push(ms(t0, t3));
        refresh.push(ms(t0, t1));
        hosts.push(ms(t1, t_hosts));
        workloads_ms.push(ms(t_hosts, t2));
        encode.push(ms(t2, t3));
    }
    assert_eq!(table.len() as u64, flows);
    GatherTimes {
        total: Spread::of(&total),
        refresh: Spread::of(&refresh),
        hosts: Spread::of(&hosts),
        workloads: Spread::of(&workloads_ms),
        encode: Spread::of(&encode),
        raw_encode: Spread::of(&raw_encode),
        ratio: Spread::of(&ratio),
        lines,
    }
}

/// One point of the encoder comparison.
struct Point {
    measurement: &'static str,
    /// Sorted by key, as both encoders then write them in the same order.
    tags: Vec<(&'static str, String)>,
    fields: Vec<(&'static str, i64)>,
}

fn points(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let c = i % 10_000;
            match i % 4 {
                0 => Point {
                    measurement: "container:num_flows",
                    tags: vec![
                        (
                            "container",
                            format!("{:012x}", 0x1edb_6c16_0000u64 + c as u64),
                        ),
                        ("ifid", "0".into()),
                        ("pod", format!("web-{c}")),
                    ],
                    fields: vec![("as_client", i as i64 % 97), ("as_server", i as i64 % 13)],
                },
                1 => Point {
                    measurement: "host:traffic",
                    tags: vec![
                        ("host", format!("10.64.{}.{}", c / 256, c % 256)),
                        ("ifid", "0".into()),
                    ],
                    fields: vec![
                        ("bytes_sent", 1_000_000 + i as i64),
                        ("bytes_rcvd", 9_000_000 + i as i64),
                    ],
                },
                2 => Point {
                    measurement: "host:ndpi",
                    tags: vec![
                        ("host", format!("10.64.{}.{}", c / 256, c % 256)),
                        ("ifid", "0".into()),
                        ("protocol", "HTTP".into()),
                    ],
                    fields: vec![("bytes_sent", 12_345 + i as i64), ("bytes_rcvd", 678_901)],
                },
                _ => Point {
                    measurement: "iface:traffic_rxtx",
                    tags: vec![("ifid", "0".into()), ("ifname", format!("veth{c:x}"))],
                    fields: vec![("bytes_sent", 42 + i as i64), ("bytes_rcvd", 4242)],
                },
            }
        })
        .collect()
}

const TS: i64 = 1_700_000_000_000_000_000;

fn encode_ours(points: &[Point], out: &mut Vec<u8>) {
    let mut enc = Encoder::new(out, Precision::Ns, TS);
    for p in points {
        let mut line = enc.line(p.measurement);
        for (k, v) in &p.tags {
            line = line.tag(k, v);
        }
        for (k, v) in &p.fields {
            line = line.field_i64(*k, *v);
        }
        line.finish();
    }
}

fn encode_theirs(points: &[Point], out: Vec<u8>) -> Vec<u8> {
    use influxdb_line_protocol::LineProtocolBuilder;
    let mut b = LineProtocolBuilder::new_with(out);
    for p in points {
        let mut m = b.measurement(p.measurement);
        for (k, v) in &p.tags {
            m = m.tag(k, v);
        }
        let mut f = m.field(p.fields[0].0, p.fields[0].1);
        for (k, v) in &p.fields[1..] {
            f = f.field(k, *v);
        }
        b = f.timestamp(TS).close_line();
    }
    b.build()
}

/// Encoder lines/s, ours and the builder's, on the same points, interleaved.
pub struct EncoderSpeed {
    /// Our encoder, lines/s.
    pub ours: Spread,
    /// `influxdb_line_protocol::LineProtocolBuilder`, lines/s.
    pub theirs: Spread,
    /// ours / theirs per repetition.
    pub ratio: Spread,
    /// Both wrote the same bytes.
    pub identical: bool,
}

/// Runs the comparison: `n` points, `reps` interleaved repetitions.
pub fn encoder_speed(n: usize, reps: usize) -> EncoderSpeed {
    let pts = points(n);
    let mut ours_buf = Vec::with_capacity(n * 128);
    let mut theirs_buf = Vec::with_capacity(n * 128);
    encode_ours(&pts, &mut ours_buf);
    theirs_buf = encode_theirs(&pts, theirs_buf);
    let identical = ours_buf == theirs_buf;
    pin_to_current_cpu();
    let (mut ours, mut theirs, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let mut run = |which: bool| {
            let start = std::time::Instant::now();
            if which {
                ours_buf.clear();
                encode_ours(&pts, &mut ours_buf);
            } else {
                theirs_buf.clear();
                theirs_buf = encode_theirs(&pts, std::mem::take(&mut theirs_buf));
            }
            n as f64 / start.elapsed().as_secs_f64()
        };
        // Alternate which goes first.
        let (a, b) = if rep % 2 == 0 {
            let a = run(true);
            (a, run(false))
        } else {
            let b = run(false);
            (run(true), b)
        };
        ours.push(a);
        theirs.push(b);
        ratio.push(a / b);
    }
    unpin();
    EncoderSpeed {
        ours: Spread::of(&ours),
        theirs: Spread::of(&theirs),
        ratio: Spread::of(&ratio),
        identical,
    }
}
