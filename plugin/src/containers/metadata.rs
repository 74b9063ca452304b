//! Container names from what the node has on disk: containerd task bundles, CRI-O and Podman
//! `userdata/config.json`, Docker's `config.v2.json`, and the names of the kubelet's log links;
//! read with a size cap and without following symbolic links.
//!
//! Formats, as checked in the runtimes' own code:
//!
//! - containerd CRI annotations, `containerd/containerd` `pkg/cri/annotations/annotations.go`
//!   (`io.kubernetes.cri.container-type` = `sandbox`|`container`, `...sandbox-id`,
//!   `...sandbox-name`, `...sandbox-namespace`, `...sandbox-uid`, `...container-name`;
//!   `DefaultCRIAnnotations` puts the sandbox keys on every container and the container name on
//!   containers only). The bundle is `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`
//!   with the OCI `config.json`; Docker's containers live in namespace `moby`, plain `ctr` in
//!   `default`, and both have `"annotations": null` (seen on containerd 1.6 and Docker 20.10).
//! - CRI-O: `cri-o/cri-o` `pkg/annotations/internal.go` (`io.kubernetes.cri-o.ContainerType`,
//!   `io.kubernetes.cri-o.SandboxID`, `io.container.manager` = `libpod` for Podman's containers)
//!   plus the kubelet's labels, which CRI-O copies into the spec's annotations (as read by
//!   `inspektor-gadget/inspektor-gadget`
//!   `pkg/container-utils/oci-annotations/resolver_crio.go`). The
//!   spec lives in the storage run root: `/run/containers/storage/overlay-containers/<id>/userdata/config.json`
//!   (Podman writes its containers' specs there too).
//! - kubelet labels, `kubernetes/kubernetes` `pkg/kubelet/types/labels.go`
//!   (`io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`,
//!   `io.kubernetes.container.name`); dockershim/cri-dockerd add `io.kubernetes.docker.type`
//!   (`podsandbox`|`container`) and `io.kubernetes.sandbox.id`, and name the sandbox `POD`.
//! - Docker, `moby/moby` `container/container.go`: `config.v2.json` is the JSON of `Container`
//!   (untagged fields, so keys `ID`, `Name` = `"/name"`, `Config.Labels`).
//! - kubelet log links, `kubernetes/kubernetes` `pkg/kubelet/kuberuntime/legacy.go`
//!   `logSymlink`: `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`, the whole name
//!   cut at 255 bytes (so a long name may have lost its id: such names are skipped).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cgroup::{is_container_id, is_pod_uid};
use super::Runtime;

/// Largest metadata file read, in bytes. A task bundle's `config.json` with a default seccomp
/// profile is about 30 KiB; Docker's `config.v2.json` a few KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Longest name value kept (a DNS subdomain, the longest Kubernetes name, is 253 bytes).
const MAX_VALUE_BYTES: usize = 253;

/// Why a metadata file was skipped.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file or one of the directories above it could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A symbolic link (or a link loop) stands where a file or directory should be; links are
    /// never followed below the configured roots.
    #[error("{path}: a symbolic link stands where a file or directory should; not followed")]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file (a FIFO, a device, a socket, a directory), or a path component that
    /// should be a directory is not one.
    #[error("{path}: not a regular file (or a component is not a directory); not read")]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Larger than the cap; nothing beyond the cap was read.
    #[error("{path}: larger than {cap} bytes; not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap, in bytes.
        cap: u64,
    },
    /// Not JSON, truncated JSON, or JSON of another shape than the runtime writes.
    #[error("{path}: not the JSON the runtime writes: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// The file contradicts where it was found (a Docker `config.v2.json` naming another id).
    #[error("{path}: {detail}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
}

impl MetadataError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            MetadataError::Io { path, .. }
            | MetadataError::Symlink { path }
            | MetadataError::NotRegular { path }
            | MetadataError::TooLarge { path, .. }
            | MetadataError::Json { path, .. }
            | MetadataError::Inconsistent { path, .. } => path,
        }
    }

    /// The file is simply not there (this source does not know the container, or the process
    /// is gone): not worth a warning.
    pub fn is_absent(&self) -> bool {
        match self {
            MetadataError::Io { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            _ => false,
        }
    }
}

