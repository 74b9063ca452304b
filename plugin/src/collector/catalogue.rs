//! The hook catalogue: the collector's features, the ways each can be served (sets of programs
//! and where they hook), and the choice of the first way a kernel accepts. Pure: what attaching
//! a way does is the caller's (`attach.rs`).

use super::ProbeStatus;

/// The kinds of hook the collector attaches programs to, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// A BTF-typed tracepoint (`tp_btf/<tracepoint>`).
    TpBtf,
    /// The entry of a kernel function (`fentry/<function>`, the same trampolines as `FExit`).
    FEntry,
    /// The exit of a kernel function (`fexit/<function>`, 5.5+ where function tracing is allowed).
    FExit,
    /// The entry of a kernel function (`kprobe/<function>`, where kprobes are compiled in).
    KProbe,
    /// The return of a kernel function (`kretprobe/<function>`).
    KRetProbe,
    /// A BPF iterator (`iter/<target>`), run by userspace at each gather.
    Iter,
}

impl HookKind {
    /// The kind as the program's ELF section names it (`tp_btf` in `tp_btf/<tracepoint>`).
    fn section_prefix(self) -> &'static str {
        match self {
            HookKind::TpBtf => "tp_btf",
            HookKind::FEntry => "fentry",
            HookKind::FExit => "fexit",
            HookKind::KProbe => "kprobe",
            HookKind::KRetProbe => "kretprobe",
            HookKind::Iter => "iter",
        }
    }
}

/// One program and where it hooks.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// Program name (the C function).
    pub program: &'static str,
    /// The kind of hook.
    pub kind: HookKind,
    /// The tracepoint, kernel function or iterator target.
    pub target: &'static str,
    /// What tells this way from another on the same hook ("" when nothing does).
    pub variant: &'static str,
}

impl Hook {
    const fn of(kind: HookKind, program: &'static str, target: &'static str) -> Hook {
        Hook {
            program,
            kind,
            target,
            variant: "",
        }
    }

    const fn tp_btf(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::TpBtf, program, target)
    }

    const fn fentry(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::FEntry, program, target)
    }

    const fn fexit(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::FExit, program, target)
    }

    const fn kprobe(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::KProbe, program, target)
    }

    const fn kretprobe(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::KRetProbe, program, target)
    }

    const fn iter(program: &'static str, target: &'static str) -> Hook {
        Hook::of(HookKind::Iter, program, target)
    }

    const fn variant(self, variant: &'static str) -> Hook {
        Hook { variant, ..self }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.section_prefix(), self.target)?;
        if !self.variant.is_empty() {
            write!(f, " ({})", self.variant)?;
        }
        Ok(())
    }
}

/// A feature of the collector and the ways to serve it, best first: each way is a set of
/// programs that must all load and attach. The first way this kernel accepts serves it.
pub struct Feature {
    /// Short name (doctor, logs).
    pub name: &'static str,
    /// What a user gets from it.
    pub serves: &'static str,
    /// The ways to serve it, best first.
    pub ways: &'static [&'static [Hook]],
}

