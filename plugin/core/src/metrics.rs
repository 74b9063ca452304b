//! One gather's values (computed by `aggregate/`) turned into ntopng-schema line protocol
//! (docs/metrics.md: every measurement, tag and field written here is listed there, and a test
//! holds the two equal). Pure: no I/O; no value is computed here.
#![forbid(unsafe_code)]

use crate::aggregate::{
    hosts::FlowValues,
    workloads::{PeerSeries, WorkloadStats, WorkloadValues},
};
use crate::container::ContainerInfo;
use crate::flows::HostKey;
use crate::flows::{write_ip, write_socket_addr, write_u64, Proto, Role as FlowRole};
use crate::iface::IfaceCounters;
use crate::lineproto::{Encoder, LineBuilder, Plain, Precision, TagSet};
use crate::rtt;
use std::sync::Arc;

/// A measurement name or field key checked at compile time to need no escaping.
macro_rules! p {
    ($name:literal) => {{
        const NAME: Plain = Plain::new($name);
        NAME
    }};
}

/// How lines are shaped: the options of the config that change the output.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The `ifid` tag on every line.
    pub ifid: String,
    /// The `node` tag: on every line, but on ntopng's measurements with `ntopng_compat`.
    pub node: String,
    /// Timestamp precision.
    pub precision: Precision,
    /// ntopng's exact shape: every numeric field a float, extensions left out.
    pub ntopng_compat: bool,
}

/// flowlens's own health, written as `flowlens:internal`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Internal {
    /// How long this gather took to read its sources and aggregate, in milliseconds (written to
    /// the microsecond).
    pub gather_duration_ms: f64,
    /// Kernel events read from the ring buffer since start (None: no eBPF collector).
    pub events_received: Option<u64>,
    /// Kernel events lost since start: ring buffer full, programs' runs the kernel skipped,
    /// sockets whose close and destruction were both missed.
    pub events_lost: u64,
    /// Flows in the table now.
    pub flows_active: u64,
    /// TCP connects that failed (SYN_SENT -> CLOSE) since start.
    pub connects_failed: u64,
    /// Sockets the kernel map had no room for, plus flows the table had no room for.
    pub flows_evicted: u64,
    /// Series folded into `other` in this gather.
    pub series_dropped: u64,
    /// Probes attached and working.
    pub probes_attached: u64,
    /// Probes that failed to load or attach.
    pub probes_failed: u64,
    /// Containers with series (active, or within `series_ttl_secs`).
    pub containers_tracked: u64,
    /// Entries in the container metadata caches (cgroup paths, container names).
    pub metadata_cache_entries: u64,
    /// Container metadata files skipped (malformed, not UTF-8, too large, symbolic links...).
    pub metadata_skipped: u64,
    /// Container, pod and namespace names left out: line protocol cannot carry them unchanged.
    pub names_dropped: u64,
    /// New client flows given no DNAT backend: the gather's conntrack lookups were used up (or
    /// the flows arrived during their last round).
    pub(crate) dnat_lookups_skipped: u64,
}

/// Everything one gather writes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Interface counters.
    pub ifaces: Vec<IfaceCounters>,
    /// Flow-derived values (None: no eBPF collector).
    pub flows: Option<FlowValues>,
    /// Container and pod series (None: no eBPF collector).
    pub workloads: Option<WorkloadValues>,
    /// Self-telemetry.
    pub internal: Internal,
}

