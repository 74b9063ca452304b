/* flowlens.h: records shared between the eBPF programs (flowlens.bpf.c) and the Rust loader; single source of truth for their layout. */
#ifndef FLOWLENS_H
#define FLOWLENS_H

/*
 * BPF side: include after vmlinux.h (which provides __u64 & co).
 * Anywhere else (plain C, bindgen): the kernel UAPI types are used.
 */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FL_COMM_LEN 16
#define FL_WAKE_CHECK_EVERY 32 /* a CPU looks at the ring's fill level every 32 records (power of 2) */

/* OPEN: a UDP socket's first datagram (a TCP flow's start is not a record: userspace finds it in
 * "socks", or learns of it from its CLOSE). CLOSE: a TCP flow's end, with its final counters.
 * CONNECT_FAILED: SYN_SENT -> CLOSE. Both TCP ends carry the socket's sk_err (fl_event.err). */
enum fl_event_kind { FL_EV_OPEN = 1, FL_EV_CLOSE = 2, FL_EV_CONNECT_FAILED = 3 };

enum fl_role { FL_ROLE_UNKNOWN = 0, FL_ROLE_CLIENT = 1, FL_ROLE_SERVER = 2 };

/* fl_sock.flags */
#define FL_SOCK_PENDING 1 /* a connect() not answered yet (SYN_SENT): not a flow until established */
#define FL_SOCK_ADOPTED 2 /* put in by userspace's start-up scan (the programs never set it) */
#define FL_SOCK_ERR_KEPT 4 /* a failed connect's error was kept when it was reported: map
                            * "connect_errs" (tcp_state.bpf.h) */

/* indexes in the per-CPU array map "stats" (__u64 values) */
enum fl_stat {
    FL_STAT_EVENTS_LOST = 0,
    FL_STAT_SOCKS_FULL = 1,
    FL_STAT_EVENTS_SENT = 2,
    FL_STAT_STALE_SOCKS = 3, /* entries the iterator found naming another socket (their end was
                              * missed): each counted once and ended (fl_refresh) */
    FL_STAT_LISTEN_FULL = 4, /* listening sockets the iterator found no room for in "listen_drops" */
    FL_STAT_MAX = 8
};

struct fl_sock {            /* value of hash map "socks", key: the socket's identity (sock_key()) */
    __u64 bytes_sent;       /* payload bytes. UDP: sum of the datagrams sent. TCP: the socket's own
                             * tcp_sock.bytes_acked less the SYN and FIN and less base_acked, written
                             * at close and by the gather's map iterator (fl_refresh) */
    __u64 bytes_rcvd;       /* UDP: sum of datagrams received; TCP: bytes_received less FIN, base */
    __u64 first_ns;         /* bpf_ktime_get_ns() when the entry was created */
    __u64 last_ns;          /* bpf_ktime_get_ns() of the open, the close, the last UDP datagram
                             * (TCP data does not move it: its flows end by state, not idling) */
    __u64 cgroup_id;        /* the socket's cgroup2 id (sk_cgrp_data), from the SOCKET */
    __u32 netns;            /* sk->__sk_common.skc_net.net->ns.inum */
    __u32 pid;              /* tgid, only ever taken in process context; 0 = not known yet */
    __u32 srtt_us;          /* tcp_sk(sk)->srtt_us >> 3 (as TCP_INFO tcpi_rtt) */
    __u32 rttvar_us;        /* tcp_sk(sk)->mdev_us >> 2 (as TCP_INFO tcpi_rttvar) */
    __u32 retrans;          /* tcp_sock.total_retrans less base_retrans */
    __u16 sport;            /* local port, host byte order */
    __u16 dport;            /* remote port, host byte order */
    __u8 saddr[16];         /* local address; IPv4 stored as v4-mapped ::ffff:a.b.c.d */
    __u8 daddr[16];         /* remote address, same convention */
    __u8 family;            /* AF_INET or AF_INET6 (of the socket) */
    __u8 protocol;          /* IPPROTO_TCP or IPPROTO_UDP */
    __u8 role;              /* enum fl_role */
    __u8 flags;             /* FL_SOCK_* */
    char comm[FL_COMM_LEN]; /* only taken in process context, with pid */
    __u32 base_retrans;     /* TCP: total_retrans when tracking began (start-up scan), else 0 */
    __u64 sk;               /* TCP: kernel address of the socket, as fl_refresh last found it
                             * behind a file; 0 until then */
    __u64 base_acked;       /* TCP: bytes_acked when tracking began (the SYN for a client) */
    __u64 base_rcvd;        /* TCP: bytes_received when tracking began */
};                          /* 144 bytes */

