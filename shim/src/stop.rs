//! How a run ends: what the `telegraf`, `stream` and `once` modes wait on between gathers.
//!
//! Every way of stopping ends the run the same way: the main thread finishes the gather it is in
//! (its batch is written whole), returns the reason, logs `I! stopping: <reason>`, drops the
//! collector (which detaches every probe) and exits 0. The ways:
//!
//! - SIGTERM, SIGINT, SIGHUP: blocked in every thread from the start of the run ([`Stops::install`]
//!   runs before any other thread exists, so the plugin's threads inherit the mask) and taken by
//!   one thread with `sigwait`. A signal the parent set to ignored (`nohup`, a background job's
//!   SIGINT) stays ignored.
//! - stdout closed by the reader: a thread `poll`s stdout for POLLERR/POLLHUP, so the reader's
//!   going away is seen between gathers too, not only at the next write (EPIPE).
//! - stdin EOF (`telegraf` only): a plain thread reads stdin and is never joined; the process
//!   exits with it still blocked in `read`. Newlines read before the EOF are answered first.
//!
//! A stop requested by a signal or a closed stdout goes before newlines not yet answered. One
//! that comes during start-up (plugin load, eBPF load, the start-up scan: up to seconds on a
//! large host) exits 0 at once from the thread that saw it, as does stdin EOF with no newline
//! before it: nothing was written yet, and the kernel releases every program and map the
//! process held when it ends. [`Stops::started`] ends start-up under the same lock, so no batch
//! is ever cut.

use std::{
    io::{self, Read},
    sync::{mpsc, Mutex, OnceLock},
    thread,
    time::Instant,
};

/// Why the run stops, set once: the first reason wins.
static REASON: OnceLock<&'static str> = OnceLock::new();

/// What the helper threads tell the main thread.
enum Event {
    /// A newline on stdin: one gather asked for.
    Line,
    /// stdin reached EOF.
    StdinClosed,
    /// Reading stdin failed.
    StdinFailed(io::Error),
    /// [`REASON`] was set.
    Stop,
}

/// What the main thread does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Gather once (a newline on stdin).
    Line,
    /// Gather once (the deadline passed).
    Tick,
    /// Stop, for this reason.
    Stop(&'static str),
}

/// The stop signals and their names.
const SIGNALS: [(libc::c_int, &str); 3] = [
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGHUP, "SIGHUP"),
];

/// The events of one run, from the helper threads.
pub struct Stops {
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
}

/// Whether the run is still starting: nothing written yet, a stop exits at once.
static STARTING: Mutex<bool> = Mutex::new(true);

/// Records `reason` (unless one is already set) and wakes the main thread; during start-up,
/// exits 0 at once instead.
fn request(tx: &mpsc::Sender<Event>, reason: &'static str) {
    let _ = REASON.set(reason);
    let starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if *starting {
        let reason = REASON.get().copied().unwrap_or(reason);
        crate::log_line(
            flowlens_abi::LogLevel::Info,
            format!("stopping: {reason} (during start-up)")
                .as_str()
                .into(),
        );
        // SAFETY: ends the process without running anything more; the lock held keeps the
        // main thread from leaving start-up (and writing) meanwhile.
        unsafe { libc::_exit(0) };
    }
    drop(starting);
    let _ = tx.send(Event::Stop);
}

/// Gives up every capability in the calling thread (capabilities are per thread). The helper
/// threads start before the plugin, which drops the process's capabilities after start-up in
/// the thread that creates the collector and those started later; these threads wait on
/// signals, stdin and stdout, and need none.
fn shed_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: prctl with integer arguments; capset with a version-3 header and the two data
    // structs version 3 asks for. Failure leaves the thread as it was (logged nowhere: these
    // threads have nothing to do with privileges).
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
    }
}

/// Whether the parent left `sig` ignored (SIG_IGN survives exec).
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: a query only (no new action); `old` is written by the kernel.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