/// Milliseconds rounded to the microsecond, the resolution of every time flowlens writes in ms
/// (the kernel keeps RTTs in µs; a gather's duration finer than a µs says nothing). Below it a
/// float computation leaves only noise (`2.9832899999999998`); the rounded value is the double
/// nearest a 3-decimal number, which the encoder writes in its shortest form (`2.983`).
pub(crate) fn ms_to_the_us(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

/// A counter as an int64 field: the kernel's u64 counters saturate instead of turning negative.
fn counter(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Adds a count field: an integer, or a float in ntopng_compat mode (ntopng writes floats).
fn count<'b, 'e>(
    line: LineBuilder<'b, 'e>,
    shape: &Shape,
    key: Plain,
    value: i64,
) -> LineBuilder<'b, 'e> {
    if shape.ntopng_compat {
        line.field_f64(key, value as f64)
    } else {
        line.field_i64(key, value)
    }
}

impl Shape {
    /// The `node` tag's value on ntopng's measurements: empty (the tag left out) with
    /// `ntopng_compat`, which keeps ntopng's exact tags.
    fn ntopng_node(&self) -> &str {
        if self.ntopng_compat {
            ""
        } else {
            &self.node
        }
    }
}

/// Appends every line of `snapshot` to `out`, all stamped `timestamp_ns`. Returns the line count.
pub fn encode(snapshot: &Snapshot, shape: &Shape, timestamp_ns: i64, out: &mut Vec<u8>) -> u64 {
    let mut enc = Encoder::new(out, shape.precision, timestamp_ns);
    let ifid = shape.ifid.as_str();
    let node = shape.ntopng_node();
    // Each interface's tags are escaped and sorted once, for its three lines.
    let mut tags = TagSet::default();
    for iface in &snapshot.ifaces {
        tags.set(&[("ifid", ifid), ("ifname", &iface.name), ("node", node)]);
        let (rx, tx) = (counter(iface.rx_bytes), counter(iface.tx_bytes));
        let line = enc.line_tagged(p!("iface:traffic"), &tags);
        count(line, shape, p!("bytes"), rx.saturating_add(tx)).finish();
        let line = enc.line_tagged(p!("iface:traffic_rxtx"), &tags);
        let line = count(line, shape, p!("bytes_sent"), tx);
        count(line, shape, p!("bytes_rcvd"), rx).finish();
        let packets = counter(iface.rx_packets).saturating_add(counter(iface.tx_packets));
        let line = enc.line_tagged(p!("iface:packets"), &tags);
        count(line, shape, p!("packets"), packets).finish();
    }
    if let Some(flows) = &snapshot.flows {
        encode_flows(&mut enc, flows, shape);
    }
    if let Some(workloads) = &snapshot.workloads {
        encode_workloads(&mut enc, workloads, shape);
    }
    let internal = &snapshot.internal;
    // Not an ntopng measurement: the same in both modes.
    let mut line = enc
        .line(p!("flowlens:internal"))
        .tag("ifid", ifid)
        .tag("node", &shape.node)
        .field_f64(
            p!("gather_duration_ms"),
            ms_to_the_us(internal.gather_duration_ms),
        );
    if let Some(received) = internal.events_received {
        line = line
            .field_i64(p!("events_received"), counter(received))
            .field_i64(p!("events_lost"), counter(internal.events_lost))
            .field_i64(p!("flows_active"), counter(internal.flows_active))
            .field_i64(p!("connects_failed"), counter(internal.connects_failed))
            .field_i64(p!("flows_evicted"), counter(internal.flows_evicted))
            .field_i64(
                p!("containers_tracked"),
                counter(internal.containers_tracked),
            )
            .field_i64(
                p!("metadata_cache_entries"),
                counter(internal.metadata_cache_entries),
            )
            .field_i64(p!("metadata_skipped"), counter(internal.metadata_skipped))
            .field_i64(p!("names_dropped"), counter(internal.names_dropped))
            .field_i64(
                p!("dnat_lookups_skipped"),
                counter(internal.dnat_lookups_skipped),
            );
    }
    line.field_i64(p!("series_dropped"), counter(internal.series_dropped))
        .field_i64(p!("probes_attached"), counter(internal.probes_attached))
        .field_i64(p!("probes_failed"), counter(internal.probes_failed))
        .finish();
    enc.lines_written()
}

/// Adds a float field in ms, to the microsecond, when there is a value.
fn maybe_ms<'b, 'e>(
    line: LineBuilder<'b, 'e>,
    key: Plain,
    value: Option<f64>,
) -> LineBuilder<'b, 'e> {
    match value {
        Some(v) => line.field_f64(key, ms_to_the_us(v)),
        None => line,
    }
}

/// Writes the lines of one container or pod: `subject` is `container` or `pod`, `tags` its
/// identifying and descriptive tags (already chosen for the mode).
fn encode_workload(
    enc: &mut Encoder<'_>,
    shape: &Shape,
    subject: Subject,
    tags: &TagSet,
    stats: &WorkloadStats,
    num_containers: Option<u64>,
) {
    let names = subject.measurements();
    let line = enc.line_tagged(names.num_flows, tags);
    let line = count(line, shape, p!("as_client"), counter(stats.client.flows));
    count(line, shape, p!("as_server"), counter(stats.server.flows)).finish();
    let line = enc.line_tagged(names.rtt, tags);
    let line = maybe_ms(line, p!("as_client"), stats.client.rtt_ms());
    maybe_ms(line, p!("as_server"), stats.server.rtt_ms()).finish();
    let line = enc.line_tagged(names.rtt_variance, tags);
    let line = maybe_ms(line, p!("as_client"), stats.client.rttvar_ms());
    maybe_ms(line, p!("as_server"), stats.server.rttvar_ms()).finish();
    if let (Some(n), Some(m)) = (num_containers, names.num_containers) {
        let line = enc.line_tagged(m, tags);
        count(line, shape, p!("num_containers"), counter(n)).finish();
    }
    if shape.ntopng_compat {
        return;
    }
    enc.line_tagged(names.traffic, tags)
        .field_i64(p!("bytes_sent"), counter(stats.counters.bytes_sent))
        .field_i64(p!("bytes_rcvd"), counter(stats.counters.bytes_rcvd))
        .finish();
    enc.line_tagged(names.new_flows, tags)
        .field_i64(p!("as_client"), counter(stats.counters.new_client))
        .field_i64(p!("as_server"), counter(stats.counters.new_server))
        .finish();
    enc.line_tagged(names.tcp_retransmissions, tags)
        .field_i64(p!("packets"), counter(stats.counters.retrans))
        .finish();
    if let Some(rtt) = stats.rtt.as_ref() {
        encode_rtt_distribution(enc, subject, tags, rtt);
    }
    encode_failures(enc, subject, tags, stats);
}

/// The bucket fields of `<subject>:rtt_buckets`, per role, in bucket order: each named by its
/// bucket's upper bound in ms (`rtt::BOUNDS_US`), the last `inf`.
const RTT_BUCKET_FIELDS: [[Plain; rtt::BUCKETS]; 2] = [
    [
        p!("client_0.05"),
        p!("client_0.1"),
        p!("client_0.25"),
        p!("client_0.5"),
        p!("client_1"),
        p!("client_2.5"),
        p!("client_5"),
        p!("client_10"),
        p!("client_25"),
        p!("client_50"),
        p!("client_100"),
        p!("client_250"),
        p!("client_500"),
        p!("client_1000"),
        p!("client_inf"),
    ],
    [
        p!("server_0.05"),
        p!("server_0.1"),
        p!("server_0.25"),
        p!("server_0.5"),
        p!("server_1"),
        p!("server_2.5"),
        p!("server_5"),
        p!("server_10"),
        p!("server_25"),
        p!("server_50"),
        p!("server_100"),
        p!("server_250"),
        p!("server_500"),
        p!("server_1000"),
        p!("server_inf"),
    ],
];

/// The fields of `<subject>:rtt_quantiles`, per role, in `rtt::QUANTILES`' order.
const RTT_QUANTILE_FIELDS: [[Plain; 3]; 2] = [
    [p!("client_p50"), p!("client_p90"), p!("client_p99")],
    [p!("server_p50"), p!("server_p90"), p!("server_p99")],
];

/// Writes a container's or pod's RTT distribution (not with `ntopng_compat`): its bucket
/// counters, each once it has had a sample (a counter that is 0 is left out: most flows of a
/// container fall in a few buckets, and 30 zeros a line would double the gather's output), and
/// this interval's quantiles, per role when the interval has a sample. A line without a field
/// is not written.
fn encode_rtt_distribution(
    enc: &mut Encoder<'_>,
    subject: Subject,
    tags: &TagSet,
    rtt: &rtt::RttDistribution,
) {
    let (buckets, quantiles) = match subject {
        Subject::Container => (p!("container:rtt_buckets"), p!("container:rtt_quantiles")),
        Subject::Pod => (p!("pod:rtt_buckets"), p!("pod:rtt_quantiles")),
    };
    let roles = [
        (&rtt.cumulative.client, &rtt.interval.client),
        (&rtt.cumulative.server, &rtt.interval.server),
    ];
    if roles.iter().any(|(c, _)| c.total() > 0) {
        let mut line = enc.line_tagged(buckets, tags);
        for ((cumulative, _), keys) in roles.iter().zip(&RTT_BUCKET_FIELDS) {
            for (key, n) in keys.iter().zip(cumulative.0) {
                if n > 0 {
                    line = line.field_i64(*key, counter(n));
                }
            }
        }
        line.finish();
    }
    if roles.iter().any(|(_, i)| i.total() > 0) {
        let mut line = enc.line_tagged(quantiles, tags);
        for ((_, interval), keys) in roles.iter().zip(&RTT_QUANTILE_FIELDS) {
            for (key, q) in keys.iter().zip(rtt::QUANTILES) {
                line = maybe_ms(line, *key, interval.quantile_ms(q));
            }
        }
        line.finish();
    }
}

/// `container:tcp_failures` / `pod:tcp_failures`: failed TCP connections by reason and role
/// (an extension, so never with `ntopng_compat`).
fn encode_failures(enc: &mut Encoder<'_>, subject: Subject, tags: &TagSet, stats: &WorkloadStats) {
    let name = match subject {
        Subject::Container => p!("container:tcp_failures"),
        Subject::Pod => p!("pod:tcp_failures"),
    };
    let f = &stats.counters.failures;
    enc.line_tagged(name, tags)
        .field_i64(p!("refused_as_client"), counter(f.refused_as_client))
        .field_i64(p!("timed_out_as_client"), counter(f.timed_out_as_client))
        .field_i64(p!("timed_out_as_server"), counter(f.timed_out_as_server))
        .field_i64(
            p!("unreachable_as_client"),
            counter(f.unreachable_as_client),
        )
        .field_i64(p!("aborted_as_client"), counter(f.aborted_as_client))
        .field_i64(p!("reset_as_client"), counter(f.reset_as_client))
        .field_i64(p!("reset_as_server"), counter(f.reset_as_server))
        .field_i64(p!("dropped_as_server"), counter(f.dropped_as_server))
        .finish();
}

/// The measurement names of a subject.
struct Measurements {
    num_flows: Plain,
    rtt: Plain,
    rtt_variance: Plain,
    num_containers: Option<Plain>,
    traffic: Plain,
    new_flows: Plain,
    tcp_retransmissions: Plain,
}

/// Containers or pods.
#[derive(Clone, Copy)]
enum Subject {
    Container,
    Pod,
}

impl Subject {
    fn measurements(self) -> Measurements {
        match self {
            Subject::Container => Measurements {
                num_flows: p!("container:num_flows"),
                rtt: p!("container:rtt"),
                rtt_variance: p!("container:rtt_variance"),
                num_containers: None,
                traffic: p!("container:traffic"),
                new_flows: p!("container:new_flows"),
                tcp_retransmissions: p!("container:tcp_retransmissions"),
            },
            Subject::Pod => Measurements {
                num_flows: p!("pod:num_flows"),
                rtt: p!("pod:rtt"),
                rtt_variance: p!("pod:rtt_variance"),
                num_containers: Some(p!("pod:num_containers")),
                traffic: p!("pod:traffic"),
                new_flows: p!("pod:new_flows"),
                tcp_retransmissions: p!("pod:tcp_retransmissions"),
            },
        }
    }
}

fn encode_workloads(enc: &mut Encoder<'_>, values: &WorkloadValues, shape: &Shape) {
    let ifid = shape.ifid.as_str();
    let node = shape.ntopng_node();
    let ext = !shape.ntopng_compat;
    // Each series' tags are escaped and sorted once, for all of its lines.
    let mut tags = TagSet::default();
    for series in &values.containers {
        match &series.info {
            Some(info) => {
                fn optional(ext: bool, v: &Option<String>) -> &str {
                    match (ext, v) {
                        (true, Some(v)) => v.as_str(),
                        _ => "",
                    }
                }
                tags.set(&[
                    ("container", info.short_id.as_str()),
                    ("container_name", optional(ext, &info.name)),
                    ("ifid", ifid),
                    ("namespace", optional(ext, &info.namespace)),
                    ("node", node),
                    ("pod", optional(ext, &info.pod)),
                ]);
            }
            None => tags.set(&[("container", "other"), ("ifid", ifid), ("node", node)]),
        }
        encode_workload(enc, shape, Subject::Container, &tags, &series.stats, None);
    }
    for pod in &values.pods {
        let namespace = match (ext, &pod.namespace) {
            (true, Some(ns)) => ns.as_str(),
            _ => "",
        };
        tags.set(&[
            ("ifid", ifid),
            ("namespace", namespace),
            ("node", node),
            ("pod", &pod.name),
        ]);
        let count = Some(pod.num_containers);
        encode_workload(enc, shape, Subject::Pod, &tags, &pod.stats, count);
    }
    if ext {
        encode_peers(enc, &values.peers, shape);
    }
}

/// An optional name as a tag value (empty: the tag is left out).
fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// The short id of an optional container, as a tag value.
fn short(v: &Option<Arc<ContainerInfo>>) -> &str {
    v.as_ref().map_or("", |i| i.short_id.as_str())
}

/// The pod of an optional container, as a tag value.
fn pod_of(v: &Option<Arc<ContainerInfo>>) -> &str {
    v.as_ref().and_then(|i| i.pod.as_deref()).unwrap_or("")
}

/// `container:peers`: one line per container and peer (an extension: never with
/// `ntopng_compat`, where the table keeps no peers).
fn encode_peers(enc: &mut Encoder<'_>, peers: &[PeerSeries], shape: &Shape) {
    let ifid = shape.ifid.as_str();
    let mut tags = TagSet::default();
    let (mut peer, mut backend) = (String::new(), String::new());
    for series in peers {
        let info = &series.container;
        peer.clear();
        backend.clear();
        let (role, proto) = match &series.key {
            Some(key) => {
                key.write_endpoint(&mut peer);
                if let Some(b) = key.backend {
                    write_socket_addr(&mut backend, b);
                }
                let role = match key.role {
                    FlowRole::Client => "client",
                    FlowRole::Server => "server",
                };
                let proto = match key.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                (role, proto)
            }
            None => {
                peer.push_str("other");
                ("", "")
            }
        };
        // In key order: the encoder's fast path, no sort.
        tags.set(&[
            ("backend", &backend),
            ("backend_container", short(&series.backend)),
            ("backend_pod", pod_of(&series.backend)),
            ("container", info.short_id.as_str()),
            ("container_name", text(&info.name)),
            ("ifid", ifid),
            ("namespace", text(&info.namespace)),
            ("node", &shape.node),
            ("peer", &peer),
            ("peer_container", short(&series.peer)),
            ("peer_pod", pod_of(&series.peer)),
            ("pod", text(&info.pod)),
            ("proto", proto),
            ("role", role),
        ]);
        let t = &series.totals;
        let line = enc
            .line_tagged(p!("container:peers"), &tags)
            .field_i64(p!("active"), counter(series.active))
            .field_i64(p!("connections"), counter(t.connections))
            .field_i64(p!("bytes_sent"), counter(t.bytes_sent))
            .field_i64(p!("bytes_rcvd"), counter(t.bytes_rcvd))
            .field_i64(p!("failures"), counter(t.failures));
        maybe_ms(line, p!("rtt"), series.rtt_ms()).finish();
    }
}

fn encode_flows(enc: &mut Encoder<'_>, flows: &FlowValues, shape: &Shape) {
    let ifid = shape.ifid.as_str();
    let node = shape.ntopng_node();
    let line = enc
        .line(p!("iface:flows"))
        .tag("ifid", ifid)
        .tag("node", node);
    count(line, shape, p!("num_flows"), counter(flows.num_flows)).finish();
    let line = enc
        .line(p!("iface:new_flows"))
        .tag("ifid", ifid)
        .tag("node", node);
    count(line, shape, p!("new_flows"), counter(flows.new_flows)).finish();
    let (mut host, mut netns) = (String::new(), String::new());
    let mut tags = TagSet::default();
    for (key, h) in &flows.hosts {
        host.clear();
        match key {
            HostKey::Addr { ip, .. } => write_ip(&mut host, *ip),
            HostKey::Other => host.push_str("other"),
        }
        // The network namespace, when the key has one (never with ntopng_compat: its table
        // counts an address of every namespace in one series).
        netns.clear();
        if let Some(inode) = key.netns() {
            write_u64(&mut netns, inode.into());
        }
        tags.set(&[
            ("host", &host),
            ("ifid", ifid),
            ("netns", &netns),
            ("node", node),
        ]);
        let line = enc.line_tagged(p!("host:traffic"), &tags);
        let line = count(line, shape, p!("bytes_sent"), counter(h.bytes_sent));
        count(line, shape, p!("bytes_rcvd"), counter(h.bytes_rcvd)).finish();
        let line = enc.line_tagged(p!("host:active_flows"), &tags);
        let line = count(line, shape, p!("flows_as_client"), counter(h.active_client));
        count(line, shape, p!("flows_as_server"), counter(h.active_server)).finish();
        let line = enc.line_tagged(p!("host:total_flows"), &tags);
        let line = count(line, shape, p!("flows_as_client"), counter(h.total_client));
        count(line, shape, p!("flows_as_server"), counter(h.total_server)).finish();
        for (protocol, (sent, rcvd)) in &h.ndpi {
            let line = enc
                .line_tagged(p!("host:ndpi"), &tags)
                .tag("protocol", protocol);
            let line = count(line, shape, p!("bytes_sent"), counter(*sent));
            count(line, shape, p!("bytes_rcvd"), counter(*rcvd)).finish();
        }
    }
}

#[cfg(test)]
mod schema_doc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::hosts::HostValues;
    use std::collections::BTreeMap;

    fn shape(compat: bool) -> Shape {
        Shape {
            ifid: "0".into(),
            node: "node-1".into(),
            precision: Precision::Ns,
            ntopng_compat: compat,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            ifaces: vec![IfaceCounters {
                name: "veth a".into(),
                rx_bytes: 100,
                tx_bytes: 23,
                rx_packets: 2,
                tx_packets: 1,
            }],
            flows: None,
            workloads: None,
            internal: Internal {
                gather_duration_ms: 1.5,
                ..Internal::default()
            },
        }
    }

    #[test]
    fn interface_lines_follow_the_schema() {
        let mut out = Vec::new();
        let n = encode(
            &snapshot(),
            &shape(false),
            1_700_000_000_000_000_000,
            &mut out,
        );
        assert_eq!(n, 4);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "iface:traffic,ifid=0,ifname=veth\\ a,node=node-1 bytes=123i 1700000000000000000\n\
             iface:traffic_rxtx,ifid=0,ifname=veth\\ a,node=node-1 bytes_sent=23i,bytes_rcvd=100i 1700000000000000000\n\
             iface:packets,ifid=0,ifname=veth\\ a,node=node-1 packets=3i 1700000000000000000\n\
             flowlens:internal,ifid=0,node=node-1 gather_duration_ms=1.5,series_dropped=0i,probes_attached=0i,probes_failed=0i 1700000000000000000\n"
        );
    }

    /// The tag keys of each line of `text`: (measurement, sorted keys).
    fn tag_keys(text: &str) -> Vec<(String, Vec<String>)> {
        crate::lineproto::parse_lines(text)
            .unwrap()
            .into_iter()
            .map(|p| {
                let mut keys: Vec<String> = p.tags.into_iter().map(|(k, _)| k).collect();
                keys.sort();
                (p.measurement, keys)
            })
            .collect()
    }

    #[test]
    fn every_line_carries_the_node_and_ntopng_compat_keeps_ntopngs_exact_tags() {
        let mut out = Vec::new();
        encode(&schema_doc::every_series(), &shape(false), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        let points = crate::lineproto::parse_lines(&text).unwrap();
        assert!(points.len() > 40, "{text}");
        for p in &points {
            let nodes: Vec<&str> = p
                .tags
                .iter()
                .filter(|(k, _)| k == "node")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(nodes, ["node-1"], "{} {:?}", p.measurement, p.tags);
        }
        // ntopng_compat: ntopng's measurements carry ntopng's tags and no more (`iface:`
        // lines keep `ifname`, see docs/metrics.md); flowlens:internal keeps its node.
        let snapshot = schema_doc::as_table_makes_it(&schema_doc::every_series(), true);
        let mut out = Vec::new();
        encode(&snapshot, &shape(true), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        let ntopng: [(&str, &[&str]); 6] = [
            ("container:", &["container", "ifid"]),
            ("pod:", &["ifid", "pod"]),
            ("host:ndpi", &["host", "ifid", "protocol"]),
            ("host:", &["host", "ifid"]),
            ("iface:flows", &["ifid"]),
            ("iface:new_flows", &["ifid"]),
        ];
        let mut seen = BTreeMap::new();
        for (measurement, keys) in tag_keys(&text) {
            let want: &[&str] = if measurement == "flowlens:internal" {
                &["ifid", "node"]
            } else if measurement.starts_with("iface:") && keys.len() == 2 {
                &["ifid", "ifname"]
            } else {
                ntopng
                    .iter()
                    .find(|(prefix, _)| measurement.starts_with(prefix))
                    .unwrap_or_else(|| panic!("{measurement} is not an ntopng measurement"))
                    .1
            };
            assert_eq!(keys, want, "{measurement}");
            *seen.entry(measurement).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 17, "{seen:?}");
    }

    #[test]
    fn the_node_is_escaped_in_the_lines_and_reads_back_unchanged() {
        for node in ["node a,b=c", "ноды-1", "a\\b", "#1"] {
            let shape = Shape {
                node: node.into(),
                ..shape(false)
            };
            let mut out = Vec::new();
            encode(&schema_doc::every_series(), &shape, 5, &mut out);
            let text = String::from_utf8(out).unwrap();
            for p in crate::lineproto::parse_lines(&text).unwrap() {
                let got = p.tags.iter().find(|(k, _)| k == "node").map(|(_, v)| v);
                assert_eq!(got.map(String::as_str), Some(node), "{text}");
            }
        }
        let shape = Shape {
            node: "node a,b=c".into(),
            ..shape(false)
        };
        let mut out = Vec::new();
        encode(&snapshot(), &shape, 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "iface:traffic,ifid=0,ifname=veth\\ a,node=node\\ a\\,b\\=c bytes=123i 5\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_address_of_several_network_namespaces_is_one_series_per_namespace() {
        let lo = "127.0.0.1".parse().unwrap();
        let values = |n: u64| HostValues {
            bytes_sent: n,
            ..HostValues::default()
        };
        let snapshot = Snapshot {
            flows: Some(FlowValues {
                hosts: BTreeMap::from([
                    (HostKey::addr(lo, 4026531833), values(1)),
                    (HostKey::addr(lo, 4026532301), values(2)),
                    (HostKey::Other, values(3)),
                ]),
                ..FlowValues::default()
            }),
            ..snapshot()
        };
        let mut out = Vec::new();
        encode(&snapshot, &shape(false), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        let traffic: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("host:traffic,"))
            .collect();
        assert_eq!(
            traffic,
            [
                "host:traffic,host=127.0.0.1,ifid=0,netns=4026531833,node=node-1 bytes_sent=1i,bytes_rcvd=0i 5",
                "host:traffic,host=127.0.0.1,ifid=0,netns=4026532301,node=node-1 bytes_sent=2i,bytes_rcvd=0i 5",
                "host:traffic,host=other,ifid=0,node=node-1 bytes_sent=3i,bytes_rcvd=0i 5",
            ]
        );
        // ntopng_compat: the table keys by address alone, one series for every namespace.
        let snapshot = Snapshot {
            flows: Some(FlowValues {
                hosts: BTreeMap::from([(
                    HostKey::Addr {
                        ip: lo,
                        netns: None,
                    },
                    values(3),
                )]),
                ..FlowValues::default()
            }),
            ..snapshot
        };
        let mut out = Vec::new();
        encode(&snapshot, &shape(true), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\nhost:traffic,host=127.0.0.1,ifid=0 bytes_sent=3,bytes_rcvd=0 5\n"),
            "{text}"
        );
    }

    #[test]
    fn ntopng_compat_writes_floats() {
        let mut out = Vec::new();
        encode(&snapshot(), &shape(true), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("iface:traffic,ifid=0,ifname=veth\\ a bytes=123 5\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| l.starts_with("iface:")) {
            assert!(!line.contains("i "), "{line}");
        }
    }

    /// The text `field_f64` writes for `v`.
    fn float_text(v: f64) -> String {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out, Precision::S, 0);
        enc.line(p!("m")).field_f64(p!("f"), v).finish();
        drop(enc);
        let text = String::from_utf8(out).unwrap();
        text["m f=".len()..text.len() - " 0\n".len()].to_string()
    }

    /// `us` microseconds as milliseconds, written by hand: at most 3 decimals, no trailing 0.
    fn ms_decimal(us: u64) -> String {
        let (int, frac) = (us / 1000, us % 1000);
        if frac == 0 {
            int.to_string()
        } else {
            format!("{int}.{frac:03}").trim_end_matches('0').to_string()
        }
    }

    #[test]
    fn times_in_ms_are_written_to_the_microsecond_in_their_shortest_form() {
        for (ms, want) in [
            (2.9832899999999998, "2.983"),
            (0.781332, "0.781"),
            (4.589014, "4.589"),
            (2.536909, "2.537"),
            (1.5, "1.5"),
            (3.0, "3"),
            (0.0, "0"),
            (0.0004, "0"),
            (0.0005, "0.001"),
            (0.026333333333333334, "0.026"),
            (0.1 + 0.2, "0.3"),
            (86_400_000.000_4, "86400000"),
        ] {
            assert_eq!(float_text(ms_to_the_us(ms)), want, "{ms:?}");
        }
        // Every number of µs up to 0.2 s, and a sample up to about 11 days: the value, and the
        // value with noise below the µs, written as the decimal number of ms they are.
        let sample = (0..200_000u64).chain((0..1_000_000_000_000).step_by(999_983_u64 as usize));
        for us in sample {
            let ms = us as f64 / 1e3;
            let want = ms_decimal(us);
            assert_eq!(float_text(ms_to_the_us(ms)), want, "{us} µs");
            assert_eq!(
                float_text(ms_to_the_us(ms + 0.000_3)),
                want,
                "{us} µs + 0.3"
            );
            if us > 0 {
                assert_eq!(
                    float_text(ms_to_the_us(ms - 0.000_3)),
                    want,
                    "{us} µs - 0.3"
                );
            }
        }
    }

    #[test]
    fn float_fields_carry_no_noise_in_either_mode() {
        // gather_duration_ms 2.9832899999999998 and RTT means of 26.333 µs (79 µs over 3
        // flows): the encoder's shortest round-trip text would show every digit of the float.
        let role = |sum| crate::aggregate::workloads::RoleStats {
            flows: 3,
            rtt_samples: 3,
            srtt_sum_us: sum,
            rttvar_sum_us: sum,
        };
        let stats = WorkloadStats {
            client: role(79),
            server: role(80),
            ..WorkloadStats::default()
        };
        let snapshot = Snapshot {
            flows: Some(FlowValues::default()),
            workloads: Some(WorkloadValues {
                containers: vec![crate::aggregate::workloads::ContainerSeries {
                    info: None,
                    stats,
                }],
                ..WorkloadValues::default()
            }),
            internal: Internal {
                gather_duration_ms: 2.9832899999999998,
                events_received: Some(1),
                ..Internal::default()
            },
            ..snapshot()
        };
        for compat in [false, true] {
            let mut out = Vec::new();
            encode(&snapshot, &shape(compat), 5, &mut out);
            let text = String::from_utf8(out).unwrap();
            let node = if compat { "" } else { ",node=node-1" };
            for want in [
                format!("container:rtt,container=other,ifid=0{node} as_client=0.026,as_server=0.027 5\n"),
                format!("container:rtt_variance,container=other,ifid=0{node} as_client=0.026,as_server=0.027 5\n"),
                "flowlens:internal,ifid=0,node=node-1 gather_duration_ms=2.983,".to_string(),
            ] {
                assert!(text.contains(&want), "{compat}: {want}\n{text}");
            }
            for point in crate::lineproto::parse_lines(&text).unwrap() {
                for (key, value) in &point.fields {
                    if let crate::lineproto::FieldValue::Float(v) = value {
                        if key.ends_with("_ms") || point.measurement.contains(":rtt") {
                            assert_eq!(*v, ms_to_the_us(*v), "{key} of {}", point.measurement);
                        } else {
                            assert!(compat && v.fract() == 0.0, "{key}={v}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rtt_bucket_fields_are_named_by_their_upper_bounds_in_ms() {
        for (role, keys) in ["client", "server"].iter().zip(&RTT_BUCKET_FIELDS) {
            for (i, key) in keys.iter().enumerate() {
                let bound = match rtt::BOUNDS_US.get(i) {
                    Some(us) => format!("{}", f64::from(*us) / 1e3),
                    None => "inf".into(),
                };
                assert_eq!(key.as_str(), format!("{role}_{bound}"));
            }
        }
        for (role, keys) in ["client", "server"].iter().zip(&RTT_QUANTILE_FIELDS) {
            for (key, q) in keys.iter().zip(rtt::QUANTILES) {
                assert_eq!(key.as_str(), format!("{role}_p{}", (q * 100.0).round()));
            }
        }
    }

    #[test]
    fn rtt_distributions_are_written_per_role_once_it_has_samples_and_never_in_compat() {
        use crate::rtt::{Buckets, RttBuckets, RttDistribution};
        let mut client = Buckets::default();
        for us in [1_050, 1_100, 1_200, 20_100] {
            client.record(us);
        }
        let stats = WorkloadStats {
            rtt: RttDistribution {
                cumulative: RttBuckets {
                    client,
                    server: Buckets::default(),
                },
                interval: RttBuckets {
                    client,
                    server: Buckets::default(),
                },
            }
            .into(),
            ..WorkloadStats::default()
        };
        let idle = WorkloadStats::default();
        let snapshot = |stats: &WorkloadStats| Snapshot {
            flows: Some(FlowValues::default()),
            workloads: Some(WorkloadValues {
                containers: vec![crate::aggregate::workloads::ContainerSeries {
                    info: None,
                    stats: stats.clone(),
                }],
                ..WorkloadValues::default()
            }),
            ..snapshot()
        };
        let mut out = Vec::new();
        encode(&snapshot(&stats), &shape(false), 5, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "\ncontainer:rtt_buckets,container=other,ifid=0,node=node-1 client_2.5=3i,\
                 client_25=1i 5\n\
                 container:rtt_quantiles,container=other,ifid=0,node=node-1 client_p50=2,\
                 client_p90=19,client_p99=24.4 5\n"
            ),
            "{text}"
        );
        // The interval without a sample: the counters stay, the quantiles are left out.
        let quiet = WorkloadStats {
            rtt: RttDistribution {
                interval: RttBuckets::default(),
                ..stats.rtt.get()
            }
            .into(),
            ..stats.clone()
        };
        for (stats, compat, buckets, quantiles) in [
            (&quiet, false, true, false),
            (&idle, false, false, false),
            (&stats, true, false, false),
        ] {
            let mut out = Vec::new();
            encode(&snapshot(stats), &shape(compat), 5, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.contains(":rtt_buckets,"), buckets, "{text}");
            assert_eq!(text.contains(":rtt_quantiles,"), quantiles, "{text}");
        }
    }

    #[test]
    fn counters_beyond_i64_saturate() {
        assert_eq!(counter(u64::MAX), i64::MAX);
        assert_eq!(counter(7), 7);
    }
}