struct fl_event {           /* ring buffer "events" record */
    __u64 cookie;
    __u64 ts_ns;
    __u32 kind;             /* enum fl_event_kind */
    __u32 err;              /* TCP ends: sk->sk_err when the socket reached CLOSE (ECONNREFUSED,
                             * ETIMEDOUT, ECONNRESET, ...; 0: no error), else 0 */
    struct fl_sock sock;    /* snapshot at the event (final counters for CLOSE) */
};                          /* 168 bytes */

/* Key of hash map "listen_drops": a listening TCP socket, by its kernel address and its socket
 * inode's number (each is reused by later sockets, but not both together). */
struct fl_listen_key {
    __u64 sk;
    __u64 ino;
};                          /* 16 bytes */

/* Value of "listen_drops": what the gather's iterator read from a listening TCP socket. The map
 * holds the listeners of one run: userspace empties it as it reads it. */
struct fl_listen {
    __u64 cgroup_id;        /* the socket's cgroup2 id (sk_cgrp_data) */
    __u32 netns;            /* sk->__sk_common.skc_net.net->ns.inum */
    __u32 drops;            /* sk_drops (a 32-bit counter that wraps): what tcp_listendrop()
                             * counts, each also in its namespace's TcpExtListenDrops */
    __u16 port;             /* local port, host byte order */
    __u16 _pad[3];
};                          /* 24 bytes */

_Static_assert(sizeof(struct fl_sock) == 144, "struct fl_sock must be 144 bytes");
_Static_assert(sizeof(struct fl_event) == 168, "struct fl_event must be 168 bytes");
_Static_assert(__builtin_offsetof(struct fl_sock, netns) == 40, "fl_sock.netns offset");
_Static_assert(__builtin_offsetof(struct fl_sock, sport) == 60, "fl_sock.sport offset");
_Static_assert(__builtin_offsetof(struct fl_sock, saddr) == 64, "fl_sock.saddr offset");
_Static_assert(__builtin_offsetof(struct fl_sock, family) == 96, "fl_sock.family offset");
_Static_assert(__builtin_offsetof(struct fl_sock, comm) == 100, "fl_sock.comm offset");
_Static_assert(__builtin_offsetof(struct fl_sock, base_retrans) == 116, "fl_sock.base_retrans offset");
_Static_assert(__builtin_offsetof(struct fl_sock, sk) == 120, "fl_sock.sk offset");
_Static_assert(__builtin_offsetof(struct fl_sock, base_rcvd) == 136, "fl_sock.base_rcvd offset");
_Static_assert(__builtin_offsetof(struct fl_sock, flags) == 99, "fl_sock.flags offset");
_Static_assert(__builtin_offsetof(struct fl_event, err) == 20, "fl_event.err offset");
_Static_assert(__builtin_offsetof(struct fl_event, sock) == 24, "fl_event.sock offset");
_Static_assert(sizeof(struct fl_listen_key) == 16, "struct fl_listen_key must be 16 bytes");
_Static_assert(sizeof(struct fl_listen) == 24, "struct fl_listen must be 24 bytes");
_Static_assert(__builtin_offsetof(struct fl_listen, drops) == 12, "fl_listen.drops offset");
_Static_assert(__builtin_offsetof(struct fl_listen, port) == 16, "fl_listen.port offset");

#endif /* FLOWLENS_H */
