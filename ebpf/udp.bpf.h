/* SPDX-License-Identifier: GPL-2.0 */
/* UDP flows: a socket enters "socks" with its first datagram (an FL_EV_OPEN record) and counts
 * the bytes of every datagram after it; it ends in userspace, after udp_idle_timeout_secs
 * without one. Served by the socket layer's tracepoints (6.3+) or by fexit programs on the
 * protocol's functions; the kprobe way is in udp_kprobe.bpf.h. Part of flowlens.bpf.c:
 * included after udp_source.bpf.h. */

#define MSG_PEEK 2
#define MSG_ERRQUEUE 0x2000
/* Receive calls that take no datagram: a peek (the same datagram is read again, for real) and
 * a read of the error queue (an ICMP error's copy of a datagram this socket sent). */
#define FL_RECV_NOT_READ (MSG_PEEK | MSG_ERRQUEUE)

/*
 * UDP sockets are keyed by their cookie when it exists, else by their address, and every UDP
 * program looks both up (sock_lookup_probed): the kprobe programs cannot call
 * bpf_get_socket_cookie() (they read the socket's own cookie, which the tp_btf and fexit
 * programs generate where allowed), and the programs serving "UDP sent" and "UDP received" may
 * be of different kinds, which must name a socket alike.
 */

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
