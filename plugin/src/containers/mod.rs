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

pub(crate) mod cgroup;
pub(crate) mod metadata;

pub use cgroup::{is_container_id, parse_cgroup_path};
pub use flowlens_core::container::{ContainerInfo, QosClass, Runtime};
pub use metadata::MAX_FILE_BYTES;

use std::collections::{HashMap, HashSet, VecDeque};
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

/// A map bounded to `cap` entries that evicts the oldest insertion first.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
    seq: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts (or replaces, which counts as new); returns how many entries were evicted.
    fn insert(&mut self, k: K, v: V) -> usize {
        self.seq += 1;
        self.map.insert(k.clone(), (v, self.seq));
        self.order.push_back((k, self.seq));
        let mut evicted = 0;
        while self.map.len() > self.cap {
            let Some((old, s)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, cur)| *cur == s) {
                self.map.remove(&old);
                evicted += 1;
            }
        }
        if self.order.len() > 2 * self.map.len() + 64 {
            self.compact();
        }
        evicted
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
        self.compact();
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, s)| map.get(k).is_some_and(|(_, cur)| cur == s));
        self.order.shrink_to(self.map.len().max(16) * 2);
    }

    fn len(&self) -> usize {
        self.map.len()
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
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A temporary directory removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "flowlens-containers-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hex64(n: u64) -> String {
        format!("{:016x}", n).repeat(4)
    }

    fn uid(n: u64) -> String {
        let h = format!("{:032x}", 0xabc0_0000_0000_0000u64 as u128 * 7 + n as u128);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    fn resolver(base: &Path) -> Resolver {
        Resolver::new(MetadataRoots::under(base), 4096).with_rescan_interval(Duration::ZERO)
    }

    /// containerd bundle as the CRI writes it (see fixtures/containerd-container.config.json).
    fn write_bundle(base: &Path, ns: &str, id: &str, annotations: &str) {
        let dir = base.join("containerd").join(ns).join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"ociVersion":"1.0.2-dev","root":{{"path":"rootfs"}},"annotations":{annotations}}}"#),
        )
        .unwrap();
    }

    fn cri_annotations(
        kind: &str,
        name: &str,
        pod: &str,
        ns: &str,
        uid: &str,
        sandbox: &str,
    ) -> String {
        format!(
            r#"{{"io.kubernetes.cri.container-type":"{kind}","io.kubernetes.cri.container-name":"{name}","io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"{ns}","io.kubernetes.cri.sandbox-uid":"{uid}","io.kubernetes.cri.sandbox-id":"{sandbox}"}}"#
        )
    }

    #[test]
    fn resolves_a_cri_pod_from_its_bundle() {
        let tmp = TempDir::new("cri");
        let base = tmp.path();
        let (sb, ctr, u) = (hex64(1), hex64(2), uid(1));
        let pod_dir = base
            .join("cgroup/kubepods/besteffort")
            .join(format!("pod{u}"));
        std::fs::create_dir_all(pod_dir.join(&sb)).unwrap();
        std::fs::create_dir_all(pod_dir.join(&ctr)).unwrap();
        write_bundle(
            base,
            "k8s.io",
            &sb,
            &cri_annotations("sandbox", "", "web-1", "shop", &u, &sb)
                .replace(r#""io.kubernetes.cri.container-name":"","#, ""),
        );
        write_bundle(
            base,
            "k8s.io",
            &ctr,
            &cri_annotations("container", "nginx", "web-1", "shop", &u, &sb),
        );
        let mut r = resolver(base);

        let c = r.resolve(ino(&pod_dir.join(&ctr)), 0).unwrap();
        assert_eq!(
            *c,
            ContainerInfo {
                id: ctr.clone(),
                short_id: ctr[..12].to_string(),
                runtime: Runtime::Containerd,
                name: Some("nginx".into()),
                pod: Some("web-1".into()),
                namespace: Some("shop".into()),
                pod_uid: Some(u.clone()),
                sandbox_id: Some(sb.clone()),
                is_sandbox: false,
                qos: Some(QosClass::BestEffort),
            }
        );
        let s = r.resolve(ino(&pod_dir.join(&sb)), 0).unwrap();
        assert!(s.is_sandbox);
        assert_eq!(s.name, None);
        assert_eq!(s.pod.as_deref(), Some("web-1"));
        // The pod directory, the QoS level and the root are not containers.
        assert_eq!(r.resolve(ino(&pod_dir), 0), None);
        assert_eq!(
            r.resolve(ino(&base.join("cgroup/kubepods/besteffort")), 0),
            None
        );
        assert_eq!(r.resolve(ino(&base.join("cgroup")), 0), None);
        assert_eq!(r.warnings(), 0);
    }

    #[test]
    fn docker_and_log_links_fill_in() {
        let tmp = TempDir::new("docker");
        let base = tmp.path();
        // A Docker container: bundle in namespace moby with null annotations, config.v2.json.
        let d = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";
        std::fs::create_dir_all(base.join("cgroup/docker").join(d)).unwrap();
        write_bundle(base, "moby", d, "null");
        std::fs::create_dir_all(base.join("docker").join(d)).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/containers/fixtures/docker.config.v2.json"),
            base.join("docker").join(d).join("config.v2.json"),
        )
        .unwrap();
        // A pod container known only from the kubelet's log link (the link's target is absent).
        let (c, u) = (hex64(9), uid(9));
        let cdir = base
            .join("cgroup/kubepods/burstable")
            .join(format!("pod{u}"))
            .join(&c);
        std::fs::create_dir_all(&cdir).unwrap();
        std::fs::create_dir_all(base.join("containers-logs")).unwrap();
        std::os::unix::fs::symlink(
            "/nonexistent/0.log",
            base.join("containers-logs").join(format!(
                "heapster-v1.5.2-6b5d7b57f9-g2cjz_kube-system_heapster-{c}.log"
            )),
        )
        .unwrap();
        // A dockershim pod container whose bare-id cgroup path leaves the runtime to metadata.
        let shim = "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091";
        let sdir = base
            .join("cgroup/kubepods/pod39a1d7c2-5b8e-4f0a-9c3d-6e2f1a4b8c7d")
            .join(shim);
        std::fs::create_dir_all(&sdir).unwrap();
        std::fs::create_dir_all(base.join("docker").join(shim)).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/containers/fixtures/dockershim.config.v2.json"),
            base.join("docker").join(shim).join("config.v2.json"),
        )
        .unwrap();

        let mut r = resolver(base);
        let di = r
            .resolve(ino(&base.join("cgroup/docker").join(d)), 0)
            .unwrap();
        assert_eq!(di.runtime, Runtime::Docker);
        assert_eq!(di.short_id, "1edb6c16e3d2");
        assert_eq!(di.name.as_deref(), Some("hopeful_hopper"));
        assert_eq!(di.pod, None);

        let li = r.resolve(ino(&cdir), 0).unwrap();
        assert_eq!(li.runtime, Runtime::Containerd);
        assert_eq!(li.name.as_deref(), Some("heapster"));
        assert_eq!(li.pod.as_deref(), Some("heapster-v1.5.2-6b5d7b57f9-g2cjz"));
        assert_eq!(li.namespace.as_deref(), Some("kube-system"));
        assert_eq!(li.pod_uid.as_deref(), Some(u.as_str()));
        assert_eq!(li.qos, Some(QosClass::Burstable));

        let si = r.resolve(ino(&sdir), 0).unwrap();
        assert_eq!(si.runtime, Runtime::Docker);
        assert_eq!(si.name.as_deref(), Some("coredns"));
        assert_eq!(si.namespace.as_deref(), Some("kube-system"));
        assert_eq!(si.qos, Some(QosClass::Guaranteed));
        assert_eq!(r.warnings(), 0);
    }

    #[test]
    fn crio_userdata() {
        let tmp = TempDir::new("crio");
        let base = tmp.path();
        let c = "3f1e2d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";
        let u = "0b4d8f2e_6a1c_4e3b_9d7f_5c2a8e6b4d10";
        let dir = base
            .join("cgroup/kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{u}.slice"))
            .join(format!("crio-{c}.scope"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(dir.with_file_name(format!("crio-conmon-{c}.scope"))).unwrap();
        std::fs::create_dir_all(base.join("crio").join(c).join("userdata")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/containers/fixtures/crio-container.config.json"),
            base.join("crio").join(c).join("userdata/config.json"),
        )
        .unwrap();
        let mut r = resolver(base);
        let i = r.resolve(ino(&dir), 0).unwrap();
        assert_eq!(i.runtime, Runtime::CriO);
        assert_eq!(i.name.as_deref(), Some("redis"));
        assert_eq!(i.pod.as_deref(), Some("cache-0"));
        assert_eq!(i.namespace.as_deref(), Some("data"));
        assert_eq!(
            i.pod_uid.as_deref(),
            Some("0b4d8f2e-6a1c-4e3b-9d7f-5c2a8e6b4d10")
        );
        assert_eq!(
            r.resolve(
                ino(&dir.with_file_name(format!("crio-conmon-{c}.scope"))),
                0
            ),
            None
        );
    }

    #[test]
    fn proc_fallback_for_cgroup_v1_hosts() {
        let tmp = TempDir::new("v1");
        let base = tmp.path();
        let c = hex64(5);
        std::fs::create_dir_all(base.join("proc/4242")).unwrap();
        std::fs::write(
            base.join("proc/4242/cgroup"),
            format!(
                "12:pids:/docker/{c}\n11:cpu,cpuacct:/docker/{c}\n1:name=systemd:/docker/{c}\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(base.join("proc/1")).unwrap();
        std::fs::write(
            base.join("proc/1/cgroup"),
            "12:pids:/init.scope\n1:name=systemd:/init.scope\n",
        )
        .unwrap();
        // No cgroup2 tree at all (base/cgroup does not exist).
        let mut r = resolver(base);
        let i = r.resolve(1, 4242).unwrap();
        assert_eq!(i.id, c);
        assert_eq!(i.runtime, Runtime::Docker);
        assert_eq!(r.resolve(1, 1), None);
        assert_eq!(r.resolve(1, 0), None);
        assert_eq!(r.resolve(1, 999_999), None); // gone
        assert_eq!(r.warnings(), 0);
        // Pid entries live while used and while their cgroup id is live.
        let live: HashSet<u64> = [1].into();
        r.prune(&live);
        assert!(r.by_pid.len() >= 2);
        r.prune(&live); // not used since the last prune
        assert_eq!(r.by_pid.len(), 0);
        r.prune(&HashSet::new());
        assert_eq!(r.cache_len(), 0);
    }

    #[test]
    fn hybrid_root_cgroup_falls_back_to_proc() {
        let tmp = TempDir::new("hybrid");
        let base = tmp.path();
        std::fs::create_dir_all(base.join("cgroup/system.slice")).unwrap();
        let c = hex64(6);
        std::fs::create_dir_all(base.join("proc/77")).unwrap();
        std::fs::write(
            base.join("proc/77/cgroup"),
            format!("1:name=systemd:/docker/{c}\n0::/\n"),
        )
        .unwrap();
        let mut r = resolver(base);
        assert_eq!(r.resolve(ino(&base.join("cgroup")), 77).unwrap().id, c);
        // A host cgroup does not read /proc.
        assert_eq!(r.resolve(ino(&base.join("cgroup/system.slice")), 77), None);
    }

    #[test]
    fn hostile_metadata_files_are_skipped_with_one_warning_each() {
        let tmp = TempDir::new("hostile-r");
        let base = tmp.path();
        let ids: Vec<String> = (100..107).map(hex64).collect();
        for id in &ids {
            std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
            std::fs::create_dir_all(base.join("docker").join(id)).unwrap();
        }
        let f = |i: usize| base.join("docker").join(&ids[i]).join("config.v2.json");
        std::fs::write(f(0), vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap(); // huge
        std::fs::write(f(1), br#"{"ID": "#).unwrap(); // truncated
        std::fs::write(f(2), b"\x7fELF not json").unwrap(); // not JSON
        std::fs::write(base.join("secret"), br#"{"Name":"/stolen"}"#).unwrap();
        std::os::unix::fs::symlink(base.join("secret"), f(3)).unwrap(); // symlink
        std::os::unix::fs::symlink(f(4).with_extension("b"), f(4)).unwrap(); // loop
        std::os::unix::fs::symlink(f(4), f(4).with_extension("b")).unwrap();
        let fifo = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(f(5).as_os_str()))
            .unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0); // FIFO: must not block
                                                                      // The container directory itself a symlink to another container's directory.
        std::fs::remove_dir(base.join("docker").join(&ids[6])).unwrap();
        std::os::unix::fs::symlink(
            base.join("docker").join(&ids[3]),
            base.join("docker").join(&ids[6]),
        )
        .unwrap();

        let mut r = resolver(base);
        for id in &ids {
            let i = r
                .resolve(ino(&base.join("cgroup/docker").join(id)), 0)
                .unwrap();
            assert_eq!(&i.id, id);
            assert_eq!(i.name, None, "{id}");
            assert_eq!(i.runtime, Runtime::Docker);
        }
        assert_eq!(r.warnings(), ids.len() as u64);
        assert_eq!(r.warned.len(), ids.len());
        // Read again (new cgroups of the same containers): counted, not logged again.
        for id in &ids {
            let again = base.join("cgroup/docker").join(id).join("init");
            std::fs::create_dir_all(&again).unwrap();
            assert!(r.resolve(ino(&again), 0).is_some());
        }
        assert_eq!(r.warnings(), 2 * ids.len() as u64);
        assert_eq!(r.warned.len(), ids.len());
    }

    #[test]
    fn hostile_names_are_dropped_and_counted() {
        let tmp = TempDir::new("hostile-n");
        let base = tmp.path();
        let ids: Vec<String> = (200..203).map(hex64).collect();
        for id in &ids {
            std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
            std::fs::create_dir_all(base.join("docker").join(id)).unwrap();
        }
        let f = |i: usize| base.join("docker").join(&ids[i]).join("config.v2.json");
        // A name line protocol cannot carry (`\\`), a pod name with NUL, a fine namespace.
        std::fs::write(
            f(0),
            br#"{"Name":"/a\\\\b","Config":{"Labels":{"io.kubernetes.pod.name":"p\u0000","io.kubernetes.pod.namespace":"n s"}}}"#,
        )
        .unwrap();
        // Names with separators and quotes are kept: the encoder escapes them.
        std::fs::write(f(1), br#"{"Name":"/web 1,k=\"v\""}"#).unwrap();
        // Invalid UTF-8: not JSON, the file is skipped.
        std::fs::write(f(2), b"{\"Name\":\"/a\xff\"}").unwrap();
        let mut r = resolver(base);
        let info = |r: &mut Resolver, i: usize, sub: &str| {
            let dir = base.join("cgroup/docker").join(&ids[i]).join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            r.resolve(ino(&dir), 0).unwrap()
        };
        let a = info(&mut r, 0, "");
        assert_eq!((a.name.as_deref(), a.pod.as_deref()), (None, None));
        assert_eq!(a.namespace.as_deref(), Some("n s"));
        assert_eq!(info(&mut r, 1, "").name.as_deref(), Some(r#"web 1,k="v""#));
        assert_eq!(info(&mut r, 2, "").name, None);
        assert_eq!((r.names_dropped(), r.warnings()), (2, 1));
        // Read again: counted again, logged once per file.
        info(&mut r, 0, "init");
        info(&mut r, 2, "init");
        assert_eq!((r.names_dropped(), r.warnings()), (4, 2));
        assert_eq!(r.warned.len(), 2);
    }

    #[test]
    fn hostile_proc_file_is_capped() {
        let tmp = TempDir::new("proc-hostile");
        let base = tmp.path();
        std::fs::create_dir_all(base.join("proc/9")).unwrap();
        std::fs::write(base.join("proc/9/cgroup"), vec![b'x'; 70_000]).unwrap();
        let mut r = resolver(base);
        assert_eq!(r.resolve(1, 9), None);
        assert_eq!(r.warnings(), 1);
    }

    #[test]
    fn roots_that_cannot_be_listed_are_warned_about_missing_ones_are_not() {
        let tmp = TempDir::new("roots");
        let base = tmp.path();
        let ids: Vec<String> = (200..202).map(hex64).collect();
        for id in &ids {
            std::fs::create_dir_all(base.join("cgroup/docker").join(id)).unwrap();
        }
        // containerd's root a symbolic link loop, the kubelet's a regular file; CRI-O's and
        // Docker's missing (runtimes this node does not run: nothing to say).
        std::os::unix::fs::symlink(base.join("containerd"), base.join("containerd")).unwrap();
        std::fs::write(base.join("containers-logs"), b"").unwrap();
        let mut r = resolver(base);
        for id in &ids {
            let i = r
                .resolve(ino(&base.join("cgroup/docker").join(id)), 0)
                .unwrap();
            assert_eq!((&i.id, &i.name), (id, &None));
        }
        // Each root is logged once, counted at each container (the kubelet's directory is
        // listed again: this resolver's interval is zero).
        let mut warned: Vec<_> = r.warned.iter().cloned().collect();
        warned.sort();
        assert_eq!(
            warned,
            vec![base.join("containerd"), base.join("containers-logs")]
        );
        assert_eq!(r.warnings(), 2 * ids.len() as u64);
    }

    #[test]
    fn thousand_containers_come_and_go() {
        let tmp = TempDir::new("churn");
        let base = tmp.path();
        let n = 1000;
        let mut ids = Vec::new();
        for k in 0..n {
            let (c, u) = (hex64(10_000 + k), uid(k));
            let dir = base
                .join("cgroup/kubepods/besteffort")
                .join(format!("pod{u}"))
                .join(&c);
            std::fs::create_dir_all(&dir).unwrap();
            write_bundle(
                base,
                "k8s.io",
                &c,
                &cri_annotations("container", "app", &format!("pod-{k}"), "ns", &u, &hex64(1)),
            );
            ids.push((ino(&dir), c, dir));
        }
        let mut r = resolver(base).with_rescan_interval(Duration::from_secs(3600));
        let live: HashSet<u64> = ids.iter().map(|(i, ..)| *i).collect();
        for (i, c, _) in &ids {
            let info = r.resolve(*i, 0).unwrap();
            assert_eq!(&info.id, c);
            assert_eq!(info.name.as_deref(), Some("app"));
        }
        assert_eq!(r.warnings(), 0);
        r.prune(&live);
        assert_eq!(r.by_cgroup.len(), n as usize);
        assert_eq!(r.by_container.len(), n as usize);
        // Half go away.
        for (_, c, dir) in &ids[..500] {
            std::fs::remove_dir(dir).unwrap();
            std::fs::remove_dir_all(base.join("containerd/k8s.io").join(c)).unwrap();
        }
        let half: HashSet<u64> = ids[500..].iter().map(|(i, ..)| *i).collect();
        r.prune(&half);
        assert_eq!(r.by_cgroup.len(), 500);
        assert_eq!(r.by_container.len(), 500);
        // The rest too.
        for (_, c, dir) in &ids[500..] {
            std::fs::remove_dir(dir).unwrap();
            std::fs::remove_dir_all(base.join("containerd/k8s.io").join(c)).unwrap();
        }
        r.prune(&HashSet::new());
        assert_eq!(r.cache_len(), 0);
        assert!(r.by_cgroup.order.is_empty() && r.by_container.order.is_empty());
    }

    #[test]
    fn caches_are_bounded() {
        let tmp = TempDir::new("bounded");
        let base = tmp.path();
        let mut inodes = Vec::new();
        for k in 0..50 {
            let dir = base.join("cgroup/docker").join(hex64(500 + k));
            std::fs::create_dir_all(&dir).unwrap();
            inodes.push(ino(&dir));
        }
        let mut r =
            Resolver::new(MetadataRoots::under(base), 10).with_rescan_interval(Duration::ZERO);
        for i in &inodes {
            assert!(r.resolve(*i, 0).is_some());
        }
        assert_eq!(r.by_cgroup.len(), 10);
        assert_eq!(r.by_container.len(), 10);
        assert!(r.by_cgroup.order.len() <= 2 * 10 + 64);
        // Evicted entries resolve again.
        assert_eq!(r.resolve(inodes[0], 0).unwrap().id, hex64(500));
    }

    #[test]
    fn unknown_ids_walk_at_most_once_per_interval_and_once_per_id() {
        let tmp = TempDir::new("rate");
        let base = tmp.path();
        std::fs::create_dir_all(base.join("cgroup")).unwrap();
        let mut r = Resolver::new(MetadataRoots::under(base), 100)
            .with_rescan_interval(Duration::from_secs(3600));
        assert_eq!(r.resolve(123_456_789, 0), None);
        let first = r.last_scan.unwrap();
        assert!(r.missing.contains(&123_456_789));
        assert_eq!(r.take_deferred(), Vec::<u64>::new(), "walked for: missing");
        // A new directory appears, but the interval has not passed: no walk, and the id is
        // deferred to the next gather (asked for once more, it is deferred again).
        let c = hex64(77);
        let dir = base.join("cgroup/docker").join(&c);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(r.resolve(ino(&dir), 0), None);
        assert_eq!(r.last_scan.unwrap(), first);
        assert_eq!(r.take_deferred(), vec![ino(&dir)]);
        assert_eq!(r.take_deferred(), Vec::<u64>::new());
        // Once it has, the walk finds it.
        r.rescan_interval = Duration::ZERO;
        assert_eq!(r.resolve(ino(&dir), 0).unwrap().id, c);
        assert_eq!(r.take_deferred(), Vec::<u64>::new());
        // The id the last walk could not find is not walked for again.
        let before = r.last_scan.unwrap();
        assert_eq!(r.resolve(123_456_789, 0), None);
        assert_eq!(r.last_scan.unwrap(), before);
    }

    #[test]
    fn default_roots_are_the_real_paths() {
        let d = MetadataRoots::default();
        assert!(
            d.cgroup2 == Path::new("/sys/fs/cgroup/unified")
                || d.cgroup2 == Path::new("/sys/fs/cgroup")
        );
        assert_eq!(
            d.containerd,
            Path::new("/run/containerd/io.containerd.runtime.v2.task")
        );
        assert_eq!(
            d.crio,
            Path::new("/run/containers/storage/overlay-containers")
        );
        assert_eq!(d.docker, Path::new("/var/lib/docker/containers"));
        assert_eq!(d.kubelet_logs, Path::new("/var/log/containers"));
        assert_eq!(d.proc, Path::new("/proc"));
    }

    /// Removes the cgroup directories it created, deepest first.
    struct CgroupDirs(Vec<PathBuf>);

    impl Drop for CgroupDirs {
        fn drop(&mut self) {
            for d in self.0.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }

    /// Needs root and a cgroup2 mount: creates the directory containerd's CRI (cgroupfs driver)
    /// would, and resolves its real cgroup id.
    #[test]
    fn real_cgroup2_directory_resolves() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(!ci, "CI=true: this test must run as root");
            eprintln!("skipped real_cgroup2_directory_resolves: needs root to create a cgroup");
            return;
        }
        let root = MetadataRoots::default().cgroup2;
        if !cgroup::is_cgroup2_mount(&root) {
            assert!(!ci, "CI=true: no cgroup2 mount at {}", root.display());
            eprintln!(
                "skipped real_cgroup2_directory_resolves: no cgroup2 mount at {}",
                root.display()
            );
            return;
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ u64::from(std::process::id());
        let (u, c) = (uid(nonce), hex64(nonce));
        let leaf = root
            .join("kubepods/besteffort")
            .join(format!("pod{u}"))
            .join(&c);
        let mut created = CgroupDirs(Vec::new());
        let mut cur = root.clone();
        for part in ["kubepods", "besteffort", &format!("pod{u}"), &c] {
            cur = cur.join(part);
            match std::fs::create_dir(&cur) {
                Ok(()) => created.0.push(cur.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("mkdir {}: {e}", cur.display()),
            }
        }
        let id = ino(&leaf);
        let tmp = TempDir::new("real");
        let roots = MetadataRoots {
            cgroup2: root,
            ..MetadataRoots::under(tmp.path())
        };
        let mut r = Resolver::new(roots, 1024);
        let info = r.resolve(id, 0).expect("the new cgroup resolves");
        assert_eq!(info.id, c);
        assert_eq!(info.pod_uid.as_deref(), Some(u.as_str()));
        assert_eq!(info.qos, Some(QosClass::BestEffort));
        drop(created);
        assert!(!leaf.exists());
        r.prune(&HashSet::new());
        assert_eq!(r.cache_len(), 0);
    }
}
