//! The configuration: one struct per TOML table, every key documented where it is defined.
//!
//! The `settings!` macro turns each documented field into a struct field, its default, and a
//! [`KeyDoc`] so that `flowlens print-config` is generated from this file and cannot drift from it.

use flowlens_core::lineproto::Precision;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The documentation of one key, for `print-config`.
pub struct KeyDoc {
    /// The key's name in its table.
    pub name: &'static str,
    /// The `///` lines of the field.
    pub doc: &'static [&'static str],
    /// The default value, as TOML.
    pub default: toml::Value,
}

/// A TOML table of the configuration.
pub trait Section: Default + Serialize {
    /// The keys of this table, in order, with their docs and defaults.
    fn keys() -> Vec<KeyDoc>;
}

macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl Section for $name {
            fn keys() -> Vec<KeyDoc> {
                let defaults = Self::default();
                vec![$(KeyDoc {
                    name: stringify!($field),
                    doc: &[$($doc),+],
                    default: toml::Value::try_from(&defaults.$field)
                        .expect("every default serializes to TOML"),
                },)*]
            }
        }
    };
}

/// The level of detail of the log lines flowlens writes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevelName {
    /// Only failures.
    Error,
    /// Failures and degradations.
    Warn,
    /// Also normal progress (start-up, probes attached).
    Info,
    /// Everything.
    Debug,
}

