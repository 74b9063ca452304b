//! docs/metrics.md against what [`encode`] writes: the measurements, tag keys, field keys and
//! field types of every line match the doc's tables, in both modes; the doc's example lines and
//! README's sample output have the shape of lines that are written.
//!
//! A unit test rather than an integration test: it needs no root, no kernel and no containers,
//! so it runs with every `cargo test -p flowlens-core`, and it can build a gather that writes
//! every kind of series (the `other` folds, a container outside Kubernetes, RTTs in both roles,
//! a gather without the eBPF collector), which a real host rarely shows at once. Two guards keep
//! the synthetic gathers complete: they are built from exhaustive struct literals (a new field
//! in a value struct does not compile here until it is given a value), and every name-like string
//! literal of metrics.rs must appear in their output (a new measurement, tag or field key written
//! under a condition these gathers miss fails the test).

use super::*;
use crate::aggregate::hosts::HostValues;
use crate::aggregate::workloads::{
    ContainerSeries, PeerSeries, PodSeries, RoleStats, WorkloadStats,
};
use crate::container::{ContainerInfo, QosClass, Runtime};
use crate::flows::Counters;
use crate::flows::{Failures, PeerKey, PeerTotals, Proto, Role};
use crate::lineproto::{parse_lines, FieldValue};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv6Addr,
    sync::Arc,
};

const DOC: &str = include_str!("../../../../docs/metrics.md");
const SOURCE: &str = include_str!("../metrics.rs");
const README: &str = include_str!("../../../../README.md");
/// The header of every measurement's table.
const HEADER: &str = "| key | kind | type | ntopng_compat | unit | counter / gauge | meaning |";
/// "Not written in this mode".
const ABSENT: &str = "—";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Default,
    Compat,
}

const MODES: [Mode; 2] = [Mode::Default, Mode::Compat];

/// One row of a measurement's table.
#[derive(Debug)]
struct Row {
    key: String,
    /// `tag` or `field`.
    kind: String,
    /// The type by default and with ntopng_compat; None: not written in that mode.
    types: [Option<String>; 2],
    meaning: String,
}

/// One `### \`measurement\`` section of the doc.
#[derive(Debug, Default)]
struct Section {
    rows: Vec<Row>,
    examples: Vec<String>,
}

/// What a set of lines has: measurement -> key -> (kind, types seen).
type Schema = BTreeMap<String, BTreeMap<String, (String, BTreeSet<String>)>>;

fn cells(line: &str) -> Vec<String> {
    let inner = line
        .trim()
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'));
    let inner = inner.unwrap_or_else(|| panic!("a table row starts and ends with `|`: {line}"));
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

fn doc() -> BTreeMap<String, Section> {
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut fenced = false;
    for line in DOC.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            if let Some(name) = &current {
                sections.get_mut(name).unwrap().examples.push(line.into());
            }
            continue;
        }
        if line.starts_with('#') {
            current = line
                .strip_prefix("### `")
                .and_then(|l| l.strip_suffix('`'))
                .map(str::to_string);
            if let Some(name) = &current {
                let fresh = sections.insert(name.clone(), Section::default()).is_none();
                assert!(fresh, "docs/metrics.md: two sections for {name}");
            }
            continue;
        }
        let Some(name) = &current else { continue };
        if line.starts_with("| key") {
            assert_eq!(line, HEADER, "docs/metrics.md: the table header of {name}");
        } else if line.starts_with("| `") {
            let c = cells(line);
            assert_eq!(c.len(), 7, "docs/metrics.md, {name}: 7 columns: {line}");
            let key = c[0].trim_matches('`').to_string();
            let ty = |s: &str| (s != ABSENT).then(|| s.to_string());
            let row = Row {
                key,
                kind: c[1].clone(),
                types: [ty(&c[2]), ty(&c[3])],
                meaning: c[6].clone(),
            };
            let (unit, cg) = (&c[4], &c[5]);
            let what = format!("docs/metrics.md, {name}, {}", row.key);
            match row.kind.as_str() {
                "tag" => {
                    assert_eq!(row.types[0].as_deref(), Some("string"), "{what}");
                    assert!(
                        matches!(row.types[1].as_deref(), Some("string") | None),
                        "{what}"
                    );
                    assert!(
                        unit.is_empty() && cg.is_empty(),
                        "{what}: a tag has no unit"
                    );
                }
                "field" => {
                    for t in row.types.iter().flatten() {
                        assert!(["integer", "float"].contains(&t.as_str()), "{what}: {t}");
                    }
                    assert!(!unit.is_empty(), "{what}: a field has a unit");
                    assert!(["counter", "gauge"].contains(&cg.as_str()), "{what}: {cg}");
                }
                other => panic!("{what}: kind {other:?} is neither tag nor field"),
            }
            assert!(!row.meaning.is_empty(), "{what}: say what it means");
            let section = sections.get_mut(name).unwrap();
            assert!(
                section.rows.iter().all(|r| r.key != row.key),
                "{what}: listed twice"
            );
            section.rows.push(row);
        }
    }
    assert!(!fenced, "docs/metrics.md: a code block is not closed");
    sections
}

