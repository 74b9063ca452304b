// SPDX-License-Identifier: GPL-2.0
/* flowlens kernel side: per-socket flow accounting (CO-RE, tp_btf only).
 *
 * Programs are attached by function name from userspace; every one is optional.
 * Record layouts live in flowlens.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flowlens.h"

#define AF_INET 2
#define AF_INET6 10

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fl_sock);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);

	/* per-CPU, but a softirq may interrupt a process-context program on the same CPU */
	if (c)
		__sync_fetch_and_add(c, 1);
}

/* AF_INET/AF_INET6 x TCP/UDP only: netlink, unix, ... sockets fire the send/recv hooks too */
static __always_inline bool sock_wanted(const struct sock *sk, bool tcp_only)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 proto = sk->sk_protocol;

	if (family != AF_INET && family != AF_INET6)
		return false;
	if (proto == IPPROTO_TCP)
		return true;
	return !tcp_only && proto == IPPROTO_UDP;
}

static __always_inline void fill_rtt(struct fl_sock *v, const struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

	if (!tp)
		return;
	v->srtt_us = tp->srtt_us >> 3;
	v->rttvar_us = tp->mdev_us >> 2;
}

static __always_inline void fill_addrs(struct fl_sock *v, const struct sock *sk)
{
	if (sk->__sk_common.skc_family == AF_INET6) {
		BPF_CORE_READ_INTO(&v->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&v->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		__u32 *s = (__u32 *)v->saddr, *d = (__u32 *)v->daddr;

		/* ::ffff:a.b.c.d ; the address words stay in network order */
		s[0] = 0;
		s[1] = 0;
		s[2] = bpf_htonl(0xffff);
		s[3] = sk->__sk_common.skc_rcv_saddr;
		d[0] = 0;
		d[1] = 0;
		d[2] = bpf_htonl(0xffff);
		d[3] = sk->__sk_common.skc_daddr;
	}
	v->sport = sk->__sk_common.skc_num;
	v->dport = bpf_ntohs(sk->__sk_common.skc_dport);
}

static __always_inline void fill_proc(struct fl_sock *v)
{
	v->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(v->comm, sizeof(v->comm));
}

/* The record of a socket seen for the first time: identity from the socket itself (cgroup,
 * netns, addresses); pid/comm only when in_proc (process context). The socket is a BTF pointer
 * here: plain loads, no probe-read helper calls. */
static __always_inline void sock_fill(struct fl_sock *v, const struct sock *sk, __u8 role,
				      bool in_proc, __u64 now)
{
	__builtin_memset(v, 0, sizeof(*v));
	v->first_ns = now;
	v->last_ns = now;
	v->cgroup_id = sk->sk_cgrp_data.cgroup->kn->id;
	v->netns = sk->__sk_common.skc_net.net->ns.inum;
	v->family = sk->__sk_common.skc_family;
	v->protocol = sk->sk_protocol;
	v->role = role;
	fill_addrs(v, sk);
	if (v->protocol == IPPROTO_TCP)
		fill_rtt(v, sk);
	if (in_proc)
		fill_proc(v);
}

/* Inserts a filled record. Returns 0, -EEXIST when another CPU created the entry first (the
 * caller uses the winner), or another error when the map is full (counted). */
static __always_inline long sock_insert(__u64 *cookie, const struct fl_sock *v, __u64 flags)
{
	long err = bpf_map_update_elem(&socks, cookie, v, flags);

	if (err && err != -17 /* EEXIST */)
		stat_inc(FL_STAT_SOCKS_FULL);
	return err;
}

static __always_inline void emit(__u64 cookie, __u32 kind, const struct fl_sock *v, __u64 now)
{
	struct fl_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		stat_inc(FL_STAT_EVENTS_LOST);
		return;
	}
	e->cookie = cookie;
	e->ts_ns = now;
	e->kind = kind;
	e->_pad = 0;
	__builtin_memcpy(&e->sock, v, sizeof(e->sock));
	/*
	 * Waking the reader for every record costs a context switch per event under connection
	 * churn. The reader drains on a short timer instead; it is woken only when the ring is a
	 * quarter full, so bursts still cannot overflow it unseen. The fill level is looked at on
	 * every FL_WAKE_CHECK_EVERY-th record of a CPU only: the query reads positions that the
	 * other CPUs and the reader keep writing (about 200 ns a record under churn); between two
	 * looks a CPU adds at most a few KiB, against the three quarters left.
	 */
	__u32 idx = FL_STAT_EVENTS_SENT;
	__u64 *sent = bpf_map_lookup_elem(&stats, &idx);
	__u64 wake = BPF_RB_NO_WAKEUP;

	if (sent) {
		if ((*sent & (FL_WAKE_CHECK_EVERY - 1)) == 0 &&
		    bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >
			    bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 4)
			wake = BPF_RB_FORCE_WAKEUP;
		/* per-CPU, but a softirq may interrupt a process-context program on this CPU */
		__sync_fetch_and_add(sent, 1);
	}
	bpf_ringbuf_submit(e, wake);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fl_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct fl_sock fresh;
	struct fl_sock *v;
	__u64 cookie, now;

	if (!sock_wanted(sk, true))
		return 0;
	/* Half of a connection's state changes (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, ...) tell nothing
	 * the flow table needs: leave them before any lookup or clock read. */
	if (newstate != TCP_CLOSE && newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED)
		return 0;
	cookie = bpf_get_socket_cookie((void *)sk);
	now = bpf_ktime_get_ns();

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* inside connect(): process context. A reconnect of a known socket starts over. */
		sock_fill(&fresh, sk, FL_ROLE_CLIENT, true, now);
		sock_insert(&cookie, &fresh, BPF_ANY);
		return 0;
	}

	if (newstate == TCP_ESTABLISHED &&
	    (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)) {
		/*
		 * May run in softirq: nothing from current here. No record either: userspace
		 * finds a live flow in the map at its next gather, and one that ends before that
		 * by its close record, which carries everything an open would (one record per
		 * short-lived socket instead of two).
		 */
		__u8 role = oldstate == TCP_SYN_SENT ? FL_ROLE_CLIENT : FL_ROLE_SERVER;

		v = bpf_map_lookup_elem(&socks, &cookie);
		if (!v) {
			/* an accepted socket (or a connect the map had no room for) */
			sock_fill(&fresh, sk, role, false, now);
			long err = sock_insert(&cookie, &fresh, BPF_NOEXIST);

			if (err != -17)
				return 0;
			v = bpf_map_lookup_elem(&socks, &cookie);
			if (!v)
				return 0;
		}
		v->role = role;
		v->last_ns = now;
		fill_addrs(v, sk); /* the local port is only known now */
		fill_rtt(v, sk);
		return 0;
	}

	if (newstate != TCP_CLOSE)
		return 0;
	v = bpf_map_lookup_elem(&socks, &cookie);
	if (!v)
		return 0;
	v->last_ns = now;
	fill_rtt(v, sk);
	if (oldstate == TCP_SYN_SENT) {
		/* the source port is picked after CLOSE -> SYN_SENT, and skc_num is already
		 * released when CLOSE is traced: inet_sport survives */
		if (!v->sport)
			v->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		emit(cookie, FL_EV_CONNECT_FAILED, v, now);
	} else {
		emit(cookie, FL_EV_CLOSE, v, now);
	}
	bpf_map_delete_elem(&socks, &cookie);
	return 0;
}

