/* SPDX-License-Identifier: GPL-2.0 */
/* TCP connections: a socket enters "socks" when it connects or is accepted, and leaves it with
 * one record at its close (FL_EV_CLOSE, or FL_EV_CONNECT_FAILED with the sk_err that failed
 * it), from its state changes (fl_set_state) or its destruction (fl_destroy); a failed
 * connect's error kept when reported (fl_error_report); the per-segment RTT (fl_tcp_probe,
 * rtt_source = "segment"). Part of flowlens.bpf.c: included after
 * sock.bpf.h. */

#define SEND_SHUTDOWN 2

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

/*
 * Why a connect failed, kept from the moment the kernel reports it. Before tcp_done_with_error()
 * (6.10, and the stable kernels it was taken back to: Debian's 6.1 has it, 5.10 not), a connect
 * whose SYNs time out or that meets an ICMP error wakes its process (sk_error_report) before
 * tcp_done() moves the socket to CLOSE. getsockopt(SO_ERROR), the way a non-blocking connect
 * learns its result (Go, libuv, asyncio, Java NIO), reads and clears sk_err without the
 * socket's lock: a process on another CPU can clear it before CLOSE is traced, and the failure
 * read as a connect its process gave up on. Only SYN_SENT: an established connection's errors
 * reach its process through calls that take the socket's lock, and so wait for tcp_done().
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	/* an entry lives from a report to the CLOSE right after it (the same softirq or timer);
	 * LRU: one pushed out reads as a connect given up, as without this map */
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
} connect_errs SEC(".maps");

/* A socket's error report (sock_def_error_report: TCP's sk_error_report): keeps a failed
 * connect's error. Every read a probe read (also serves the kprobe). */
static __always_inline int on_error_report(__u64 addr)
{
	const struct sock *sk = (const struct sock *)addr;
	struct fl_sock *v;
	__u64 key;
	__u32 err;
	__u16 family;

	if (!addr || BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_SYN_SENT)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	err = BPF_CORE_READ(sk, sk_err);
	if (!err)
		return 0;
	v = sock_lookup_probed(BPF_CORE_READ(sk, __sk_common.skc_cookie.counter), addr, &key);
	if (!v)
		return 0;
	if (bpf_map_update_elem(&connect_errs, &key, &err, BPF_ANY) == 0)
		v->flags |= FL_SOCK_ERR_KEPT;
	return 0;
}

SEC("fentry/sock_def_error_report")
int BPF_PROG(fl_error_report, struct sock *sk)
{
	return on_error_report(addr_of(sk));
}

SEC("kprobe/sock_def_error_report")
int BPF_KPROBE(fl_kp_error_report, struct sock *sk)
{
	return on_error_report((__u64)sk);
}

/* The error a socket ended with: sk_err now, else the one kept when it was reported. */
static __always_inline __u32 end_error(__u64 key, const struct fl_sock *v, __u32 err)
{
	__u32 *kept;

	if (!(v->flags & FL_SOCK_ERR_KEPT))
		return err;
	kept = bpf_map_lookup_elem(&connect_errs, &key);
	if (kept && !err)
		err = *kept;
	bpf_map_delete_elem(&connect_errs, &key);
	return err;
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
	err = end_error(key, v, sk->sk_err);
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
	/* sk_err as the application left it (it may have read and cleared it since), else a
	 * failed connect's kept error */
	emit(key, FL_EV_CLOSE, v, now, end_error(key, v, sk->sk_err));
	bpf_map_delete_elem(&socks, &key);
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