/// The features of the default config, in attach order.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "TCP connections",
        serves: "TCP flows opened and closed, client/server role, owner, final counters",
        ways: &[&[Hook::tp_btf("fl_set_state", "inet_sock_set_state")]],
    },
    Feature {
        name: "TCP ends",
        serves: "closes the state-change program missed (it is skipped when it interrupts itself)",
        ways: &[&[Hook::tp_btf("fl_destroy", "tcp_destroy_sock")]],
    },
    Feature {
        name: "TCP live counters",
        serves: "bytes, RTT and retransmissions of live TCP connections, read at each gather",
        ways: &[
            &[Hook::iter("fl_refresh", "task_file")],
            &[Hook::iter("fl_refresh_probed", "task_file").variant("probe reads")],
        ],
    },
    Feature {
        name: "UDP sent",
        serves: "UDP flows and bytes sent",
        ways: &[
            &[Hook::tp_btf("fl_send", "sock_send_length")],
            &[
                Hook::fexit("fl_udp_sendmsg", "udp_sendmsg"),
                Hook::fexit("fl_udpv6_sendmsg", "udpv6_sendmsg"),
            ],
            &[
                Hook::kprobe("fl_kp_udp_send", "udp_sendmsg"),
                Hook::kretprobe("fl_krp_udp_send", "udp_sendmsg"),
                Hook::kprobe("fl_kp_udp6_send", "udpv6_sendmsg"),
                Hook::kretprobe("fl_krp_udp6_send", "udpv6_sendmsg"),
            ],
        ],
    },
    Feature {
        name: "UDP received",
        serves: "UDP flows and bytes received",
        ways: &[
            &[Hook::tp_btf("fl_recv", "sock_recv_length")],
            // Before 5.19 the receive functions have a `noblock` argument: the programs whose
            // return value sits after it are accepted only there, so they are tried first.
            &[
                Hook::fexit("fl_udp_recvmsg_noblock", "udp_recvmsg").variant("with noblock"),
                Hook::fexit("fl_udpv6_recvmsg_noblock", "udpv6_recvmsg").variant("with noblock"),
            ],
            &[
                Hook::fexit("fl_udp_recvmsg", "udp_recvmsg"),
                Hook::fexit("fl_udpv6_recvmsg", "udpv6_recvmsg"),
            ],
            // 6.16 removed `addr_len`: tried last, for the same reason.
            &[
                Hook::fexit("fl_udp_recvmsg_noaddrlen", "udp_recvmsg").variant("without addr_len"),
                Hook::fexit("fl_udpv6_recvmsg_noaddrlen", "udpv6_recvmsg")
                    .variant("without addr_len"),
            ],
            &[
                Hook::kprobe("fl_kp_udp_recv", "udp_recvmsg"),
                Hook::kretprobe("fl_krp_udp_recv", "udp_recvmsg"),
                Hook::kprobe("fl_kp_udp6_recv", "udpv6_recvmsg"),
                Hook::kretprobe("fl_krp_udp6_recv", "udpv6_recvmsg"),
            ],
        ],
    },
];

/// The source address of UDP sockets that send without an address of their own (never bound or
/// connected, or bound to the wildcard), which the kernel picks per datagram. Attached with the
/// default features, but a kernel that allows neither way (tracepoints only: the locked-down
/// 6.18) is no failure: such flows then keep the unspecified address (`host=0.0.0.0` / `::`),
/// and `doctor` says so (as information).
pub const UDP_SOURCE: Feature = Feature {
    name: "UDP source address",
    serves: "the local address of UDP sockets that send unbound",
    ways: &[
        &[
            Hook::fexit("fl_udp_send_skb", "udp_send_skb"),
            Hook::fexit("fl_udp6_send_skb", "udp_v6_send_skb"),
        ],
        &[
            Hook::kprobe("fl_kp_udp_send_skb", "udp_send_skb"),
            Hook::kprobe("fl_kp_udp6_send_skb", "udp_v6_send_skb"),
        ],
    ],
};

/// Why a connect failed, where the kernel wakes the connecting process before it closes the
/// socket (before `tcp_done_with_error`: 5.10, 6.1 before its stable backport): a process that
/// reads the error at once (a non-blocking connect's `getsockopt(SO_ERROR)`) clears it first,
/// and the failure would count as a connect given up on (`aborted_as_client`). The error is kept
/// when the kernel reports it. Attached only on such kernels; not being served is information.
pub const CONNECT_ERRORS: Feature = Feature {
    name: "TCP connect errors",
    serves: "why a connect failed when its process reads the error at once",
    ways: &[
        &[Hook::fentry("fl_error_report", "sock_def_error_report")],
        &[Hook::kprobe("fl_kp_error_report", "sock_def_error_report")],
    ],
};

