//! The eBPF collector: loads the embedded programs with aya, attaches each one on its own, applies
//! the event ring buffer's records to the flow table on a background thread, and snapshots the
//! per-socket map at gather time.
//!
//! This is the only module that talks to the kernel's BPF subsystem. A probe that fails to load
//! or attach disables only its feature, logged once with the reason; dropping the collector
//! detaches everything.

mod batch;
mod btf;
mod iter;
mod listen;
use aya::{
    maps::{HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, Iter, KProbe},
    Btf, Ebpf, EbpfLoader,
};
use flowlens_core::flows::FlowTable;
use flowlens_core::records::{self, FlEvent, FlListen, FlListenKey, FlSock};
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, TryLockError,
    },
    thread::JoinHandle,
};

/// The hook-kind checks of `flowlens doctor` (ebpf/checks.bpf.c), apart from the collector's
/// object so that the collector never loads them.
static CHECKS_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/checks.bpf.o");

/// The BPF object built from ebpf/flowlens.bpf.c by ebpf/build.sh (committed; CI checks it).
pub(crate) static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/flowlens.bpf.o");

/// Most records queued in userspace while a gather holds the flow table (about 10 MB); beyond,
/// they wait in the kernel's ring until the gather is done.
const MAX_PENDING_EVENTS: usize = 1 << 16;

/// A value of the kernel's `socks` map, as aya reads and writes it (`aya::Pod` is implemented
/// here, on a wrapper, since the record type lives in flowlens-core, which knows no aya).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct MapSock(FlSock);

// SAFETY: FlSock is `repr(C)` plain old data (its size and offsets are checked against
// ebpf/flowlens.h at compile time); every bit pattern is a valid value; the wrapper is
// transparent.
unsafe impl aya::Pod for MapSock {}

/// The kinds of hook the collector attaches programs to, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// A BTF-typed tracepoint (`tp_btf/<tracepoint>`).
    TpBtf,
    /// The exit of a kernel function (`fexit/<function>`, 5.5+ where function tracing is allowed).
    FExit,
    /// The entry of a kernel function (`kprobe/<function>`, where kprobes are compiled in).
    KProbe,
    /// The return of a kernel function (`kretprobe/<function>`).
    KRetProbe,
    /// A BPF iterator (`iter/<target>`), run by userspace at each gather.
    Iter,
}

/// One program and where it hooks.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Program name (the C function).
    pub program: &'static str,
    /// The kind of hook.
    pub kind: HookKind,
    /// The tracepoint, kernel function or iterator target.
    pub target: &'static str,
    /// What tells this way from another on the same hook ("" when nothing does).
    pub variant: &'static str,
}

impl Hook {
    const fn of(kind: HookKind, program: &'static str, target: &'static str) -> Hook {
        Hook {
            program,
            kind,
            target,
            variant: "",
        }
    }

    const fn tp_btf(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::TpBtf, program, target)
    }

    const fn fexit(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::FExit, program, target)
    }

    const fn kprobe(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::KProbe, program, target)
    }

    const fn kretprobe(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::KRetProbe, program, target)
    }

    const fn iter(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::Iter, program, target)
    }

    const fn variant(self, variant: &'static str) -> Hook {
        Hook { variant, ..self }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            HookKind::TpBtf => "tp_btf",
            HookKind::FExit => "fexit",
            HookKind::KProbe => "kprobe",
            HookKind::KRetProbe => "kretprobe",
            HookKind::Iter => "iter",
        };
        write!(f, "{kind}/{}", self.target)?;
        if !self.variant.is_empty() {
            write!(f, " ({})", self.variant)?;
        }
        Ok(())
    }
}

/// A feature of the collector and the ways to serve it, best first: each way is a set of
/// programs that must all load and attach. The first way this kernel accepts serves it.
pub struct Feature {
    /// Short name (doctor, logs).
    pub name: &'static str,
    /// What a user gets from it.
    pub serves: &'static str,
    /// The ways to serve it, best first.
    pub ways: &'static [&'static [Hook]],
}

