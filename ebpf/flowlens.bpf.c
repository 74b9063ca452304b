// SPDX-License-Identifier: GPL-2.0
/* flowlens kernel side: per-socket flow accounting (CO-RE; Linux 5.10 and later).
 *
 * Programs are attached by function name from userspace; every one is optional, and userspace
 * picks, per feature, the first hook kind this kernel allows (tp_btf, then fexit). Record
 * layouts live in flowlens.h.
 *
 * TCP has no program on its data path: a TCP socket keeps its own counters (bytes_acked,
 * bytes_received, total_retrans, srtt, mdev). They are read when the socket closes
 * (fl_set_state) and, for live sockets, at every gather by the map iterator fl_refresh, which
 * follows the socket address stored in each entry. Only UDP has per-datagram programs.
 *
 * Kernel differences are handled by CO-RE and by load-time constants, not version numbers:
 * - bpf_get_socket_cookie() is allowed in tracing programs from 5.12 only; before, the socket's
 *   identity is its own skc_cookie when something generated it (sock_diag did, for the sockets
 *   of the start-up scan), else its address (fl_cookie_helper = 0, set by userspace).
 * - struct sock_cgroup_data has its `cgroup` member from 5.15; before, the pointer is in `val`.
 * - sk_flags moved into sock_common (skc_flags) in 6.x.
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
#define SEND_SHUTDOWN 2
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000
/* Receive calls that take no datagram: a peek (the same datagram is read again, for real) and
 * a read of the error queue (an ICMP error's copy of a datagram this socket sent). */
#define FL_RECV_NOT_READ (MSG_PEEK | MSG_ERRQUEUE)

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

/* Who listens on a port: the process that called listen(), for the sockets it will accept
 * (their state changes run in softirq, where the current task is anyone's). */
struct fl_listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct fl_listener {
	__u32 pid;
	char comm[FL_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fl_listener_key);
	__type(value, struct fl_listener);
} listeners SEC(".maps");

/* Before 5.15 (and its `cgroup` member), struct sock_cgroup_data was a union whose `val` holds
 * the cgroup pointer, or, with bit 0 set, net_prio/net_cls data (the socket then counts as the
 * root cgroup's, as the kernel's own sock_cgroup_ptr() says). */
struct sock_cgroup_data___old {
	union {
		__u64 val;
	};
} __attribute__((preserve_access_index));

/* Before 6.x, sk_flags was a member of struct sock, not sock_common's skc_flags. */
struct sock___old {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);

	/* per-CPU, but a softirq may interrupt a process-context program on the same CPU */
	if (c)
		__sync_fetch_and_add(c, 1);
}

/* The address a pointer holds, as a plain number (the verifier tracks a pointer copied by a
 * probe read as a scalar, which may be stored in a map and used as a key). */
static __always_inline __u64 addr_of(const void *p)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &p);
	return v;
}

/* AF_INET/AF_INET6 x TCP/UDP only: netlink, unix, ... sockets fire the send/recv hooks too */
static __always_inline bool sock_wanted(const struct sock *sk, __u16 proto_wanted)
{
	__u16 family = sk->__sk_common.skc_family;

	if (family != AF_INET && family != AF_INET6)
		return false;
	return sk->sk_protocol == proto_wanted;
}

/* The key of a socket that is not in "socks" yet. */
static __always_inline __u64 sock_key(const struct sock *sk)
{
	__u64 cookie;

	if (fl_cookie_helper)
		return bpf_get_socket_cookie((void *)sk);
	cookie = sk->__sk_common.skc_cookie.counter;
	return cookie ? cookie : addr_of(sk);
}

/* The entry of a socket and its key. Without the cookie helper, a socket was entered under its
 * cookie if it had one then (start-up scan), else under its address; a cookie generated later
 * (`ss`, SO_COOKIE) does not move it, so both are tried. */
static __always_inline struct fl_sock *sock_lookup(const struct sock *sk, __u64 *key)
{
	struct fl_sock *v;
	__u64 cookie;

	if (fl_cookie_helper) {
		*key = bpf_get_socket_cookie((void *)sk);
		return bpf_map_lookup_elem(&socks, key);
	}
	cookie = sk->__sk_common.skc_cookie.counter;
	if (cookie) {
		*key = cookie;
		v = bpf_map_lookup_elem(&socks, key);
		if (v)
			return v;
	}
	*key = addr_of(sk);
	return bpf_map_lookup_elem(&socks, key);
}