settings! {
    /// The top-level table.
    pub struct General {
        /// Seconds between two gathers in `stream` mode (Vector's exec source, or Telegraf execd
        /// with `signal = "none"`). In `telegraf` mode the agent decides, one gather per newline.
        interval_secs: u64 = 10,
        /// Where flowlens publishes its health after each gather in `telegraf` and `stream`
        /// mode (the pid, the last gather's time, probes attached and failed, events lost),
        /// for `flowlens health`, a readiness and liveness check that needs no privileges and
        /// starts nothing (`flowlens health --file PATH` for another path than the default).
        /// Its directory is made when missing and must be writable by flowlens's user only.
        /// Two instances on one machine need two paths. Empty: no health file.
        health_file: String = "/run/flowlens/health".to_string(),
        /// The `ifid` tag written on every line (ntopng: the id of the monitored interface).
        /// Commas, spaces, `=` and quotes are escaped; a backslash at the end or before one of
        /// those or another backslash is refused (line protocol cannot carry it unchanged).
        ifid: String = "0".to_string(),
        /// The node's name, the `node` tag of every line (with `ntopng_compat`, of
        /// `flowlens:internal` only): it keeps apart the series of several machines writing
        /// into one database. Empty: the environment variable NODE_NAME when it is set and not
        /// empty (in Kubernetes, from the downward API's `spec.nodeName`, as the shipped
        /// DaemonSet does), else the hostname (/proc/sys/kernel/hostname). 1 to 253 characters,
        /// no control characters or backslashes; spaces, commas and `=` are escaped.
        node: String = String::new(),
        /// Timestamp precision of the output: "ns", "us", "ms" or "s". Telegraf and Vector read
        /// nanoseconds; set the same precision on `influx write` or the /write URL.
        precision: Precision = Precision::Ns,
        /// Write exactly ntopng's shape: only ntopng's measurements and tags, every numeric field
        /// as a float. `iface:` lines keep `ifname`; `flowlens:internal` stays.
        ntopng_compat: bool = false,
        /// Log level on stderr: "error", "warn", "info" or "debug". Lines carry Telegraf's
        /// `E! `/`W! `/`I! `/`D! ` prefixes.
        log_level: LogLevelName = LogLevelName::Info,
        /// Load the eBPF flow collector. `false`: interface metrics only (no privileges needed).
        ebpf: bool = true,
        /// For each new client connection, look up the endpoint it really reached when the
        /// node's netfilter rewrote its destination: the backend behind a Kubernetes Service's
        /// virtual IP under kube-proxy (iptables or nftables mode), read from the conntrack
        /// table of flowlens's network namespace (the node's) through ctnetlink. Needs
        /// CAP_NET_ADMIN, which flowlens then keeps after start-up (and only then); without it,
        /// or without conntrack in the kernel, one warning and flowlens runs without.
        /// `flowlens doctor` tells whether it is served.
        dnat_backends: bool = true,
        /// Most flows (sockets) tracked at once, in the kernel map and in the flow table. Beyond
        /// it new sockets are not tracked and `flowlens:internal,flows_evicted` counts them.
        max_flows: u32 = 65_536,
        /// Most local addresses with their own `host:` series at once (an address in two
        /// network namespaces is two; a host's series lives while it has flows and for
        /// `series_ttl_secs` after its last one). A new address beyond it folds into
        /// `host=other` for the life of its flow, and `flowlens:internal,series_dropped`
        /// counts the addresses folded at each gather; a host that expires frees its place
        /// for the next new address.
        max_hosts: u32 = 1_024,
        /// A UDP flow ends after this many seconds without a datagram.
        udp_idle_timeout_secs: u64 = 60,
        /// Size of the kernel-to-flowlens event ring buffer, in bytes: a power of two, at least
        /// 4096. A record (a TCP connection's end, a UDP socket's first datagram, a failed
        /// connect) takes 176 bytes; overflow is counted in `events_lost`.
        ring_buffer_bytes: u32 = 4 << 20,
        /// Where TCP RTT samples come from: "gather" reads the kernel's srtt/rttvar from each
        /// socket at every gather and at its close (no cost per packet or per call); "segment"
        /// also on every received segment (tp_btf/tcp_probe: for values fresher than the last
        /// gather on closed flows; costs more on busy hosts). "socket_io" is an older name of
        /// "gather".
        rtt_source: RttSource = RttSource::Gather,
        /// The kinds of kernel hook flowlens may attach, from "tp_btf", "fexit" and "kprobe"
        /// (kprobe and kretprobe). Each feature is served by the first of its ways whose hooks
        /// are all allowed and load on this kernel (`flowlens doctor` shows which); the TCP
        /// features need "tp_btf". Remove a kind to keep flowlens off it.
        hook_kinds: Vec<HookKindName> = vec![HookKindName::TpBtf, HookKindName::Fexit, HookKindName::Kprobe],
        /// Most containers with a `container:` series of their own. A container's place is
        /// decided when its series begins and kept until it ends: its own while there is room,
        /// else `container=other` (and `pod=other`), counted in
        /// `flowlens:internal,series_dropped`.
        max_containers: u32 = 1_000,
        /// Most peers (destinations of its client flows, local ports of its server flows)
        /// written as their own `container:peers` series per container (all its cgroups
        /// together): the busiest new peers take the free places at each gather, a peer keeps
        /// its series until it has been idle for `series_ttl_secs`, the rest fold into
        /// `peer=other` (counted in `flowlens:internal,series_dropped`). 0: no peer series.
        max_peers_per_container: u32 = 32,
        /// A host's, container's or peer's series is written with zero active flows (and its
        /// cumulative counters) for this many seconds after its last flow ended, so charts drop
        /// to zero before the series stops. Then it stops and its counters are dropped: if the
        /// address, container or peer comes back, its counters start again from 0 (InfluxQL's
        /// `non_negative_derivative` skips the drop).
        series_ttl_secs: u64 = 300,
        /// The cgroup2 mount that socket cgroup ids are looked up in. "auto":
        /// /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup.
        cgroup2_root: String = "auto".to_string(),
        /// containerd's task bundles (`<dir>/<namespace>/<id>/config.json`, CRI annotations).
        containerd_state_dir: String = "/run/containerd/io.containerd.runtime.v2.task".to_string(),
        /// CRI-O's container storage (`<dir>/<id>/userdata/config.json`).
        crio_storage_dir: String = "/run/containers/storage/overlay-containers".to_string(),
        /// Docker's containers (`<dir>/<id>/config.v2.json`).
        docker_containers_dir: String = "/var/lib/docker/containers".to_string(),
        /// The kubelet's container log links (`<pod>_<namespace>_<container>-<id>.log`).
        kubelet_log_dir: String = "/var/log/containers".to_string(),
    }
}

/// A kind of kernel hook (`hook_kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKindName {
    /// BTF-typed tracepoints.
    TpBtf,
    /// Function exits through BPF trampolines.
    Fexit,
    /// kprobes and kretprobes.
    Kprobe,
}

/// Where TCP RTT samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RttSource {
    /// At every gather and at the socket's close.
    #[serde(alias = "socket_io")]
    Gather,
    /// Also on every received TCP segment.
    Segment,
}

/// The environment variable that names the node when the config's `node` is empty.
pub const NODE_ENV: &str = "NODE_NAME";

