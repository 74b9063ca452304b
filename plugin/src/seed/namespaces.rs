//! Every network namespace of the host and the paths that name it

use super::*;

// ---------------------------------------------------------------------------------------------
// Namespace enumeration.

/// A namespace to read, and the paths that name it (`/proc/<pid>/ns/net` of its processes, its
/// bind mounts), tried in order: a process may exit between the listing and the open. No path
/// for the caller's own namespace (read without setns).
#[derive(Debug, Clone)]
pub(super) struct NsTarget {
    pub(super) inode: u32,
    pub(super) paths: Vec<PathBuf>,
}

/// At most this many paths are kept per namespace.
pub(super) const MAX_PATHS_PER_NAMESPACE: usize = 4;

/// Inode of the calling thread's network namespace and the nsfs device.
pub(super) fn own_netns() -> io::Result<(u32, u64)> {
    let md = std::fs::metadata("/proc/thread-self/ns/net")
        .or_else(|_| std::fs::metadata("/proc/self/ns/net"))?;
    let ino = u32::try_from(md.ino()).map_err(|_| io::Error::other("netns inode over 32 bits"))?;
    Ok((ino, md.dev()))
}

/// All network namespaces, own first, deduplicated by inode; plus enumeration problems.
pub(super) fn enumerate_namespaces() -> (Vec<NsTarget>, Vec<String>) {
    let mut errors = Vec::new();
    let mut targets = Vec::new();
    // Inode -> its index in `targets` (None: the own namespace, read without a path).
    let mut seen: HashMap<u32, Option<usize>> = HashMap::new();
    let nsfs_dev = match own_netns() {
        Ok((ino, dev)) => {
            seen.insert(ino, None);
            targets.push(NsTarget {
                inode: ino,
                paths: Vec::new(),
            });
            Some(dev)
        }
        Err(e) => {
            errors.push(format!(
                "own netns: cannot stat /proc/thread-self/ns/net: {e}"
            ));
            targets.push(NsTarget {
                inode: 0,
                paths: Vec::new(),
            });
            None
        }
    };

    let mut denied = 0usize;
    let mut add = |path: PathBuf| {
        // Follows the /proc magic link or reads the nsfs bind mount. Files in /run/netns that
        // are not (or no longer) nsfs mounts have another device and are skipped.
        let md = match std::fs::metadata(&path) {
            Ok(md) => md,
            Err(e) => {
                // Another user's /proc/<pid>/ns needs CAP_SYS_PTRACE; a vanished process is normal.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    denied += 1;
                }
                return;
            }
        };
        if nsfs_dev.is_some_and(|dev| dev != md.dev()) {
            return;
        }
        let Ok(ino) = u32::try_from(md.ino()) else {
            return;
        };
        match seen.get(&ino) {
            None => {
                seen.insert(ino, Some(targets.len()));
                targets.push(NsTarget {
                    inode: ino,
                    paths: vec![path],
                });
            }
            Some(Some(i)) if targets[*i].paths.len() < MAX_PATHS_PER_NAMESPACE => {
                targets[*i].paths.push(path);
            }
            Some(_) => {}
        }
    };

    match std::fs::read_dir("/proc") {
        Ok(dir) => {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                    add(Path::new("/proc").join(name).join("ns/net"));
                }
            }
        }
        Err(e) => errors.push(format!("cannot list /proc: {e}")),
    }
    for dir in ["/run/netns", "/var/run/docker/netns"] {
        // Missing directories are normal (no `ip netns`, no docker).
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                add(entry.path());
            }
        }
    }
    // With CAP_SYS_PTRACE a denial is a process caught mid-exec (not dumpable for a moment).
    if denied > 0 && !has_cap_sys_ptrace() {
        errors.push(format!(
            "{denied} processes' network namespaces could not be opened (permission denied): \
             their connections are not seen until they move data; grant CAP_SYS_PTRACE"
        ));
    }
    (targets, errors)
}

/// Whether this process holds CAP_SYS_PTRACE (bit 19 of `CapEff` in /proc/self/status).
pub(super) fn has_cap_sys_ptrace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim();
            u64::from_str_radix(hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 19) != 0)
}