static __always_inline __u64 sock_cgroup_id(const struct sock *sk)
{
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return sk->sk_cgrp_data.cgroup->kn->id;

	struct sock_cgroup_data___old *data = (void *)&sk->sk_cgrp_data;
	__u64 val = BPF_CORE_READ(data, val);

	if (!val || (val & 1))
		return 1; /* the cgroup2 root */
	return BPF_CORE_READ((struct cgroup *)val, kn, id);
}

static __always_inline unsigned long sock_flags(const struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return sk->__sk_common.skc_flags;
	return BPF_CORE_READ((struct sock___old *)sk, sk_flags);
}

static __always_inline __u64 sub_or_zero(__u64 a, __u64 b)
{
	return a > b ? a - b : 0;
}

/* Writes a TCP socket's counters into its entry, less what it had when tracking began:
 * payload bytes (the caller took the SYN's and FINs' sequence numbers off), retransmissions,
 * and the RTT as TCP_INFO reports it. */
static __always_inline void write_counters(struct fl_sock *v, __u64 acked, __u64 rcvd,
					   __u32 retrans, __u32 srtt_us, __u32 mdev_us)
{
	v->bytes_sent = sub_or_zero(acked, v->base_acked);
	v->bytes_rcvd = sub_or_zero(rcvd, v->base_rcvd);
	v->retrans = retrans > v->base_retrans ? retrans - v->base_retrans : 0;
	v->srtt_us = srtt_us >> 3;
	v->rttvar_us = mdev_us >> 2;
}

/*
 * A TCP socket's counters, from its own tcp_sock (the same numbers TCP_INFO reports). The
 * sequence space also counts the SYN (bytes_acked of a client: base_acked is 1 for it) and the
 * FINs: ours once acknowledged, the peer's once received (SOCK_DONE), which are taken off so
 * that the counts are payload bytes. fin_sent: our FIN went out (the state says so).
 */
static __always_inline void fill_tcp(struct fl_sock *v, const struct sock *sk, bool fin_sent)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	__u64 acked, rcvd;

	if (!tp)
		return;
	acked = tp->bytes_acked;
	rcvd = tp->bytes_received;
	if (fin_sent && tp->snd_una == tp->write_seq)
		acked -= 1;
	if (sock_flags(sk) & (1UL << SOCK_DONE))
		rcvd -= 1;
	write_counters(v, acked, rcvd, tp->total_retrans, tp->srtt_us, tp->mdev_us);
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
 * netns, addresses); pid/comm only when in_proc (process context). */
static __always_inline void sock_fill(struct fl_sock *v, const struct sock *sk, __u8 role,
				      bool in_proc, __u64 now)
{
	__builtin_memset(v, 0, sizeof(*v));
	v->first_ns = now;
	v->last_ns = now;
	v->cgroup_id = sock_cgroup_id(sk);
	v->netns = sk->__sk_common.skc_net.net->ns.inum;
	v->family = sk->__sk_common.skc_family;
	v->protocol = sk->sk_protocol;
	v->role = role;
	fill_addrs(v, sk);
	if (in_proc)
		fill_proc(v);
}

/* Inserts a filled record. Returns 0, -EEXIST when another CPU created the entry first (the
 * caller uses the winner), or another error when the map is full (counted). */
static __always_inline long sock_insert(__u64 *key, const struct fl_sock *v, __u64 flags)
{
	long err = bpf_map_update_elem(&socks, key, v, flags);

	if (err && err != -EEXIST)
		stat_inc(FL_STAT_SOCKS_FULL);
	return err;
}

static __always_inline void emit(__u64 key, __u32 kind, const struct fl_sock *v, __u64 now,
				 __u32 err)
{
	struct fl_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		stat_inc(FL_STAT_EVENTS_LOST);
		return;
	}
	e->cookie = key;
	e->ts_ns = now;
	e->kind = kind;
	e->err = err;
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