/// The features of the default config, in attach order.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "TCP connections",
        serves: "TCP flows opened and closed, client/server role, owner, final counters",
        ways: &[&[Hook::tp_btf("fl_set_state", "inet_sock_set_state")]],
    },
    Feature {
        name: "TCP ends",
        serves: "closes the state-change program missed (it is skipped when it interrupts itself)",
        ways: &[&[Hook::tp_btf("fl_destroy", "tcp_destroy_sock")]],
    },
    Feature {
        name: "TCP live counters",
        serves: "bytes, RTT and retransmissions of live TCP connections, read at each gather",
        ways: &[
            &[Hook::iter("fl_refresh", "task_file")],
            &[Hook::iter("fl_refresh_probed", "task_file").variant("probe reads")],
        ],
    },
    Feature {
        name: "UDP sent",
        serves: "UDP flows and bytes sent",
        ways: &[
            &[Hook::tp_btf("fl_send", "sock_send_length")],
            &[
                Hook::fexit("fl_udp_sendmsg", "udp_sendmsg"),
                Hook::fexit("fl_udpv6_sendmsg", "udpv6_sendmsg"),
            ],
            &[
                Hook::kprobe("fl_kp_udp_send", "udp_sendmsg"),
                Hook::kretprobe("fl_krp_udp_send", "udp_sendmsg"),
                Hook::kprobe("fl_kp_udp6_send", "udpv6_sendmsg"),
                Hook::kretprobe("fl_krp_udp6_send", "udpv6_sendmsg"),
            ],
        ],
    },
    Feature {
        name: "UDP received",
        serves: "UDP flows and bytes received",
        ways: &[
            &[Hook::tp_btf("fl_recv", "sock_recv_length")],
            // Before 5.19 the receive functions have a `noblock` argument: the programs whose
            // return value sits after it are accepted only there, so they are tried first.
            &[
                Hook::fexit("fl_udp_recvmsg_noblock", "udp_recvmsg").variant("with noblock"),
                Hook::fexit("fl_udpv6_recvmsg_noblock", "udpv6_recvmsg").variant("with noblock"),
            ],
            &[
                Hook::fexit("fl_udp_recvmsg", "udp_recvmsg"),
                Hook::fexit("fl_udpv6_recvmsg", "udpv6_recvmsg"),
            ],
            // 6.16 removed `addr_len`: tried last, for the same reason.
            &[
                Hook::fexit("fl_udp_recvmsg_noaddrlen", "udp_recvmsg").variant("without addr_len"),
                Hook::fexit("fl_udpv6_recvmsg_noaddrlen", "udpv6_recvmsg")
                    .variant("without addr_len"),
            ],
            &[
                Hook::kprobe("fl_kp_udp_recv", "udp_recvmsg"),
                Hook::kretprobe("fl_krp_udp_recv", "udp_recvmsg"),
                Hook::kprobe("fl_kp_udp6_recv", "udpv6_recvmsg"),
                Hook::kretprobe("fl_krp_udp6_recv", "udpv6_recvmsg"),
            ],
        ],
    },
];

/// The source address of UDP sockets that send without an address of their own (never bound or
/// connected, or bound to the wildcard), which the kernel picks per datagram. Attached with the
/// default features, but a kernel that allows neither way (tracepoints only: the locked-down
/// 6.18) is no failure: such flows then keep the unspecified address (`host=0.0.0.0` / `::`),
/// and `doctor` says so.
pub const UDP_SOURCE: Feature = Feature {
    name: "UDP source address",
    serves: "the local address of UDP sockets that send unbound",
    ways: &[
        &[
            Hook::fexit("fl_udp_send_skb", "udp_send_skb"),
            Hook::fexit("fl_udp6_send_skb", "udp_v6_send_skb"),
        ],
        &[
            Hook::kprobe("fl_kp_udp_send_skb", "udp_send_skb"),
            Hook::kprobe("fl_kp_udp6_send_skb", "udp_v6_send_skb"),
        ],
    ],
};

/// The optional per-segment RTT feature (`rtt_source = "segment"`).
pub const SEGMENT_RTT: Feature = Feature {
    name: "TCP RTT per segment",
    serves: "RTT refreshed on every received segment",
    ways: &[&[Hook::tp_btf("fl_tcp_probe", "tcp_probe")]],
};

/// The status of one probe or prerequisite, for logs and `doctor`.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    /// What was checked.
    pub name: String,
    /// Whether it works.
    pub ok: bool,
    /// Why not (or what it serves).
    pub detail: String,
}

