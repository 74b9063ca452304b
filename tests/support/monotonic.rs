//! The guard every end-to-end test's output passes through: within a series' life no counter
//! goes back, no field is negative, a gather's lines share one timestamp, a series is written
//! once per gather, and (for tests that can count it) `flows_active` never exceeds the sockets
//! the kernel holds.
//!
//! Which fields are counters and which gauges comes from docs/metrics.md, the schema that
//! `plugin/core/src/metrics/schema_doc.rs` checks the encoder against: its tables' "counter /
//! gauge" column, read here at compile time, so the classification cannot drift from the doc.
//!
//! A series is a measurement and its sorted tag set. Its life is the run of consecutive gathers
//! that write it: flowlens writes a series at every gather while it lives (with zeros until its
//! `series_ttl_secs` ends it, docs/metrics.md), so a series missing from a gather has ended, and
//! when it comes back its counters may restart from 0. A new flowlens process starts every series
//! anew: one [`Checker`] per process.

use flowlens_core::lineproto::{parse_lines, FieldValue, Point};
use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
};

const DOC: &str = include_str!("../../docs/metrics.md");

/// What docs/metrics.md says a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A cumulative total: never decreases while its series lives.
    Counter,
    /// A value at the gather.
    Gauge,
}

/// measurement -> field -> kind, from the doc's tables.
pub type Schema = BTreeMap<String, BTreeMap<String, Kind>>;

/// Reads the tables of a metrics doc: each `### \`measurement\`` section's rows
/// `| \`key\` | field | type | type | unit | counter or gauge | meaning |`.
pub fn parse_schema(doc: &str) -> Schema {
    let mut schema = Schema::new();
    let mut current: Option<String> = None;
    let mut fenced = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if line.starts_with('#') {
            current = line
                .strip_prefix("### `")
                .and_then(|l| l.strip_suffix('`'))
                .map(str::to_string);
            continue;
        }
        let Some(name) = &current else { continue };
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() != 7 || cells[1] != "field" {
            continue;
        }
        let kind = match cells[5] {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            other => panic!("docs/metrics.md, {name}, {}: kind {other:?}", cells[0]),
        };
        schema
            .entry(name.clone())
            .or_default()
            .insert(cells[0].trim_matches('`').to_string(), kind);
    }
    schema
}

/// docs/metrics.md's schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse_schema(DOC))
}

/// A field's value, exact for integers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &FieldValue) -> Option<Num> {
        match v {
            FieldValue::Int(i) => Some(Num::Int(*i)),
            FieldValue::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    fn less_than(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a < b,
            (a, b) => a.float() < b.float(),
        }
    }

    fn negative(self) -> bool {
        match self {
            Num::Int(i) => i < 0,
            Num::Float(f) => f.is_nan() || f < 0.0,
        }
    }

    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The identity of a series: `measurement,k=v,...` with the tags sorted.
fn series_key(p: &Point) -> String {
    let mut tags = p.tags.clone();
    tags.sort();
    let mut key = p.measurement.clone();
    for (k, v) in tags {
        key.push_str(&format!(",{k}={v}"));
    }
    key
}

/// Checks the gathers of one flowlens process, in order.
#[derive(Default)]
pub struct Checker {
    /// The previous gather's series and their fields: the series alive then.
    previous: HashMap<String, HashMap<String, Num>>,
    /// Gathers checked so far.
    gathers: usize,
    /// Lines not yet ended by a `flowlens:internal` line ([`feed_line`](Self::feed_line)).
    pending: String,
    /// For a checker reading the output as it comes ([`live`](Self::live)): each interface's
    /// ifindex when the previous gather came.
    ifindex: Option<HashMap<String, String>>,
}

impl Checker {
    /// A checker for a new process: every series starts its life at its first gather.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// A checker that reads each gather as flowlens writes it, and so can also tell an interface
    /// deleted and made again under its name between two gathers (its `iface:` counters are
    /// the kernel's own, since the interface was created: a new life that the output cannot
    /// show) from its ifindex, as /sys/class/net says when each gather comes. For flowlens in
    /// the test's network namespace.
    pub fn live() -> Checker {
        Checker {
            ifindex: Some(HashMap::new()),
            ..Checker::default()
        }
    }

