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
}

/// Reads every target, at most [`MAX_PARALLEL`] threads at a time; results in target order.
pub(super) fn read_all(targets: &[NsTarget], max_sockets: usize) -> Vec<NsOutcome> {
    thread::scope(|scope| {
        let mut results: Vec<Option<NsOutcome>> = targets.iter().map(|_| None).collect();
        let mut pending = VecDeque::new();
        let join = |t: &NsTarget, h: thread::ScopedJoinHandle<'_, NsOutcome>| {
            h.join().unwrap_or_else(|_| NsOutcome {
                errors: vec![format!("{}: reader thread panicked", describe(t))],
                ..NsOutcome::default()
            })
        };
        for (i, target) in targets.iter().enumerate() {
            if pending.len() >= MAX_PARALLEL {
                if let Some((j, h)) = pending.pop_front() {
                    results[j] = Some(join(&targets[j], h));
                }
            }
            let spawned = thread::Builder::new()
                .name("flowlens-seed".into())
                .spawn_scoped(scope, move || read_namespace(target, max_sockets));
            match spawned {
                Ok(h) => pending.push_back((i, h)),
                Err(e) => {
                    results[i] = Some(NsOutcome {
                        errors: vec![format!("{}: cannot spawn thread: {e}", describe(target))],
                        ..NsOutcome::default()
                    })
                }
            }
        }
        while let Some((j, h)) = pending.pop_front() {
            results[j] = Some(join(&targets[j], h));
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

/// Moves the calling thread into the namespace at `path` and checks that it arrived. A path
/// that no longer names that namespace (its process exited, its bind mount went or was
/// replaced) is `NotFound`.
pub(super) fn enter_netns(path: &Path, inode: u32) -> io::Result<()> {
    let file = File::open(path)?;
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
    for path in &target.paths {
        match enter_netns(path, target.inode) {
            Ok(()) => {
                entered = true;
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
            }
        })
        .collect();
    out
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
