//! What a cgroup path says by itself (runtime, container id, pod UID, QoS class), the cgroup2
//! directory index (cgroup id = directory inode -> path), and `/proc/<pid>/cgroup` parsing.
//!
//! Every layout recognised here was checked against the code that creates it:
//!
//! - kubelet, `kubernetes/kubernetes` `pkg/kubelet/cm/pod_container_manager_linux.go`
//!   (`podCgroupNamePrefix = "pod"`; Guaranteed pods sit directly under the root `kubepods`,
//!   Burstable and BestEffort under `kubepods/burstable`, `kubepods/besteffort`) and
//!   `pkg/kubelet/cm/cgroup_manager_linux.go` (`ConvertCgroupNameToSystemd`: with the systemd
//!   driver every level becomes one slice named after the whole path, `-` inside a part becomes
//!   `_`, so `kubepods-burstable-pod<uid with _>.slice`; `--cgroup-root=/kubelet`, as kind uses,
//!   gives `kubelet-kubepods-...`).
//! - containerd CRI, `containerd/containerd` `internal/cri/server/podsandbox/helpers_linux.go`
//!   `getCgroupsPath`: a `.slice` parent gives runc's systemd form `<slice>:cri-containerd:<id>`
//!   (runc turns it into `cri-containerd-<id>.scope`), otherwise `<parent>/<id>`. containerd's
//!   default spec (`pkg/oci/spec.go` `populateDefaultUnixSpec`) uses `/<namespace>/<id>`
//!   (plain `ctr`: `/default/<id>`).
//! - Docker, `moby/moby` `daemon/oci_linux.go` `WithCgroups`: `scopePrefix := "docker"`,
//!   parent `/docker` (cgroupfs) or `system.slice` (systemd; `user.slice` when rootless), so
//!   `/docker/<id>` and `system.slice/docker-<id>.scope`.
//! - CRI-O, `cri-o/cri-o` `internal/config/cgmgr/systemd.go` (`crio-<id>.scope`, conmon in
//!   `crio-conmon-<id>.scope`) and `cgroupfs.go` (`<parent>/crio-<id>`, `<parent>/crio-conmon-<id>`).
//! - Podman, `containers/podman` `libpod/container_internal_linux.go` `getOCICgroupPath`:
//!   systemd `<slice>:libpod:<id>` (-> `libpod-<id>.scope`, default slice `machine.slice`, rootless
//!   `user.slice` of the user's manager), cgroupfs `<parent>/libpod-<id>`; conmon in
//!   `libpod-conmon-<id>.scope`.
//! - systemd unit-name escaping (`systemd-escape`): a byte may appear as `\xNN`, `-` as `\x2d`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{CgroupRef, QosClass, Runtime};

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`: the `f_type` statfs(2) reports for cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A parsed path plus whether the runtime is known for sure (a bare `<id>` directory under a
/// kubepods pod may be containerd's, dockershim's or cri-dockerd's; the metadata decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) cref: CgroupRef,
    pub(crate) runtime_certain: bool,
}

/// True for exactly 64 lowercase hexadecimal digits: the container ids of containerd's CRI,
/// Docker, CRI-O and Podman.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for a Kubernetes pod UID as the kubelet writes it: a UUID (`8-4-4-4-12`, 36 characters)
/// for API pods, or 32 hex digits (a config hash) for static pods.
pub fn is_pod_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
        && s.bytes().filter(|b| b.is_ascii_hexdigit()).count() == 32
}

/// What the path of a cgroup says about its container: runtime, 64-hex id, pod UID and QoS
/// class. `None` for cgroups that are not a container's (`/`, `system.slice/sshd.service`, a
/// session scope, a pod slice without a container, a conmon monitor scope).
///
/// Pure: no I/O. The path is relative to the cgroup2 mount (or to a v1 hierarchy), as in
/// `/proc/<pid>/cgroup`; `.` and `..` segments (seen from inside a cgroup namespace) are skipped.
/// When containers nest (a kind node is a Docker container holding pods), the innermost
/// container wins; trailing sub-cgroups below a container (`.../<id>.scope/init`) are ignored.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupRef> {
    parse_detailed(path).map(|p| p.cref)
}

/// Kubernetes state gathered from the segments seen so far.
#[derive(Default)]
struct Kube {
    in_kubepods: bool,
    qos: Option<QosClass>,
    pod_uid: Option<String>,
}

impl Kube {
    /// The QoS class of the pod found, if a pod was found.
    fn pod_qos(&self) -> Option<QosClass> {
        self.pod_uid
            .as_ref()
            .map(|_| self.qos.unwrap_or(QosClass::Guaranteed))
    }

    /// Notes a segment that is not a container: `kubepods`, a QoS level, `pod<uid>`, or the
    /// systemd slice forms of the same.
    fn observe(&mut self, seg: &str) {
        if let Some(body) = seg.strip_suffix(".slice") {
            // systemd: one slice per level, named after the whole path, parts joined by `-`.
            let tokens: Vec<&str> = body.split('-').collect();
            let Some(at) = tokens.iter().position(|t| *t == "kubepods") else {
                return;
            };
            let mut kube = Kube {
                in_kubepods: true,
                ..Kube::default()
            };
            // After `kubepods`: the QoS level, then `pod<uid>` last. Other parts (a tag some
            // setups and test stand-ins add, `kubepods-<tag>-besteffort.slice`) are tolerated.
            let rest = &tokens[at + 1..];
            for (i, t) in rest.iter().enumerate() {
                if let Some(q) = qos_of(t) {
                    kube.qos = Some(q);
                } else if let Some(uid) = t.strip_prefix("pod") {
                    let uid = uid.replace('_', "-");
                    if i + 1 != rest.len() || !is_pod_uid(&uid) {
                        return; // not a kubelet slice after all
                    }
                    kube.pod_uid = Some(uid);
                }
            }
            *self = kube;
            return;
        }
        if seg == "kubepods" {
            *self = Kube {
                in_kubepods: true,
                ..Kube::default()
            };
        } else if self.in_kubepods && self.pod_uid.is_none() {
            if let Some(q) = qos_of(seg).filter(|_| self.qos.is_none()) {
                self.qos = Some(q);
            } else if let Some(uid) = seg.strip_prefix("pod").filter(|u| is_pod_uid(u)) {
                self.pod_uid = Some(uid.to_string());
            }
        }
    }
}

fn qos_of(token: &str) -> Option<QosClass> {
    match token {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// The runtime a systemd scope prefix (`<prefix>-<id>.scope`) or cgroupfs directory prefix
/// (`<prefix>-<id>`) belongs to. Conmon monitor scopes are not containers.
fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    match prefix {
        "docker" => Some(Runtime::Docker),
        "cri-containerd" | "nerdctl" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    }
}

/// A container segment: `(runtime, id, runtime_certain)`.
fn container_segment(
    seg: &str,
    parent: Option<&str>,
    in_pod: bool,
) -> Option<(Runtime, String, bool)> {
    if is_container_id(seg) {
        // cgroupfs drivers: `/docker/<id>`, `/kubepods/.../pod<uid>/<id>`, `/<ns>/<id>`.
        return Some(if parent == Some("docker") && !in_pod {
            (Runtime::Docker, seg.to_string(), true)
        } else {
            (Runtime::Containerd, seg.to_string(), false)
        });
    }
    let body = seg.strip_suffix(".scope").unwrap_or(seg);
    if body.starts_with("crio-conmon-") || body.starts_with("libpod-conmon-") {
        return None;
    }
    let (prefix, id) = body.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    runtime_of_prefix(prefix).map(|rt| (rt, id.to_string(), true))
}

/// Undoes systemd's `\xNN` escaping in one unit name; the input itself if nothing to undo or if
/// the result would not be UTF-8.
fn unescape_systemd(seg: &str) -> Cow<'_, str> {
    if !seg.contains("\\x") {
        return Cow::Borrowed(seg);
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(seg),
    }
}

/// [`parse_cgroup_path`] with the certainty of the runtime.
pub(crate) fn parse_detailed(path: &str) -> Option<Parsed> {
    let mut kube = Kube::default();
    let mut found = None;
    let mut parent: Option<String> = None;
    for raw in path.split('/') {
        if raw.is_empty() || raw == "." || raw == ".." || raw.len() > 255 {
            continue;
        }
        let seg = unescape_systemd(raw);
        let seg: &str = &seg;
        // runc's cgroupfs driver handed a systemd cgroupsPath keeps it verbatim:
        // `.../kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`.
        let mut colon = seg.splitn(3, ':');
        let hit = match (colon.next(), colon.next(), colon.next()) {
            (Some(slice), Some(prefix), Some(id)) => {
                kube.observe(slice);
                runtime_of_prefix(prefix)
                    .filter(|_| is_container_id(id))
                    .map(|rt| (rt, id.to_string(), true))
            }
            _ => container_segment(seg, parent.as_deref(), kube.pod_uid.is_some()),
        };
        match hit {
            Some((runtime, id, runtime_certain)) => {
                found = Some(Parsed {
                    cref: CgroupRef {
                        runtime,
                        id,
                        pod_uid: kube.pod_uid.clone(),
                        qos: kube.pod_qos(),
                    },
                    runtime_certain,
                });
                kube = Kube::default();
            }
            None => kube.observe(seg),
        }
        parent = Some(seg.to_string());
    }
    found
}

/// The cgroup paths named in a `/proc/<pid>/cgroup` file, best first: the v1 `name=systemd`,
/// `pids` and `memory` hierarchies, then the cgroup2 `0::` line. Lines are
/// `hierarchy-id:controller,list:path` (proc(5), cgroups(7)).
pub(crate) fn proc_cgroup_candidates(content: &str) -> Vec<&str> {
    let mut ranked: Vec<(usize, &str)> = Vec::new();
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rank = if hier == "0" && ctrls.is_empty() {
            3
        } else {
            let mut best = None;
            for c in ctrls.split(',') {
                let r = match c {
                    "name=systemd" => 0,
                    "pids" => 1,
                    "memory" => 2,
                    _ => continue,
                };
                best = Some(best.map_or(r, |b: usize| b.min(r)));
            }
            match best {
                Some(r) => r,
                None => continue,
            }
        };
        ranked.push((rank, path));
    }
    ranked.sort_by_key(|(r, _)| *r);
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// True when `path` is the root of a cgroup2 mount (statfs(2) `f_type`).
pub(crate) fn is_cgroup2_mount(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, u32/i32 elsewhere
    let kind = st.f_type as i64;
    rc == 0 && kind == CGROUP2_SUPER_MAGIC
}

/// Bounds of one walk of the cgroup2 tree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkLimits {
    pub(crate) max_depth: usize,
    pub(crate) max_dirs: usize,
}

/// The result of one walk: directory inode -> path relative to the root (`/` for the root).
#[derive(Debug, Default)]
pub(crate) struct CgroupIndex {
    pub(crate) paths: HashMap<u64, String>,
    /// The walk stopped at `max_dirs`.
    pub(crate) truncated: bool,
}

/// Walks the cgroup2 tree under `root`: every directory, at most `max_depth` below the root and
/// `max_dirs` in all, never following symbolic links nor crossing into another mount. On cgroup2
/// a directory's inode number is its cgroup id (the id `bpf_get_current_cgroup_id()` and the
/// socket's cgroup report). An error when the root is not a directory or cannot be read.
pub(crate) fn walk_cgroup2(root: &Path, limits: WalkLimits) -> io::Result<CgroupIndex> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    let dev = meta.dev();
    let mut index = CgroupIndex::default();
    index.paths.insert(meta.ino(), "/".to_string());
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if depth >= limits.max_depth {
            continue;
        }
        // Cgroups come and go while we walk: an unreadable or vanished directory is skipped,
        // unless it is the root itself.
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if depth == 0 => return Err(e),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            // lstat: a symlink is not a directory here, and a mount point shows its own st_dev.
            let Ok(m) = entry.metadata() else {
                continue;
            };
            if !m.is_dir() || m.dev() != dev {
                continue;
            }
            if index.paths.len() >= limits.max_dirs {
                index.truncated = true;
                return Ok(index);
            }
            let name = entry.file_name();
            let child_rel = format!("{rel}/{}", name.to_string_lossy());
            index.paths.insert(m.ino(), child_rel.clone());
            stack.push((entry.path(), child_rel, depth + 1));
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";
    const ID2: &str = "9b2f0b8a4a1cdd1e3f7a5b6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a";
    const UID: &str = "5f2c3b6a-8d1e-4f7a-9b0c-1d2e3f4a5b6c";
    const UID_: &str = "5f2c3b6a_8d1e_4f7a_9b0c_1d2e3f4a5b6c";
    const STATIC_UID: &str = "2c8f3e9a1b7d4c6e8f0a2b4c6d8e0f1a";

    fn yes(
        runtime: Runtime,
        id: &str,
        pod: Option<&str>,
        qos: Option<QosClass>,
    ) -> Option<CgroupRef> {
        Some(CgroupRef {
            runtime,
            id: id.to_string(),
            pod_uid: pod.map(str::to_string),
            qos,
        })
    }

    /// Real-world layouts, one row each, with what the path alone must say.
    #[test]
    fn cgroup_paths_table() {
        use QosClass::*;
        use Runtime::*;
        let rows: Vec<(&str, String, Option<CgroupRef>)> = vec![
            // Docker, systemd driver (moby daemon/oci_linux.go: system.slice + "docker" prefix).
            ("docker systemd", format!("/system.slice/docker-{ID}.scope"), yes(Docker, ID, None, None)),
            // Docker, cgroupfs driver (parent "/docker"); what these machines produce.
            ("docker cgroupfs", format!("/docker/{ID}"), yes(Docker, ID, None, None)),
            // containerd CRI, systemd driver, Burstable pod.
            (
                "cri-containerd systemd burstable",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            (
                "cri-containerd systemd besteffort",
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            // Guaranteed pods have no QoS level: kubepods-pod<uid>.slice.
            (
                "cri-containerd systemd guaranteed",
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(Guaranteed)),
            ),
            // cgroupfs driver, as containerd 1.6 on these machines (runtimes.md).
            (
                "containerd cgroupfs besteffort",
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            (
                "containerd cgroupfs burstable",
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            (
                "containerd cgroupfs guaranteed",
                format!("/kubepods/pod{UID}/{ID}"),
                yes(Containerd, ID, Some(UID), Some(Guaranteed)),
            ),
            // Static pod: UID is a 32-hex config hash.
            (
                "static pod",
                format!("/kubepods/burstable/pod{STATIC_UID}/{ID}"),
                yes(Containerd, ID, Some(STATIC_UID), Some(Burstable)),
            ),
            // CRI-O, systemd (crio-<id>.scope) and cgroupfs (crio-<id>).
            (
                "crio systemd",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
                yes(CriO, ID, Some(UID), Some(Burstable)),
            ),
            ("crio cgroupfs", format!("/kubepods/besteffort/pod{UID}/crio-{ID}"), yes(CriO, ID, Some(UID), Some(BestEffort))),
            // CRI-O's conmon monitor is not a container.
            (
                "crio conmon",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"),
                None,
            ),
            ("crio conmon cgroupfs", format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"), None),
            // Podman.
            ("podman machine.slice", format!("/machine.slice/libpod-{ID}.scope"), yes(Podman, ID, None, None)),
            (
                "podman in a podman pod",
                format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
                yes(Podman, ID, None, None),
            ),
            ("podman cgroupfs", format!("/libpod_parent/libpod-{ID}"), yes(Podman, ID, None, None)),
            ("podman conmon", format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            ("podman crun sub-cgroup", format!("/machine.slice/libpod-{ID}.scope/container"), yes(Podman, ID, None, None)),
            // systemd escapes: `-` inside a unit name written as \x2d.
            (
                "systemd \\x2d escapes",
                format!("/kubepods.slice/kubepods\\x2dburstable.slice/kubepods\\x2dburstable\\x2dpod{UID_}.slice/cri\\x2dcontainerd\\x2d{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            // Rootless: Docker (parent user.slice of the user's manager), Podman, nerdctl.
            (
                "docker rootless",
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"),
                yes(Docker, ID, None, None),
            ),
            (
                "podman rootless",
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
                yes(Podman, ID, None, None),
            ),
            (
                "podman rootless app.slice",
                format!("/user.slice/user-1000.slice/user@1000.service/app.slice/libpod-{ID}.scope"),
                yes(Podman, ID, None, None),
            ),
            (
                "nerdctl rootless",
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/nerdctl-{ID}.scope"),
                yes(Containerd, ID, None, None),
            ),
            (
                "rootless kubelet (usernetes)",
                format!("/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            // Nested: trailing sub-cgroup below the container.
            (
                "trailing init sub-cgroup",
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope/init"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            // kind: a Docker container (the node) holding kubelet pods, cgroup root /kubelet.
            (
                "kind node, pod inside",
                format!("/docker/{ID2}/kubelet/kubepods/besteffort/pod{UID}/{ID}"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            (
                "kind node, systemd inside",
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            // Stand-ins that tag the kubepods slices (`kubepods-<tag>-besteffort...`).
            (
                "tagged kubepods slices",
                format!("/kubepods-t1.slice/kubepods-t1-besteffort.slice/kubepods-t1-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                yes(Containerd, ID, Some(UID), Some(BestEffort)),
            ),
            ("kind node itself", format!("/docker/{ID2}/system.slice/containerd.service"), yes(Docker, ID2, None, None)),
            // k3s: cgroupfs /kubepods tree with a sub-cgroup below the container.
            (
                "k3s nested sub-cgroup",
                format!("/kubepods/burstable/pod{UID}/{ID}/sub"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            // runc's cgroupfs driver handed containerd's systemd cgroupsPath verbatim.
            (
                "unexpanded slice:prefix:id",
                format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                yes(Containerd, ID, Some(UID), Some(Burstable)),
            ),
            // Plain ctr: containerd's default `/<namespace>/<id>`.
            ("ctr default namespace", format!("/default/{ID}"), yes(Containerd, ID, None, None)),
            // Seen from inside a cgroup namespace.
            ("cgroupns relative", format!("/../../kubepods/besteffort/pod{UID}/{ID}"), yes(Containerd, ID, Some(UID), Some(BestEffort))),
            // Not containers.
            ("root", "/".to_string(), None),
            ("empty", String::new(), None),
            ("sshd", "/system.slice/sshd.service".to_string(), None),
            ("session scope", "/user.slice/user-1000.slice/session-1.scope".to_string(), None),
            ("user manager", "/user.slice/user-1000.slice/user@1000.service/init.scope".to_string(), None),
            ("containerd daemon", "/system.slice/containerd.service".to_string(), None),
            ("pod slice without container", format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"), None),
            ("pod dir without container", format!("/kubepods/besteffort/pod{UID}"), None),
            ("kubepods only", "/kubepods".to_string(), None),
            ("short id", "/docker/1edb6c16e3d2".to_string(), None),
            ("uppercase id", format!("/docker/{}", ID.to_uppercase()), None),
            ("id with junk", format!("/system.slice/docker-{ID}x.scope"), None),
            ("mount unit", format!("/system.slice/docker-{ID}.mount"), None),
            ("unknown prefix", format!("/system.slice/foo-{ID}.scope"), None),
        ];
        for (name, path, want) in rows {
            assert_eq!(parse_cgroup_path(&path), want, "{name}: {path}");
        }
    }

    #[test]
    fn bare_ids_leave_the_runtime_to_the_metadata() {
        let p = parse_detailed(&format!("/kubepods/besteffort/pod{UID}/{ID}")).unwrap();
        assert!(!p.runtime_certain);
        let p = parse_detailed(&format!("/docker/{ID}")).unwrap();
        assert!(p.runtime_certain);
        let p = parse_detailed(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        assert!(p.runtime_certain);
    }

    #[test]
    fn hostile_paths_do_not_panic() {
        for p in [
            "\\x",
            "\\x2",
            "/\\xzz",
            "/a\\xff\\xfe.slice",
            ":::",
            "/kubepods-.slice",
            "/pod",
            "/kubepods/pod",
            "/kubepods.slice/kubepods-pod.slice",
            "/\u{0}/\u{7f}",
            "////",
            "/kubepods/burstable/besteffort",
        ] {
            assert_eq!(parse_cgroup_path(p), None, "{p:?}");
        }
        let long = "a".repeat(100_000);
        assert_eq!(parse_cgroup_path(&long), None);
    }

    #[test]
    fn pod_uids() {
        assert!(is_pod_uid(UID));
        assert!(is_pod_uid(STATIC_UID));
        assert!(!is_pod_uid("../../etc"));
        assert!(!is_pod_uid(&"-".repeat(36)));
        assert!(!is_pod_uid(&UID.to_uppercase()));
    }

    #[test]
    fn proc_cgroup_lines() {
        // cgroup v1 host (Debian buster style), Docker cgroupfs.
        let v1 = format!(
            "12:pids:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n6:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
        );
        let c = proc_cgroup_candidates(&v1);
        assert_eq!(
            c,
            vec![
                format!("/docker/{ID}"),
                format!("/docker/{ID}"),
                format!("/docker/{ID}")
            ]
        );
        // hybrid: the 0:: line comes last.
        let hybrid = format!("1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n0::/kubepods/besteffort/pod{UID}/{ID}\n");
        assert_eq!(proc_cgroup_candidates(&hybrid).len(), 2);
        // unified only.
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            proc_cgroup_candidates(&v2),
            vec![format!("/system.slice/docker-{ID}.scope")]
        );
        // garbage.
        assert!(proc_cgroup_candidates("nonsense\n\n::\n7:cpu:/x\n").is_empty());
    }

    #[test]
    fn walk_is_bounded_and_maps_inodes() {
        let tmp = crate::containers::tests::TempDir::new("walk");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b/c/d")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let all = walk_cgroup2(
            root,
            WalkLimits {
                max_depth: 16,
                max_dirs: 100,
            },
        )
        .unwrap();
        let ino = std::fs::metadata(root.join("a/b/c/d")).unwrap().ino();
        assert_eq!(all.paths.get(&ino).map(String::as_str), Some("/a/b/c/d"));
        assert_eq!(all.paths.len(), 6, "{:?}", all.paths); // root, a, b, c, d, x; no link, no file
        assert!(!all.truncated);
        let shallow = walk_cgroup2(
            root,
            WalkLimits {
                max_depth: 2,
                max_dirs: 100,
            },
        )
        .unwrap();
        assert!(!shallow.paths.contains_key(&ino));
        let few = walk_cgroup2(
            root,
            WalkLimits {
                max_depth: 16,
                max_dirs: 3,
            },
        )
        .unwrap();
        assert!(few.truncated);
        assert_eq!(few.paths.len(), 3);
        assert!(walk_cgroup2(
            &root.join("missing"),
            WalkLimits {
                max_depth: 16,
                max_dirs: 3
            }
        )
        .is_err());
    }
}