/// True for a name that may be used as one path component.
fn is_safe_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\0']) && c.len() <= 255
}

fn open_at(dir: RawFd, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is NUL-terminated; without O_CREAT openat takes no mode argument.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads `root/c1/c2/.../file`, at most `cap` bytes: the root may be a symbolic link (it is
/// configured), nothing below it may be; the file must be a regular file (fstat after an
/// `O_NONBLOCK` open, so a FIFO neither blocks nor is read); a file larger than `cap` is refused
/// after reading at most `cap + 1` bytes.
pub(crate) fn read_beneath(
    root: &Path,
    components: &[&str],
    cap: u64,
) -> Result<Vec<u8>, MetadataError> {
    let path = components.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let classify = |e: io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => MetadataError::Symlink { path: path.clone() },
        Some(libc::ENOTDIR) => MetadataError::NotRegular { path: path.clone() },
        _ => MetadataError::Io {
            path: path.clone(),
            source: e,
        },
    };
    let Some((file, dirs)) = components.split_last() else {
        return Err(MetadataError::NotRegular { path });
    };
    if !components.iter().all(|c| is_safe_component(c)) {
        return Err(MetadataError::Io {
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    let root_c = CString::new(root.as_os_str().as_bytes()).map_err(|_| MetadataError::Io {
        path: path.clone(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: NUL-terminated path, no O_CREAT.
    let fd = unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(classify(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor from open.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    for d in dirs {
        dir = open_at(
            dir.as_raw_fd(),
            d,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(classify)?;
    }
    let fd = open_at(
        dir.as_raw_fd(),
        file,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )
    .map_err(classify)?;
    let f = File::from(fd);
    let meta = f.metadata().map_err(classify)?;
    if !meta.file_type().is_file() {
        return Err(MetadataError::NotRegular { path });
    }
    if meta.len() > cap {
        return Err(MetadataError::TooLarge { path, cap });
    }
    // st_size is 0 for /proc files: read, but never more than cap + 1 bytes.
    let mut buf = Vec::with_capacity((meta.len().min(cap) as usize).max(4096));
    f.take(cap + 1).read_to_end(&mut buf).map_err(classify)?;
    if buf.len() as u64 > cap {
        return Err(MetadataError::TooLarge { path, cap });
    }
    Ok(buf)
}

/// What one source knows about a container; merged first-wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Partial {
    pub(crate) name: Option<String>,
    pub(crate) pod: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) pod_uid: Option<String>,
    pub(crate) sandbox_id: Option<String>,
    pub(crate) is_sandbox: Option<bool>,
    /// The runtime that wrote this file (decides when the cgroup path alone cannot).
    pub(crate) runtime: Option<Runtime>,
    /// Names this file gave that cannot be tags, left out (see [`clean`]).
    pub(crate) dropped: u64,
}

impl Partial {
    /// Fills the fields this one does not know from `later`.
    pub(crate) fn fill_gaps(&mut self, later: Partial) {
        fn fill<T>(a: &mut Option<T>, b: Option<T>) {
            if a.is_none() {
                *a = b;
            }
        }
        fill(&mut self.name, later.name);
        fill(&mut self.pod, later.pod);
        fill(&mut self.namespace, later.namespace);
        fill(&mut self.pod_uid, later.pod_uid);
        fill(&mut self.sandbox_id, later.sandbox_id);
        fill(&mut self.is_sandbox, later.is_sandbox);
        fill(&mut self.runtime, later.runtime);
    }

    /// Knows the names a series needs (container name or sandbox-ness, pod, namespace).
    pub(crate) fn has_names(&self) -> bool {
        (self.name.is_some() || self.is_sandbox == Some(true))
            && self.pod.is_some()
            && self.namespace.is_some()
    }
}

/// A name fit to be a tag, else `None`: non-empty, at most 253 bytes, no control characters
/// (a newline or NUL cannot be carried in line protocol), and read back unchanged by every
/// reader of line protocol (no backslash before a separator, another backslash or the end; see
/// [`flowlens_core::lineproto::reads_back_unchanged`]). A non-empty name left out counts in `dropped`:
/// written, it would be written changed.
fn clean(v: Option<&String>, dropped: &mut u64) -> Option<String> {
    let v = v.filter(|v| !v.is_empty())?;
    let fit = v.len() <= MAX_VALUE_BYTES
        && !v.chars().any(char::is_control)
        && flowlens_core::lineproto::reads_back_unchanged(v);
    if !fit {
        *dropped += 1;
    }
    fit.then(|| v.clone())
}

fn clean_uid(v: Option<&String>) -> Option<String> {
    v.filter(|u| is_pod_uid(u)).cloned()
}

fn clean_id(v: Option<&String>) -> Option<String> {
    v.filter(|u| is_container_id(u)).cloned()
}

/// Parses a JSON object (serde would also take a struct from an array: these files never are one).
fn from_json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
) -> Result<T, MetadataError> {
    let json_err = |source| MetadataError::Json {
        path: path.to_path_buf(),
        source,
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(json_err(<serde_json::Error as serde::de::Error>::custom(
            "not a JSON object",
        )));
    }
    serde_json::from_slice(bytes).map_err(json_err)
}

/// The part of an OCI runtime spec (`config.json`) read here.
#[derive(Deserialize)]
struct OciSpec {
    /// `null` for containers started by plain `ctr` or by Docker.
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

/// containerd CRI annotation keys (`pkg/cri/annotations/annotations.go`).
mod cri {
    pub(super) const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub(super) const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub(super) const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub(super) const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub(super) const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub(super) const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
}

/// kubelet labels (`pkg/kubelet/types/labels.go`) and the dockershim/cri-dockerd ones.
mod kube {
    pub(super) const POD_NAME: &str = "io.kubernetes.pod.name";
    pub(super) const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub(super) const POD_UID: &str = "io.kubernetes.pod.uid";
    pub(super) const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub(super) const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
    pub(super) const DOCKER_SANDBOX_ID: &str = "io.kubernetes.sandbox.id";
    /// `leaky.PodInfraContainerName`: the container name of a pod's sandbox.
    pub(super) const POD_INFRA_NAME: &str = "POD";
}

/// CRI-O annotation keys (`pkg/annotations/internal.go`).
mod crio {
    pub(super) const CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
    pub(super) const SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
    pub(super) const CONTAINER_MANAGER: &str = "io.container.manager";
}

fn sandbox_type(v: Option<&String>, sandbox: &str, container: &str) -> Option<bool> {
    match v.map(String::as_str) {
        Some(t) if t == sandbox => Some(true),
        Some(t) if t == container => Some(false),
        _ => None,
    }
}

/// A containerd task bundle's `config.json`, found in containerd namespace `namespace`.
pub(crate) fn parse_containerd_bundle(
    bytes: &[u8],
    namespace: &str,
    path: &Path,
) -> Result<Partial, MetadataError> {
    let spec: OciSpec = from_json_object(bytes, path)?;
    let a = spec.annotations.unwrap_or_default();
    let mut dropped = 0;
    Ok(Partial {
        name: clean(a.get(cri::CONTAINER_NAME), &mut dropped),
        pod: clean(a.get(cri::SANDBOX_NAME), &mut dropped),
        namespace: clean(a.get(cri::SANDBOX_NAMESPACE), &mut dropped),
        pod_uid: clean_uid(a.get(cri::SANDBOX_UID)),
        sandbox_id: clean_id(a.get(cri::SANDBOX_ID)),
        is_sandbox: sandbox_type(a.get(cri::CONTAINER_TYPE), "sandbox", "container"),
        runtime: Some(if namespace == "moby" {
            Runtime::Docker
        } else {
            Runtime::Containerd
        }),
        dropped,
    })
}

/// CRI-O's (or Podman's) `userdata/config.json`.
pub(crate) fn parse_crio_config(bytes: &[u8], path: &Path) -> Result<Partial, MetadataError> {
    let spec: OciSpec = from_json_object(bytes, path)?;
    let a = spec.annotations.unwrap_or_default();
    let podman = a.get(crio::CONTAINER_MANAGER).map(String::as_str) == Some("libpod");
    let mut dropped = 0;
    Ok(Partial {
        name: clean(a.get(kube::CONTAINER_NAME), &mut dropped),
        pod: clean(a.get(kube::POD_NAME), &mut dropped),
        namespace: clean(a.get(kube::POD_NAMESPACE), &mut dropped),
        pod_uid: clean_uid(a.get(kube::POD_UID)),
        sandbox_id: clean_id(a.get(crio::SANDBOX_ID)),
        is_sandbox: sandbox_type(a.get(crio::CONTAINER_TYPE), "sandbox", "container"),
        runtime: Some(if podman {
            Runtime::Podman
        } else {
            Runtime::CriO
        }),
        dropped,
    })
}

/// The part of Docker's `config.v2.json` read here.
#[derive(Deserialize)]
struct DockerContainer {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// Docker's `config.v2.json` of container `id`.
pub(crate) fn parse_docker_config(
    bytes: &[u8],
    id: &str,
    path: &Path,
) -> Result<Partial, MetadataError> {
    let c: DockerContainer = from_json_object(bytes, path)?;
    if let Some(found) = c.id.as_deref().filter(|f| *f != id) {
        return Err(MetadataError::Inconsistent {
            path: path.to_path_buf(),
            detail: format!("names container {found:.80} in the directory of {id}"),
        });
    }
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    let mut dropped = 0;
    let k8s_name = clean(labels.get(kube::CONTAINER_NAME), &mut dropped);
    let is_sandbox = sandbox_type(labels.get(kube::DOCKER_TYPE), "podsandbox", "container")
        .or_else(|| k8s_name.as_deref().map(|n| n == kube::POD_INFRA_NAME));
    let docker_name = c.name.map(|n| n.trim_start_matches('/').to_string());
    let name = k8s_name.or_else(|| clean(docker_name.as_ref(), &mut dropped));
    Ok(Partial {
        name,
        pod: clean(labels.get(kube::POD_NAME), &mut dropped),
        namespace: clean(labels.get(kube::POD_NAMESPACE), &mut dropped),
        pod_uid: clean_uid(labels.get(kube::POD_UID)),
        sandbox_id: clean_id(labels.get(kube::DOCKER_SANDBOX_ID)),
        is_sandbox,
        runtime: Some(Runtime::Docker),
        dropped,
    })
}

/// Pod names are DNS subdomains; namespaces and container names DNS labels: none holds `_`.
fn is_dns_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VALUE_BYTES
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

/// A kubelet log link's file name, `<pod>_<namespace>_<container>-<64 hex>.log`: the container
/// id and what the name says. Only the name is parsed; the link is never followed.
pub(crate) fn parse_log_link_name(file_name: &str) -> Option<(String, Partial)> {
    let stem = file_name.strip_suffix(".log")?;
    let mut parts = stem.split('_');
    let (pod, ns, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (container, id) = rest.rsplit_once('-')?;
    if !is_container_id(id)
        || !is_dns_name(pod, true)
        || !is_dns_name(ns, false)
        || !is_dns_name(container, false)
    {
        return None;
    }
    Some((
        id.to_string(),
        Partial {
            name: Some(container.to_string()),
            pod: Some(pod.to_string()),
            namespace: Some(ns.to_string()),
            ..Partial::default()
        },
    ))
}

/// Reads the names in the kubelet's log-link directory (at most `max_names` entries) into
/// container id -> what the name says.
pub(crate) fn scan_log_links(dir: &Path, max_names: usize) -> io::Result<HashMap<String, Partial>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir)?.take(max_names).flatten() {
        if let Some((id, p)) = entry.file_name().to_str().and_then(parse_log_link_name) {
            out.insert(id, p);
        }
    }
    Ok(out)
}

/// A containerd namespace directory name (containerd `identifiers/validate.go`:
/// `^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`, at most 76 characters).
pub(crate) fn is_containerd_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 76
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// The namespace directories under the containerd task root (at most `max`); an error when
/// the root cannot be listed.
pub(crate) fn containerd_namespaces(root: &Path, max: usize) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root)?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_containerd_namespace(n))
        .take(max)
        .collect();
    // k8s.io first: most containers on a Kubernetes node are there.
    names.sort_by_key(|n| (n != "k8s.io", n.clone()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::tests::TempDir;

    const SANDBOX: &str = "7c4b9e2f1a3d5c6b8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d";
    const CTR: &str = "3f1e2d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7";
    const UID: &str = "8a3c6f0e-2b4d-4e6f-8a1c-3e5f7a9b1d2f";

    fn p() -> &'static Path {
        Path::new("fixture")
    }

    #[test]
    fn containerd_sandbox_fixture() {
        let got = parse_containerd_bundle(
            include_bytes!("fixtures/containerd-sandbox.config.json"),
            "k8s.io",
            p(),
        )
        .unwrap();
        assert_eq!(
            got,
            Partial {
                name: None,
                pod: Some("web-7d4f8b9c6-x2k4q".into()),
                namespace: Some("shop".into()),
                pod_uid: Some(UID.into()),
                sandbox_id: Some(SANDBOX.into()),
                is_sandbox: Some(true),
                runtime: Some(Runtime::Containerd),
                dropped: 0,
            }
        );
    }

    #[test]
    fn containerd_container_fixture() {
        let got = parse_containerd_bundle(
            include_bytes!("fixtures/containerd-container.config.json"),
            "k8s.io",
            p(),
        )
        .unwrap();
        assert_eq!(
            got,
            Partial {
                name: Some("nginx".into()),
                pod: Some("web-7d4f8b9c6-x2k4q".into()),
                namespace: Some("shop".into()),
                pod_uid: Some(UID.into()),
                sandbox_id: Some(SANDBOX.into()),
                is_sandbox: Some(false),
                runtime: Some(Runtime::Containerd),
                dropped: 0,
            }
        );
    }

    #[test]
    fn containerd_null_annotations() {
        let bytes = include_bytes!("fixtures/containerd-ctr.config.json");
        let got = parse_containerd_bundle(bytes, "default", p()).unwrap();
        assert_eq!(
            got,
            Partial {
                runtime: Some(Runtime::Containerd),
                ..Partial::default()
            }
        );
        let got = parse_containerd_bundle(bytes, "moby", p()).unwrap();
        assert_eq!(got.runtime, Some(Runtime::Docker));
        // No annotations key at all.
        let got = parse_containerd_bundle(br#"{"ociVersion":"1.0.2"}"#, "default", p()).unwrap();
        assert_eq!(got.name, None);
    }

    #[test]
    fn crio_fixtures() {
        let got =
            parse_crio_config(include_bytes!("fixtures/crio-container.config.json"), p()).unwrap();
        assert_eq!(
            got,
            Partial {
                name: Some("redis".into()),
                pod: Some("cache-0".into()),
                namespace: Some("data".into()),
                pod_uid: Some("0b4d8f2e-6a1c-4e3b-9d7f-5c2a8e6b4d10".into()),
                sandbox_id: Some(SANDBOX.into()),
                is_sandbox: Some(false),
                runtime: Some(Runtime::CriO),
                dropped: 0,
            }
        );
        let got =
            parse_crio_config(include_bytes!("fixtures/crio-sandbox.config.json"), p()).unwrap();
        assert_eq!(got.is_sandbox, Some(true));
        assert_eq!(got.pod.as_deref(), Some("cache-0"));
        assert_eq!(got.sandbox_id.as_deref(), Some(SANDBOX));
    }

    #[test]
    fn docker_fixtures() {
        let id = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b";
        let got =
            parse_docker_config(include_bytes!("fixtures/docker.config.v2.json"), id, p()).unwrap();
        assert_eq!(
            got,
            Partial {
                name: Some("hopeful_hopper".into()),
                runtime: Some(Runtime::Docker),
                ..Partial::default()
            }
        );
        let err = parse_docker_config(include_bytes!("fixtures/docker.config.v2.json"), CTR, p())
            .unwrap_err();
        assert!(matches!(err, MetadataError::Inconsistent { .. }), "{err}");

        let shim = "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091";
        let got = parse_docker_config(
            include_bytes!("fixtures/dockershim.config.v2.json"),
            shim,
            p(),
        )
        .unwrap();
        assert_eq!(
            got,
            Partial {
                name: Some("coredns".into()),
                pod: Some("coredns-7cfb7bc9c7-bvvz2".into()),
                namespace: Some("kube-system".into()),
                pod_uid: Some("39a1d7c2-5b8e-4f0a-9c3d-6e2f1a4b8c7d".into()),
                sandbox_id: Some(SANDBOX.into()),
                is_sandbox: Some(false),
                runtime: Some(Runtime::Docker),
                dropped: 0,
            }
        );
    }

    #[test]
    fn log_link_names() {
        let id = CTR;
        let (got_id, got) =
            parse_log_link_name(&format!("web-7d4f8b9c6-x2k4q_shop_nginx-{id}.log")).unwrap();
        assert_eq!(got_id, id);
        assert_eq!(got.pod.as_deref(), Some("web-7d4f8b9c6-x2k4q"));
        assert_eq!(got.namespace.as_deref(), Some("shop"));
        assert_eq!(got.name.as_deref(), Some("nginx"));
        // Dots in pod names, dashes in namespaces and container names.
        let (_, got) = parse_log_link_name(&format!(
            "heapster-v1.5.2-6b5d7b57f9-g2cjz_kube-system_heapster-nanny-{id}.log"
        ))
        .unwrap();
        assert_eq!(got.pod.as_deref(), Some("heapster-v1.5.2-6b5d7b57f9-g2cjz"));
        assert_eq!(got.namespace.as_deref(), Some("kube-system"));
        assert_eq!(got.name.as_deref(), Some("heapster-nanny"));
        for bad in [
            format!("a_b_c-{id}"),              // no .log
            format!("a_b-{id}.log"),            // two parts
            format!("a_b_c_d-{id}.log"),        // four parts
            format!("a_b_c-{}.log", &id[..63]), // cut id (kubelet truncates at 255 bytes)
            format!("a_b_c{id}.log"),           // no dash before the id
            format!("a_b_-{id}.log"),           // empty container name
            format!("A_b_c-{id}.log"),          // not a DNS name
            format!("a_b.x_c-{id}.log"),        // dot in a namespace
            format!("../x_b_c-{id}.log"),
            "_.log".to_string(),
            ".log".to_string(),
        ] {
            assert_eq!(parse_log_link_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn merge_first_wins() {
        let mut a = Partial {
            name: Some("a".into()),
            ..Partial::default()
        };
        a.fill_gaps(Partial {
            name: Some("b".into()),
            pod: Some("p".into()),
            ..Partial::default()
        });
        assert_eq!(a.name.as_deref(), Some("a"));
        assert_eq!(a.pod.as_deref(), Some("p"));
    }

    #[test]
    fn values_unfit_for_tags_are_dropped() {
        let json = format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-name":"a\nb","io.kubernetes.cri.sandbox-name":"{}","io.kubernetes.cri.sandbox-uid":"../../etc","io.kubernetes.cri.sandbox-id":"../x","io.kubernetes.cri.sandbox-namespace":""}}}}"#,
            "x".repeat(300)
        );
        let got = parse_containerd_bundle(json.as_bytes(), "k8s.io", p()).unwrap();
        assert_eq!(got.name, None);
        assert_eq!(got.pod, None);
        assert_eq!(got.pod_uid, None);
        assert_eq!(got.sandbox_id, None);
        assert_eq!(got.namespace, None);
        // A name too long and one with a newline; the empty namespace is no name to drop.
        assert_eq!(got.dropped, 2);
    }

    #[test]
    fn names_are_kept_only_when_read_back_unchanged() {
        // (value as JSON, kept): escaped separators and quotes are carried; NUL, newlines and
        // backslashes that line protocol cannot carry are not (issue 11's hostile names).
        let cases = [
            (r#""web 1""#, true),
            (r#""a,b""#, true),
            (r#""k=v""#, true),
            (r#""say \"hi\"""#, true),
            (r#""c:\\dir""#, true),
            (r#""é ✓""#, true),
            (r#""a\\\\b""#, false),
            (r#""end\\""#, false),
            (r#""a\\,b""#, false),
            (r#""line\nbreak""#, false),
            (r#""nul\u0000x""#, false),
            (r#""c1\u0085""#, false),
        ];
        for (value, kept) in cases {
            let json = format!(
                r#"{{"annotations":{{"io.kubernetes.cri.container-name":{value},"io.kubernetes.cri.sandbox-name":{value},"io.kubernetes.cri.sandbox-namespace":{value}}}}}"#
            );
            let got = parse_containerd_bundle(json.as_bytes(), "k8s.io", p()).unwrap();
            let want: Option<String> = kept.then(|| serde_json::from_str(value).unwrap());
            assert_eq!(
                (&got.name, &got.pod, &got.namespace),
                (&want, &want, &want),
                "{value}"
            );
            assert_eq!(got.dropped, if kept { 0 } else { 3 }, "{value}");
            let labels = format!(
                r#"{{"Name":"/x","Config":{{"Labels":{{"io.kubernetes.pod.name":{value},"io.kubernetes.pod.namespace":{value}}}}}}}"#
            );
            let got = parse_docker_config(labels.as_bytes(), CTR, p()).unwrap();
            assert_eq!((&got.pod, &got.namespace), (&want, &want), "{value}");
            assert_eq!(got.dropped, if kept { 0 } else { 2 }, "{value}");
        }
        // Invalid UTF-8 in a file makes it not JSON: the file is skipped, and counted as such.
        assert!(parse_crio_config(
            b"{\"annotations\":{\"io.kubernetes.pod.name\":\"a\xff\"}}",
            p()
        )
        .is_err());
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{\"annotations\": 7}",
            b"{\"annotations\": {\"k\": 1}}",
            b"\xff\xfe",
        ] {
            assert!(
                parse_containerd_bundle(bad, "k8s.io", p()).is_err(),
                "{bad:?}"
            );
            assert!(parse_crio_config(bad, p()).is_err(), "{bad:?}");
        }
        assert!(parse_docker_config(b"{\"Config\": {\"Labels\": []}}", CTR, p()).is_err());
        // Deep nesting: skipped without recursion where ignored, refused by serde_json's
        // recursion limit where parsed; never a stack overflow.
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse_containerd_bundle(deep.as_bytes(), "k8s.io", p())
                .unwrap()
                .name,
            None
        );
        let deep = format!(
            "{{\"annotations\":{{\"a\":{}}}}}",
            "{\"a\":".repeat(100_000)
        );
        assert!(parse_containerd_bundle(deep.as_bytes(), "k8s.io", p()).is_err());
    }

    #[test]
    fn read_beneath_refuses_hostile_files() {
        let tmp = TempDir::new("hostile");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/ok"), b"{}").unwrap();
        assert_eq!(read_beneath(root, &["d", "ok"], 16).unwrap(), b"{}");

        std::fs::write(root.join("d/big"), vec![b' '; 17]).unwrap();
        assert!(matches!(
            read_beneath(root, &["d", "big"], 16),
            Err(MetadataError::TooLarge { .. })
        ));
        std::fs::write(root.join("d/exact"), vec![b' '; 16]).unwrap();
        assert!(read_beneath(root, &["d", "exact"], 16).is_ok());

        std::os::unix::fs::symlink(root.join("d/ok"), root.join("d/link")).unwrap();
        assert!(matches!(
            read_beneath(root, &["d", "link"], 16),
            Err(MetadataError::Symlink { .. })
        ));
        std::os::unix::fs::symlink(root.join("d/loop2"), root.join("d/loop1")).unwrap();
        std::os::unix::fs::symlink(root.join("d/loop1"), root.join("d/loop2")).unwrap();
        assert!(matches!(
            read_beneath(root, &["d", "loop1"], 16),
            Err(MetadataError::Symlink { .. })
        ));
        // A symlinked directory in the middle.
        std::os::unix::fs::symlink(root.join("d"), root.join("dlink")).unwrap();
        let e = read_beneath(root, &["dlink", "ok"], 16).unwrap_err();
        assert!(
            matches!(
                e,
                MetadataError::Symlink { .. } | MetadataError::NotRegular { .. }
            ),
            "{e}"
        );

        let fifo = CString::new(root.join("d/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_beneath(root, &["d", "fifo"], 16),
            Err(MetadataError::NotRegular { .. })
        ));
        assert!(matches!(
            read_beneath(root, &["d"], 16),
            Err(MetadataError::NotRegular { .. })
        ));

        let missing = read_beneath(root, &["d", "missing"], 16).unwrap_err();
        assert!(missing.is_absent());
        for bad in [&["..", "etc"][..], &["d/../d", "ok"], &["", "ok"], &[]] {
            assert!(read_beneath(root, bad, 16).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespaces_are_validated() {
        assert!(is_containerd_namespace("k8s.io"));
        assert!(is_containerd_namespace("moby"));
        assert!(!is_containerd_namespace(".."));
        assert!(!is_containerd_namespace("-x"));
        assert!(!is_containerd_namespace("a/b"));
    }
}
