//! Attribution of sockets to containers and pods: cgroup id -> cgroup path -> container id,
//! pod UID, QoS class -> names read from what the node has on disk, without the Kubernetes API.
//!
//! [`parse_cgroup_path`] is pure (no I/O). [`Resolver`] does the I/O: it indexes the cgroup2
//! tree (directory inode = cgroup id), falls back to `/proc/<pid>/cgroup` where a socket's cgroup
//! is not in that tree (cgroup v1-only hosts), and reads runtime metadata (containerd task
//! bundles, CRI-O/Podman `userdata/config.json`, Docker `config.v2.json`, kubelet log-link names),
//! each file opened without following symbolic links and read up to [`MAX_FILE_BYTES`].
//! Everything it keeps is bounded and dropped again by [`Resolver::prune`].
//!
//! Invariants: no path is built from text that was not validated first (container ids are 64
//! lowercase hex digits, pids are numbers, containerd namespaces match containerd's identifier
//! rule); a malformed or hostile file is skipped with one warning per path, never a panic
//! ([`Resolver::warnings`] counts the skips); names that cannot be tags (control characters,
//! backslashes line protocol cannot carry, over 253 bytes) are dropped and counted
//! ([`Resolver::names_dropped`]).

mod bounded;
pub(crate) mod cgroup;
pub(crate) mod metadata;

pub use cgroup::{is_container_id, parse_cgroup_path};
pub use flowlens_core::{ContainerInfo, QosClass, Runtime};
pub use metadata::MAX_FILE_BYTES;

use bounded::Bounded;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgroup::{
    parse_detailed, proc_cgroup_candidates, walk_cgroup2, CgroupIndex, Parsed, WalkLimits,
};
use metadata::{
    containerd_namespaces, parse_containerd_bundle, parse_crio_config, parse_docker_config,
    read_beneath, scan_log_links, Partial,
};

/// What a cgroup path says by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupRef {
    /// The runtime whose naming the path follows. A bare `<id>` directory under a kubepods pod
    /// reads as containerd; [`Resolver`] corrects it from the metadata it finds.
    pub runtime: Runtime,
    /// The container id: 64 lowercase hex digits.
    pub id: String,
    /// The pod's UID, with dashes (systemd slices write them as `_`), if under a kubepods pod.
    pub pod_uid: Option<String>,
    /// The pod's QoS class, if under a kubepods pod.
    pub qos: Option<QosClass>,
}

/// Where the resolver looks. Every root is configurable; [`Default`] gives the real paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRoots {
    /// The cgroup2 mount: `/sys/fs/cgroup/unified` if that is a cgroup2 mount (hybrid layout),
    /// else `/sys/fs/cgroup` if that is one; on a cgroup v1-only host neither is, and the default
    /// stays `/sys/fs/cgroup/unified` (absent), so every lookup goes through `/proc/<pid>/cgroup`.
    /// Any directory tree works (tests use a temporary one): a directory's inode is its id.
    pub cgroup2: PathBuf,
    /// containerd's runtime v2 task state: `<this>/<namespace>/<id>/config.json`.
    pub containerd: PathBuf,
    /// CRI-O's (and Podman's) storage run root: `<this>/<id>/userdata/config.json`.
    pub crio: PathBuf,
    /// Docker's containers: `<this>/<id>/config.v2.json`.
    pub docker: PathBuf,
    /// The kubelet's log links: `<this>/<pod>_<namespace>_<container>-<id>.log`.
    pub kubelet_logs: PathBuf,
    /// procfs: `<this>/<pid>/cgroup`.
    pub proc: PathBuf,
}

