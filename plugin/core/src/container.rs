//! What flowlens knows of a container: its runtime, names and pod, as the plugin's resolver
//! finds them in cgroupfs and the runtimes' files (the types only; the reading is the plugin's).
#![forbid(unsafe_code)]

/// The container runtime that made a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker (moby), including dockershim and cri-dockerd pods.
    Docker,
    /// containerd, through its CRI plugin, `ctr` or nerdctl.
    Containerd,
    /// CRI-O.
    CriO,
    /// Podman (libpod).
    Podman,
}

impl Runtime {
    /// Lowercase name: `docker`, `containerd`, `cri-o`, `podman`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

/// A pod's Kubernetes QoS class, as its cgroup's place in the kubelet's hierarchy tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Directly under `kubepods` (no QoS level of its own).
    Guaranteed,
    /// Under `kubepods/burstable` (`kubepods-burstable.slice`).
    Burstable,
    /// Under `kubepods/besteffort` (`kubepods-besteffort.slice`).
    BestEffort,
}

impl QosClass {
    /// The name Kubernetes uses: `Guaranteed`, `Burstable`, `BestEffort`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A container and its names, from its cgroup path and what the node has on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerInfo {
    /// 64 lowercase hex digits.
    pub id: String,
    /// The first 12 hex digits: the `container` tag (as `docker ps` prints it).
    pub short_id: String,
    /// The runtime that runs it.
    pub runtime: Runtime,
    /// Container name: the Kubernetes container name, else Docker's name without its `/`.
    pub name: Option<String>,
    /// Pod name.
    pub pod: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod UID, with dashes.
    pub pod_uid: Option<String>,
    /// The id of the pod's sandbox (pause) container.
    pub sandbox_id: Option<String>,
    /// This container is its pod's sandbox (pause/infra) container.
    pub is_sandbox: bool,
    /// The pod's QoS class.
    pub qos: Option<QosClass>,
}
