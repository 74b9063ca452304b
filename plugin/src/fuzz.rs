//! Entry points for the fuzz targets of tests/fuzz (feature `fuzzing`, never in the product):
//! the parsers that read hostile input, called as the plugin calls them, with what they return
//! in public types. The targets' property checks live in tests/fuzz; nothing here checks.

use std::net::SocketAddr;
use std::path::Path;

pub use crate::containers::cgroup::{is_container_id, is_pod_uid};
use crate::containers::{cgroup, metadata};
pub use crate::containers::{CgroupRef, Runtime};
use crate::seed;

/// A cgroup path as the resolver parses it: what it says, and whether the runtime is certain.
pub fn cgroup_path(path: &str) -> Option<(CgroupRef, bool)> {
    cgroup::parse_detailed(path).map(|p| (p.cref, p.runtime_certain))
}

/// The cgroup paths of a `/proc/<pid>/cgroup` text, best first.
pub fn proc_cgroup(content: &str) -> Vec<&str> {
    cgroup::proc_cgroup_candidates(content)
}

/// What one metadata file (or log-link name) says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Container name.
    pub name: Option<String>,
    /// Pod name.
    pub pod: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod UID.
    pub pod_uid: Option<String>,
    /// The pod's sandbox container id.
    pub sandbox_id: Option<String>,
    /// Whether this is a pod's sandbox.
    pub is_sandbox: Option<bool>,
    /// The runtime that wrote the file.
    pub runtime: Option<Runtime>,
    /// Names left out because they cannot be tags.
    pub dropped: u64,
}

fn names(p: metadata::Partial) -> Names {
    Names {
        name: p.name,
        pod: p.pod,
        namespace: p.namespace,
        pod_uid: p.pod_uid,
        sandbox_id: p.sandbox_id,
        is_sandbox: p.is_sandbox,
        runtime: p.runtime,
        dropped: p.dropped,
    }
}

const PATH: &str = "/fuzz/config.json";

/// A containerd task bundle's `config.json` found in containerd namespace `namespace`.
pub fn containerd_bundle(bytes: &[u8], namespace: &str) -> Result<Names, String> {
    metadata::parse_containerd_bundle(bytes, namespace, Path::new(PATH))
        .map(names)
        .map_err(|e| e.to_string())
}

/// CRI-O's (or Podman's) `userdata/config.json`.
pub fn crio_config(bytes: &[u8]) -> Result<Names, String> {
    metadata::parse_crio_config(bytes, Path::new(PATH))
        .map(names)
        .map_err(|e| e.to_string())
}

/// Docker's `config.v2.json` found in the directory of container `id`.
pub fn docker_config(bytes: &[u8], id: &str) -> Result<Names, String> {
    metadata::parse_docker_config(bytes, id, Path::new(PATH))
        .map(names)
        .map_err(|e| e.to_string())
}

/// A kubelet log link's file name: the container id and what the name says.
pub fn log_link_name(file_name: &str) -> Option<(String, Names)> {
    metadata::parse_log_link_name(file_name).map(|(id, p)| (id, names(p)))
}

/// One socket of a sock_diag dump reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    /// TCP state.
    pub state: u8,
    /// Local address (IPv4-mapped IPv6 shown as IPv4).
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// `idiag_cookie`.
    pub cookie: u64,
    /// `idiag_inode`.
    pub inode: u32,
    /// `INET_DIAG_INFO`, when the socket had one.
    pub tcp_info: Option<TcpInfo>,
    /// `INET_DIAG_CGROUP_ID`.
    pub cgroup_id: Option<u64>,
    /// `INET_DIAG_SKV6ONLY`.
    pub v6only: Option<bool>,
}

/// The `struct tcp_info` fields read, each `None` when the attribute is too short for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_rtt`.
    pub rtt_us: Option<u32>,
    /// `tcpi_rttvar`.
    pub rttvar_us: Option<u32>,
    /// `tcpi_bytes_acked`.
    pub bytes_acked: Option<u64>,
    /// `tcpi_bytes_received`.
    pub bytes_received: Option<u64>,
    /// `tcpi_total_retrans`.
    pub total_retrans: Option<u32>,
}

/// One datagram of a sock_diag dump reply to request `seq`: `Ok(true)` when it ends the dump,
/// `Ok(false)` when more follow, `Err` with the reason; and the sockets handed out before.
pub fn sock_diag(buf: &[u8], seq: u32) -> (Result<bool, String>, Vec<DiagSocket>) {
    let mut got = Vec::new();
    let res = seed::parse_datagram(buf, seq, &mut |s: seed::DiagSocket| {
        got.push(DiagSocket {
            state: s.state,
            local: s.local,
            remote: s.remote,
            cookie: s.cookie,
            inode: s.inode,
            tcp_info: s.tcp_info.map(|t| TcpInfo {
                rtt_us: t.rtt_us,
                rttvar_us: t.rttvar_us,
                bytes_acked: t.bytes_acked,
                bytes_received: t.bytes_received,
                total_retrans: t.total_retrans,
            }),
            cgroup_id: s.cgroup_id,
            v6only: s.v6only,
        })
    });
    (
        res.map(|p| p == seed::Progress::Done)
            .map_err(|e| e.to_string()),
        got,
    )
}

/// One datagram of the reply to conntrack GET request `seq`: `Ok(None)` when it holds no
/// message of that request, `Ok(Some(None))` for "no such entry", `Ok(Some(Some(tuples)))` for
/// an entry (original source and destination, reply source and destination), `Err` with the
/// reason.
pub fn conntrack_reply(buf: &[u8], seq: u32) -> Result<Option<Option<[SocketAddr; 4]>>, String> {
    crate::conntrack::parse_get_reply(buf, seq)
        .map(|r| r.map(|e| e.map(|e| [e.orig.src, e.orig.dst, e.reply.src, e.reply.dst])))
        .map_err(|e| e.to_string())
}