impl Default for MetadataRoots {
    fn default() -> Self {
        let unified = PathBuf::from("/sys/fs/cgroup/unified");
        let plain = PathBuf::from("/sys/fs/cgroup");
        let cgroup2 = if cgroup::is_cgroup2_mount(&unified) {
            unified
        } else if cgroup::is_cgroup2_mount(&plain) {
            plain
        } else {
            unified
        };
        MetadataRoots {
            cgroup2,
            containerd: PathBuf::from("/run/containerd/io.containerd.runtime.v2.task"),
            crio: PathBuf::from("/run/containers/storage/overlay-containers"),
            docker: PathBuf::from("/var/lib/docker/containers"),
            kubelet_logs: PathBuf::from("/var/log/containers"),
            proc: PathBuf::from("/proc"),
        }
    }
}

impl MetadataRoots {
    /// Every root as a subdirectory of `base` (`cgroup`, `containerd`, `crio`, `docker`,
    /// `containers-logs`, `proc`): for tests that stand in for a node.
    #[cfg(test)]
    pub fn under(base: &Path) -> Self {
        MetadataRoots {
            cgroup2: base.join("cgroup"),
            containerd: base.join("containerd"),
            crio: base.join("crio"),
            docker: base.join("docker"),
            kubelet_logs: base.join("containers-logs"),
            proc: base.join("proc"),
        }
    }
}

/// What a cgroup id stands for.
#[derive(Debug, Clone)]
enum CgroupEntry {
    /// A container's cgroup (or one below it).
    Container(Parsed),
    /// A cgroup of the host (a service, a session, a pod slice): no container.
    Host,
    /// The root of the cgroup2 tree: processes not placed in cgroup2 (hybrid hosts whose runtime
    /// only uses v1 controllers); the answer is in `/proc/<pid>/cgroup`.
    Root,
}

/// A container's names, and when they were read.
#[derive(Debug)]
struct CachedInfo {
    info: Arc<ContainerInfo>,
    read_at: Instant,
    complete: bool,
}

/// The answer of `/proc/<pid>/cgroup`.
#[derive(Debug)]
struct PidEntry {
    cgroup_id: u64,
    container: Option<Parsed>,
    read_at: Instant,
    used: bool,
}

/// Default bound on the directories one walk of the cgroup2 tree visits.
pub const DEFAULT_MAX_CGROUP_DIRS: usize = 65_536;
/// Default bound on the depth of that walk below the cgroup2 root.
pub const DEFAULT_MAX_CGROUP_DEPTH: usize = 16;
/// Default least time between two walks of the cgroup2 tree.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Containers whose names are incomplete are read again after this long.
const INCOMPLETE_RETRY: Duration = Duration::from_secs(30);
/// `/proc/<pid>/cgroup` answers are read again after this long.
const PID_TTL: Duration = Duration::from_secs(60);
/// At most this many containerd namespace directories are searched.
const MAX_CONTAINERD_NAMESPACES: usize = 64;
/// At most this many names are read from the kubelet's log-link directory.
const MAX_LOG_LINKS: usize = 65_536;
/// At most this many paths are remembered for deduplicating warnings.
const MAX_WARNED_PATHS: usize = 4096;

/// Maps a socket's cgroup id (and pid) to its container, with names; caches everything it
/// learns, within bounds.
#[derive(Debug)]
pub struct Resolver {
    roots: MetadataRoots,
    limits: WalkLimits,
    rescan_interval: Duration,
    last_scan: Option<Instant>,
    /// cgroup id -> path, from the last walk (pruned to the live ids in between).
    index: HashMap<u64, String>,
    /// Ids a walk did not find: not walked for again (the kernel does not reuse cgroup ids).
    missing: Bounded<u64, ()>,
    by_cgroup: Bounded<u64, CgroupEntry>,
    by_container: Bounded<String, CachedInfo>,
    by_pid: Bounded<u32, PidEntry>,
    log_links: HashMap<String, Partial>,
    log_links_at: Option<Instant>,
    warned: HashSet<PathBuf>,
    warnings: u64,
    names_dropped: u64,
    walk_warned: bool,
    /// Ids asked for while a walk was not due, that nothing else could resolve: the caller asks
    /// again at its next gather ([`Resolver::take_deferred`]).
    deferred: Vec<u64>,
}