/// Why the collector could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// No kernel BTF.
    #[error("kernel BTF is not available ({0}): flowlens needs a kernel with CONFIG_DEBUG_INFO_BTF (/sys/kernel/btf/vmlinux)")]
    NoBtf(String),
    /// Creating maps failed (privileges, usually).
    #[error("cannot create the BPF maps ({0}): run as root or grant CAP_BPF and CAP_PERFMON")]
    Load(String),
    /// A map the object must have is missing or has the wrong type.
    #[error("the embedded BPF object lacks map {0}")]
    Map(&'static str),
}

/// Settings of the collector.
#[derive(Debug, Clone, Copy)]
pub struct CollectorOptions {
    /// Entries of the `socks` map.
    pub max_flows: u32,
    /// Bytes of the ring buffer.
    pub ring_buffer_bytes: u32,
    /// Attach the per-segment RTT probe.
    pub segment_rtt: bool,
    /// The hook kinds a feature may be served by (`hook_kinds`); iterators are always allowed.
    pub hook_kinds: HookKinds,
}

/// The hook kinds the collector may attach (the config's `hook_kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookKinds {
    /// `tp_btf`.
    pub tp_btf: bool,
    /// `fexit`.
    pub fexit: bool,
    /// `kprobe` and `kretprobe`.
    pub kprobe: bool,
}

impl HookKinds {
    /// Every kind.
    pub const ALL: HookKinds = HookKinds {
        tp_btf: true,
        fexit: true,
        kprobe: true,
    };

    fn allows(self, kind: HookKind) -> bool {
        match kind {
            HookKind::TpBtf => self.tp_btf,
            HookKind::FExit => self.fexit,
            HookKind::KProbe | HookKind::KRetProbe => self.kprobe,
            HookKind::Iter => true,
        }
    }
}

/// The listening TCP sockets one run of the iterator found.
pub struct ListenRun {
    /// Each listener with what the kernel counted on it (once per process showing it).
    pub listeners: Vec<(FlListenKey, FlListen)>,
    /// Whether the kernel map had room for every listener of the run.
    pub complete: bool,
}

/// The loaded collector.
pub struct EbpfCollector {
    // Field order matters: the reader thread stops (Drop) before the maps and programs go.
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    events: Arc<EventQueue>,
    socks_fd: std::os::fd::RawFd,
    /// The attached programs' fds (owned by `_ebpf`), for their skipped-run counters.
    program_fds: Vec<RawFd>,
    /// The link of the live-TCP-socket iterator (`fl_refresh`), run at each gather.
    iter_link: Option<OwnedFd>,
    socks: BpfHashMap<MapData, u64, MapSock>,
    stats: PerCpuArray<MapData, u64>,
    /// The `listen_drops` map's fd (owned by `_ebpf`), which the iterator fills.
    listen_fd: Option<RawFd>,
    /// `STAT_LISTEN_FULL` at the last `take_listeners`.
    listen_full: u64,
    probes: Vec<ProbeStatus>,
    /// Whether the programs key every socket by its cookie (`bpf_get_socket_cookie`, 5.12+).
    cookie_keys: bool,
    _ebpf: Ebpf,
}

/// The verifier's or the kernel's words for an aya error, on one line. A verifier log says why
/// at its end (its first lines are the program's first instructions, or notes printed for every
/// program of a kind): long logs keep their first line (aya's summary) and their last lines.
pub(crate) fn reason(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .collect();
    if lines.len() > 5 {
        format!(
            "{} | ... | {}",
            lines[0],
            lines[lines.len() - 3..].join(" | ")
        )
    } else {
        lines.join(" | ")
    }
}

