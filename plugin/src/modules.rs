//! Whether a kernel feature flowlens would use is there already, or would make the kernel load
//! a module: opening a netlink family or asking a sock_diag or nfnetlink subsystem is one of
//! the kernel's autoload paths (`net-pf-16-proto-12`, `nfnetlink-subsys-1`, ...). flowlens is an
//! observer: it uses such a feature only when its modules are loaded or built in, decided
//! before any socket is opened.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// A kernel module a feature needs, and the netlink protocol it registers when it has one
/// (its kernel socket in `/proc/net/netlink` proves it is there, built in or loaded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needed {
    pub(crate) module: &'static str,
    pub(crate) netlink_protocol: Option<u32>,
}

/// The DNAT backends' lookups: nfnetlink (NETLINK_NETFILTER, 12) and ctnetlink
/// (`nf_conntrack_netlink`, which needs `nf_conntrack`: loaded, conntrack is in use).
pub(crate) const CONNTRACK_LOOKUPS: [Needed; 3] = [
    Needed {
        module: "nfnetlink",
        netlink_protocol: Some(12),
    },
    Needed {
        module: "nf_conntrack",
        netlink_protocol: None,
    },
    Needed {
        module: "nf_conntrack_netlink",
        netlink_protocol: None,
    },
];

/// The start-up scan of established connections: sock_diag (NETLINK_SOCK_DIAG, 4) and its
/// TCP handlers.
pub(crate) const SOCKET_DIAG: [Needed; 3] = [
    Needed {
        module: "sock_diag",
        netlink_protocol: Some(4),
    },
    Needed {
        module: "inet_diag",
        netlink_protocol: None,
    },
    Needed {
        module: "tcp_diag",
        netlink_protocol: None,
    },
];

/// Where the kernel tells which modules it has: `/proc` and `/sys/module` (another root in
/// tests), and the running kernel's `modules.builtin` list when readable.
#[derive(Debug, Clone)]
pub(crate) struct KernelModules {
    pub(crate) proc: PathBuf,
    pub(crate) sys_module: PathBuf,
    pub(crate) modules_builtin: PathBuf,
}

impl KernelModules {
    /// The running kernel's.
    pub(crate) fn running() -> KernelModules {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        KernelModules {
            proc: PathBuf::from("/proc"),
            sys_module: PathBuf::from("/sys/module"),
            modules_builtin: Path::new("/lib/modules")
                .join(release.trim())
                .join("modules.builtin"),
        }
    }

