//! Reading the namespaces: one short-lived thread per namespace that `setns`es, and the
//! netlink socket it dumps through

use super::*;

// ---------------------------------------------------------------------------------------------
// Reading namespaces.

/// What one namespace thread found.
#[derive(Debug, Default)]
pub(super) struct NsOutcome {
    pub(super) sockets: Vec<SeededSocket>,
    pub(super) dropped: usize,
    pub(super) errors: Vec<String>,
    /// The namespace's file, kept open when it has sockets (the second look enters it again,
    /// and the open file keeps the namespace alive); `None` for the own namespace.
    pub(super) handle: Option<File>,
}

/// Reads every target, at most [`MAX_PARALLEL`] threads at a time; results in target order.
pub(super) fn read_all(targets: &[NsTarget], max_sockets: usize) -> Vec<NsOutcome> {
    in_threads(
        targets,
        |target| read_namespace(target, max_sockets),
        |target, e| NsOutcome {
            errors: vec![format!("{}: {e}", describe(target))],
            ..NsOutcome::default()
        },
    )
}

/// `work` on each item, each on a thread of its own (it may `setns`: a thread that exits
/// afterwards), at most [`MAX_PARALLEL`] at a time; results in item order. A thread that
/// cannot be spawned or panics gives `failed(item, why)`.
pub(super) fn in_threads<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> R + Sync,
    failed: impl Fn(&T, &str) -> R,
) -> Vec<R> {
    let work = &work;
    thread::scope(|scope| {
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        let mut pending = VecDeque::new();
        let join = |item: &T, h: thread::ScopedJoinHandle<'_, R>| {
            h.join()
                .unwrap_or_else(|_| failed(item, "reader thread panicked"))
        };
        for (i, item) in items.iter().enumerate() {
            if pending.len() >= MAX_PARALLEL {
                if let Some((j, h)) = pending.pop_front() {
                    results[j] = Some(join(&items[j], h));
                }
            }
            let spawned = thread::Builder::new()
                .name("flowlens-seed".into())
                .spawn_scoped(scope, move || work(item));
            match spawned {
                Ok(h) => pending.push_back((i, h)),
                Err(e) => results[i] = Some(failed(item, &format!("cannot spawn thread: {e}"))),
            }
        }
        while let Some((j, h)) = pending.pop_front() {
            results[j] = Some(join(&items[j], h));
        }
        results.into_iter().flatten().collect()
    })
}

pub(super) fn describe(t: &NsTarget) -> String {
    match t.paths.first() {
        Some(p) => format!("netns {} ({})", t.inode, p.display()),
        None => format!("netns {} (own)", t.inode),
    }
}

/// Moves the calling thread into the namespace at `path` and checks that it arrived; returns
/// the namespace's file. A path that no longer names that namespace (its process exited, its
/// bind mount went or was replaced) is `NotFound`.
pub(super) fn enter_netns(path: &Path, inode: u32) -> io::Result<File> {
    let file = File::open(path)?;
    enter_netns_file(&file, inode)?;
    Ok(file)
}

/// Moves the calling thread into the namespace of `file` and checks that it is `inode`.
pub(super) fn enter_netns_file(file: &File, inode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd; it only changes the calling (dedicated) thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "setns: {}",
            io::Error::last_os_error()
        )));
    }
    let now = own_netns()?.0;
    if now != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("setns landed in netns {now}, the namespace was replaced"),
        ));
    }
    Ok(())
}

/// Body of a namespace thread. Must run on a thread that exits afterwards.
pub(super) fn read_namespace(target: &NsTarget, max_sockets: usize) -> NsOutcome {
    let mut out = NsOutcome::default();
    let mut entered = target.paths.is_empty();
    let mut failure = None;
    let mut handle = None;
    for path in &target.paths {
        match enter_netns(path, target.inode) {
            Ok(file) => {
                entered = true;
                handle = Some(file);
                break;
            }
            // Gone since the listing: the next path may still name it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if !entered {
        // Every path gone means the namespace's processes exited, and its sockets with them:
        // nothing to read, nothing to report.
        if let Some(e) = failure {
            out.errors.push(format!("{}: {e}", describe(target)));
        }
        return out;
    }
    let mut diag = match DiagConn::open() {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(format!(
                "{}: cannot open NETLINK_SOCK_DIAG socket: {e}",
                describe(target)
            ));
            return out;
        }
    };

    // One dump per family returns the listeners and the established-like sockets together:
    // each dump walks the whole (host-wide, by default) TCP hash table, so fewer is faster.
    // Roles are assigned once both families' listeners are known (dual-stack listeners).
    let mut listeners = Listeners::new();
    let mut found = Vec::new();
    let ext = 1u8 << (INET_DIAG_INFO - 1);
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let dropped = &mut out.dropped;
        let res = diag.dump(family, ESTABLISHED_STATES | LISTEN_STATES, ext, &mut |s| {
            if u32::from(s.state) == TCP_LISTEN {
                listeners.entry(s.local.port()).or_default().push(Listener {
                    addr: unmap(s.local.ip()),
                    v6only: s.v6only.unwrap_or(false),
                });
            } else if found.len() < max_sockets {
                found.push(s);
            } else {
                *dropped += 1;
            }
        });
        if let Err(e) = res {
            out.errors
                .push(format!("{}: dump (family {family}): {e}", describe(target)));
        }
    }
    out.sockets = found
        .into_iter()
        .map(|s| {
            let info = s.tcp_info.unwrap_or_default();
            SeededSocket {
                cookie: s.cookie,
                netns: target.inode,
                local: s.local,
                remote: s.remote,
                role: role_of(s.local, &listeners),
                srtt_us: info.rtt_us.unwrap_or(0),
                rttvar_us: info.rttvar_us.unwrap_or(0),
                bytes_acked: info.bytes_acked.unwrap_or(0),
                bytes_received: info.bytes_received.unwrap_or(0),
                total_retrans: info.total_retrans.unwrap_or(0),
                cgroup_id: s.cgroup_id,
                inode: s.inode,
                bound_if: s.bound_if,
            }
        })
        .collect();
    if !out.sockets.is_empty() {
        out.handle = handle;
    }
    out
}