static __always_inline int on_xfer(const struct sock *sk, int ret, bool send)
{
	struct fl_sock *v;
	__u64 cookie, now;
	bool tcp;

	if (ret <= 0 || !sock_wanted(sk, false))
		return 0;
	tcp = sk->sk_protocol == IPPROTO_TCP;
	cookie = bpf_get_socket_cookie((void *)sk);

	v = bpf_map_lookup_elem(&socks, &cookie);
	if (!v) {
		/* a TCP connection that predates the collector, or a UDP socket's first datagram */
		struct fl_sock fresh;
		long err;

		if (tcp && sk->__sk_common.skc_state != TCP_ESTABLISHED)
			return 0;
		now = bpf_ktime_get_ns();
		sock_fill(&fresh, sk,
			  tcp ? FL_ROLE_UNKNOWN : (send ? FL_ROLE_CLIENT : FL_ROLE_SERVER), true,
			  now);
		if (send)
			fresh.bytes_sent = ret;
		else
			fresh.bytes_rcvd = ret;
		fresh.io_count = 1;
		err = sock_insert(&cookie, &fresh, BPF_NOEXIST);
		if (!err) {
			if (!tcp)
				emit(cookie, FL_EV_OPEN, &fresh, now);
			return 0;
		}
		/* another CPU created it first: count on the winner */
		v = err == -17 ? bpf_map_lookup_elem(&socks, &cookie) : NULL;
		if (!v)
			return 0;
	}

	if (send)
		__sync_fetch_and_add(&v->bytes_sent, ret);
	else
		__sync_fetch_and_add(&v->bytes_rcvd, ret);
	if (!v->pid)
		fill_proc(v);
	if (tcp) {
		/* A TCP flow ends by its state, not by idling: no clock read on its data path
		 * (one costs about as much as the rest of this program). The RTT is re-read every
		 * FL_RTT_EVERY sends and receives: the kernel updates it on another CPU (ACKs come
		 * in softirq), so each read is a cache line fetched from there. The open and the
		 * close read it too, so a short connection needs no read on its data path. */
		if ((++v->io_count & (FL_RTT_EVERY - 1)) == 0)
			fill_rtt(v, sk);
	} else {
		/* UDP flows end after udp_idle_timeout_secs without a datagram. */
		v->last_ns = bpf_ktime_get_ns();
	}
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(fl_send, struct sock *sk, int ret, int flags)
{
	return on_xfer(sk, ret, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fl_recv, struct sock *sk, int ret, int flags)
{
	return on_xfer(sk, ret, false);
}

/*
 * The last word on a TCP socket. The kernel skips a program invoked while the same program is
 * already running on that CPU (a softirq state change interrupting a process-context one), so
 * fl_set_state can miss a close. Destruction is traced by this other program: whatever
 * fl_set_state left behind is closed here. Userspace counts the skipped runs as lost events.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(fl_destroy, struct sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct fl_sock *v = bpf_map_lookup_elem(&socks, &cookie);
	__u64 now;

	if (!v)
		return 0;
	now = bpf_ktime_get_ns();
	v->last_ns = now;
	emit(cookie, FL_EV_CLOSE, v, now);
	bpf_map_delete_elem(&socks, &cookie);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(fl_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie((void *)sk);
	struct fl_sock *v = bpf_map_lookup_elem(&socks, &cookie);

	if (v)
		__sync_fetch_and_add(&v->retrans, 1);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(fl_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct fl_sock *v = bpf_map_lookup_elem(&socks, &cookie);

	if (!v)
		return 0;
	fill_rtt(v, sk);
	v->last_ns = bpf_ktime_get_ns();
	return 0;
}

/* Floors for benchmarks: the cost of merely tracing the hooks. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fl_noop_set_state)
{
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(fl_noop_send)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fl_noop_recv)
{
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(fl_noop_destroy)
{
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(fl_noop_retransmit)
{
	return 0;
}

/*
 * Capability checks for `flowlens doctor`: trivial programs on the hook types other kernels offer
 * (kprobes, fentry/fexit). The collector does not use them; doctor loads and attaches each one
 * to report whether this kernel allows that kind of hook, and why not.
 */
SEC("kprobe/tcp_connect")
int fl_check_kprobe(void *ctx)
{
	return 0;
}

SEC("fentry/tcp_connect")
int BPF_PROG(fl_check_fentry)
{
	return 0;
}

SEC("fexit/tcp_connect")
int BPF_PROG(fl_check_fexit)
{
	return 0;
}