    /// Ok when every module of `needed` is there, or the kernel cannot load any (no module
    /// support, or `kernel.modules_disabled` set): then using the feature loads nothing. Else
    /// the modules that using it could make the kernel load.
    pub(crate) fn missing(&self, needed: &[Needed]) -> Result<(), Vec<&'static str>> {
        let proc_modules = match fs::read_to_string(self.proc.join("modules")) {
            Ok(text) => text,
            // No /proc/modules: a kernel built without module support loads nothing.
            Err(_) => return Ok(()),
        };
        let disabled = fs::read_to_string(self.proc.join("sys/kernel/modules_disabled"))
            .is_ok_and(|v| v.trim() == "1");
        if disabled {
            return Ok(());
        }
        let loaded: Vec<&str> = proc_modules
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let builtin = fs::read_to_string(&self.modules_builtin).unwrap_or_default();
        let netlink = fs::read_to_string(self.proc.join("net/netlink")).unwrap_or_default();
        let missing: Vec<&'static str> = needed
            .iter()
            .filter(|n| {
                !(loaded.contains(&n.module)
                    || self.sys_module.join(n.module).is_dir()
                    || listed_builtin(&builtin, n.module)
                    || n.netlink_protocol
                        .is_some_and(|p| has_kernel_socket(&netlink, p)))
            })
            .map(|n| n.module)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

/// Whether `modules.builtin` (`kernel/net/netfilter/nfnetlink.ko` lines) names `module`.
fn listed_builtin(builtin: &str, module: &str) -> bool {
    builtin.lines().any(|line| {
        let file = line.rsplit('/').next().unwrap_or(line);
        file.strip_suffix(".ko")
            .is_some_and(|name| name.replace('-', "_") == module)
    })
}

/// Whether `/proc/net/netlink` (columns: sk, Eth, Pid, ...) lists the kernel's own socket
/// (port id 0) of netlink `protocol`: the family is registered.
fn has_kernel_socket(proc_net_netlink: &str, protocol: u32) -> bool {
    proc_net_netlink.lines().skip(1).any(|line| {
        let mut columns = line.split_whitespace().skip(1);
        let eth = columns.next().and_then(|c| c.parse::<u32>().ok());
        let pid = columns.next();
        eth == Some(protocol) && pid == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc and /sys/module under a temporary directory.
    struct Tree {
        dir: PathBuf,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir()
                .join(format!("flowlens-modules-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("proc/net")).unwrap();
            fs::create_dir_all(dir.join("proc/sys/kernel")).unwrap();
            fs::create_dir_all(dir.join("sys/module")).unwrap();
            Tree { dir }
        }
        fn modules(&self) -> KernelModules {
            KernelModules {
                proc: self.dir.join("proc"),
                sys_module: self.dir.join("sys/module"),
                modules_builtin: self.dir.join("modules.builtin"),
            }
        }
        fn write(&self, path: &str, text: &str) {
            fs::write(self.dir.join(path), text).unwrap();
        }
        fn sys_module(&self, name: &str) {
            fs::create_dir_all(self.dir.join("sys/module").join(name)).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    const NETLINK_HEADER: &str =
        "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n";

    #[test]
    fn a_kernel_without_module_support_loads_nothing() {
        // This host's kernel: no /proc/modules, no /sys/module/nfnetlink (built in, no
        // parameters): nothing can be loaded, so conntrack lookups have no side effect.
        let tree = Tree::new("nomodules");
        assert_eq!(tree.modules().missing(&CONNTRACK_LOOKUPS), Ok(()));
        assert_eq!(tree.modules().missing(&SOCKET_DIAG), Ok(()));
    }

    #[test]
    fn modules_not_loaded_are_named() {
        // A node with an eBPF kube-proxy replacement: the modules exist but none is loaded.
        let tree = Tree::new("notloaded");
        tree.write("proc/modules", "veth 40960 0 - Live 0x0000000000000000\n");
        tree.write(
            "proc/net/netlink",
            &format!("{NETLINK_HEADER}0000000000000000 0   0          00000000 0 0 0 2 0 4\n"),
        );
        assert_eq!(
            tree.modules().missing(&CONNTRACK_LOOKUPS),
            Err(vec!["nfnetlink", "nf_conntrack", "nf_conntrack_netlink"])
        );
        assert_eq!(
            tree.modules().missing(&SOCKET_DIAG),
            Err(vec!["sock_diag", "inet_diag", "tcp_diag"])
        );
    }

    #[test]
    fn loaded_modules_are_used() {
        let tree = Tree::new("loaded");
        tree.write(
            "proc/modules",
            "nf_conntrack_netlink 57344 0 - Live 0x0\n\
             nf_conntrack 180224 1 nf_conntrack_netlink, Live 0x0\n\
             nfnetlink 20480 1 nf_conntrack_netlink, Live 0x0\n",
        );
        assert_eq!(tree.modules().missing(&CONNTRACK_LOOKUPS), Ok(()));
        // Loaded but ctnetlink missing: its request would load it.
        tree.write(
            "proc/modules",
            "nf_conntrack 180224 0 - Live 0x0\nnfnetlink 20480 0 - Live 0x0\n",
        );
        assert_eq!(
            tree.modules().missing(&CONNTRACK_LOOKUPS),
            Err(vec!["nf_conntrack_netlink"])
        );
    }

    #[test]
    fn built_in_modules_are_found_by_sysfs_netlink_or_the_builtin_list() {
        let tree = Tree::new("builtin");
        tree.write("proc/modules", "veth 40960 0 - Live 0x0\n");
        // nf_conntrack has parameters: /sys/module/nf_conntrack exists when built in.
        tree.sys_module("nf_conntrack");
        // nfnetlink: its kernel socket (protocol 12, port id 0) is listed; a user's socket
        // (port id 4242) of another protocol proves nothing.
        tree.write(
            "proc/net/netlink",
            &format!(
                "{NETLINK_HEADER}0000000000000000 12  0          00000000 0 0 0 2 0 5\n\
                 0000000000000000 4   4242       00000000 0 0 0 2 0 6\n"
            ),
        );
        assert_eq!(
            tree.modules().missing(&CONNTRACK_LOOKUPS),
            Err(vec!["nf_conntrack_netlink"])
        );
        assert_eq!(
            tree.modules().missing(&SOCKET_DIAG),
            Err(vec!["sock_diag", "inet_diag", "tcp_diag"])
        );
        tree.write(
            "modules.builtin",
            "kernel/net/netfilter/nf_conntrack_netlink.ko\nkernel/net/ipv4/inet_diag.ko\n\
             kernel/net/ipv4/tcp_diag.ko\nkernel/net/core/sock_diag.ko\n",
        );
        assert_eq!(tree.modules().missing(&CONNTRACK_LOOKUPS), Ok(()));
        assert_eq!(tree.modules().missing(&SOCKET_DIAG), Ok(()));
    }

    #[test]
    fn modules_disabled_loads_nothing() {
        let tree = Tree::new("disabled");
        tree.write("proc/modules", "veth 40960 0 - Live 0x0\n");
        tree.write("proc/sys/kernel/modules_disabled", "1\n");
        assert_eq!(tree.modules().missing(&CONNTRACK_LOOKUPS), Ok(()));
    }
}