/// What the cgroup2 index says of an id.
enum Lookup {
    /// Its path below the cgroup2 root.
    Path(String),
    /// Not in the tree when it was last walked (a v1-only host, or a cgroup already gone).
    Missing,
    /// Not in the index, and the next walk is not due yet.
    NotYet,
}

impl Resolver {
    /// A resolver over `roots` that keeps at most `max_entries` entries in each of its caches
    /// (the oldest go first). Does no I/O until asked.
    pub fn new(roots: MetadataRoots, max_entries: usize) -> Resolver {
        Resolver {
            roots,
            limits: WalkLimits {
                max_depth: DEFAULT_MAX_CGROUP_DEPTH,
                max_dirs: DEFAULT_MAX_CGROUP_DIRS,
            },
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            last_scan: None,
            index: HashMap::new(),
            missing: Bounded::new(max_entries),
            by_cgroup: Bounded::new(max_entries),
            by_container: Bounded::new(max_entries),
            by_pid: Bounded::new(max_entries),
            log_links: HashMap::new(),
            log_links_at: None,
            warned: HashSet::new(),
            warnings: 0,
            names_dropped: 0,
            walk_warned: false,
            deferred: Vec::new(),
        }
    }

    /// Sets the least time between two walks of the cgroup2 tree (default 1 s; tests shorten it).
    #[cfg(test)]
    pub fn with_rescan_interval(mut self, interval: Duration) -> Resolver {
        self.rescan_interval = interval;
        self
    }