impl Stops {
    /// Blocks SIGTERM, SIGINT and SIGHUP (those not ignored) in this thread and every thread
    /// started after it, and starts the thread that takes them. Call it before any other thread
    /// starts: a thread that does not block them would die of them.
    pub fn install() -> io::Result<Stops> {
        let (tx, rx) = mpsc::channel();
        // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask changes only this
        // thread's mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for (sig, _) in SIGNALS {
                if !ignored(sig) {
                    libc::sigaddset(&mut set, sig);
                }
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            set
        };
        let signals = tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                shed_capabilities();
                loop {
                    let mut sig = 0;
                    // SAFETY: a valid set, blocked in every thread; `sig` is written on success.
                    if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                        return; // EINVAL only, which this set cannot cause.
                    }
                    if let Some((_, name)) = SIGNALS.iter().find(|(s, _)| *s == sig) {
                        request(&signals, name);
                    }
                }
            })?;
        Ok(Stops { tx, rx })
    }

    /// Starts the thread that sees stdout closed by its reader (POLLERR on a pipe, POLLHUP on a
    /// socket or terminal) while nothing is written. Files and /dev/null never report either.
    pub fn watch_stdout(&self) -> io::Result<()> {
        let tx = self.tx.clone();
        thread::Builder::new()
            .name("stdout-watch".into())
            .spawn(move || {
                shed_capabilities();
                loop {
                    // No events asked: poll reports only errors and hang-ups.
                    let mut pfd = libc::pollfd {
                        fd: libc::STDOUT_FILENO,
                        events: 0,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    let n = unsafe { libc::poll(&mut pfd, 1, -1) };
                    if n < 0 {
                        if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return;
                    }
                    if pfd.revents & libc::POLLNVAL != 0 {
                        return;
                    }
                    if pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                        request(&tx, "stdout closed");
                        return;
                    }
                }
            })?;
        Ok(())
    }

    /// Starts the thread that reads stdin: one [`Next::Line`] per newline (and one for a last
    /// line without one), then the EOF (a stop request when no line came before it). Memory
    /// stays bounded whatever stdin holds.
    pub fn read_stdin(&self) -> io::Result<()> {
        let tx = self.tx.clone();
        thread::Builder::new().name("stdin".into()).spawn(move || {
            shed_capabilities();
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut open_line = false;
            let mut lines = 0u64;
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => {
                        if open_line {
                            let _ = tx.send(Event::Line);
                        } else if lines == 0 {
                            request(&tx, "stdin closed");
                        }
                        let _ = tx.send(Event::StdinClosed);
                        return;
                    }
                    Ok(n) => {
                        for &byte in &buf[..n] {
                            if byte == b'\n' {
                                lines += 1;
                                let _ = tx.send(Event::Line);
                            }
                        }
                        open_line = buf[n - 1] != b'\n';
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Event::StdinFailed(e));
                        return;
                    }
                }
            }
        })?;
        Ok(())
    }

    /// Ends start-up: from now on a stop waits for the gather in progress. Call it when the
    /// collector is up, before the first gather.
    pub fn started(&self) {
        *STARTING.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// Records a stop found by the main thread itself (a write that met EPIPE).
    pub fn stop(&self, reason: &'static str) {
        request(&self.tx, reason);
    }

    /// The stop reason, once there is one.
    pub fn requested(&self) -> Option<&'static str> {
        REASON.get().copied()
    }

    /// Waits for the next thing to do, until `deadline` ([`Next::Tick`]) when there is one. A
    /// stop goes first; an error reading stdin is returned as such.
    pub fn next(&self, deadline: Option<Instant>) -> io::Result<Next> {
        loop {
            if let Some(reason) = self.requested() {
                return Ok(Next::Stop(reason));
            }
            let event = match deadline {
                None => self
                    .rx
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(at) => self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let event = match event {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Next::Tick),
                // Cannot happen (`self` holds a sender); stop rather than spin.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Ok(Next::Stop("event channel closed"))
                }
            };
            match event {
                Event::Stop => {}
                Event::Line => {
                    if self.requested().is_none() {
                        return Ok(Next::Line);
                    }
                }
                Event::StdinClosed => self.stop("stdin closed"),
                Event::StdinFailed(e) => return Err(e),
            }
        }
    }
}
