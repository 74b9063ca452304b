//! The harness's undo list: everything it creates, written down the moment before, and the
//! teardown that removes it (also what a killed run left, from `BASE/undo`).

use super::*;

/// One thing to undo; stored one per line in `BASE/undo` as `<kind> <value>`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Undo {
    /// A daemon's PID (killed only if its command line names [`BASE`]).
    Daemon(u32),
    /// A cgroup directory (relative path) with everything below it, in every hierarchy.
    CgroupTree(String),
    /// A shared cgroup directory (absolute path, one hierarchy) such as `kubepods`, removed
    /// only if empty: other tests may have cgroups below it.
    CgroupDir(String),
    /// A network namespace name under /var/run/netns.
    Netns(String),
    /// A network interface in the host namespace.
    Link(String),
    /// A file or directory tree (removed recursively).
    Path(PathBuf),
    /// A shared directory (e.g. /var/log/pods), removed only if empty: others may use it too.
    EmptyDir(PathBuf),
    /// A sysctl under /proc/sys and the value to restore.
    Sysctl(String, String),
}

impl Undo {
    pub(super) fn line(&self) -> String {
        match self {
            Undo::Daemon(p) => format!("daemon {p}"),
            Undo::CgroupTree(p) => format!("cgroup-tree {p}"),
            Undo::CgroupDir(p) => format!("cgroup-dir {p}"),
            Undo::Netns(n) => format!("netns {n}"),
            Undo::Link(n) => format!("link {n}"),
            Undo::Path(p) => format!("path {}", p.display()),
            Undo::EmptyDir(p) => format!("empty-dir {}", p.display()),
            Undo::Sysctl(k, v) => format!("sysctl {k} {v}"),
        }
    }

    pub(super) fn parse(line: &str) -> Option<Undo> {
        let (kind, rest) = line.split_once(' ')?;
        Some(match kind {
            "daemon" => Undo::Daemon(rest.parse().ok()?),
            "cgroup-tree" => Undo::CgroupTree(rest.to_string()),
            "cgroup-dir" => Undo::CgroupDir(rest.to_string()),
            "netns" => Undo::Netns(rest.to_string()),
            "link" => Undo::Link(rest.to_string()),
            "path" => Undo::Path(PathBuf::from(rest)),
            "empty-dir" => Undo::EmptyDir(PathBuf::from(rest)),
            "sysctl" => {
                let (k, v) = rest.split_once(' ')?;
                Undo::Sysctl(k.to_string(), v.to_string())
            }
            _ => return None,
        })
    }
}

/// (mount point, fstype) of every cgroup and cgroup2 mount.
pub(super) fn cgroup_mounts() -> Vec<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or_default();
        if fstype == "cgroup" || fstype == "cgroup2" {
            if let Some(mp) = left.split_whitespace().nth(4) {
                out.push((PathBuf::from(unescape_mount(mp)), fstype.to_string()));
            }
        }
    }
    out
}

pub(super) fn mounts_under(base: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(base))
        .collect()
}

