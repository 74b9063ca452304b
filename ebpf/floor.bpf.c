// SPDX-License-Identifier: GPL-2.0
/* The benchmark's floor (tests/bench): empty programs on the tracepoints the collector hooks, to
 * measure what merely tracing those hooks costs the host. Not part of the product. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

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
