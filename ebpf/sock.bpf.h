/* SPDX-License-Identifier: GPL-2.0 */
/* A socket's identity, shared by every feature: its key in "socks" (cookie or address), its
 * cgroup, network namespace, addresses and owner, a new entry. Part of flowlens.bpf.c:
 * included after maps.bpf.h. */

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

/* The entry of a socket known by its own cookie (0: none yet) and its address, as programs
 * that read the socket with probe reads (kprobes) find it: under the cookie when there is one,
 * else under the address. */
static __always_inline struct fl_sock *sock_lookup_probed(__u64 cookie, __u64 addr, __u64 *key)
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

/* The same for a socket whose address is a plain number (kprobes, the probed iterator): every
 * read a probe read. */
static __always_inline __u64 sock_cgroup_id_probed(const struct sock *sk)
{
	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);

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