/// What the doc says a mode writes.
fn documented(sections: &BTreeMap<String, Section>, mode: Mode) -> Schema {
    let mut out = Schema::new();
    for (name, section) in sections {
        let keys: BTreeMap<String, (String, BTreeSet<String>)> = section
            .rows
            .iter()
            .filter_map(|r| {
                let ty = r.types[mode as usize].clone()?;
                Some((r.key.clone(), (r.kind.clone(), BTreeSet::from([ty]))))
            })
            .collect();
        if !keys.is_empty() {
            out.insert(name.clone(), keys);
        }
    }
    out
}

fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Int(_) => "integer",
        FieldValue::Float(_) => "float",
        FieldValue::Bool(_) => "boolean",
        FieldValue::Str(_) => "string",
    }
}

/// Adds what `text` has to `shape`.
fn observe(text: &str, shape: &mut Schema) {
    for p in parse_lines(text).unwrap_or_else(|e| panic!("{e}:\n{text}")) {
        let keys = shape.entry(p.measurement).or_default();
        for (k, _) in p.tags {
            keys.entry(k)
                .or_insert(("tag".into(), BTreeSet::new()))
                .1
                .insert("string".into());
        }
        for (k, v) in p.fields {
            let e = keys.entry(k).or_insert(("field".into(), BTreeSet::new()));
            e.1.insert(type_name(&v).into());
        }
    }
}