/// The kernel function whose presence says the kernel sets a connection's error before it
/// closes the socket (6.10, and stable kernels it was taken back to): `CONNECT_ERRORS` is not
/// needed there.
pub const ERROR_BEFORE_CLOSE: &str = "tcp_done_with_error";

/// The optional per-segment RTT feature (`rtt_source = "segment"`).
pub const SEGMENT_RTT: Feature = Feature {
    name: "TCP RTT per segment",
    serves: "RTT refreshed on every received segment",
    ways: &[&[Hook::tp_btf("fl_tcp_probe", "tcp_probe")]],
};

/// The hook kinds the collector may attach (the config's `hook_kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookKinds {
    /// `tp_btf`.
    pub tp_btf: bool,
    /// `fexit` (and `fentry`: the same trampolines).
    pub fexit: bool,
    /// `kprobe` and `kretprobe`.
    pub kprobe: bool,
}

impl HookKinds {
    /// Every kind.
    pub const ALL: HookKinds = HookKinds {
        tp_btf: true,
        fexit: true,
        kprobe: true,
    };

    /// Whether a hook of `kind` may be attached; iterators always may.
    fn allows(self, kind: HookKind) -> bool {
        match kind {
            HookKind::TpBtf => self.tp_btf,
            HookKind::FEntry | HookKind::FExit => self.fexit,
            HookKind::KProbe | HookKind::KRetProbe => self.kprobe,
            HookKind::Iter => true,
        }
    }
}

