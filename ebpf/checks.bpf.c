// SPDX-License-Identifier: GPL-2.0
/* Hook-kind checks for `flowlens doctor`: trivial programs on the hook kinds other kernels offer
 * (kprobes, fentry/fexit), loaded only by doctor to report whether this kernel allows each kind,
 * and why not. The collector never loads this object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

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
