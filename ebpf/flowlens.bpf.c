// SPDX-License-Identifier: GPL-2.0
/* flowlens kernel side: per-socket flow accounting (CO-RE; Linux 5.10 and later).
 *
 * Programs are attached by function name from userspace; every one is optional, and userspace
 * picks, per feature, the first way (tp_btf, fexit, kprobe, iterator) this kernel allows.
 * Record layouts live in flowlens.h.
 *
 * TCP has no program on its data path: a TCP socket keeps its own counters (bytes_acked,
 * bytes_received, total_retrans, srtt, mdev). They are read when the socket closes
 * (fl_set_state, fl_destroy) and, for live sockets, at every gather by the iterator
 * fl_refresh, which visits every open file and reads the tracked sockets among them. Only UDP
 * has per-datagram programs.
 *
 * Kernel differences are handled by CO-RE and by load-time constants, not version numbers:
 * - bpf_get_socket_cookie() is allowed in tracing programs from 5.12 only; before, the socket's
 *   identity is its own skc_cookie when something generated it (sock_diag did, for the sockets
 *   of the start-up scan), else its address (fl_cookie_helper = 0, set by userspace).
 * - struct sock_cgroup_data has its `cgroup` member from 5.15; before, the pointer is in `val`.
 * - sk_flags moved into sock_common (skc_flags) in 6.x.
 *
 * One object, one translation unit; the programs live in headers by feature, included below in
 * an order where each uses only what the ones before it define:
 *   maps.bpf.h        socks, events, stats; stat_inc(), emit()
 *   sock.bpf.h        a socket's key, entry, cgroup, namespace, addresses, owner
 *   tcp_state.bpf.h   TCP connections, ends, connect failures: fl_set_state, fl_destroy;
 *                     the per-segment RTT: fl_tcp_probe
 *   udp_source.bpf.h  the source address of unbound UDP senders: fl_*udp*_send_skb
 *   udp.bpf.h         UDP flows by tracepoint or fexit: fl_send, fl_recv, fl_udp*msg*
 *   udp_kprobe.bpf.h  UDP flows by kprobe: fl_kp_udp{,6}_{send,recv}, fl_krp_*
 *   listen.bpf.h      listeners' drops (map listen_drops), written by the iterators
 *   iter.bpf.h        the gather's iterators: fl_refresh, fl_refresh_probed
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flowlens.h"

#define AF_INET 2
#define AF_INET6 10
#define EEXIST 17

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before loading: whether bpf_get_socket_cookie() may be called from tracing
 * programs on this kernel (5.12+). The verifier never sees the branch not taken. */
const volatile __u32 fl_cookie_helper = 1;

/* Set by userspace before loading, from the kernel's BTF: which argument of udp_recvmsg and
 * udpv6_recvmsg holds the receive flags, for the kprobe programs (which, unlike fexit ones, are
 * not refused when they assume another arity). 4: Linux 5.19+ (sk, msg, len, flags, addr_len;
 * 6.16 dropped addr_len); 5: before (sk, msg, len, noblock, flags, addr_len). Were it wrong on
 * an older kernel, the 4th argument read is `noblock`, 0 or MSG_DONTWAIT: no read would be
 * skipped, none wrongly. */
const volatile __u32 fl_udp_recv_flags_arg = 4;

/* The programs and maps, by feature; each file uses what the ones before it define. */
#include "maps.bpf.h"
#include "sock.bpf.h"
#include "tcp_state.bpf.h"
#include "udp_source.bpf.h"
#include "udp.bpf.h"
#include "udp_kprobe.bpf.h"
#include "listen.bpf.h"
#include "iter.bpf.h"