/// The differences between what is written and what the doc lists, one line each.
fn differences(written: &Schema, listed: &Schema, mode: Mode) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = written.keys().chain(listed.keys()).collect();
    for m in names {
        match (written.get(m), listed.get(m)) {
            (Some(_), None) => out.push(format!("{mode:?}: {m} is written but not documented")),
            (None, Some(_)) => out.push(format!("{mode:?}: {m} is documented but never written")),
            (Some(w), Some(l)) => {
                let keys: BTreeSet<&String> = w.keys().chain(l.keys()).collect();
                for k in keys {
                    match (w.get(k), l.get(k)) {
                        (Some((kind, _)), None) => out.push(format!(
                            "{mode:?}: {m}: {kind} {k} is written but not documented"
                        )),
                        (None, Some((kind, _))) => out.push(format!(
                            "{mode:?}: {m}: {kind} {k} is documented but never written"
                        )),
                        (Some(w), Some(l)) if w != l => out.push(format!(
                            "{mode:?}: {m}: {k} is written as {w:?}, documented as {l:?}"
                        )),
                        _ => {}
                    }
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

fn container(c: char, name: Option<&str>, pod: Option<&str>) -> Option<Arc<ContainerInfo>> {
    let id: String = std::iter::repeat_n(c, 64).collect();
    let kubernetes = pod.is_some();
    Some(Arc::new(ContainerInfo {
        short_id: id[..12].to_string(),
        id,
        runtime: if kubernetes {
            Runtime::Containerd
        } else {
            Runtime::Docker
        },
        name: name.map(str::to_string),
        pod: pod.map(str::to_string),
        namespace: kubernetes.then(|| "shop".to_string()),
        pod_uid: None,
        sandbox_id: None,
        is_sandbox: false,
        qos: kubernetes.then_some(QosClass::BestEffort),
    }))
}

fn stats(n: u64) -> WorkloadStats {
    let role = |flows: u64| RoleStats {
        flows,
        rtt_samples: flows,
        // 79 µs over 3 flows: 26.333 µs, written 0.026 (ms).
        srtt_sum_us: 79 * flows / 3,
        rttvar_sum_us: 40 * flows,
    };
    WorkloadStats {
        client: role(3 * n),
        server: role(n),
        counters: Counters {
            bytes_sent: 100 * n,
            bytes_rcvd: 200 * n,
            new_client: 4 * n,
            new_server: n,
            retrans: n,
            failures: Failures {
                refused_as_client: 2 * n,
                timed_out_as_client: n,
                timed_out_as_server: 0,
                unreachable_as_client: n,
                aborted_as_client: 0,
                reset_as_client: n,
                reset_as_server: 3 * n,
                dropped_as_server: 5 * n,
            },
        },
        rtt: rtt_distribution(n).into(),
    }
}

/// RTT samples in both roles: `n` at 26 µs and one at 20 ms as client, `n` at 3 ms as server,
/// and one in every bucket of each role (a bucket without a sample is not written: every field
/// must be, once); this interval's are the same.
fn rtt_distribution(n: u64) -> crate::rtt::RttDistribution {
    let mut b = crate::rtt::RttBuckets::default();
    for _ in 0..n {
        b.client.record(26);
        b.server.record(3_000);
    }
    b.client.record(20_000);
    for bound in crate::rtt::BOUNDS_US {
        b.client.record(bound);
        b.server.record(bound);
    }
    b.client.record(u32::MAX);
    b.server.record(u32::MAX);
    crate::rtt::RttDistribution {
        cumulative: b,
        interval: b,
    }
}

fn host(n: u64) -> HostValues {
    HostValues {
        bytes_sent: 10 * n,
        bytes_rcvd: 20 * n,
        active_client: n,
        active_server: 2 * n,
        total_client: 3 * n,
        total_server: 4 * n,
        ndpi: BTreeMap::from([("HTTP", (n, 2 * n)), ("Unknown", (3 * n, 0))]),
    }
}

/// `stats(n)` with no RTT sample in one role: `client`, or the server role.
fn one_rtt_role(n: u64, client: bool) -> WorkloadStats {
    let none = RoleStats {
        flows: n,
        rtt_samples: 0,
        srtt_sum_us: 0,
        rttvar_sum_us: 0,
    };
    let s = stats(n);
    let mut rtt = s.rtt.get();
    if client {
        rtt.cumulative.server = Default::default();
        rtt.interval.server = Default::default();
        WorkloadStats {
            server: none,
            rtt: rtt.into(),
            ..s
        }
    } else {
        rtt.cumulative.client = Default::default();
        rtt.interval.client = Default::default();
        WorkloadStats {
            client: none,
            rtt: rtt.into(),
            ..s
        }
    }
}

/// A gather with every kind of series: interfaces; hosts (IPv4, IPv6, the `other` fold) with
/// protocols; containers in pods, outside Kubernetes, without a name, and the `other` fold; pods,
/// and the `other` fold; RTTs in both roles, in one, and in none; every internal value. Built
/// from exhaustive literals: a new value forces a decision here.
pub(super) fn every_series() -> Snapshot {
    let web = Some("web-7d4b9c8f6d-x2x9q");
    Snapshot {
        ifaces: vec![
            IfaceCounters {
                name: "eth0".into(),
                rx_bytes: 1000,
                tx_bytes: 200,
                rx_packets: 10,
                tx_packets: 2,
            },
            IfaceCounters {
                name: "veth a,b".into(),
                rx_bytes: u64::MAX,
                tx_bytes: 1,
                rx_packets: 0,
                tx_packets: 0,
            },
        ],
        flows: Some(FlowValues {
            num_flows: 12,
            new_flows: 40,
            hosts: BTreeMap::from([
                (HostKey::addr([10, 93, 0, 1].into(), 4026532301), host(1)),
                (
                    HostKey::addr(
                        Ipv6Addr::new(0xfd00, 0x85, 0, 0, 0, 0, 0, 1).into(),
                        4026532301,
                    ),
                    host(2),
                ),
                // Loopback in two network namespaces: two series.
                (HostKey::addr([127, 0, 0, 1].into(), 4026531833), host(4)),
                (HostKey::addr([127, 0, 0, 1].into(), 4026532301), host(5)),
                (HostKey::Other, host(3)),
            ]),
            hosts_folded: 2,
        }),
        workloads: Some(WorkloadValues {
            containers: vec![
                ContainerSeries {
                    info: container('a', Some("a"), web),
                    stats: stats(1),
                },
                ContainerSeries {
                    info: container('b', Some("b"), web),
                    stats: one_rtt_role(1, true),
                },
                ContainerSeries {
                    info: container('c', Some("c"), Some("db-0")),
                    stats: one_rtt_role(2, false),
                },
                ContainerSeries {
                    info: container('d', Some("redis"), None),
                    stats: stats(1),
                },
                ContainerSeries {
                    info: container('e', None, None),
                    stats: WorkloadStats::default(),
                },
                ContainerSeries {
                    info: None,
                    stats: stats(5),
                },
            ],
            pods: vec![
                PodSeries {
                    name: "db-0".into(),
                    namespace: Some("shop".into()),
                    num_containers: 1,
                    stats: one_rtt_role(2, false),
                },
                PodSeries {
                    name: "web-7d4b9c8f6d-x2x9q".into(),
                    namespace: Some("shop".into()),
                    num_containers: 2,
                    stats: one_rtt_role(2, true),
                },
                PodSeries {
                    name: "shop-1".into(),
                    namespace: Some("shop".into()),
                    num_containers: 1,
                    stats: stats(1),
                },
                PodSeries {
                    name: "other".into(),
                    namespace: None,
                    num_containers: 0,
                    stats: stats(5),
                },
            ],
            peers: vec![
                // A Service call: the virtual IP, the backend that answered, both on this node.
                PeerSeries {
                    container: container('a', Some("a"), web).expect("a container"),
                    key: Some(PeerKey {
                        role: Role::Client,
                        proto: Proto::Tcp,
                        remote: Some([10, 96, 0, 10].into()),
                        port: 80,
                        backend: Some(([10, 244, 0, 7], 8080).into()),
                    }),
                    peer: None,
                    backend: container('c', Some("c"), Some("db-0")),
                    active: 1,
                    totals: PeerTotals {
                        connections: 12,
                        bytes_sent: 4200,
                        bytes_rcvd: 91_000,
                        failures: 0,
                    },
                    rtt_sum_us: 2_468,
                    rtt_samples: 2,
                },
                // A peer on this node, called directly, over UDP (no RTT).
                PeerSeries {
                    container: container('a', Some("a"), web).expect("a container"),
                    key: Some(PeerKey {
                        role: Role::Client,
                        proto: Proto::Udp,
                        remote: Some([10, 244, 0, 9].into()),
                        port: 53,
                        backend: None,
                    }),
                    peer: container('d', Some("redis"), Some("dns-0")),
                    backend: None,
                    active: 0,
                    totals: PeerTotals {
                        connections: 30,
                        bytes_sent: 900,
                        bytes_rcvd: 2100,
                        failures: 0,
                    },
                    rtt_sum_us: 0,
                    rtt_samples: 0,
                },
                // A server port, IPv6 clients of another node (no name), some failures.
                PeerSeries {
                    container: container('c', Some("c"), Some("db-0")).expect("a container"),
                    key: Some(PeerKey {
                        role: Role::Server,
                        proto: Proto::Tcp,
                        remote: None,
                        port: 5432,
                        backend: None,
                    }),
                    peer: None,
                    backend: None,
                    active: 3,
                    totals: PeerTotals {
                        connections: 40,
                        bytes_sent: 1_000_000,
                        bytes_rcvd: 20_000,
                        failures: 2,
                    },
                    rtt_sum_us: 750,
                    rtt_samples: 3,
                },
                PeerSeries {
                    container: container('c', Some("c"), Some("db-0")).expect("a container"),
                    key: Some(PeerKey {
                        role: Role::Client,
                        proto: Proto::Tcp,
                        remote: Some(Ipv6Addr::new(0xfd00, 0x85, 0, 0, 0, 0, 0, 2).into()),
                        port: 443,
                        backend: None,
                    }),
                    peer: None,
                    backend: None,
                    active: 0,
                    totals: PeerTotals::default(),
                    rtt_sum_us: 0,
                    rtt_samples: 0,
                },
                PeerSeries {
                    container: container('c', Some("c"), Some("db-0")).expect("a container"),
                    key: None,
                    peer: None,
                    backend: None,
                    active: 0,
                    totals: PeerTotals {
                        connections: 9000,
                        bytes_sent: 90_000,
                        bytes_rcvd: 90_000,
                        failures: 1,
                    },
                    rtt_sum_us: 0,
                    rtt_samples: 0,
                },
            ],
            series_dropped: 1,
        }),
        internal: Internal {
            gather_duration_ms: 2.9832899999999998,
            events_received: Some(3558),
            events_lost: 1,
            flows_active: 12,
            connects_failed: 2,
            flows_evicted: 3,
            series_dropped: 3,
            probes_attached: 6,
            probes_failed: 0,
            containers_tracked: 4,
            metadata_cache_entries: 8,
            metadata_skipped: 1,
            names_dropped: 2,
            dnat_lookups_skipped: 5,
        },
    }
}

/// A gather without the eBPF collector, as the plugin makes it.
fn without_ebpf() -> Snapshot {
    Snapshot {
        ifaces: every_series().ifaces,
        flows: None,
        workloads: None,
        internal: Internal {
            gather_duration_ms: 0.052,
            ..Internal::default()
        },
    }
}

/// `snapshot` as the plugin's table makes it in `ntopng_compat` mode, when `compat`: hosts
/// keyed by address alone, an address's namespaces summed into one series.
pub(super) fn as_table_makes_it(snapshot: &Snapshot, compat: bool) -> Snapshot {
    let mut snapshot = snapshot.clone();
    if let (true, Some(flows)) = (compat, &mut snapshot.flows) {
        let mut hosts: BTreeMap<HostKey, HostValues> = BTreeMap::new();
        for (key, v) in std::mem::take(&mut flows.hosts) {
            let key = match key {
                HostKey::Addr { ip, .. } => HostKey::Addr { ip, netns: None },
                HostKey::Other => HostKey::Other,
            };
            let h = hosts.entry(key).or_default();
            h.bytes_sent += v.bytes_sent;
            h.bytes_rcvd += v.bytes_rcvd;
            h.active_client += v.active_client;
            h.active_server += v.active_server;
            h.total_client += v.total_client;
            h.total_server += v.total_server;
            for (protocol, (sent, rcvd)) in v.ndpi {
                let e = h.ndpi.entry(protocol).or_default();
                e.0 += sent;
                e.1 += rcvd;
            }
        }
        flows.hosts = hosts;
    }
    snapshot
}

fn lines(snapshot: &Snapshot, mode: Mode) -> String {
    let snapshot = &as_table_makes_it(snapshot, mode == Mode::Compat);
    let shape = Shape {
        ifid: "0".into(),
        node: "node-1".into(),
        precision: Precision::Ns,
        ntopng_compat: mode == Mode::Compat,
    };
    let mut out = Vec::new();
    encode(snapshot, &shape, 1_796_189_332_749_886_539, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_doc_lists_exactly_what_is_written() {
    let sections = doc();
    assert!(
        sections.len() >= 20,
        "docs/metrics.md: {:?}",
        sections.keys()
    );
    let mut problems = Vec::new();
    let mut all_written = Schema::new();
    for mode in MODES {
        let mut written = Schema::new();
        for snapshot in [every_series(), without_ebpf()] {
            let text = lines(&snapshot, mode);
            observe(&text, &mut written);
            observe(&text, &mut all_written);
        }
        problems.extend(differences(&written, &documented(&sections, mode), mode));
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md and plugin/core/src/metrics.rs differ:\n  {}",
        problems.join("\n  ")
    );

    // Every name metrics.rs can write is in the gathers above: a measurement, tag or field key
    // written only under a condition they miss would otherwise go unseen.
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (m, keys) in &all_written {
        names.insert(m.clone());
        names.extend(keys.keys().cloned());
    }
    names.insert("other".into()); // a tag value, the folds'
                                  // Tag values of `container:peers` (role and proto), which its rows document.
    names.extend(["client", "server", "tcp", "udp"].map(String::from));
    let code = SOURCE.split("#[cfg(test)]\nmod tests").next().unwrap();
    assert!(
        code.len() < SOURCE.len(),
        "metrics.rs: its tests module was not found"
    );
    let mut unseen = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        for (i, literal) in line.split('"').enumerate() {
            let name_like = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:".contains(&b));
            if i % 2 == 1 && name_like && !names.contains(literal) {
                unseen.push(literal.to_string());
            }
        }
    }
    assert!(
        unseen.is_empty(),
        "metrics.rs names {unseen:?}, which the gathers of this test never write: \
         make them write it, and document it in docs/metrics.md"
    );
}

/// The shape of a line: measurement, tag keys, field keys and types in order.
type LineShape = (String, Vec<String>, Vec<(String, &'static str)>);

fn line_shape(p: &crate::lineproto::Point) -> LineShape {
    let mut tags: Vec<String> = p.tags.iter().map(|(k, _)| k.clone()).collect();
    tags.sort();
    let fields = p
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), type_name(v)))
        .collect();
    (p.measurement.clone(), tags, fields)
}

/// Checks example lines (from `what`): each has the shape of a line that metrics.rs writes
/// (the tags, and the fields in their order and types, of a line of the gathers above, in one
/// of the modes): no key missing, none too many, no type that is never written; and no float
/// with digits below the microsecond.
fn check_examples<'a>(what: &str, examples: impl Iterator<Item = &'a str>) -> usize {
    let mut written: BTreeSet<LineShape> = BTreeSet::new();
    for mode in MODES {
        for snapshot in [every_series(), without_ebpf()] {
            for p in parse_lines(&lines(&snapshot, mode)).unwrap() {
                written.insert(line_shape(&p));
            }
        }
    }
    let mut n = 0;
    for example in examples {
        let points = parse_lines(example).unwrap_or_else(|e| panic!("{what}: {e}: {example}"));
        assert_eq!(points.len(), 1, "{what}: {example}");
        let shape = line_shape(&points[0]);
        let like: Vec<&LineShape> = written.iter().filter(|w| w.0 == shape.0).collect();
        assert!(
            written.contains(&shape),
            "{what}: no line metrics.rs writes has the shape of\n  {example}\n  {shape:?}\n\
             the lines of {} it writes:\n  {like:?}",
            shape.0
        );
        for (key, value) in &points[0].fields {
            if let FieldValue::Float(v) = value {
                assert_eq!(
                    *v,
                    ms_to_the_us(*v),
                    "{what}: {key} has digits below the µs"
                );
            }
        }
        n += 1;
    }
    n
}

#[test]
fn the_docs_examples_are_lines_that_are_written() {
    for (name, section) in doc() {
        assert!(
            !section.examples.is_empty(),
            "docs/metrics.md: no example for {name}"
        );
        for example in &section.examples {
            assert!(
                example.starts_with(&format!("{name},")),
                "docs/metrics.md, {name}: {example}"
            );
        }
        check_examples(
            "docs/metrics.md",
            section.examples.iter().map(String::as_str),
        );
    }
}

#[test]
fn the_readmes_sample_output_is_lines_that_are_written() {
    // README's "What it prints": its indented block of lines.
    let section = README
        .split("\n## What it prints\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a section \"What it prints\"");
    let sample = section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| l.contains(':') && l.contains(' '));
    let n = check_examples("README.md", sample);
    assert!(n >= 20, "README.md's sample has {n} lines");
}

#[test]
fn without_ebpf_only_what_the_doc_says_is_written() {
    let sections = doc();
    let text = lines(&without_ebpf(), Mode::Default);
    let points = parse_lines(&text).unwrap();
    let written: BTreeSet<&str> = points.iter().map(|p| p.measurement.as_str()).collect();
    assert_eq!(
        written,
        BTreeSet::from([
            "iface:traffic",
            "iface:traffic_rxtx",
            "iface:packets",
            "flowlens:internal"
        ])
    );
    // flowlens:internal: the fields marked *eBPF* are the ones left out.
    let internal = points
        .iter()
        .find(|p| p.measurement == "flowlens:internal")
        .unwrap();
    let fields: BTreeSet<&str> = internal.fields.iter().map(|(k, _)| k.as_str()).collect();
    let expected: BTreeSet<&str> = sections["flowlens:internal"]
        .rows
        .iter()
        .filter(|r| r.kind == "field" && !r.meaning.starts_with("*eBPF*"))
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(fields, expected, "{text}");
}

#[test]
fn the_comparison_reports_each_difference() {
    let listed = documented(&doc(), Mode::Default);
    let mut written = Schema::new();
    observe(&lines(&every_series(), Mode::Default), &mut written);
    observe(&lines(&without_ebpf(), Mode::Default), &mut written);
    assert_eq!(differences(&written, &listed, Mode::Default), [""; 0]);
    // A field more, a measurement less, a type changed.
    observe("iface:flows,ifid=0 surprise=2i 1\n", &mut written);
    written.remove("host:ndpi");
    observe("iface:packets,ifid=0,ifname=lo packets=1 1\n", &mut written);
    assert_eq!(
        differences(&written, &listed, Mode::Default),
        [
            "Default: host:ndpi is documented but never written",
            "Default: iface:flows: field surprise is written but not documented",
            "Default: iface:packets: packets is written as (\"field\", {\"float\", \"integer\"}), \
             documented as (\"field\", {\"integer\"})",
        ]
    );
}
