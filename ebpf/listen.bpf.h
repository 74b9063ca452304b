/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Listening TCP sockets, found by the gather's iterators, with the drops each has counted so
 * far (sk_drops). A listener whose queues overflow drops connection attempts before any socket
 * exists for them, and counts each in its own sk_drops (tcp_listendrop(), which also counts it
 * in the namespace's TcpExtListenDrops). sk_drops also counts the segments the receive path
 * discards for the listener: a handshake's last ACK dropped with the accept queue full counts
 * there a second time, a SYN retransmitted for a handshake in progress once. Userspace empties
 * the map as it reads it after each run, so that it holds one run's listeners; a listener
 * without room is counted (FL_STAT_LISTEN_FULL).
 *
 * Part of flowlens.bpf.c: included after sock.bpf.h.
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
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	listen_record(addr_of(sk), file->f_inode->i_ino, sock_cgroup_id_probed(sk),
		      BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum), port, sock_drops(sk));
}