    /// Checks one gather's lines (a batch, ending with its `flowlens:internal` line, or what
    /// was left at EOF); returns what is wrong with it, one line each.
    pub fn violations(&mut self, batch: &str) -> Vec<String> {
        self.gathers += 1;
        let n = self.gathers;
        let mut out = Vec::new();
        let points = match parse_lines(batch) {
            Ok(points) => points,
            Err(e) => return vec![format!("gather {n}: not line protocol: {e}")],
        };
        let mut stamps: BTreeMap<Option<i64>, usize> = BTreeMap::new();
        let mut current: HashMap<String, HashMap<String, Num>> = HashMap::new();
        let mut ifindex = HashMap::new();
        for p in &points {
            *stamps.entry(p.timestamp).or_default() += 1;
            let key = series_key(p);
            let Some(fields) = schema().get(&p.measurement) else {
                out.push(format!(
                    "gather {n}: {key}: measurement not in docs/metrics.md"
                ));
                continue;
            };
            let mut values = HashMap::new();
            for (name, value) in &p.fields {
                let Some(num) = Num::of(value) else {
                    out.push(format!(
                        "gather {n}: {key}: {name}={value:?} is not a number"
                    ));
                    continue;
                };
                if num.negative() {
                    out.push(format!("gather {n}: {key}: {name} is negative: {num}"));
                }
                if !fields.contains_key(name) {
                    out.push(format!(
                        "gather {n}: {key}: field {name} not in docs/metrics.md"
                    ));
                }
                values.insert(name.clone(), num);
            }
            // An interface made again since the previous gather starts a new life.
            let mut made_again = false;
            if let (Some(known), Some((_, name))) = (
                &self.ifindex,
                p.measurement
                    .starts_with("iface:")
                    .then(|| p.tags.iter().find(|(k, _)| k == "ifname"))
                    .flatten(),
            ) {
                let now = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
                    .unwrap_or_default();
                made_again = known.get(name).is_some_and(|was| *was != now);
                ifindex.insert(name.clone(), now);
            }
            if let Some(before) = self.previous.get(&key).filter(|_| !made_again) {
                for (name, old) in before {
                    if fields.get(name) != Some(&Kind::Counter) {
                        continue;
                    }
                    match values.get(name) {
                        Some(new) if new.less_than(*old) => out.push(format!(
                            "gather {n}: {key}: counter {name} went back from {old} to {new}"
                        )),
                        Some(_) => {}
                        None if !Num::Int(0).less_than(*old) => {}
                        None => out.push(format!(
                            "gather {n}: {key}: counter {name} went back from {old} to nothing \
                             (a field left out is 0)"
                        )),
                    }
                }
            }
            if current.insert(key.clone(), values).is_some() {
                out.push(format!("gather {n}: {key}: written twice in one gather"));
            }
        }
        if stamps.len() > 1 {
            out.push(format!(
                "gather {n}: {} timestamps in one gather (timestamp: lines): {stamps:?}",
                stamps.len()
            ));
        }
        self.previous = current;
        if self.ifindex.is_some() {
            self.ifindex = Some(ifindex);
        }
        out
    }

    /// [`violations`](Self::violations), panicking with them (and the gather) when there are.
    pub fn check(&mut self, batch: &str) {
        let found = self.violations(batch);
        assert!(
            found.is_empty(),
            "flowlens's output broke the monotonicity guard (tests/support/monotonic.rs):\n{}\n\
             in the gather:\n{batch}",
            found.join("\n")
        );
    }

    /// Feeds one line of output (with or without its newline); checks the gather its
    /// `flowlens:internal` line ends.
    pub fn feed_line(&mut self, line: &str) {
        let line = line.strip_suffix('\n').unwrap_or(line);
        self.pending.push_str(line);
        self.pending.push('\n');
        if line.starts_with("flowlens:internal") {
            let batch = std::mem::take(&mut self.pending);
            self.check(&batch);
        }
    }

    /// Feeds any text: whole lines, each as [`feed_line`](Self::feed_line).
    pub fn feed(&mut self, text: &str) {
        for line in text.lines() {
            self.feed_line(line);
        }
    }

    /// Checks what is left after the last `flowlens:internal` line (a batch cut at EOF).
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        if !rest.trim().is_empty() {
            self.check(&rest);
        }
    }
}