/// Whether a socket the first look found is still there at the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Found again in an established-like state: it is not closed yet.
    Open,
    /// Neither in the namespace's dump nor found by its addresses and cookie in an
    /// established-like state: closed (or in TIME_WAIT, which only a closed socket leaves).
    Gone,
    /// Its namespace could not be read again, or the lookup failed: unknown.
    Unknown,
}

/// The second look in one namespace (entered through `handle`, or the caller's own when
/// `None`) at `sockets`: one dump of the established-like sockets of each family, then, for
/// each socket the dump did not show, a lookup by its addresses and cookie (a dump resumed
/// after a full datagram counts its place in a hash bucket: a socket closing before that
/// place may hide a live one from it; the lookup does not). Returns a look per socket and
/// what went wrong, if anything.
pub(super) fn look_again_in(
    inode: u32,
    handle: Option<&File>,
    sockets: &[&SeededSocket],
) -> (Vec<Look>, Option<String>) {
    let unknown = |why: String| (vec![Look::Unknown; sockets.len()], Some(why));
    let name = format!("netns {inode}");
    if let Some(file) = handle {
        if let Err(e) = enter_netns_file(file, inode) {
            return unknown(format!("{name}: {e}"));
        }
    }
    let mut diag = match DiagConn::open() {
        Ok(d) => d,
        Err(e) => return unknown(format!("{name}: cannot open NETLINK_SOCK_DIAG socket: {e}")),
    };
    let mut seen = std::collections::HashSet::new();
    let mut failure = None;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        if let Err(e) = diag.dump(family, ESTABLISHED_STATES, 0, &mut |s| {
            seen.insert(s.cookie);
        }) {
            // The lookups below answer for every socket the dump did not show.
            failure = Some(format!("{name}: dump (family {family}): {e}"));
        }
    }
    let looks = sockets
        .iter()
        .map(|s| {
            if seen.contains(&s.cookie) {
                return Look::Open;
            }
            match diag.lookup(s) {
                Ok(Some(state)) if ESTABLISHED_STATES & (1 << state) != 0 => Look::Open,
                Ok(_) => Look::Gone,
                Err(e) => {
                    failure.get_or_insert_with(|| format!("{name}: lookup: {e}"));
                    Look::Unknown
                }
            }
        })
        .collect();
    (looks, failure)
}

/// A `NETLINK_SOCK_DIAG` socket of the namespace it was opened in.
pub(super) struct DiagConn {
    pub(super) socket: netlink::Socket,
    pub(super) seq: u32,
}

impl DiagConn {
    pub(super) fn open() -> io::Result<Self> {
        Ok(DiagConn {
            socket: netlink::Socket::open(
                NETLINK_SOCK_DIAG,
                std::time::Duration::from_secs(RECV_TIMEOUT_SECS),
                RECV_BUF_LEN,
            )?,
            seq: 0,
        })
    }

    /// The state of the one socket with `s`'s addresses, bound interface and cookie; `None`
    /// when there is none (ENOENT; ESTALE: another socket has its addresses now).
    pub(super) fn lookup(&mut self, s: &SeededSocket) -> Result<Option<u32>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let req = build_lookup(self.seq, s.local, s.remote, s.bound_if, s.cookie);
        self.socket.send(&req)?;
        let mut state = None;
        loop {
            // One socket message, or an error: no NLMSG_DONE ends the answer.
            match parse_datagram(self.socket.recv()?, self.seq, &mut |d| {
                if d.cookie == s.cookie {
                    state = Some(u32::from(d.state));
                }
            }) {
                Err(NlError::Kernel { errno })
                    if errno == libc::ENOENT || errno == libc::ESTALE =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
                Ok(_) if state.is_some() => return Ok(state),
                // A datagram of an earlier request only: the answer is still to come.
                Ok(_) => {}
            }
        }
    }

    /// Sends one dump request and feeds every socket of the reply to `sink`.
    pub(super) fn dump(
        &mut self,
        family: u8,
        states: u32,
        ext: u8,
        sink: &mut dyn FnMut(DiagSocket),
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        self.socket
            .send(&build_request(self.seq, family, states, ext))?;
        loop {
            if parse_datagram(self.socket.recv()?, self.seq, sink)? == Progress::Done {
                return Ok(());
            }
        }
    }
}
