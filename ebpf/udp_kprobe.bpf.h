/* SPDX-License-Identifier: GPL-2.0 */
/* UDP flows where only kprobes serve (neither the 6.3+ tracepoints nor fexit): the same
 * accounting as udp.bpf.h's, every read of the socket a probe read. Part of flowlens.bpf.c:
 * included after udp.bpf.h. */

/* The same for a socket address from a kprobe (a plain number: every read is a probe read). */
static __always_inline int on_udp_probed(__u64 addr, int ret, bool send)
{
	const struct sock *sk = (const struct sock *)addr;
	struct fl_sock fresh;
	struct fl_sock *v;
	__u64 key, now, cookie;
	__u16 family;

	if (ret <= 0 || !addr)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	now = bpf_ktime_get_ns();
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	v = sock_lookup_probed(cookie, addr, &key);
	if (v) {
		udp_count(v, ret, send, now);
		return 0;
	}
	__builtin_memset(&fresh, 0, sizeof(fresh));
	fresh.first_ns = now;
	fresh.last_ns = now;
	fresh.cgroup_id = sock_cgroup_id_probed(sk);
	fresh.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	fresh.family = family;
	fresh.protocol = IPPROTO_UDP;
	fresh.role = send ? FL_ROLE_CLIENT : FL_ROLE_SERVER;
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&fresh.saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&fresh.daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		__u32 *s = (__u32 *)fresh.saddr, *d = (__u32 *)fresh.daddr;

		s[2] = bpf_htonl(0xffff);
		s[3] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		d[2] = bpf_htonl(0xffff);
		d[3] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	}
	fresh.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	fresh.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	fill_proc(&fresh);
	if (send)
		udp_take_src(&fresh);
	udp_first(cookie ? cookie : addr, &fresh, ret, send, now);
	return 0;
}

/*
 * UDP datagrams where neither the 6.3+ tracepoints nor fexit are allowed but kprobes are: a
 * kprobe on entry keeps the socket per thread and function, its kretprobe counts the result.
 * (Per function, because udpv6_sendmsg calls udp_sendmsg for v4-mapped destinations.)
 */
enum fl_udp_fn { FL_UDP_SEND4 = 0, FL_UDP_SEND6 = 1, FL_UDP_RECV4 = 2, FL_UDP_RECV6 = 3 };

struct fl_udp_call {
	__u64 pid_tgid;
	__u32 fn;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* UDP calls in progress at once; LRU: a lost exit costs nothing */
	__type(key, struct fl_udp_call);
	__type(value, __u64);
} udp_calls SEC(".maps");

static __always_inline int udp_call_enter(const void *sk, __u32 fn)
{
	struct fl_udp_call call = { .pid_tgid = bpf_get_current_pid_tgid(), .fn = fn };
	__u64 addr = (__u64)sk;

	bpf_map_update_elem(&udp_calls, &call, &addr, BPF_ANY);
	return 0;
}

static __always_inline int udp_call_exit(long ret, __u32 fn)
{
	struct fl_udp_call call = { .pid_tgid = bpf_get_current_pid_tgid(), .fn = fn };
	__u64 *addrp = bpf_map_lookup_elem(&udp_calls, &call);
	__u64 addr;

	if (!addrp)
		return 0;
	addr = *addrp;
	bpf_map_delete_elem(&udp_calls, &call);
	if (fn == FL_UDP_SEND4 &&
	    BPF_CORE_READ((struct sock *)addr, __sk_common.skc_family) != AF_INET)
		return 0;
	return on_udp_probed(addr, ret, fn == FL_UDP_SEND4 || fn == FL_UDP_SEND6);
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(fl_kp_udp_send, struct sock *sk)
{
	return udp_call_enter(sk, FL_UDP_SEND4);
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(fl_krp_udp_send, int ret)
{
	return udp_call_exit(ret, FL_UDP_SEND4);
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(fl_kp_udp6_send, struct sock *sk)
{
	return udp_call_enter(sk, FL_UDP_SEND6);
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(fl_krp_udp6_send, int ret)
{
	return udp_call_exit(ret, FL_UDP_SEND6);
}

/* A receive call's entry: a peek or an error-queue read keeps no socket (address 0), so that
 * its exit counts nothing; overwriting the thread's slot, rather than leaving it, also keeps
 * a slot an earlier call left behind (its exit lost) from being counted for this one. */
static __always_inline int udp_recv_enter(struct pt_regs *ctx, const void *sk, __u32 fn)
{
	/* Both loaded, then one chosen: a load from a context pointer picked by the condition
	 * would be refused ("dereference of modified ctx ptr"). */
	__u64 p4 = PT_REGS_PARM4(ctx), p5 = PT_REGS_PARM5(ctx), flags;

	asm volatile("" : "+r"(p4), "+r"(p5));
	flags = fl_udp_recv_flags_arg == 5 ? p5 : p4;
	return udp_call_enter(flags & FL_RECV_NOT_READ ? NULL : sk, fn);
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(fl_kp_udp_recv, struct sock *sk)
{
	return udp_recv_enter(ctx, sk, FL_UDP_RECV4);
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(fl_krp_udp_recv, int ret)
{
	return udp_call_exit(ret, FL_UDP_RECV4);
}

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(fl_kp_udp6_recv, struct sock *sk)
{
	return udp_recv_enter(ctx, sk, FL_UDP_RECV6);
}

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(fl_krp_udp6_recv, int ret)
{
	return udp_call_exit(ret, FL_UDP_RECV6);
}