/// Loads and attaches one program; returns the link of an iterator (aya cannot attach one to a
/// map), nothing for the others (aya holds their links).
fn attach_hook(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> Result<Option<OwnedFd>, String> {
    match hook.kind {
        HookKind::TpBtf => {
            let p: &mut BtfTracePoint = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            p.attach().map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::FExit => {
            let p: &mut FExit = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            p.attach().map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::KProbe | HookKind::KRetProbe => {
            let p: &mut KProbe = program(ebpf, hook.program)?;
            p.load().map_err(|e| reason(&e))?;
            p.attach(hook.target, 0).map_err(|e| reason(&e))?;
            Ok(None)
        }
        HookKind::Iter => {
            let p: &mut Iter = program(ebpf, hook.program)?;
            p.load(hook.target, btf).map_err(|e| reason(&e))?;
            let prog_fd = p.fd().map_err(|e| reason(&e))?.as_fd().as_raw_fd();
            iter::link(prog_fd)
                .map(Some)
                .map_err(|e| format!("cannot link the iterator: {e}"))
        }
    }
}

/// Detaches and unloads a program of a way that could not be attached whole (no-op when it did
/// not load).
fn unload_hook(ebpf: &mut Ebpf, hook: &Hook) {
    let _ = match hook.kind {
        HookKind::TpBtf => program::<BtfTracePoint>(ebpf, hook.program).map(|p| p.unload()),
        HookKind::FExit => program::<FExit>(ebpf, hook.program).map(|p| p.unload()),
        HookKind::KProbe | HookKind::KRetProbe => {
            program::<KProbe>(ebpf, hook.program).map(|p| p.unload())
        }
        HookKind::Iter => program::<Iter>(ebpf, hook.program).map(|p| p.unload()),
    };
}

/// What attaching a feature gave.
struct Attached {
    status: ProbeStatus,
    /// The programs that serve it.
    programs: Vec<&'static str>,
    /// The iterator link, for a feature served by one.
    iter_link: Option<OwnedFd>,
}

/// Attaches the first way of `feature` whose programs all load and attach; a way that fails
/// half-way is unloaded again before the next is tried.
fn attach_feature(ebpf: &mut Ebpf, btf: &Btf, feature: &Feature, allowed: HookKinds) -> Attached {
    let name = format!("feature {}", feature.name);
    let mut refused = Vec::new();
    for way in feature.ways {
        if let Some(hook) = way.iter().find(|h| !allowed.allows(h.kind)) {
            refused.push(format!("{hook}: not in hook_kinds"));
            continue;
        }
        let mut iter_link = None;
        let mut failed = None;
        for hook in way.iter() {
            match attach_hook(ebpf, btf, hook) {
                Ok(link) => iter_link = iter_link.or(link),
                Err(why) => {
                    failed = Some(format!("{hook}: {why}"));
                    break;
                }
            }
        }
        let Some(why) = failed else {
            let hooks: Vec<String> = way.iter().map(Hook::to_string).collect();
            return Attached {
                status: ProbeStatus {
                    name,
                    ok: true,
                    detail: if refused.is_empty() {
                        format!("served by {}: {}", hooks.join(" + "), feature.serves)
                    } else {
                        format!(
                            "served by {}: {} (ways before it: {})",
                            hooks.join(" + "),
                            feature.serves,
                            refused.join("; ")
                        )
                    },
                },
                programs: way.iter().map(|h| h.program).collect(),
                iter_link,
            };
        };
        for hook in way.iter() {
            unload_hook(ebpf, hook);
        }
        refused.push(why);
    }
    Attached {
        status: ProbeStatus {
            name,
            ok: false,
            detail: format!(
                "not served ({}); disabled: {}",
                refused.join("; "),
                feature.serves
            ),
        },
        programs: Vec::new(),
        iter_link: None,
    }
}

/// The program `name` of the embedded object as its concrete type, or why not.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| "missing from the embedded object".to_string())?
        .try_into()
        .map_err(|e| reason(&e))
}

/// Loads and attaches the capability-check programs (kprobe, fentry, fexit) and detaches them
/// again: whether this kernel allows each kind of hook, and why not.
pub fn check_hook_kinds(btf: &Btf) -> Vec<ProbeStatus> {
    let mut out = Vec::new();
    let mut ebpf = match EbpfLoader::new().btf(Some(btf)).load(CHECKS_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            out.push(ProbeStatus {
                name: "hook kinds".into(),
                ok: false,
                detail: reason(&e),
            });
            return out;
        }
    };
    let mut check = |name: &str, f: &mut dyn FnMut(&mut Ebpf) -> Result<(), String>| {
        let result = f(&mut ebpf);
        // Information, not a failure: the features above say what serves them.
        out.push(ProbeStatus {
            name: name.to_string(),
            ok: true,
            detail: match result {
                Ok(()) => "allowed here".to_string(),
                Err(why) if why.contains("kprobe/type") => {
                    format!("information: no kprobe event source here (CONFIG_KPROBES off): {why}")
                }
                Err(why) => format!("information: refused here: {why}"),
            },
        });
    };
    check("hook kind kprobe (kprobe/tcp_connect)", &mut |ebpf| {
        let p: &mut KProbe = program(ebpf, "fl_check_kprobe")?;
        p.load().map_err(|e| reason(&e))?;
        p.attach("tcp_connect", 0).map_err(|e| reason(&e))?;
        Ok(())
    });
    check("hook kind fentry (fentry/tcp_connect)", &mut |ebpf| {
        let p: &mut FEntry = program(ebpf, "fl_check_fentry")?;
        p.load("tcp_connect", btf).map_err(|e| reason(&e))?;
        p.attach().map_err(|e| reason(&e))?;
        Ok(())
    });
    check("hook kind fexit (fexit/tcp_connect)", &mut |ebpf| {
        let p: &mut FExit = program(ebpf, "fl_check_fexit")?;
        p.load("tcp_connect", btf).map_err(|e| reason(&e))?;
        p.attach().map_err(|e| reason(&e))?;
        Ok(())
    });
    out
}

/// The kernel's BTF, or why not.
pub fn kernel_btf() -> Result<Btf, CollectorError> {
    Btf::from_sys_fs().map_err(|e| CollectorError::NoBtf(reason(&e)))
}

/// The ring buffer, the flow table its records go to, and the records that wait while a gather
/// holds the table. Shared by the reader thread and gathers.
///
/// Records are applied to the table as they are drained, not held until the gather: what a
/// connection costs userspace between gathers is then its slot in the table, not its records
/// (up to two of 152 bytes per TCP connection, 60 MB at 20k connections/s and a 10 s interval).
///
/// Locks: a gather holds the table, then takes the ring, then `pending`; the reader holds the
/// ring, then only tries the table (it never waits for it), then takes `pending`. The one wait
/// with another lock held in opposite orders would be table-then-ring against ring-then-table,
/// and the reader's side of it is a `try_lock`: no deadlock. `pending` is taken last by both and
/// held for no other lock.
struct EventQueue {
    ring: Mutex<RingBuf<MapData>>,
    table: Arc<Mutex<FlowTable>>,
    /// Records drained while a gather held the table, in ring order; applied first by the next
    /// holder. Its capacity is kept (at most twice its last use) so that steady churn allocates
    /// nothing.
    pending: Mutex<Vec<FlEvent>>,
    received: AtomicU64,
}

/// How often the reader drains the ring when the kernel does not wake it (it wakes it only when
/// the ring is a quarter full: see `emit` in ebpf/flowlens.bpf.c).
const DRAIN_INTERVAL_MS: i32 = 50;

/// Takes a lock even after a panic elsewhere poisoned it: the ring, the queue and the flow
/// table stay usable, and the alternative is no metrics at all.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventQueue {
    /// The reader's drain: every record in the ring goes to the table, or, while a gather holds
    /// the table, to `pending` (bounded: past `MAX_PENDING_EVENTS` the rest stays in the ring
    /// for the gather to take). The ring stays locked throughout, so two drains never apply
    /// their records out of order.
    fn drain(&self) {
        let mut ring = lock(&self.ring);
        let table = match self.table.try_lock() {
            Ok(table) => Some(table),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let received = match table {
            Some(mut table) => self.apply_all(&mut ring, &mut table),
            None => {
                let mut pending = lock(&self.pending);
                let mut received = 0u64;
                while pending.len() < MAX_PENDING_EVENTS {
                    let Some(item) = ring.next() else { break };
                    if let Some(event) = FlEvent::from_bytes(&item) {
                        received += 1;
                        pending.push(event);
                    }
                }
                received
            }
        };
        self.received.fetch_add(received, Ordering::Relaxed);
    }

    /// Applies the queued records, then the ring's, to `table` (whose lock the caller holds).
    /// Returns how many records came from the ring.
    fn apply_all(&self, ring: &mut RingBuf<MapData>, table: &mut FlowTable) -> u64 {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            let used = pending.len();
            for event in pending.drain(..) {
                table.apply_event(&event);
            }
            // A burst leaves a large buffer behind: keep twice what this one held.
            if pending.capacity() > (used * 2).max(1 << 12) {
                pending.shrink_to((used * 2).max(1 << 12));
            }
        }
        drop(pending);
        let mut received = 0u64;
        while let Some(item) = ring.next() {
            if let Some(event) = FlEvent::from_bytes(&item) {
                received += 1;
                table.apply_event(&event);
            }
        }
        received
    }
}