pub(super) fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub(super) fn netns_names() -> BTreeSet<String> {
    fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// PIDs of processes whose command line names `base` (daemons, shims).
pub(super) fn processes_using(base: &Path) -> Vec<u32> {
    let base = base.to_string_lossy();
    let me = std::process::id();
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| p != me && cmdline(p).contains(base.as_ref()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every directory of a cgroup tree (relative path) in every hierarchy, deepest first.
pub(super) fn cgroup_tree_dirs(rel: &str) -> Vec<PathBuf> {
    pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut out = Vec::new();
    for (root, _) in cgroup_mounts() {
        let dir = root.join(rel);
        if dir.is_dir() {
            walk(&dir, &mut out);
        }
    }
    out
}

pub(super) fn kill_pid(pid: u32) {
    // SAFETY: kill(2); the PID was found in a cgroup or command line this harness created.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Undoes the list (newest first), best effort, never panics.
pub(super) fn undo_all(base: &Path, undo: &[Undo]) {
    // Daemons of a killed earlier run (only if they still name our base dir).
    for u in undo {
        if let Undo::Daemon(pid) = u {
            if cmdline(*pid).contains(&*base.to_string_lossy()) {
                kill_pid(*pid);
            }
        }
    }
    // Shims and anything else still naming our directories, then container processes.
    for _ in 0..3 {
        let mut pids = processes_using(base);
        for u in undo {
            if let Undo::CgroupTree(rel) = u {
                for dir in cgroup_tree_dirs(rel) {
                    if let Ok(t) = fs::read_to_string(dir.join("cgroup.procs")) {
                        pids.extend(t.lines().filter_map(|l| l.parse::<u32>().ok()));
                    }
                }
            }
        }
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            kill_pid(pid);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Mounts under the base dir (rootfs overlays, shm, Docker's netns and data-root), deepest
    // first.
    let mut mounts = mounts_under(base);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m.to_string_lossy().as_bytes()) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    for u in undo.iter().rev() {
        match u {
            Undo::Daemon(_) => {}
            Undo::CgroupTree(rel) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let dirs = cgroup_tree_dirs(rel);
                    for d in &dirs {
                        let _ = fs::remove_dir(d);
                    }
                    if cgroup_tree_dirs(rel).is_empty() || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Undo::CgroupDir(dir) => {
                // Fails harmlessly while someone else still has cgroups below.
                let _ = fs::remove_dir(dir);
            }
            Undo::Netns(name) => {
                if Path::new("/var/run/netns").join(name).exists() {
                    let _ = Command::new("ip").args(["netns", "del", name]).output();
                }
            }
            Undo::Link(name) => {
                if Path::new("/sys/class/net").join(name).exists() {
                    let _ = Command::new("ip").args(["link", "del", name]).output();
                }
            }
            Undo::Path(p) => {
                if p.starts_with(base) && p != base {
                    continue; // goes with the base dir, last
                }
                match fs::symlink_metadata(p) {
                    Ok(m) if m.is_dir() => {
                        let _ = fs::remove_dir_all(p);
                    }
                    Ok(_) => {
                        let _ = fs::remove_file(p);
                    }
                    Err(_) => {}
                }
            }
            Undo::EmptyDir(p) => {
                let _ = fs::remove_dir(p);
            }
            Undo::Sysctl(key, value) => {
                let _ = fs::write(Path::new("/proc/sys").join(key), value);
            }
        }
    }
    let _ = fs::remove_dir_all(base);
}

/// What of the undo list is still there, plus processes and mounts naming the base dir.
pub(super) fn leftovers(base: &Path, undo: &[Undo]) -> Vec<String> {
    let mut left = Vec::new();
    for pid in processes_using(base) {
        left.push(format!("process {pid}: {}", cmdline(pid)));
    }
    for m in mounts_under(base) {
        left.push(format!("mount {}", m.display()));
    }
    for u in undo {
        match u {
            Undo::Daemon(pid) => {
                if Path::new(&format!("/proc/{pid}")).exists()
                    && cmdline(*pid).contains(&*base.to_string_lossy())
                {
                    left.push(format!("daemon {pid}"));
                }
            }
            Undo::CgroupTree(rel) => {
                for d in cgroup_tree_dirs(rel) {
                    left.push(format!("cgroup {}", d.display()));
                }
            }
            // May legitimately stay while others use them.
            Undo::CgroupDir(_) | Undo::EmptyDir(_) => {}
            Undo::Netns(n) => {
                if Path::new("/var/run/netns").join(n).exists() {
                    left.push(format!("netns {n}"));
                }
            }
            Undo::Link(n) => {
                if Path::new("/sys/class/net").join(n).exists() {
                    left.push(format!("link {n}"));
                }
            }
            Undo::Path(p) => {
                if fs::symlink_metadata(p).is_ok() {
                    left.push(format!("path {}", p.display()));
                }
            }
            Undo::Sysctl(k, v) => {
                let now = fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap_or_default();
                if now.trim() != v {
                    left.push(format!("sysctl {k} = {} (was {v})", now.trim()));
                }
            }
        }
    }
    left
}