/// What trying a feature's ways gave.
pub(super) struct Choice<T> {
    /// The way that serves the feature and what attaching it gave; `None` when no way does.
    pub(super) served: Option<(&'static [Hook], T)>,
    /// Why each way before it was passed over, in order: `<hook>: <why>`.
    pub(super) refused: Vec<String>,
}

/// Tries the ways of `feature` in order and stops at the first that `attach` attaches whole.
/// A way with a hook kind that `allowed` leaves out is passed over untried; `attach` returns
/// the hook that failed and why (and has undone what it did of that way).
pub(super) fn choose<T>(
    feature: &Feature,
    allowed: HookKinds,
    mut attach: impl FnMut(&'static [Hook]) -> Result<T, (Hook, String)>,
) -> Choice<T> {
    let mut refused = Vec::new();
    for &way in feature.ways {
        if let Some(hook) = way.iter().find(|h| !allowed.allows(h.kind)) {
            refused.push(format!("{hook}: not in hook_kinds"));
            continue;
        }
        match attach(way) {
            Ok(attached) => {
                return Choice {
                    served: Some((way, attached)),
                    refused,
                }
            }
            Err((hook, why)) => refused.push(format!("{hook}: {why}")),
        }
    }
    Choice {
        served: None,
        refused,
    }
}

impl<T> Choice<T> {
    /// The feature's status for logs and `doctor`: the way that serves it and why the ways
    /// before it did not, or why none does.
    pub(super) fn status(&self, feature: &Feature) -> ProbeStatus {
        let name = format!("feature {}", feature.name);
        let refused = self.refused.join("; ");
        match &self.served {
            Some((way, _)) => {
                let hooks: Vec<String> = way.iter().map(Hook::to_string).collect();
                let hooks = hooks.join(" + ");
                ProbeStatus {
                    name,
                    ok: true,
                    detail: if self.refused.is_empty() {
                        format!("served by {hooks}: {}", feature.serves)
                    } else {
                        format!(
                            "served by {hooks}: {} (ways before it: {refused})",
                            feature.serves
                        )
                    },
                }
            }
            None => ProbeStatus {
                name,
                ok: false,
                detail: format!("not served ({refused}); disabled: {}", feature.serves),
            },
        }
    }
}

/// An optional feature's status as information: not being served is no failure.
pub(super) fn information(mut status: ProbeStatus, instead: &str) -> ProbeStatus {
    if !status.ok {
        status.ok = true;
        status.detail = format!("information: {} ({instead})", status.detail);
    }
    status
}

/// Whether the verifier refused a feature's programs for their call of
/// `bpf_get_socket_cookie()` (allowed in tracing programs from 5.12): the object is then loaded
/// again without it.
pub(super) fn refused_for_the_cookie_helper(status: &ProbeStatus) -> bool {
    !status.ok && status.detail.contains("get_socket_cookie")
}

/// Which argument of `udp_recvmsg` (and `udpv6_recvmsg`) holds the receive flags, for the
/// kprobe programs, which skip peeks and error-queue reads, from the function's number of
/// parameters in the kernel's BTF: 5 with 6 parameters (before 5.19: a `noblock` argument
/// comes first), else 4 (5.19+, with or without the `addr_len` that 6.16 removed after it;
/// where 4 would be wrong, the 4th argument is `noblock`, which never looks like a peek).
pub(super) fn udp_recv_flags_arg(params: Option<usize>) -> u32 {
    match params {
        Some(6) => 5,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel, as far as attaching our hooks goes.
    struct Kernel {
        /// Hook kinds it lets load and attach.
        kinds: &'static [HookKind],
        /// Whether it has the 6.3+ `sock_send_length`/`sock_recv_length` tracepoints.
        sock_length_tracepoints: bool,
        /// Parameters of `udp_recvmsg`: 6 before 5.19, 5 until 6.16, 4 since.
        udp_recvmsg_params: usize,
        /// Whether `bpf_sock_from_file()` exists (5.11+).
        sock_from_file: bool,
    }

    impl Kernel {
        /// Whether it loads and attaches `hook`, as the verifier and the attach call would say.
        fn attach(&self, hook: &Hook) -> Result<(), String> {
            if !self.kinds.contains(&hook.kind) {
                return Err("Operation not permitted".into());
            }
            if hook.target.starts_with("sock_") && !self.sock_length_tracepoints {
                return Err(format!("no btf_trace_{}", hook.target));
            }
            // An fexit program reading past the function's last argument is refused.
            let arity = match hook.variant {
                "with noblock" => 6,
                "without addr_len" => 4,
                _ if hook.target.contains("recvmsg") && hook.kind == HookKind::FExit => 5,
                _ => self.udp_recvmsg_params,
            };
            if arity != self.udp_recvmsg_params {
                return Err("func_proto arg mismatch".into());
            }
            if hook.program == "fl_refresh" && !self.sock_from_file {
                return Err("unknown func bpf_sock_from_file".into());
            }
            Ok(())
        }

        /// The programs serving each feature, as `choose` picks them, or the failed status.
        fn serving(&self, allowed: HookKinds) -> Vec<Result<Vec<&'static str>, String>> {
            let mut out = Vec::new();
            for feature in FEATURES.iter().chain([&UDP_SOURCE, &SEGMENT_RTT]) {
                let choice = choose(feature, allowed, |way| {
                    for hook in way {
                        self.attach(hook).map_err(|why| (*hook, why))?;
                    }
                    Ok(())
                });
                out.push(match choice.served {
                    Some((way, ())) => Ok(way.iter().map(|h| h.program).collect()),
                    None => Err(choice.status(feature).detail),
                });
            }
            out
        }
    }

    use HookKind::*;

    /// 6.18 on these machines: function tracing and kprobes locked out.
    const LOCKED_DOWN_6_18: Kernel = Kernel {
        kinds: &[TpBtf, Iter],
        sock_length_tracepoints: true,
        udp_recvmsg_params: 4,
        sock_from_file: true,
    };
    /// Debian's 6.1: no sock_*_length tracepoints, 5 parameters.
    const DEBIAN_6_1: Kernel = Kernel {
        kinds: &[TpBtf, FExit, KProbe, KRetProbe, Iter],
        sock_length_tracepoints: false,
        udp_recvmsg_params: 5,
        sock_from_file: true,
    };
    /// Debian's 5.10: `noblock`, no bpf_sock_from_file().
    const DEBIAN_5_10: Kernel = Kernel {
        kinds: &[TpBtf, FExit, KProbe, KRetProbe, Iter],
        sock_length_tracepoints: false,
        udp_recvmsg_params: 6,
        sock_from_file: false,
    };

    fn ok(programs: &[&'static str]) -> Result<Vec<&'static str>, String> {
        Ok(programs.to_vec())
    }

    #[test]
    fn each_kernel_gets_the_first_way_it_accepts() {
        let tcp = [ok(&["fl_set_state"]), ok(&["fl_destroy"])];
        let locked = LOCKED_DOWN_6_18.serving(HookKinds::ALL);
        assert_eq!(locked[..2], tcp);
        assert_eq!(locked[2], ok(&["fl_refresh"]));
        assert_eq!(locked[3], ok(&["fl_send"]));
        assert_eq!(locked[4], ok(&["fl_recv"]));
        assert!(locked[5].as_ref().unwrap_err().starts_with(
            "not served (fexit/udp_send_skb: Operation not permitted; \
             kprobe/udp_send_skb: Operation not permitted); disabled: "
        ));
        assert_eq!(locked[6], ok(&["fl_tcp_probe"]));

        let d61 = DEBIAN_6_1.serving(HookKinds::ALL);
        assert_eq!(d61[..2], tcp);
        assert_eq!(d61[2], ok(&["fl_refresh"]));
        assert_eq!(d61[3], ok(&["fl_udp_sendmsg", "fl_udpv6_sendmsg"]));
        assert_eq!(d61[4], ok(&["fl_udp_recvmsg", "fl_udpv6_recvmsg"]));
        assert_eq!(d61[5], ok(&["fl_udp_send_skb", "fl_udp6_send_skb"]));

        let d510 = DEBIAN_5_10.serving(HookKinds::ALL);
        assert_eq!(d510[2], ok(&["fl_refresh_probed"]));
        assert_eq!(
            d510[4],
            ok(&["fl_udp_recvmsg_noblock", "fl_udpv6_recvmsg_noblock"])
        );

        let since_6_16 = Kernel {
            sock_length_tracepoints: false,
            udp_recvmsg_params: 4,
            ..DEBIAN_6_1
        };
        let recv = &since_6_16.serving(HookKinds::ALL)[4];
        assert_eq!(
            *recv,
            ok(&["fl_udp_recvmsg_noaddrlen", "fl_udpv6_recvmsg_noaddrlen"])
        );
    }

    #[test]
    fn hook_kinds_left_out_are_passed_over_untried() {
        let no_fexit = HookKinds {
            fexit: false,
            ..HookKinds::ALL
        };
        let mut tried = Vec::new();
        let choice = choose(&FEATURES[3], no_fexit, |way| {
            tried.push(way[0].program);
            match way[0].kind {
                TpBtf => Err((way[0], "no btf_trace_sock_send_length".to_string())),
                _ => Ok(()),
            }
        });
        assert_eq!(tried, ["fl_send", "fl_kp_udp_send"]);
        let status = choice.status(&FEATURES[3]);
        assert!(status.ok);
        assert_eq!(
            status.detail,
            "served by kprobe/udp_sendmsg + kretprobe/udp_sendmsg + kprobe/udpv6_sendmsg + \
             kretprobe/udpv6_sendmsg: UDP flows and bytes sent (ways before it: \
             tp_btf/sock_send_length: no btf_trace_sock_send_length; \
             fexit/udp_sendmsg: not in hook_kinds)"
        );
        // Iterators are never left out.
        let none = HookKinds {
            tp_btf: false,
            fexit: false,
            kprobe: false,
        };
        let choice = choose(&FEATURES[2], none, |_| Ok(()));
        assert_eq!(
            choice.status(&FEATURES[2]).detail.split(':').next(),
            Some("served by iter/task_file")
        );
    }

    #[test]
    fn a_way_is_named_by_the_hook_that_failed_and_a_first_way_has_no_refusals() {
        let choice = choose(&FEATURES[4], HookKinds::ALL, |way| {
            match way
                .iter()
                .find(|h| h.program.starts_with("fl_udpv6_recvmsg"))
            {
                Some(h) if h.variant != "without addr_len" => Err((*h, "refused".into())),
                _ if way[0].kind == TpBtf => Err((way[0], "absent".into())),
                _ => Ok(()),
            }
        });
        assert_eq!(
            choice.refused,
            [
                "tp_btf/sock_recv_length: absent",
                "fexit/udpv6_recvmsg (with noblock): refused",
                "fexit/udpv6_recvmsg: refused",
            ]
        );
        assert_eq!(
            choice.served.unwrap().0[0].program,
            "fl_udp_recvmsg_noaddrlen"
        );
        let first = choose(&FEATURES[0], HookKinds::ALL, |_| Ok(()));
        assert_eq!(
            first.status(&FEATURES[0]).detail,
            format!(
                "served by tp_btf/inet_sock_set_state: {}",
                FEATURES[0].serves
            )
        );
    }

    #[test]
    fn an_optional_feature_not_served_is_information() {
        let none: Choice<()> = choose(&UDP_SOURCE, HookKinds::ALL, |way| {
            Err((way[0], "EPERM".to_string()))
        });
        let status = information(none.status(&UDP_SOURCE), "keeps 0.0.0.0");
        assert!(status.ok);
        assert!(status
            .detail
            .starts_with("information: not served (fexit/udp_send_skb: EPERM"));
        assert!(
            status.detail.ends_with("(keeps 0.0.0.0)"),
            "{}",
            status.detail
        );
        let served = choose(&UDP_SOURCE, HookKinds::ALL, |_| Ok(()));
        let status = information(served.status(&UDP_SOURCE), "keeps 0.0.0.0");
        assert!(status.detail.starts_with("served by fexit/udp_send_skb"));
    }

    #[test]
    fn the_object_is_loaded_again_only_when_the_cookie_helper_was_refused() {
        let refused = |detail: &str, ok| ProbeStatus {
            name: "feature TCP connections".into(),
            ok,
            detail: detail.into(),
        };
        let why =
            "not served (tp_btf/inet_sock_set_state: ... | unknown func bpf_get_socket_cookie#46)";
        assert!(refused_for_the_cookie_helper(&refused(why, false)));
        assert!(!refused_for_the_cookie_helper(&refused(
            "not served (EPERM)",
            false
        )));
        assert!(!refused_for_the_cookie_helper(&refused(
            "served by bpf_get_socket_cookie",
            true
        )));
    }

    #[test]
    fn the_receive_flags_argument_follows_udp_recvmsgs_arity() {
        assert_eq!(udp_recv_flags_arg(Some(6)), 5);
        assert_eq!(udp_recv_flags_arg(Some(5)), 4);
        assert_eq!(udp_recv_flags_arg(Some(4)), 4);
        assert_eq!(udp_recv_flags_arg(None), 4);
    }

    #[test]
    fn every_hook_names_a_program_and_section_of_the_object() {
        let object = super::super::BPF_OBJECT;
        let has = |text: &str| {
            let needle: Vec<u8> = text.bytes().chain([0]).collect();
            object.windows(needle.len()).any(|w| w == needle)
        };
        let mut programs = Vec::new();
        for feature in FEATURES.iter().chain([&UDP_SOURCE, &SEGMENT_RTT]) {
            assert!(!feature.ways.is_empty(), "{}", feature.name);
            for way in feature.ways {
                assert!(!way.is_empty(), "{}", feature.name);
                for hook in *way {
                    assert!(
                        has(hook.program),
                        "program {} not in the object",
                        hook.program
                    );
                    let section = format!("{}/{}", hook.kind.section_prefix(), hook.target);
                    assert!(has(&section), "section {section} not in the object");
                    programs.push(hook.program);
                }
            }
        }
        let count = programs.len();
        programs.sort_unstable();
        programs.dedup();
        assert_eq!(programs.len(), count, "a program serves two ways");
    }
}
