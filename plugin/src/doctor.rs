//! `flowlens doctor`: the prerequisites (interface counters, BTF, tracefs, capabilities), each
//! probe's status, the DNAT backends and the hook kinds the kernel offers, checked here and now.

use crate::{
    collector::{self, ProbeStatus},
    conntrack::Conntrack,
    iface, privileges,
    sources::NodeSources,
    startup::{StartFacts, EBPF_CAPABILITIES},
};
use flowlens_abi::DoctorCheck;
use flowlens_core::MAX_DNAT_LOOKUPS;

/// The doctor check of the DNAT backends, named as the collector's features are.
const DNAT_FEATURE: &str = "feature DNAT backends";

/// What `doctor` says of a capability flowlens uses when it is missing at start-up.
const CAPABILITY_USES: [(u32, &str); 5] = [
    (
        privileges::CAP_BPF,
        "no eBPF programs or maps (interface metrics only)",
    ),
    (
        privileges::CAP_PERFMON,
        "no tracing programs (interface metrics only)",
    ),
    (
        privileges::CAP_SYS_ADMIN,
        "the start-up scan reads only flowlens's own network namespace",
    ),
    (
        privileges::CAP_SYS_PTRACE,
        "the start-up scan misses the network namespaces of other users' processes",
    ),
    (
        privileges::CAP_NET_ADMIN,
        "no DNAT backends (conntrack lookups)",
    ),
];

fn to_check(status: &ProbeStatus) -> DoctorCheck {
    DoctorCheck {
        name: status.name.as_str().into(),
        ok: status.ok,
        detail: status.detail.as_str().into(),
    }
}

/// What `doctor` looks at: what start-up found, the sources as they are now, and the DNAT
/// lookups skipped so far.
pub(crate) struct Doctor<'a> {
    pub(crate) facts: &'a StartFacts,
    pub(crate) sources: &'a NodeSources,
    pub(crate) dnat_skipped: u64,
}

impl Doctor<'_> {
    /// Whether the DNAT backends are served: ctnetlink answers a lookup now, in this thread,
    /// with the capabilities it holds (after start-up: those the gathers have).
    fn dnat_check(&self) -> DoctorCheck {
        let (ok, detail) = match (&self.sources.conntrack, &self.facts.conntrack_off) {
            (Some(running), _) => match Conntrack::open() {
                Ok(_) => {
                    let s = running.stats();
                    (
                        true,
                        format!(
                            "served by ctnetlink: the backend behind a virtual IP (kube-proxy's \
                             DNAT) from each new client connection's conntrack entry ({} \
                             lookups, {} rewritten, {} failed, {} skipped over the budget of \
                             {MAX_DNAT_LOOKUPS} a gather)",
                            s.lookups, s.found_dnat, s.errors, self.dnat_skipped
                        ),
                    )
                }
                Err(e) => (false, format!("not served: {e}")),
            },
            (None, Some((why, fault))) => (!fault, why.clone()),
            (None, None) => (false, "not served".to_string()),
        };
        DoctorCheck {
            name: DNAT_FEATURE.into(),
            ok,
            detail: detail.into(),
        }
    }

    /// Whether the capabilities held at start-up were enough, by name: CAP_BPF and CAP_PERFMON
    /// are needed; CAP_SYS_ADMIN and CAP_SYS_PTRACE widen the start-up scan.
    fn privileges_check(&self) -> DoctorCheck {
        let Some(held) = self.facts.caps_at_start else {
            return DoctorCheck {
                name: "privileges".into(),
                ok: false,
                detail: "cannot read this process's capabilities".into(),
            };
        };
        let needed = EBPF_CAPABILITIES;
        let missing: Vec<String> = CAPABILITY_USES
            .iter()
            .filter(|(cap, _)| held & privileges::bit(*cap) == 0)
            .map(|(cap, what)| format!("{} ({what})", privileges::name(*cap)))
            .collect();
        let used: u64 = CAPABILITY_USES
            .iter()
            .fold(0, |set, (cap, _)| set | privileges::bit(*cap));
        let after = privileges::current().map_or(0, |c| c.effective);
        DoctorCheck {
            name: "privileges".into(),
            ok: held & needed == needed,
            detail: format!(
                "held at start-up: {}; missing: {}; kept after start-up: {}",
                privileges::names(held & used),
                if missing.is_empty() {
                    "none".to_string()
                } else {
                    missing.join(", ")
                },
                privileges::names(after)
            )
            .into(),
        }
    }

    /// The prerequisites and probes, with their status here.
    pub fn checks(&self) -> Vec<DoctorCheck> {
        let ifaces = iface::read_all(&self.sources.sys_class_net);
        let mut checks = vec![DoctorCheck {
            name: "interface counters (sysfs)".into(),
            ok: ifaces.is_ok(),
            detail: match ifaces {
                Ok(list) => format!(
                    "{} interfaces in {}",
                    list.len(),
                    self.sources.sys_class_net.display()
                ),
                Err(e) => e.to_string(),
            }
            .into(),
        }];
        checks.push(DoctorCheck {
            name: "node".into(),
            ok: true,
            detail: self.facts.node.to_string().into(),
        });
        checks.push(self.privileges_check());
        let btf = collector::kernel_btf();
        checks.push(DoctorCheck {
            name: "kernel BTF (/sys/kernel/btf/vmlinux)".into(),
            ok: btf.is_ok(),
            detail: match &btf {
                Ok(_) => "present: CO-RE programs can be relocated".into(),
                Err(e) => e.to_string().into(),
            },
        });
        let tracefs = [
            "/sys/kernel/tracing/events",
            "/sys/kernel/debug/tracing/events",
        ]
        .iter()
        .find(|p| std::path::Path::new(p).is_dir());
        // Information: none of flowlens's hooks goes through tracefs (tp_btf, fexit and
        // iterators attach by BTF, kprobes through the kprobe PMU).
        checks.push(DoctorCheck {
            name: "tracefs".into(),
            ok: true,
            detail: match tracefs {
                Some(p) => format!("mounted ({p}); not needed by flowlens's hooks").into(),
                None => "not mounted or not readable here; not needed by flowlens's hooks".into(),
            },
        });
        match (&self.sources.ebpf, &self.facts.ebpf_disabled) {
            (Some(ebpf), _) => checks.extend(ebpf.probes().iter().map(to_check)),
            (None, why) => checks.push(DoctorCheck {
                name: "eBPF collector".into(),
                ok: false,
                detail: why.clone().unwrap_or_default().into(),
            }),
        }
        if let Some(why) = &self.facts.scan_off {
            // Information: the flows of these connections are counted from their next event.
            checks.push(DoctorCheck {
                name: "start-up scan (sock_diag)".into(),
                ok: true,
                detail: why.as_str().into(),
            });
        }
        checks.push(self.dnat_check());
        if let Ok(btf) = &btf {
            checks.extend(collector::check_hook_kinds(btf).iter().map(to_check));
        }
        checks
    }
}
