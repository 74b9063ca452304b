/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The source address of a UDP socket that sends without being bound to an address (never bound
 * or connected: statsd clients, resolvers; or bound to the wildcard): the socket holds none,
 * the kernel picks one per datagram by a route lookup, on a flowi4/flowi6 on the stack of
 * udp_sendmsg/udpv6_sendmsg that is gone when the send hooks run. fl_udp_send_skb and
 * fl_udp6_send_skb (fexit, else kprobe, on udp_send_skb/udp_v6_send_skb: every datagram that
 * leaves a UDP socket, none of TCP's) note that flow's source and local port in this CPU's slot;
 * the same thread's send hook, on the same CPU right after, takes it for the socket's first
 * datagram. A per-CPU slot costs less per datagram than a map keyed by thread: a thread moved
 * to another CPU in between (rare) finds no match and the flow keeps the unspecified address.
 * A socket that sends from several addresses is one flow: it keeps its first datagram's.
 * Where neither hook kind is allowed (6.18 locked down: only tracepoints, iterators and cgroup
 * programs, none of which sees the chosen source), such flows keep 0.0.0.0 / ::.
 *
 * Part of flowlens.bpf.c: included after sock.bpf.h.
 */
struct fl_udp_src {
	__u64 pid_tgid;
	__u8 saddr[16]; /* v4-mapped for IPv4, as fl_sock.saddr */
	__u16 sport;    /* host byte order */
	__u16 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_udp_src);
} udp_src SEC(".maps");

static __always_inline bool addr_unspecified(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	/* :: or ::ffff:0.0.0.0 */
	return !w[0] && !w[1] && (!w[2] || w[2] == bpf_htonl(0xffff)) && !w[3];
}

/* A new entry's first datagram was sent without a source address of its own: the source the
 * kernel chose for it, when this thread's udp_send_skb just noted one for this local port. */
static __always_inline void udp_take_src(struct fl_sock *v)
{
	__u32 zero = 0;
	struct fl_udp_src *src;

	if (!addr_unspecified(v->saddr))
		return;
	src = bpf_map_lookup_elem(&udp_src, &zero);
	if (!src || src->pid_tgid != bpf_get_current_pid_tgid() || src->sport != v->sport)
		return;
	__builtin_memcpy(v->saddr, src->saddr, sizeof(v->saddr));
}

/* The source and local port of a UDP datagram about to leave, in this CPU's slot (see
 * udp_take_src). Nothing else: this runs for every datagram sent. */
static __always_inline void udp_src_note(const __u8 *saddr16, __u16 sport_be)
{
	__u32 zero = 0;
	struct fl_udp_src *src = bpf_map_lookup_elem(&udp_src, &zero);

	if (!src)
		return;
	src->pid_tgid = bpf_get_current_pid_tgid();
	src->sport = bpf_ntohs(sport_be);
	__builtin_memcpy(src->saddr, saddr16, sizeof(src->saddr));
}

static __always_inline void udp_src_note4(__be32 saddr, __u16 sport_be)
{
	__u32 a[4] = { 0, 0, bpf_htonl(0xffff), saddr };

	udp_src_note((const __u8 *)a, sport_be);
}

/* fexit: the flow's fields are the caller's (alive); the skb may be gone, it is not read. */
SEC("fexit/udp_send_skb")
int BPF_PROG(fl_udp_send_skb, struct sk_buff *skb, struct flowi4 *fl4, struct inet_cork *cork,
	     int ret)
{
	udp_src_note4(fl4->saddr, fl4->uli.ports.sport);
	return 0;
}

SEC("fexit/udp_v6_send_skb")
int BPF_PROG(fl_udp6_send_skb, struct sk_buff *skb, struct flowi6 *fl6, struct inet_cork *cork,
	     int ret)
{
	struct in6_addr saddr = fl6->saddr;

	udp_src_note((const __u8 *)&saddr, fl6->uli.ports.sport);
	return 0;
}

/* kprobe: the same at the entry, by probe reads (the flow's source and ports are set by then) */
SEC("kprobe/udp_send_skb")
int BPF_KPROBE(fl_kp_udp_send_skb, struct sk_buff *skb, struct flowi4 *fl4)
{
	udp_src_note4(BPF_CORE_READ(fl4, saddr), BPF_CORE_READ(fl4, uli.ports.sport));
	return 0;
}

SEC("kprobe/udp_v6_send_skb")
int BPF_KPROBE(fl_kp_udp6_send_skb, struct sk_buff *skb, struct flowi6 *fl6)
{
	struct in6_addr saddr;

	BPF_CORE_READ_INTO(&saddr, fl6, saddr);
	udp_src_note((const __u8 *)&saddr, BPF_CORE_READ(fl6, uli.ports.sport));
	return 0;
}