/// Checks the whole stdout of one flowlens process (its gathers in order) and returns it. A last
/// line without its newline (a process killed in the middle of a write) is not checked.
pub fn checked(text: &str) -> &str {
    let mut checker = Checker::new();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    checker.feed(whole);
    checker.finish();
    text
}

/// [`checked`] for a process's captured stdout, as text.
pub fn checked_stdout(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    checked(&text);
    text
}

/// `flows_active` of a gather's `flowlens:internal` line.
pub fn flows_active(batch: &str) -> Option<i64> {
    parse_lines(batch)
        .ok()?
        .into_iter()
        .find(|p| p.measurement == "flowlens:internal")?
        .fields
        .into_iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("flows_active", FieldValue::Int(i)) => Some(i),
            _ => None,
        })
}

/// The TCP and UDP sockets the kernel holds, summed over every network namespace (each
/// namespace's `/proc/<pid>/net/sockstat` `inuse`, one process per namespace, and the
/// namespaces under /run/netns that no process is in). A bound for `flows_active` in a test
/// that closes no UDP socket within `udp_idle_timeout_secs` of a gather (a UDP flow outlives its
/// socket until it idles) and opens no listener it does not count itself (listeners are sockets,
/// not flows: the bound is loose by them, never tight).
pub fn kernel_sockets() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let count = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                ["TCP:", "TCP6:", "UDP:", "UDP6:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "inuse")?;
                words.get(at + 1)?.parse::<u64>().ok()
            })
            .sum()
    };
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if !seen.insert(ns.ino()) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/sockstat")) {
            total += count(&text);
        }
    }
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(ns) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !seen.insert(ns.ino()) {
            continue;
        }
        let path = entry.path();
        total += std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let Ok(file) = std::fs::File::open(&path) else {
                return 0;
            };
            // SAFETY: a valid namespace fd; setns only affects this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return 0;
            }
            std::fs::read_to_string("/proc/thread-self/net/sockstat")
                .map(|t| count(&t))
                .unwrap_or(0)
        })
        .join()
        .unwrap_or(0);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "1796189332749886539";
    const T2: &str = "1796189333749886539";

    fn internal(ts: &str, events: i64) -> String {
        format!(
            "flowlens:internal,ifid=0,node=n gather_duration_ms=0.5,events_received={events}i,\
             flows_active=1i,series_dropped=0i {ts}\n"
        )
    }

    fn traffic(container: &str, sent: i64, ts: &str) -> String {
        format!(
            "container:traffic,container={container},ifid=0,node=n bytes_sent={sent}i,\
             bytes_rcvd=0i {ts}\n"
        )
    }

    #[test]
    fn the_schema_comes_from_the_doc() {
        let s = schema();
        assert_eq!(s["container:traffic"]["bytes_sent"], Kind::Counter);
        assert_eq!(s["container:num_flows"]["as_client"], Kind::Gauge);
        assert_eq!(s["container:rtt_buckets"]["server_inf"], Kind::Counter);
        assert_eq!(s["flowlens:internal"]["flows_active"], Kind::Gauge);
        assert_eq!(s["flowlens:internal"]["events_lost"], Kind::Counter);
        assert_eq!(s["iface:traffic"]["bytes"], Kind::Counter);
        assert!(
            !s["container:traffic"].contains_key("container"),
            "tags are not fields"
        );
        // Every measurement of the doc's table of contents has a table.
        assert!(s.len() >= 30, "{:?}", s.keys());
    }

    #[test]
    fn a_counter_that_goes_back_is_caught() {
        let mut c = Checker::new();
        assert!(c
            .violations(&(traffic("a", 10, T1) + &internal(T1, 5)))
            .is_empty());
        let found = c.violations(&(traffic("a", 9, T2) + &internal(T2, 5)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("container=a"), "{found:?}");
        assert!(
            found[0].contains("bytes_sent went back from 10 to 9"),
            "{found:?}"
        );
        // events_received, a counter of flowlens:internal, too.
        let found = c.violations(&(traffic("a", 9, T2) + &internal(T2, 4)));
        assert!(
            found[0].contains("events_received went back from 5 to 4"),
            "{found:?}"
        );
    }

    #[test]
    fn a_counter_left_out_reads_as_zero() {
        let mut c = Checker::new();
        let line = |f: &str| format!("container:rtt_buckets,container=a,ifid=0,node=n {f} {T1}\n");
        assert!(c.violations(&line("client_1=3i")).is_empty());
        let found = c.violations(&line("client_2.5=1i"));
        assert!(
            found[0].contains("client_1 went back from 3 to nothing"),
            "{found:?}"
        );
    }

    #[test]
    fn a_series_that_ended_may_restart() {
        let mut c = Checker::new();
        assert!(c
            .violations(&(traffic("a", 10, T1) + &internal(T1, 1)))
            .is_empty());
        // Gone for a gather (its TTL ended), back from 0: a new life.
        assert!(c.violations(&internal(T2, 1)).is_empty());
        assert!(c
            .violations(&(traffic("a", 0, T2) + &internal(T2, 1)))
            .is_empty());
        // Another container's series is another life.
        assert!(c
            .violations(&(traffic("b", 0, T2) + &internal(T2, 1)))
            .is_empty());
        // A gauge may go down.
        let flows =
            |n: i64| format!("container:num_flows,container=a,ifid=0 as_client={n}i {T1}\n");
        assert!(c.violations(&flows(3)).is_empty());
        assert!(c.violations(&flows(0)).is_empty());
    }

    #[test]
    fn a_negative_gauge_is_caught() {
        let mut c = Checker::new();
        let found = c.violations(&format!(
            "container:num_flows,container=a,ifid=0 as_client=-1i,as_server=0i {T1}\n\
             container:rtt,container=a,ifid=0 as_client=-0.5 {T1}\n"
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("as_client is negative: -1"), "{found:?}");
        assert!(
            found[1].contains("as_client is negative: -0.5"),
            "{found:?}"
        );
    }

    #[test]
    fn two_timestamps_in_a_gather_are_caught() {
        let mut c = Checker::new();
        let found = c.violations(&(traffic("a", 1, T1) + &internal(T2, 1)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("2 timestamps in one gather"), "{found:?}");
    }

    #[test]
    fn a_series_written_twice_and_undocumented_names_are_caught() {
        let mut c = Checker::new();
        let found = c.violations(&(traffic("a", 1, T1) + &traffic("a", 1, T1)));
        assert!(found[0].contains("written twice"), "{found:?}");
        let found = c.violations(&format!("container:nope,container=a x=1i {T1}\n"));
        assert!(found[0].contains("not in docs/metrics.md"), "{found:?}");
    }

    #[test]
    fn fed_lines_are_checked_per_gather_and_at_the_end() {
        let mut c = Checker::new();
        c.feed(&(traffic("a", 10, T1) + &internal(T1, 1)));
        let cut = traffic("a", 3, T2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.feed(&cut);
            c.finish();
        }));
        let message = *caught.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("bytes_sent went back from 10 to 3"),
            "{message}"
        );
    }

    #[test]
    fn a_float_counter_of_zero_left_out_and_a_cut_last_line_pass() {
        let mut c = Checker::new();
        let line = |f: &str| format!("iface:traffic,ifid=0,ifname=lo {f} {T1}\n");
        assert!(c.violations(&line("bytes=0")).is_empty());
        assert!(c.violations(&line("bytes=0")).is_empty());
        // A process killed in the middle of a line: the cut line is not read.
        checked(&(line("bytes=5") + "iface:traffic,ifid=0,ifname=lo by"));
    }

    #[test]
    fn an_interface_made_again_starts_a_new_life_for_a_live_checker() {
        // lo is never made again: a decrease is caught, live or not.
        let line = |n: i64| format!("iface:traffic,ifid=0,ifname=lo bytes={n}i {T1}\n");
        for mut c in [Checker::new(), Checker::live()] {
            assert!(c.violations(&line(10)).is_empty());
            assert!(c.violations(&line(9))[0].contains("went back from 10 to 9"));
        }
        // An interface whose ifindex changed since the previous gather.
        let mut c = Checker::live();
        let gone = |n: i64| format!("iface:traffic,ifid=0,ifname=fl-no-such bytes={n}i {T1}\n");
        assert!(c.violations(&gone(10)).is_empty());
        c.ifindex
            .as_mut()
            .unwrap()
            .insert("fl-no-such".into(), "7\n".into());
        assert!(c.violations(&gone(3)).is_empty());
    }

    #[test]
    fn flows_active_is_read_from_the_internal_line() {
        assert_eq!(flows_active(&internal(T1, 1)), Some(1));
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(kernel_sockets() >= 1, "a listener is a socket in use");
    }
}