/* listen(): process context. Its accepted sockets take this pid and comm. */
static __always_inline void listener_start(const struct sock *sk)
{
	struct fl_listener_key k = {
		.netns = sk->__sk_common.skc_net.net->ns.inum,
		.port = sk->__sk_common.skc_num,
	};
	struct fl_listener l = {};

	l.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(l.comm, sizeof(l.comm));
	bpf_map_update_elem(&listeners, &k, &l, BPF_ANY);
}

static __always_inline void listener_owns(struct fl_sock *v)
{
	struct fl_listener_key k = { .netns = v->netns, .port = v->sport };
	struct fl_listener *l = bpf_map_lookup_elem(&listeners, &k);

	if (l) {
		v->pid = l->pid;
		__builtin_memcpy(v->comm, l->comm, sizeof(v->comm));
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fl_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct fl_sock fresh;
	struct fl_sock *v;
	__u64 key, now;
	__u32 err;

	if (!sock_wanted(sk, IPPROTO_TCP))
		return 0;
	if (newstate == TCP_LISTEN) {
		listener_start(sk);
		return 0;
	}
	/* Half of a connection's state changes (FIN_WAIT*, CLOSE_WAIT, LAST_ACK, ...) tell nothing
	 * the flow table needs: leave them before any lookup or clock read. */
	if (newstate != TCP_CLOSE && newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* inside connect(): process context. A reconnect of a known socket starts over. */
		key = sock_key(sk);
		sock_fill(&fresh, sk, FL_ROLE_CLIENT, true, bpf_ktime_get_ns());
		fresh.base_acked = 1; /* the SYN, once the SYN-ACK acknowledges it */
		fresh.flags = FL_SOCK_PENDING; /* not a flow until established */
		sock_insert(&key, &fresh, BPF_ANY);
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

		if (role == FL_ROLE_CLIENT) {
			v = sock_lookup(sk, &key);
			if (v) {
				/* Entered at connect(), addresses and all but the local port, picked
				 * after CLOSE -> SYN_SENT. Counters and RTT are read at the gather
				 * or the close. */
				v->sport = sk->__sk_common.skc_num;
				v->flags = 0;
				return 0;
			}
		}
		/* an accepted socket (or a connect the map had no room for) */
		key = sock_key(sk);
		sock_fill(&fresh, sk, role, false, bpf_ktime_get_ns());
		fresh.base_acked = role == FL_ROLE_CLIENT;
		if (role == FL_ROLE_SERVER)
			listener_owns(&fresh);
		sock_insert(&key, &fresh, BPF_NOEXIST);
		return 0;
	}

	if (newstate != TCP_CLOSE)
		return 0;
	v = sock_lookup(sk, &key);
	if (!v)
		return 0;
	now = bpf_ktime_get_ns();
	v->last_ns = now;
	/* Why it ended: every path of the kernel that fails a connection (tcp_reset: an RST,
	 * tcp_write_err: retries exhausted, an ICMP error in SYN_SENT) sets sk_err before
	 * tcp_done() moves the socket to CLOSE; the application reads (and clears) it later. A
	 * close of our own (even one that sends an RST) sets none before CLOSE. */
	err = sk->sk_err;
	if (oldstate == TCP_SYN_SENT) {
		/* the source port is picked after CLOSE -> SYN_SENT, and skc_num is already
		 * released when CLOSE is traced: inet_sport survives */
		if (!v->sport)
			v->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		emit(key, FL_EV_CONNECT_FAILED, v, now, err);
	} else {
		fill_tcp(v, sk,
			 oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 ||
				 oldstate == TCP_CLOSING || oldstate == TCP_LAST_ACK);
		emit(key, FL_EV_CLOSE, v, now, err);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

/*
 * The last word on a TCP socket. The kernel skips a program invoked while the same program is
 * already running on that CPU (a softirq state change interrupting a process-context one), so
 * fl_set_state can miss a close. Destruction is traced by this other program: whatever
 * fl_set_state left behind is closed here. Userspace counts the skipped runs as lost events.
 * The state before CLOSE is gone here: our FIN counts as sent when sending was shut down.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(fl_destroy, struct sock *sk)
{
	struct fl_sock *v;
	__u64 key, now;

	v = sock_lookup(sk, &key);
	if (!v)
		return 0;
	now = bpf_ktime_get_ns();
	v->last_ns = now;
	fill_tcp(v, sk, BPF_CORE_READ_BITFIELD(sk, sk_shutdown) & SEND_SHUTDOWN);
	/* sk_err as the application left it: it may have read (and cleared) it since */
	emit(key, FL_EV_CLOSE, v, now, sk->sk_err);
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

/*
 * UDP sockets are keyed by their cookie when it exists, else by their address, and every UDP
 * program looks both up: the kprobe programs cannot call bpf_get_socket_cookie() (they read
 * the socket's own cookie, which the tp_btf and fexit programs generate where allowed), and
 * the programs serving "UDP sent" and "UDP received" may be of different kinds, which must
 * name a socket alike.
 */
static __always_inline struct fl_sock *udp_lookup(__u64 cookie, __u64 addr, __u64 *key)
{
	struct fl_sock *v;

	if (cookie) {
		*key = cookie;
		v = bpf_map_lookup_elem(&socks, key);
		if (v)
			return v;
	}
	*key = addr;
	return bpf_map_lookup_elem(&socks, key);
}

/* Counts a datagram on a known UDP socket. */
static __always_inline void udp_count(struct fl_sock *v, int ret, bool send, __u64 now)
{
	if (send)
		__sync_fetch_and_add(&v->bytes_sent, ret);
	else
		__sync_fetch_and_add(&v->bytes_rcvd, ret);
	if (!v->pid)
		fill_proc(v);
	/* UDP flows end after udp_idle_timeout_secs without a datagram. */
	v->last_ns = now;
}

/* A UDP socket's first datagram, its record filled by the caller: enters it, or counts on the
 * entry another CPU made first. */
static __always_inline void udp_first(__u64 key, struct fl_sock *fresh, int ret, bool send,
				      __u64 now)
{
	struct fl_sock *v;
	long err;

	if (send)
		fresh->bytes_sent = ret;
	else
		fresh->bytes_rcvd = ret;
	err = sock_insert(&key, fresh, BPF_NOEXIST);
	if (!err) {
		emit(key, FL_EV_OPEN, fresh, now, 0);
		return;
	}
	v = err == -EEXIST ? bpf_map_lookup_elem(&socks, &key) : NULL;
	if (v)
		udp_count(v, ret, send, now);
}

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

/* A UDP datagram of `ret` bytes sent or received (process context), `sk` a BTF pointer. */
static __always_inline int on_udp(const struct sock *sk, int ret, bool send)
{
	struct fl_sock fresh;
	struct fl_sock *v = NULL;
	__u64 key, now, cookie, addr = 0;

	if (ret <= 0 || !sock_wanted(sk, IPPROTO_UDP))
		return 0;
	now = bpf_ktime_get_ns();
	/* The cookie: generated here where the helper is allowed, so that the socket's address
	 * (a probe read, which costs more than the rest of this program) is looked at only for
	 * its first datagram, or for every datagram on kernels without the helper. */
	cookie = fl_cookie_helper ? bpf_get_socket_cookie((void *)sk)
				  : sk->__sk_common.skc_cookie.counter;
	if (cookie) {
		key = cookie;
		v = bpf_map_lookup_elem(&socks, &key);
	}
	if (!v) {
		/* a first datagram, or a socket a kprobe program entered by its address */
		addr = addr_of(sk);
		key = addr;
		v = bpf_map_lookup_elem(&socks, &key);
	}
	if (v) {
		udp_count(v, ret, send, now);
		return 0;
	}
	sock_fill(&fresh, sk, send ? FL_ROLE_CLIENT : FL_ROLE_SERVER, true, now);
	if (send)
		udp_take_src(&fresh);
	udp_first(cookie ? cookie : addr, &fresh, ret, send, now);
	return 0;
}

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
	v = udp_lookup(cookie, addr, &key);
	if (v) {
		udp_count(v, ret, send, now);
		return 0;
	}
	__builtin_memset(&fresh, 0, sizeof(fresh));
	fresh.first_ns = now;
	fresh.last_ns = now;
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		fresh.cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	} else {
		struct sock_cgroup_data___old *data = (void *)&sk->sk_cgrp_data;
		__u64 val = BPF_CORE_READ(data, val);

		fresh.cgroup_id = (!val || (val & 1)) ? 1 : BPF_CORE_READ((struct cgroup *)val, kn, id);
	}
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

/* UDP datagrams, Linux 6.3+: the socket layer's tracepoints (TCP calls leave at once). */
SEC("tp_btf/sock_send_length")
int BPF_PROG(fl_send, struct sock *sk, int ret, int flags)
{
	return on_udp(sk, ret, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fl_recv, struct sock *sk, int ret, int flags)
{
	/* one test of a value at hand before anything else: peeks and error-queue reads are no
	 * datagram received (and TCP calls, which fire this tracepoint too, leave in on_udp) */
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

/* UDP datagrams before 6.3: fexit of the protocol's own functions. udpv6_sendmsg hands
 * v4-mapped destinations to udp_sendmsg: an AF_INET6 socket is counted by the v6 program only.
 * udp_recvmsg and udpv6_recvmsg lost their `noblock` argument in 5.19 and their `addr_len` in
 * 6.16: one program for each arity, userspace tries the longest first (a program whose return
 * value sits after fewer arguments would read an argument as the return value where there are
 * more; the verifier refuses one that reads past the last). Peeks and error-queue reads are no
 * datagram received (FL_RECV_NOT_READ). */
SEC("fexit/udp_sendmsg")
int BPF_PROG(fl_udp_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	if (sk->__sk_common.skc_family != AF_INET)
		return 0;
	return on_udp(sk, ret, true);
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fl_udpv6_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	return on_udp(sk, ret, true);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fl_udp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fl_udpv6_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fl_udp_recvmsg_noaddrlen, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fl_udpv6_recvmsg_noaddrlen, struct sock *sk, struct msghdr *msg, size_t len,
	     int flags, int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fl_udp_recvmsg_noblock, struct sock *sk, struct msghdr *msg, size_t len,
	     int noblock, int flags, int *addr_len, int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fl_udpv6_recvmsg_noblock, struct sock *sk, struct msghdr *msg, size_t len,
	     int noblock, int flags, int *addr_len, int ret)
{
	if (flags & FL_RECV_NOT_READ)
		return 0;
	return on_udp(sk, ret, false);
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

/*
 * Probe reads cost far more per call than per byte on these machines (about 300 ns a call),
 * so the iterators read each span of a socket they need in one call, into a per-CPU scratch
 * buffer, and take the fields from there at their CO-RE offsets.
 */
#define FL_SPAN_MAX 4096

struct fl_span {
	__u8 b[FL_SPAN_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_span);
} span_buf SEC(".maps");

#define SPAN_ADD(off, size)                                                                       \
	do {                                                                                      \
		if ((off) < lo)                                                                   \
			lo = (off);                                                               \
		if ((off) + (size) > hi)                                                          \
			hi = (off) + (size);                                                      \
	} while (0)

/* What the gather takes from a TCP socket. */
struct fl_tcp_now {
	__u64 acked;
	__u64 rcvd;
	__u32 snd_una;
	__u32 write_seq;
	__u32 srtt_us;
	__u32 mdev_us;
	__u32 total_retrans;
	__u32 num;
	__u16 dport_be;
	__u8 state;
};

/* The socket's identity fields (sock_common) at `sk`, in one probe read. */
static __always_inline bool read_common(const void *sk, struct fl_tcp_now *t, __u64 *cookie)
{
	__u32 o_ports = bpf_core_field_offset(struct sock_common, skc_portpair);
	__u32 o_state = bpf_core_field_offset(struct sock_common, skc_state);
	__u32 o_cookie = bpf_core_field_offset(struct sock_common, skc_cookie);
	__u32 lo = o_ports, hi = o_ports + 4, zero = 0, len;
	struct fl_span *buf = bpf_map_lookup_elem(&span_buf, &zero);

	SPAN_ADD(o_state, 1);
	SPAN_ADD(o_cookie, 8);
	len = hi - lo;
	if (!buf || len > FL_SPAN_MAX || bpf_probe_read_kernel(buf->b, len, sk + lo))
		return false;
	__u32 ports = *(__u32 *)&buf->b[o_ports - lo];

	t->dport_be = ports & 0xffff; /* skc_dport, then skc_num, in memory order */
	t->num = ports >> 16;
	t->state = buf->b[o_state - lo];
	*cookie = *(__u64 *)&buf->b[o_cookie - lo];
	return true;
}

/* The counters of the TCP socket at `tp`, in one probe read. */
static __always_inline bool read_counters(const void *tp, struct fl_tcp_now *t)
{
	__u32 o_acked = bpf_core_field_offset(struct tcp_sock, bytes_acked);
	__u32 o_rcvd = bpf_core_field_offset(struct tcp_sock, bytes_received);
	__u32 o_una = bpf_core_field_offset(struct tcp_sock, snd_una);
	__u32 o_wseq = bpf_core_field_offset(struct tcp_sock, write_seq);
	__u32 o_srtt = bpf_core_field_offset(struct tcp_sock, srtt_us);
	__u32 o_mdev = bpf_core_field_offset(struct tcp_sock, mdev_us);
	__u32 o_retr = bpf_core_field_offset(struct tcp_sock, total_retrans);
	__u32 lo = o_acked, hi = o_acked + 8, zero = 0, len;
	struct fl_span *buf = bpf_map_lookup_elem(&span_buf, &zero);

	SPAN_ADD(o_rcvd, 8);
	SPAN_ADD(o_una, 4);
	SPAN_ADD(o_wseq, 4);
	SPAN_ADD(o_srtt, 4);
	SPAN_ADD(o_mdev, 4);
	SPAN_ADD(o_retr, 4);
	len = hi - lo;
	if (!buf || len > FL_SPAN_MAX || bpf_probe_read_kernel(buf->b, len, tp + lo))
		return false;
	t->acked = *(__u64 *)&buf->b[o_acked - lo];
	t->rcvd = *(__u64 *)&buf->b[o_rcvd - lo];
	t->snd_una = *(__u32 *)&buf->b[o_una - lo];
	t->write_seq = *(__u32 *)&buf->b[o_wseq - lo];
	t->srtt_us = *(__u32 *)&buf->b[o_srtt - lo];
	t->mdev_us = *(__u32 *)&buf->b[o_mdev - lo];
	t->total_retrans = *(__u32 *)&buf->b[o_retr - lo];
	return true;
}

/* Writes a live TCP socket's counters into its entry: payload bytes (less the FINs: ours
 * once acked, the peer's once in), retransmissions, RTT. */
static __always_inline void refresh_entry(struct fl_sock *v, const struct fl_tcp_now *t)
{
	__u64 acked = t->acked, rcvd = t->rcvd;
	__u8 state = t->state;

	if ((state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING ||
	     state == TCP_LAST_ACK) &&
	    t->snd_una == t->write_seq)
		acked -= 1;
	if (state == TCP_CLOSE_WAIT || state == TCP_CLOSING || state == TCP_LAST_ACK)
		rcvd -= 1;
	write_counters(v, acked, rcvd, t->total_retrans, t->srtt_us, t->mdev_us);
}

static __always_inline bool state_has_counters(__u8 state)
{
	return state != TCP_SYN_SENT && state != TCP_SYN_RECV && state != TCP_CLOSE &&
	       state != TCP_LISTEN;
}

static __always_inline void take_owner(struct fl_sock *v, struct task_struct *task)
{
	if (!v->pid) {
		v->pid = task->tgid;
		bpf_probe_read_kernel(v->comm, sizeof(v->comm), task->comm);
	}
}

/*
 * Listening TCP sockets, found by the gather's iterators, with the drops each has counted so
 * far (sk_drops). A listener whose queues overflow drops connection attempts before any socket
 * exists for them, and counts each in its own sk_drops (tcp_listendrop(), which also counts it
 * in the namespace's TcpExtListenDrops). sk_drops also counts the segments the receive path
 * discards for the listener: a handshake's last ACK dropped with the accept queue full counts
 * there a second time, a SYN retransmitted for a handshake in progress once. Userspace empties
 * the map as it reads it after each run, so that it holds one run's listeners; a listener
 * without room is counted (FL_STAT_LISTEN_FULL).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct fl_listen_key);
	__type(value, struct fl_listen);
} listen_drops SEC(".maps");

static __always_inline void listen_record(__u64 sk, __u64 ino, __u64 cgroup_id, __u32 netns,
					  __u16 port, __u32 drops)
{
	struct fl_listen_key k = { .sk = sk, .ino = ino };
	struct fl_listen v = {
		.cgroup_id = cgroup_id,
		.netns = netns,
		.drops = drops,
		.port = port,
	};

	/* BPF_ANY: processes that share a listener's file (a pre-forked server) each show it */
	if (bpf_map_update_elem(&listen_drops, &k, &v, BPF_ANY))
		stat_inc(FL_STAT_LISTEN_FULL);
}

/* A TCP socket's drop counter as sk_drops_read() sums it: 6.18 moved the counters of UDP and
 * raw sockets to sk_drop_counters (two per-NUMA-node halves), which TCP sockets leave NULL;
 * they still count in sk_drops, on every kernel. Both are read in case that changes. */
static __always_inline __u32 sock_drops(const struct sock *sk)
{
	__u32 drops = BPF_CORE_READ(sk, sk_drops.counter);

	if (bpf_core_field_exists(sk->sk_drop_counters)) {
		struct numa_drop_counters *ndc = BPF_CORE_READ(sk, sk_drop_counters);

		if (ndc)
			drops += BPF_CORE_READ(ndc, drops0.counter) + BPF_CORE_READ(ndc, drops1.counter);
	}
	return drops;
}

/* The typed iterator's socket file that is not in "socks": a TCP listener's drops. Most such
 * files are unix or UDP sockets: the first test reads struct socket, already in cache. (A
 * listening socket is still SS_UNCONNECTED: listen() requires it and leaves it so.) */
static __always_inline void listen_seen(struct file *file, struct socket *sock, struct sock *sk)
{
	if (sock->type != SOCK_STREAM || sock->state != SS_UNCONNECTED)
		return;
	if (sk->__sk_common.skc_state != TCP_LISTEN || !sock_wanted(sk, IPPROTO_TCP))
		return;
	listen_record(addr_of(sk), file->f_inode->i_ino, sock_cgroup_id(sk),
		      sk->__sk_common.skc_net.net->ns.inum, sk->__sk_common.skc_num, sock_drops(sk));
}

/* The same for the probed iterator, whose `sk` is a plain number (every read a probe read);
 * the caller read its state and local port already. */
static __always_inline void listen_seen_probed(struct file *file, const struct sock *sk, __u16 port)
{
	__u64 cgroup_id;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	} else {
		struct sock_cgroup_data___old *data = (void *)&sk->sk_cgrp_data;
		__u64 val = BPF_CORE_READ(data, val);

		cgroup_id = (!val || (val & 1)) ? 1 : BPF_CORE_READ((struct cgroup *)val, kn, id);
	}
	listen_record(addr_of(sk), file->f_inode->i_ino, cgroup_id,
		      BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum), port, sock_drops(sk));
}

/*
 * Whether the entry found under a socket's key is that socket's: its ports must be the
 * socket's. A connect() not answered yet (FL_SOCK_PENDING) was entered at CLOSE -> SYN_SENT,
 * before the kernel picked its local port: it takes it here, and is not stale for that.
 * An entry with other ports was made for a socket whose end fl_set_state and fl_destroy both
 * missed (keyed by address, a later socket now lives there): counted once (FL_STAT_STALE_SOCKS,
 * which userspace adds to events_lost) and ended here, so that it is neither counted again at
 * every gather nor left in the map as a ghost flow. An established entry ends with a close
 * record of the counters it last had (userspace folds the flow into its host's totals, as for
 * any close); a connect never established was no flow and its outcome is unknown: it goes
 * without a record (a connect-failed record would invent a failure).
 */
static __always_inline bool entry_is_of(struct fl_sock *v, __u64 key, __u16 num, __u16 dport)
{
	if ((v->flags & FL_SOCK_PENDING) && !v->sport)
		v->sport = num;
	if (num == v->sport && dport == v->dport)
		return true;
	stat_inc(FL_STAT_STALE_SOCKS);
	if (!(v->flags & FL_SOCK_PENDING))
		emit(key, FL_EV_CLOSE, v, bpf_ktime_get_ns(), 0);
	bpf_map_delete_elem(&socks, &key);
	return false;
}

/*
 * The gather's look at live TCP sockets, in every network namespace at once: userspace runs
 * this iterator over every open file of every process before it reads "socks". A socket file
 * whose TCP socket is in "socks" gets its counters read from the socket and, when still
 * unknown, the process holding it (sockets found by the start-up scan, accepted sockets whose
 * listener predates flowlens). Sockets without a file (closed by their process, waiting for
 * the peer) keep what they had until their close record. A listening TCP socket's drops go to
 * "listen_drops".
 * (An iterator over "socks" itself, iter/bpf_map_elem, would visit fewer objects, but some
 * kernels refuse map iterators while allowing this one.)
 */
SEC("iter/task_file")
int fl_refresh(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	struct fl_tcp_now t = {};
	struct socket *sock;
	struct sock *sk;
	struct fl_sock *v = NULL;
	__u64 key;

	if (!file || !task)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	/* Most sockets visited are not tracked (unix, netlink, listening, UDP): the lookup comes
	 * first, before anything else of the socket is read (each read is a cold cache line). */
	key = sk->__sk_common.skc_cookie.counter;
	if (key)
		v = bpf_map_lookup_elem(&socks, &key);
	if (!v && !fl_cookie_helper) {
		key = addr_of(sk);
		v = bpf_map_lookup_elem(&socks, &key);
	}
	if (!v) {
		listen_seen(file, sock, sk);
		return 0;
	}
	if (v->protocol != IPPROTO_TCP)
		return 0;
	if (!entry_is_of(v, key, sk->__sk_common.skc_num, bpf_ntohs(sk->__sk_common.skc_dport)))
		return 0;
	take_owner(v, task);
	t.state = sk->__sk_common.skc_state;
	/* The socket is typed here but only as a struct sock that the verifier does not vouch
	 * for, which bpf_skc_to_tcp_sock() refuses: its tcp_sock part is probe-read. */
	if (!state_has_counters(t.state) || !read_counters(sk, &t))
		return 0;
	refresh_entry(v, &t);
	return 0;
}

/*
 * The same where the kernel has no bpf_sock_from_file() (before 5.11): the socket is reached
 * through the file's private data, a plain number to the verifier, and read by probe reads.
 */
SEC("iter/task_file")
int fl_refresh_probed(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	struct fl_tcp_now t = {};
	struct socket *sock;
	struct fl_sock *v = NULL;
	__u64 key, addr, cookie;
	void *sk;

	if (!file || !task || !file->f_inode || (file->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;
	sock = file->private_data;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || !read_common(sk, &t, &cookie))
		return 0;
	addr = (__u64)sk;
	if (cookie) {
		key = cookie;
		v = bpf_map_lookup_elem(&socks, &key);
	}
	if (!v && !fl_cookie_helper) {
		key = addr;
		v = bpf_map_lookup_elem(&socks, &key);
	}
	if (!v) {
		if (t.state == TCP_LISTEN)
			listen_seen_probed(file, sk, t.num);
		return 0;
	}
	if (v->protocol != IPPROTO_TCP)
		return 0;
	if (!entry_is_of(v, key, t.num, bpf_ntohs(t.dport_be)))
		return 0;
	v->sk = addr;
	take_owner(v, task);
	if (!state_has_counters(t.state) || !read_counters(sk, &t))
		return 0;
	refresh_entry(v, &t);
	return 0;
}

/* rtt_source = "segment": the RTT refreshed on every received segment. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(fl_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct fl_sock *v;
	__u64 key;
	struct tcp_sock *tp;

	v = sock_lookup(sk, &key);
	if (!v)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	v->srtt_us = tp->srtt_us >> 3;
	v->rttvar_us = tp->mdev_us >> 2;
	v->last_ns = bpf_ktime_get_ns();
	return 0;
}