/// The file that names the node when neither the config nor [`NODE_ENV`] does.
pub const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// Where the node's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    /// The config's `node`.
    Config,
    /// The environment variable [`NODE_ENV`].
    Env,
    /// The hostname, [`HOSTNAME_FILE`].
    Hostname,
}

/// The node's name (the `node` tag) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The name.
    pub name: String,
    /// Where it came from.
    pub source: NodeSource,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match self.source {
            NodeSource::Config => "the config's `node`",
            NodeSource::Env => NODE_ENV,
            NodeSource::Hostname => HOSTNAME_FILE,
        };
        write!(f, "{} (from {from})", self.name)
    }
}

/// Why a node name cannot be written, if it cannot: it is a tag value on every line, and a
/// backslash is the escape character (one at the end would take the separator after it).
fn node_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        Some("must be 1 to 253 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not hold control characters")
    } else if name.contains('\\') {
        Some("must not hold a backslash")
    } else {
        None
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Top-level keys.
    pub general: General,
}

/// A configuration error, naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("config {source_name}: {message}")]
pub struct ConfigError {
    /// Where the text came from (a path, or "built-in defaults").
    pub source_name: String,
    /// What is wrong, naming the key (and the line, when known).
    pub message: String,
}

/// The tables of the file, in `print-config` order: (table name, its keys). The top level is "".
fn tables() -> Vec<(&'static str, Vec<KeyDoc>)> {
    vec![("", General::keys())]
}

