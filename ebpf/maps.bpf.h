/* SPDX-License-Identifier: GPL-2.0 */
/* The maps every feature writes, a kernel-side counter and the record sent to userspace. Part
 * of flowlens.bpf.c (one object), included first. */

/* Per-socket state, keyed by the socket's cookie (or address: sock.bpf.h); userspace sizes it
 * (max_flows) and reads it at each gather. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fl_sock);
} socks SEC(".maps");

/* Records to userspace (struct fl_event); userspace sizes it (ring_buffer_bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Kernel-side counters (FL_STAT_*), per CPU, summed by userspace. */
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

/* Sends a record of the socket `key` to userspace; a full ring is counted (FL_STAT_EVENTS_LOST). */
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