/// `recursion_misses` of a program, from `bpf(BPF_OBJ_GET_INFO_BY_FD)` (Linux 5.12+; 0 before).
fn prog_recursion_misses(prog_fd: std::os::fd::RawFd) -> Option<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `offsetof(struct bpf_prog_info, recursion_misses)` in linux/bpf.h.
    const RECURSION_MISSES_OFFSET: usize = 208;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u8; 256];
    let mut attr = InfoAttr {
        bpf_fd: prog_fd as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `info` is a 256-byte buffer and `info_len` says so; the kernel writes at most that.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 || (attr.info_len as usize) < RECURSION_MISSES_OFFSET + 8 {
        return None;
    }
    let bytes = info[RECURSION_MISSES_OFFSET..RECURSION_MISSES_OFFSET + 8]
        .try_into()
        .ok()?;
    Some(u64::from_ne_bytes(bytes))
}

/// Drains the ring every `DRAIN_INTERVAL_MS`, or sooner when the kernel wakes it, until `stop`.
fn read_events(queue: Arc<EventQueue>, fd: std::os::fd::RawFd, stop: Arc<AtomicBool>) {
    // This thread reads the ring's shared memory and polls: it needs no capability.
    let _ = crate::privileges::keep_only(0);
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd (the ring's fd lives as long as `queue`, which we hold).
        unsafe { libc::poll(&mut pfd, 1, DRAIN_INTERVAL_MS) };
        queue.drain();
        if pfd.revents & libc::POLLIN == 0 {
            // Woken by the timeout: nothing more to wait for before the next period.
            continue;
        }
        // Woken because the ring filled up: let more accumulate instead of spinning per record.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Which argument of `udp_recvmsg` (and `udpv6_recvmsg`) holds the receive flags, for the
/// kprobe programs, which skip peeks and error-queue reads: 5 when the kernel's BTF gives the
/// function 6 parameters (before 5.19: a `noblock` argument comes first), else 4 (5.19+, with
/// or without the `addr_len` that 6.16 removed after it; where 4 would be wrong, the 4th
/// argument is `noblock`, which never looks like a peek).
fn udp_recv_flags_arg() -> u32 {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    match btf::func_params(&data, "udp_recvmsg") {
        Some(6) => 5,
        _ => 4,
    }
}

/// The object loaded with its maps, and every feature attached as this kernel allows.
struct Loaded {
    ebpf: Ebpf,
    features: Vec<Attached>,
    socks: BpfHashMap<MapData, u64, MapSock>,
    stats: PerCpuArray<MapData, u64>,
    cookie_helper: bool,
}

impl Loaded {
    fn new(
        btf: &Btf,
        options: CollectorOptions,
        cookie_helper: bool,
    ) -> Result<Loaded, CollectorError> {
        let recv_flags_arg = udp_recv_flags_arg();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .map_max_entries("socks", options.max_flows)
            .map_max_entries("events", options.ring_buffer_bytes)
            .override_global("fl_cookie_helper", &u32::from(cookie_helper), true)
            .override_global("fl_udp_recv_flags_arg", &recv_flags_arg, true)
            .load(BPF_OBJECT)
            .map_err(|e| CollectorError::Load(reason(&e)))?;
        let socks: BpfHashMap<MapData, u64, MapSock> =
            BpfHashMap::try_from(ebpf.take_map("socks").ok_or(CollectorError::Map("socks"))?)
                .map_err(|_| CollectorError::Map("socks"))?;
        let stats =
            PerCpuArray::try_from(ebpf.take_map("stats").ok_or(CollectorError::Map("stats"))?)
                .map_err(|_| CollectorError::Map("stats"))?;
        let mut features: Vec<Attached> = FEATURES
            .iter()
            .map(|feature| attach_feature(&mut ebpf, btf, feature, options.hook_kinds))
            .collect();
        let mut source = attach_feature(&mut ebpf, btf, &UDP_SOURCE, options.hook_kinds);
        if !source.status.ok {
            // Information, not a failure: the flows are counted, under the unspecified address.
            source.status.ok = true;
            source.status.detail = format!(
                "information: {} (their flows count under host=0.0.0.0 / :: instead)",
                source.status.detail
            );
        }
        features.push(source);
        if options.segment_rtt {
            features.push(attach_feature(
                &mut ebpf,
                btf,
                &SEGMENT_RTT,
                options.hook_kinds,
            ));
        }
        Ok(Loaded {
            ebpf,
            features,
            socks,
            stats,
            cookie_helper,
        })
    }
}

impl EbpfCollector {
    /// Loads the object, attaches every probe it can, and starts the event reader, which applies
    /// the kernel's records to `table` as they come.
    pub fn start(
        options: CollectorOptions,
        table: Arc<Mutex<FlowTable>>,
    ) -> Result<EbpfCollector, CollectorError> {
        let btf = kernel_btf()?;
        // bpf_get_socket_cookie() is allowed in tracing programs from 5.12: the object is
        // loaded with it first, and again without when the verifier refuses it.
        let mut loaded = Loaded::new(&btf, options, true)?;
        if !loaded.features[0].status.ok
            && loaded.features[0]
                .status
                .detail
                .contains("get_socket_cookie")
        {
            drop(loaded);
            loaded = Loaded::new(&btf, options, false)?;
        }
        let Loaded {
            mut ebpf,
            features,
            socks,
            stats,
            cookie_helper,
        } = loaded;
        let ring = RingBuf::try_from(
            ebpf.take_map("events")
                .ok_or(CollectorError::Map("events"))?,
        )
        .map_err(|_| CollectorError::Map("events"))?;
        let serving: Vec<&str> = features
            .iter()
            .flat_map(|f| f.programs.iter().copied())
            .collect();
        let program_fds: Vec<RawFd> = ebpf
            .programs()
            .filter(|(name, _)| serving.contains(name))
            .filter_map(|(_, program)| program.fd().ok().map(|fd| fd.as_fd().as_raw_fd()))
            .collect();
        let mut probes = Vec::with_capacity(features.len() + 1);
        let mut iter_link = None;
        for feature in features {
            probes.push(feature.status);
            iter_link = iter_link.or(feature.iter_link);
        }
        probes.push(ProbeStatus {
            name: "socket identity".into(),
            ok: true,
            detail: if cookie_helper {
                "socket cookies (bpf_get_socket_cookie, as sock_diag and SO_COOKIE)".into()
            } else {
                "the socket's own cookie when it has one, else its address (this kernel refuses \
                 bpf_get_socket_cookie in tracing programs: 5.12+)"
                    .into()
            },
        });
        let stop = Arc::new(AtomicBool::new(false));
        let ring_fd = ring.as_raw_fd();
        let socks_fd = socks.map().fd().as_fd().as_raw_fd();
        let listen_fd = match ebpf.map("listen_drops") {
            Some(aya::maps::Map::HashMap(map)) => Some(map.fd().as_fd().as_raw_fd()),
            _ => None,
        };
        let events = Arc::new(EventQueue {
            ring: Mutex::new(ring),
            table,
            pending: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
        });
        let reader = {
            let (stop, events) = (stop.clone(), events.clone());
            std::thread::Builder::new()
                .name("flowlens-events".into())
                .spawn(move || read_events(events, ring_fd, stop))
                .map_err(|e| CollectorError::Load(format!("cannot start the event reader: {e}")))?
        };
        Ok(EbpfCollector {
            stop,
            reader: Some(reader),
            events,
            socks_fd,
            program_fds,
            iter_link,
            socks,
            stats,
            listen_fd,
            listen_full: 0,
            probes,
            cookie_keys: cookie_helper,
            _ebpf: ebpf,
        })
    }

    /// Whether the programs key every socket by its cookie (5.12+); else a socket without a
    /// cookie when they first see it is keyed by its address.
    pub fn cookie_keys(&self) -> bool {
        self.cookie_keys
    }

    /// Every probe's status.
    pub fn probes(&self) -> &[ProbeStatus] {
        &self.probes
    }

    /// Applies every record the kernel wrote since the reader's last look to `table`, the
    /// collector's table, whose lock the caller holds for its gather.
    pub fn apply_events(&self, table: &mut FlowTable) {
        let mut ring = lock(&self.events.ring);
        let received = self.events.apply_all(&mut ring, table);
        self.events.received.fetch_add(received, Ordering::Relaxed);
    }

    /// Events read from the ring buffer since start.
    pub fn events_received(&self) -> u64 {
        self.events.received.load(Ordering::Relaxed)
    }

    /// Brings the live TCP sockets' counters in `socks` up to date (bytes, RTT, retransmissions,
    /// read from each socket by the `fl_refresh` iterator). Without the iterator, the entries
    /// keep what their last event wrote.
    pub fn refresh_tcp(&self) -> std::io::Result<()> {
        match &self.iter_link {
            Some(link) => iter::run(link),
            None => Ok(()),
        }
    }

    /// The listening TCP sockets the last `refresh_tcp` found, with their drop counts, taken out
    /// of the kernel map (which the next run fills again); None without the iterator.
    pub fn take_listeners(&mut self) -> std::io::Result<Option<ListenRun>> {
        let (Some(fd), Some(_)) = (self.listen_fd, &self.iter_link) else {
            return Ok(None);
        };
        let listeners = listen::take(fd)?;
        let full = self.stat(records::STAT_LISTEN_FULL);
        let complete = full == std::mem::replace(&mut self.listen_full, full);
        Ok(Some(ListenRun {
            listeners,
            complete,
        }))
    }

    /// Every live socket the kernel tracks, at most `limit` of them: read in batches of 4096
    /// with BPF_MAP_LOOKUP_BATCH (one syscall per batch instead of two per socket), or one by
    /// one on kernels without it (before 5.6).
    pub fn snapshot(&self, limit: usize) -> Vec<(u64, FlSock)> {
        match batch::read::<u64, FlSock>(self.socks_fd, batch::Batch::Lookup, 4096, limit) {
            Ok(all) => all,
            Err(_) => self
                .socks
                .iter()
                .filter_map(Result::ok)
                .map(|(cookie, sock)| (cookie, sock.0))
                .take(limit)
                .collect(),
        }
    }

    /// Forgets sockets in the kernel map (expired UDP flows).
    pub fn forget(&mut self, cookies: &[u64]) {
        for cookie in cookies {
            let _ = self.socks.remove(cookie);
        }
    }

    /// Starts tracking a socket found at start-up, unless the programs already track it
    /// (`BPF_NOEXIST`): what became of it.
    pub fn adopt(&mut self, cookie: u64, sock: &FlSock) -> Adopted {
        const BPF_NOEXIST: u64 = 1;
        match self.socks.insert(cookie, MapSock(*sock), BPF_NOEXIST) {
            Ok(()) => Adopted::Inserted,
            Err(e) if map_errno(&e) == Some(libc::EEXIST) => Adopted::Tracked,
            Err(_) => Adopted::NoRoom,
        }
    }

    /// Removes an adopted socket's entry: true when this removed it, false when it was gone
    /// already (the socket's close took it out) or cannot be removed.
    pub fn unadopt(&mut self, cookie: u64) -> bool {
        self.socks.remove(&cookie).is_ok()
    }

    /// Runs of our programs the kernel skipped because the same program was already running on
    /// that CPU (`recursion_misses` of `bpf_prog_info`): each is a lost event.
    pub fn recursion_misses(&self) -> u64 {
        self.program_fds
            .iter()
            .map(|fd| prog_recursion_misses(*fd).unwrap_or(0))
            .sum()
    }

    /// A kernel-side counter summed over CPUs (`records::STAT_*`).
    pub fn stat(&self, index: u32) -> u64 {
        self.stats
            .get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// What [`EbpfCollector::adopt`] did with a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Its entry is ours.
    Inserted,
    /// The programs made its entry first: it became established after they attached.
    Tracked,
    /// The map is full, or refused it.
    NoRoom,
}

/// The errno of a failed map syscall.
fn map_errno(e: &aya::maps::MapError) -> Option<i32> {
    match e {
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

impl Drop for EbpfCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