    /// The container of a socket, from its cgroup2 id (and, where there is no cgroup2 path —
    /// pure cgroup v1 hosts — from `/proc/<pid>/cgroup`). `None` for host processes, and for a
    /// new id met while the tree was walked less than the rescan interval ago: then the id is
    /// kept for [`Resolver::take_deferred`], to be asked for again at the next gather.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<ContainerInfo>> {
        let now = Instant::now();
        let entry = match self.by_cgroup.get(&cgroup_id) {
            Some(e) => e.clone(),
            None => match self.cgroup_path(cgroup_id, now) {
                Lookup::Path(path) => {
                    let e = match parse_detailed(&path) {
                        Some(p) => {
                            // A new cgroup: read the container's names afresh.
                            self.by_container.map.remove(&p.cref.id);
                            CgroupEntry::Container(p)
                        }
                        None if path == "/" => CgroupEntry::Root,
                        None => CgroupEntry::Host,
                    };
                    self.by_cgroup.insert(cgroup_id, e.clone());
                    e
                }
                // Not in the cgroup2 tree: a v1-only host, or a cgroup already gone.
                Lookup::Missing => CgroupEntry::Root,
                // Not known yet: /proc/<pid>/cgroup may tell (a live socket's process), else
                // the next gather's walk will.
                Lookup::NotYet => {
                    let found = self.resolve_pid(cgroup_id, pid, now);
                    if found.is_none() {
                        self.deferred.push(cgroup_id);
                    }
                    return found;
                }
            },
        };
        match entry {
            CgroupEntry::Container(p) => Some(self.info_for(&p, now)),
            CgroupEntry::Host => None,
            CgroupEntry::Root => self.resolve_pid(cgroup_id, pid, now),
        }
    }

    /// How many containers run in the pod of `info`, its sandbox excluded: the container
    /// directories beside `info`'s cgroup (one readdir). None when that cannot be told: no pod,
    /// no known path, or no sandbox id to leave out.
    pub fn running_in_pod(&self, cgroup_id: u64, info: &ContainerInfo) -> Option<u64> {
        info.pod.as_ref()?;
        let sandbox = info.sandbox_id.as_deref()?;
        let path = self.index.get(&cgroup_id)?;
        let parent = path.rsplit_once('/')?.0;
        let dir = self.roots.cgroup2.join(parent.trim_start_matches('/'));
        let mut count = 0u64;
        for entry in std::fs::read_dir(&dir).ok()?.flatten().take(1024) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(child) = parse_cgroup_path(&format!("{parent}/{name}")) {
                if child.id != sandbox && child.pod_uid == info.pod_uid {
                    count += 1;
                }
            }
        }
        Some(count)
    }

    /// Drops what belongs to cgroups that no longer exist (call once per gather with the cgroup
    /// ids still in use); caches shrink back.
    pub fn prune<S: std::hash::BuildHasher>(&mut self, live_cgroup_ids: &HashSet<u64, S>) {
        self.by_cgroup.retain(|id, _| live_cgroup_ids.contains(id));
        self.index.retain(|id, _| live_cgroup_ids.contains(id));
        self.index.shrink_to_fit();
        self.missing.retain(|id, _| live_cgroup_ids.contains(id));
        self.by_pid
            .retain(|_, e| e.used && live_cgroup_ids.contains(&e.cgroup_id));
        for e in self.by_pid.map.values_mut() {
            e.0.used = false;
        }
        let mut referenced: HashSet<&str> = HashSet::new();
        for (e, _) in self.by_cgroup.map.values() {
            if let CgroupEntry::Container(p) = e {
                referenced.insert(&p.cref.id);
            }
        }
        for (e, _) in self.by_pid.map.values() {
            if let Some(p) = &e.container {
                referenced.insert(&p.cref.id);
            }
        }
        let referenced: HashSet<String> = referenced.into_iter().map(str::to_string).collect();
        self.by_container.retain(|id, _| referenced.contains(id));
        self.log_links.retain(|id, _| referenced.contains(id));
        if self.log_links.is_empty() {
            self.log_links = HashMap::new();
        }
    }

    /// Entries held in all caches (cgroup paths, cgroup ids, containers, pids, log-link names,
    /// ids known to be missing): returns to 0 once every container is gone and pruned.
    pub fn cache_len(&self) -> usize {
        self.index.len()
            + self.missing.len()
            + self.by_cgroup.len()
            + self.by_container.len()
            + self.by_pid.len()
            + self.log_links.len()
    }

    /// Malformed or hostile metadata files, and metadata directories that cannot be listed,
    /// skipped so far (each path is logged once; the count goes up on every skip).
    pub fn warnings(&self) -> u64 {
        self.warnings
    }

    /// Container, pod and namespace names left out so far because line protocol cannot carry
    /// them unchanged (control characters such as NUL or a newline, backslashes it cannot
    /// escape, over 253 bytes): counted at every read of the file that has them, logged once
    /// per file.
    pub fn names_dropped(&self) -> u64 {
        self.names_dropped
    }

    /// Takes what a metadata file at `path` said, counting the names it had to leave out.
    fn names_from(&mut self, acc: &mut Partial, p: Partial, path: &Path) {
        if p.dropped > 0 {
            self.names_dropped += p.dropped;
            if self.warned.len() < MAX_WARNED_PATHS && self.warned.insert(path.to_path_buf()) {
                tracing::warn!(
                    path = %path.display(),
                    "container metadata names left out: {} cannot be written as tags unchanged \
                     (control characters, backslashes, over 253 bytes)",
                    p.dropped
                );
            }
        }
        acc.fill_gaps(p);
    }

    fn warn(&mut self, err: &metadata::MetadataError) {
        self.warnings += 1;
        if self.warned.len() < MAX_WARNED_PATHS && self.warned.insert(err.path().to_path_buf()) {
            tracing::warn!(path = %err.path().display(), "container metadata skipped: {err}");
        }
    }

    /// Takes the ids [`Resolver::resolve`] could not resolve yet because the tree's next walk
    /// was not due: ask for them again at the next gather (a short-lived socket's cgroup would
    /// otherwise never be resolved).
    pub fn take_deferred(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.deferred)
    }

    /// A metadata directory that cannot be listed: silent when it does not exist (a runtime
    /// this node does not run), else warned about like a file.
    fn warn_unlisted(&mut self, dir: &Path, source: std::io::Error) {
        let err = metadata::MetadataError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !err.is_absent() {
            self.warn(&err);
        }
    }

    /// The path of a cgroup id: from the index, walking the tree again (rate-limited) when the
    /// id is new.
    fn cgroup_path(&mut self, cgroup_id: u64, now: Instant) -> Lookup {
        if let Some(p) = self.index.get(&cgroup_id) {
            return Lookup::Path(p.clone());
        }
        if self.missing.contains(&cgroup_id) {
            return Lookup::Missing;
        }
        let due = self
            .last_scan
            .is_none_or(|t| now.saturating_duration_since(t) >= self.rescan_interval);
        if !due {
            return Lookup::NotYet;
        }
        self.rescan(now);
        match self.index.get(&cgroup_id) {
            Some(p) => Lookup::Path(p.clone()),
            None => {
                self.missing.insert(cgroup_id, ());
                Lookup::Missing
            }
        }
    }

    fn rescan(&mut self, now: Instant) {
        self.last_scan = Some(now);
        match walk_cgroup2(&self.roots.cgroup2, self.limits) {
            Ok(CgroupIndex { paths, truncated }) => {
                if truncated && !self.walk_warned {
                    self.walk_warned = true;
                    tracing::warn!(
                        root = %self.roots.cgroup2.display(),
                        max_dirs = self.limits.max_dirs,
                        "cgroup2 tree larger than the walk limit; containers beyond it are not attributed"
                    );
                }
                self.index = paths;
            }
            Err(e) => {
                if !self.walk_warned {
                    self.walk_warned = true;
                    tracing::warn!(
                        root = %self.roots.cgroup2.display(),
                        "no cgroup2 tree to index ({e}); attributing containers from /proc/<pid>/cgroup"
                    );
                }
                self.index.clear();
            }
        }
    }

    /// `/proc/<pid>/cgroup`, for sockets whose cgroup2 id says nothing.
    fn resolve_pid(
        &mut self,
        cgroup_id: u64,
        pid: u32,
        now: Instant,
    ) -> Option<Arc<ContainerInfo>> {
        if pid == 0 {
            return None;
        }
        let fresh = self.by_pid.get(&pid).is_some_and(|e| {
            e.cgroup_id == cgroup_id && now.saturating_duration_since(e.read_at) < PID_TTL
        });
        if !fresh {
            let container = self.read_proc_cgroup(pid);
            self.by_pid.insert(
                pid,
                PidEntry {
                    cgroup_id,
                    container,
                    read_at: now,
                    used: true,
                },
            );
        }
        let e = self.by_pid.get_mut(&pid)?;
        e.used = true;
        let p = e.container.clone()?;
        Some(self.info_for(&p, now))
    }

    fn read_proc_cgroup(&mut self, pid: u32) -> Option<Parsed> {
        let pid_dir = pid.to_string();
        let bytes = match read_beneath(&self.roots.proc, &[&pid_dir, "cgroup"], 64 * 1024) {
            Ok(b) => b,
            Err(e) if e.is_absent() => return None,
            Err(e) => {
                self.warn(&e);
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        proc_cgroup_candidates(&text)
            .into_iter()
            .find_map(parse_detailed)
    }

    /// The container's info, from the cache or read afresh.
    fn info_for(&mut self, p: &Parsed, now: Instant) -> Arc<ContainerInfo> {
        if let Some(c) = self.by_container.get(&p.cref.id) {
            if c.complete || now.saturating_duration_since(c.read_at) < INCOMPLETE_RETRY {
                return c.info.clone();
            }
        }
        let partial = self.read_names(&p.cref, now);
        let cref = &p.cref;
        let runtime = if p.runtime_certain {
            cref.runtime
        } else {
            partial.runtime.unwrap_or(cref.runtime)
        };
        let is_sandbox = partial.is_sandbox.unwrap_or(false)
            || partial.sandbox_id.as_deref() == Some(cref.id.as_str());
        let pod_uid = cref.pod_uid.clone().or(partial.pod_uid);
        let in_pod = pod_uid.is_some() || partial.pod.is_some();
        let info = ContainerInfo {
            id: cref.id.clone(),
            short_id: cref.id[..12].to_string(),
            runtime,
            name: partial.name,
            pod: partial.pod,
            namespace: partial.namespace,
            pod_uid,
            sandbox_id: partial.sandbox_id,
            is_sandbox,
            qos: cref.qos,
        };
        let complete = (info.name.is_some() || info.is_sandbox)
            && (!in_pod || (info.pod.is_some() && info.namespace.is_some()));
        let info = Arc::new(info);
        self.by_container.insert(
            cref.id.clone(),
            CachedInfo {
                info: info.clone(),
                read_at: now,
                complete,
            },
        );
        info
    }

    /// Reads every source in order of preference; the first that knows a field wins.
    fn read_names(&mut self, cref: &CgroupRef, now: Instant) -> Partial {
        let id = cref.id.as_str();
        debug_assert!(is_container_id(id));
        if !is_container_id(id) {
            return Partial::default();
        }
        let mut acc = Partial::default();

        // 1. containerd task bundles, in whichever namespace holds the id.
        let containerd = self.roots.containerd.clone();
        let namespaces = match containerd_namespaces(&containerd, MAX_CONTAINERD_NAMESPACES) {
            Ok(names) => names,
            Err(source) => {
                self.warn_unlisted(&containerd, source);
                Vec::new()
            }
        };
        for ns in namespaces {
            match read_beneath(&containerd, &[&ns, id, "config.json"], MAX_FILE_BYTES) {
                Ok(bytes) => {
                    let path = containerd.join(&ns).join(id).join("config.json");
                    match parse_containerd_bundle(&bytes, &ns, &path) {
                        Ok(p) => self.names_from(&mut acc, p, &path),
                        Err(e) => self.warn(&e),
                    }
                    break;
                }
                Err(e) if e.is_absent() => {}
                Err(e) => self.warn(&e),
            }
        }

        // 2. CRI-O (and Podman) specs.
        let crio = self.roots.crio.clone();
        match read_beneath(&crio, &[id, "userdata", "config.json"], MAX_FILE_BYTES) {
            Ok(bytes) => {
                let path = crio.join(id).join("userdata/config.json");
                match parse_crio_config(&bytes, &path) {
                    Ok(p) => self.names_from(&mut acc, p, &path),
                    Err(e) => self.warn(&e),
                }
            }
            Err(e) if e.is_absent() => {}
            Err(e) => self.warn(&e),
        }

        // 3. Docker.
        let docker = self.roots.docker.clone();
        match read_beneath(&docker, &[id, "config.v2.json"], MAX_FILE_BYTES) {
            Ok(bytes) => {
                let path = docker.join(id).join("config.v2.json");
                match parse_docker_config(&bytes, id, &path) {
                    Ok(p) => self.names_from(&mut acc, p, &path),
                    Err(e) => self.warn(&e),
                }
            }
            Err(e) if e.is_absent() => {}
            Err(e) => self.warn(&e),
        }

        // 4. The kubelet's log-link names, for containers still missing names.
        if !acc.has_names() && acc.is_sandbox != Some(true) {
            if !self.log_links.contains_key(id) {
                let stale = self
                    .log_links_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.rescan_interval);
                if stale {
                    self.log_links_at = Some(now);
                    let dir = self.roots.kubelet_logs.clone();
                    self.log_links = match scan_log_links(&dir, MAX_LOG_LINKS) {
                        Ok(links) => links,
                        Err(source) => {
                            self.warn_unlisted(&dir, source);
                            HashMap::new()
                        }
                    };
                }
            }
            if let Some(p) = self.log_links.get(id) {
                acc.fill_gaps(p.clone());
            }
        }
        acc
    }
}

#[cfg(test)]
pub(crate) mod tests;