impl Config {
    /// Parses and validates a TOML text. An empty text gives the defaults.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: source_name.to_string(),
            message,
        };
        let general: General = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().replace('\n', " ");
            if let Some(span) = e.span() {
                let line_no = text[..span.start].matches('\n').count() + 1;
                // Name the key when the message does not (type errors point at the value).
                let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let line = text[line_start..].lines().next().unwrap_or("");
                if let Some((key, _)) = line.split_once('=') {
                    let key = key.trim();
                    if !key.is_empty() && !message.contains(key) && span.start > line_start {
                        message = format!("key `{key}`: {message}");
                    }
                }
                message = format!("{message} (line {line_no})");
            }
            // One line of plain text: the key is copied from the file, which may hold any
            // character (a lone `\r` among them), so control characters are written escaped.
            let mut plain = String::with_capacity(message.len());
            for c in message.chars() {
                if c.is_control() {
                    plain.extend(c.escape_default());
                } else {
                    plain.push(c);
                }
            }
            err(plain)
        })?;
        let config = Config { general };
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, naming the key.
    fn validate(&self) -> Result<(), String> {
        let g = &self.general;
        if g.interval_secs == 0 || g.interval_secs > 86_400 {
            return Err(format!(
                "interval_secs = {} is out of range: use 1 to 86400",
                g.interval_secs
            ));
        }
        let health = std::path::Path::new(&g.health_file);
        if !g.health_file.is_empty()
            && (!health.is_absolute()
                || g.health_file.ends_with('/')
                || g.health_file.len() > 4096
                || g.health_file.chars().any(char::is_control))
        {
            return Err(format!(
                "health_file = {:?}: use an absolute path of a file (or \"\" for none)",
                g.health_file
            ));
        }
        if g.ifid.is_empty()
            || g.ifid.len() > 64
            || g.ifid.chars().any(char::is_control)
            || !flowlens_core::lineproto::reads_back_unchanged(&g.ifid)
        {
            return Err(format!(
                "ifid = {:?} must be 1 to 64 characters without control characters, and without \
                 a backslash at the end or before a backslash, comma, space, `=` or `\"` (line \
                 protocol cannot carry it unchanged)",
                g.ifid
            ));
        }
        if !g.node.is_empty() {
            if let Some(problem) = node_problem(&g.node) {
                return Err(format!("node = {:?} {problem}", g.node));
            }
        }
        if !(1..=1 << 22).contains(&g.max_flows) {
            return Err(format!(
                "max_flows = {} is out of range: use 1 to 4194304",
                g.max_flows
            ));
        }
        if g.max_hosts == 0 {
            return Err("max_hosts = 0 is out of range: use at least 1".to_string());
        }
        if g.udp_idle_timeout_secs == 0 {
            return Err("udp_idle_timeout_secs = 0 is out of range: use at least 1".to_string());
        }
        if g.hook_kinds.is_empty() {
            return Err(
                "hook_kinds = [] leaves no way to serve any feature: list at least \
                        \"tp_btf\" (or set ebpf = false)"
                    .to_string(),
            );
        }
        if g.max_containers == 0 {
            return Err("max_containers = 0 is out of range: use at least 1".to_string());
        }
        if g.max_peers_per_container > 10_000 {
            return Err(format!(
                "max_peers_per_container = {} is out of range: use 0 to 10000",
                g.max_peers_per_container
            ));
        }
        for (key, value) in [
            ("cgroup2_root", &g.cgroup2_root),
            ("containerd_state_dir", &g.containerd_state_dir),
            ("crio_storage_dir", &g.crio_storage_dir),
            ("docker_containers_dir", &g.docker_containers_dir),
            ("kubelet_log_dir", &g.kubelet_log_dir),
        ] {
            let auto = key == "cgroup2_root" && value == "auto";
            if !auto
                && (!value.starts_with('/')
                    || value.contains('\0')
                    || value.split('/').any(|c| c == ".."))
            {
                return Err(format!(
                    "{key} = {value:?} must be an absolute path without `..`"
                ));
            }
        }
        if !g.ring_buffer_bytes.is_power_of_two() || g.ring_buffer_bytes < 4096 {
            return Err(format!(
                "ring_buffer_bytes = {} must be a power of two of at least 4096",
                g.ring_buffer_bytes
            ));
        }
        Ok(())
    }

    /// The node's name: the config's `node`, else the environment variable [`NODE_ENV`] when
    /// it is set and not empty, else the hostname ([`HOSTNAME_FILE`]). An error names where an
    /// unusable name came from.
    pub fn node(&self) -> Result<Node, String> {
        self.node_from(std::env::var_os(NODE_ENV), || {
            std::fs::read_to_string(HOSTNAME_FILE)
        })
    }

    /// [`Config::node`] with the environment variable's value and the hostname's reader given.
    fn node_from(
        &self,
        env: Option<std::ffi::OsString>,
        hostname: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Node, String> {
        let (name, source) = if !self.general.node.is_empty() {
            // Checked by `validate`.
            (self.general.node.clone(), NodeSource::Config)
        } else if let Some(value) = env.filter(|v| !v.is_empty()) {
            let name = value.into_string().map_err(|v| {
                format!("node: the environment variable {NODE_ENV} = {v:?} is not UTF-8")
            })?;
            if let Some(problem) = node_problem(&name) {
                return Err(format!(
                    "node: the environment variable {NODE_ENV} = {name:?} {problem}"
                ));
            }
            (name, NodeSource::Env)
        } else {
            let text = hostname().map_err(|e| {
                format!("node: cannot read {HOSTNAME_FILE} ({e}): set `node` in the config")
            })?;
            let name = text.trim_end_matches('\n').to_string();
            if let Some(problem) = node_problem(&name) {
                return Err(format!(
                    "node: the hostname {name:?} ({HOSTNAME_FILE}) {problem}: set `node` in \
                     the config"
                ));
            }
            (name, NodeSource::Hostname)
        };
        Ok(Node { name, source })
    }

    /// The full default configuration as commented TOML: what `flowlens print-config` prints.
    pub fn documented_default() -> String {
        let mut out = String::from(
            "# flowlens configuration. Every key is optional: these are the built-in defaults.\n\
             # Unknown keys are an error. Pass the file with `flowlens --config PATH <mode>`.\n",
        );
        for (table, keys) in tables() {
            if !table.is_empty() {
                let _ = write!(out, "\n[{table}]\n");
            }
            for key in keys {
                out.push('\n');
                for line in key.doc {
                    let _ = writeln!(out, "#{}", line.trim_end());
                }
                let _ = writeln!(out, "{} = {}", key.name, key.default);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_defaults() {
        assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
    }

    #[test]
    fn documented_default_parses_back_to_the_defaults() {
        let text = Config::documented_default();
        assert_eq!(
            Config::from_toml(&text, "print-config").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_key_has_a_doc() {
        for (_, keys) in tables() {
            for key in keys {
                assert!(key.doc.iter().any(|l| !l.trim().is_empty()), "{}", key.name);
            }
        }
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases = [
            (
                "interval_secs = 5\nbogus = 1\n",
                "config f.toml: unknown field `bogus`",
                "(line 2)",
            ),
            ("interval_secs = \"x\"\n", "interval_secs", "(line 1)"),
            (
                "interval_secs = 0\n",
                "interval_secs = 0 is out of range",
                "",
            ),
            ("precision = \"m\"\n", "unknown variant `m`", "(line 1)"),
            (
                "health_file = \"run/health\"\n",
                "health_file = \"run/health\": use an absolute path",
                "",
            ),
            (
                "health_file = \"/run/flowlens/\"\n",
                "health_file = \"/run/flowlens/\": use an absolute path",
                "",
            ),
            ("ifid = \"\"\n", "ifid = \"\" must be", ""),
            ("ifid = 'eth0\\'\n", "ifid = \"eth0\\\\\" must be", ""),
            ("ifid = 'a\\,b'\n", "ifid = \"a\\\\,b\" must be", ""),
            (
                "node = \"a\\tb\"\n",
                "node = \"a\\tb\" must not hold control",
                "",
            ),
            (
                "node = \"a\\\\\"\n",
                "node = \"a\\\\\" must not hold a backslash",
                "",
            ),
            ("node = 5\n", "node", "(line 1)"),
            (
                "ring_buffer_bytes = 5000\n",
                "ring_buffer_bytes = 5000 must be",
                "",
            ),
            ("max_flows = 0\n", "max_flows = 0 is out of range", ""),
            ("rtt_source = \"x\"\n", "unknown variant `x`", "(line 1)"),
            ("hook_kinds = []\n", "hook_kinds = [] leaves no way", ""),
            // Found by the config fuzz target: a key holding a lone `\r`, named in the message.
            ("x\ry = '''\n", "key `x\\ry`", "(line 1)"),
            (
                "hook_kinds = [\"lsm\"]\n",
                "unknown variant `lsm`",
                "(line 1)",
            ),
        ];
        for (text, want, line) in cases {
            let msg = Config::from_toml(text, "f.toml").unwrap_err().to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(msg.contains(line), "{msg:?} lacks {line:?}");
            assert!(!msg.contains(['\n', '\r']), "{msg:?} is not one line");
        }
        let long = format!("node = \"{}\"\n", "a".repeat(254));
        let msg = Config::from_toml(&long, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("must be 1 to 253 characters"), "{msg}");
        let longest = format!("node = \"{}\"\n", "a".repeat(253));
        assert!(Config::from_toml(&longest, "f.toml").is_ok());
    }

    #[test]
    fn the_node_comes_from_the_config_then_the_environment_then_the_hostname() {
        let config = |text: &str| Config::from_toml(text, "f.toml").unwrap();
        let hostname = || Ok("vm-7\n".to_string());
        let unreadable = || Err(std::io::Error::other("no /proc"));
        let node = |name: &str, source| Node {
            name: name.into(),
            source,
        };
        let env = |v: &str| Some(std::ffi::OsString::from(v));
        let named = config("node = \"edge a,b=c\"\n");
        assert_eq!(
            named.node_from(env("k8s-node-1"), unreadable),
            Ok(node("edge a,b=c", NodeSource::Config))
        );
        let auto = config("");
        assert_eq!(
            auto.node_from(env("k8s-node-1"), unreadable),
            Ok(node("k8s-node-1", NodeSource::Env))
        );
        assert_eq!(
            auto.node_from(env(""), hostname),
            Ok(node("vm-7", NodeSource::Hostname)),
            "an empty variable is not set"
        );
        assert_eq!(
            auto.node_from(None, hostname),
            Ok(node("vm-7", NodeSource::Hostname))
        );
        assert_eq!(
            node("vm-7", NodeSource::Hostname).to_string(),
            "vm-7 (from /proc/sys/kernel/hostname)"
        );
        for (env_value, host, want) in [
            (
                env("a\tb"),
                "x",
                "node: the environment variable NODE_NAME = \"a\\tb\" must not hold control characters",
            ),
            (
                None,
                "\n",
                "node: the hostname \"\" (/proc/sys/kernel/hostname) must be 1 to 253 characters: \
                 set `node` in the config",
            ),
        ] {
            let host = host.to_string();
            assert_eq!(auto.node_from(env_value, || Ok(host)).unwrap_err(), want);
        }
        let err = auto.node_from(None, unreadable).unwrap_err();
        assert_eq!(
            err,
            "node: cannot read /proc/sys/kernel/hostname (no /proc): set `node` in the config"
        );
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = Some(std::ffi::OsString::from_vec(vec![0xff]));
        let err = auto.node_from(not_utf8, hostname).unwrap_err();
        assert!(err.contains("is not UTF-8"), "{err}");
    }
}
