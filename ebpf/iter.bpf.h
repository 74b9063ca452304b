/* SPDX-License-Identifier: GPL-2.0 */
/* The gather's iterators over every open file (fl_refresh, else fl_refresh_probed): live TCP
 * sockets' counters and owners into their "socks" entries, listeners to listen_drops. Part of
 * flowlens.bpf.c: included after tcp_state.bpf.h and listen.bpf.h. */

#define S_IFMT 00170000
#define S_IFSOCK 0140000

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
