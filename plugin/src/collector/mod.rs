//! The eBPF collector: loads the embedded programs with aya, attaches each feature the way this
//! kernel allows, applies the event ring buffer's records to the flow table on a background
//! thread, and snapshots the per-socket map at gather time.
//!
//! This is the only module that talks to the kernel's BPF subsystem. A probe that fails to load
//! or attach disables only its feature, logged once with the reason; dropping the collector
//! detaches everything. Here: the lifecycle (start, the gather's calls, drop). Apart:
//! `catalogue` (the features and their ways, the choice of one), `attach` (aya's load and
//! attach), `reader` (the event queue and its thread), `checks` (`doctor`'s hook kinds),
//! `prog_info` (a program's counters), `iter`, `listen`, `batch` (map reads), `btf`.

mod attach;
mod batch;
mod btf;
mod catalogue;
mod checks;
mod iter;
mod listen;
mod prog_info;
mod reader;

pub use catalogue::{
    Feature, Hook, HookKind, HookKinds, CONNECT_ERRORS, FEATURES, SEGMENT_RTT, UDP_SOURCE,
};
pub use checks::check_hook_kinds;
pub(crate) use reader::lock;

use attach::{attach_feature, reason, Attached};
use aya::{
    maps::{HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray, RingBuf},
    Btf, Ebpf, EbpfLoader,
};
use flowlens_core::records::{self, FlListen, FlListenKey, FlSock};
use flowlens_core::FlowTable;
use reader::EventQueue;
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

/// The BPF object built from ebpf/flowlens.bpf.c by ebpf/build.sh (committed; CI checks it).
pub(crate) static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/flowlens.bpf.o");

/// A value of the kernel's `socks` map, as aya reads and writes it (`aya::Pod` is implemented
/// here, on a wrapper, since the record type lives in flowlens-core, which knows no aya).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct MapSock(FlSock);

// SAFETY: FlSock is `repr(C)` plain old data (its size and offsets are checked against
// ebpf/flowlens.h at compile time); every bit pattern is a valid value; the wrapper is
// transparent.
unsafe impl aya::Pod for MapSock {}

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
    socks_fd: RawFd,
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

/// The kernel's BTF, or why not.
pub fn kernel_btf() -> Result<Btf, CollectorError> {
    Btf::from_sys_fs().map_err(|e| CollectorError::NoBtf(reason(&e)))
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
        let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
        let recv_flags_arg =
            catalogue::udp_recv_flags_arg(btf::func_params(&vmlinux, "udp_recvmsg"));
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
        // Information, not a failure: the flows are counted, under the unspecified address.
        source.status = catalogue::information(
            source.status,
            "their flows count under host=0.0.0.0 / :: instead",
        );
        features.push(source);
        features.push(
            if btf::func_params(&vmlinux, catalogue::ERROR_BEFORE_CLOSE).is_some() {
                Attached {
                    status: ProbeStatus {
                        name: format!("feature {}", CONNECT_ERRORS.name),
                        ok: true,
                        detail: format!(
                            "not needed: this kernel sets a connection's error before it closes \
                         the socket ({})",
                            catalogue::ERROR_BEFORE_CLOSE
                        ),
                    },
                    programs: Vec::new(),
                    iter_link: None,
                }
            } else {
                let mut errors =
                    attach_feature(&mut ebpf, btf, &CONNECT_ERRORS, options.hook_kinds);
                errors.status = catalogue::information(
                errors.status,
                "a connect whose process reads its error at once may count as aborted_as_client",
            );
                errors
            },
        );
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
        if catalogue::refused_for_the_cookie_helper(&loaded.features[0].status) {
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
        let events = Arc::new(EventQueue::new(ring, table));
        let reader = {
            let (stop, events) = (stop.clone(), events.clone());
            std::thread::Builder::new()
                .name("flowlens-events".into())
                .spawn(move || reader::read_events(events, ring_fd, stop))
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
        self.events.apply_to(table);
    }

    /// Events read from the ring buffer since start.
    pub fn events_received(&self) -> u64 {
        self.events.received()
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

    /// Makes, once, the bpf() calls a gather makes (the live-socket iterator run, a read of
    /// the socket map and of the counters, a program's info), failing at the first refused:
    /// run with fewer capabilities, it tells whether the gathers need them.
    pub fn try_gather_calls(&self) -> Result<(), String> {
        self.refresh_tcp()
            .map_err(|e| format!("the live-socket iterator fails: {e}"))?;
        batch::read::<u64, FlSock>(self.socks_fd, batch::Batch::Lookup, 1, 1)
            .map_err(|e| format!("reading the socket map fails: {e}"))?;
        self.stats
            .get(&0, 0)
            .map_err(|e| format!("reading the counters fails: {e}"))?;
        if let Some(fd) = self.program_fds.first() {
            prog_info::recursion_misses(*fd).ok_or("reading a program's info fails".to_string())?;
        }
        Ok(())
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
            .map(|fd| prog_info::recursion_misses(*fd).unwrap_or(0))
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
