#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/<target>/seed-* (the fuzzers' starting points;
inputs the fuzzer found, and regressions, sit beside them under other names). Run from anywhere:
    python3 tests/fuzz/seeds.py
"""
import json, os, struct, pathlib

here = pathlib.Path(__file__).resolve().parent
repo = here.parent.parent
fixtures = repo / "plugin/src/containers/fixtures"
ID = "1edb6c16e3d2a8ec7c2f5e4a0f6d3b1c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"
ID2 = "9b2f0b8a4a1cdd1e3f7a5b6c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a"
UID = "5f2c3b6a-8d1e-4f7a-9b0c-1d2e3f4a5b6c"
SEP = b"\xff"
# The hostile names of issue 11: spaces, commas, `=`, quotes, backslashes, newlines, NUL, invalid UTF-8.
HOSTILE = [b"web 1", b"a,b", b"k=v", b'say "hi"', b"c:\\dir", b"a\\\\b", b"end\\", b"line\nbreak",
           b"nul\x00x", b"bad\xc3\x28utf8", b"\\,\\=\\ ", b"#hash", b"tab\there", b"\xe2\x9c\x93 ok"]


def put(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def structured(values):
    return b"\x01" + SEP.join(values)


# lineproto: header (tag count, TagSet split, timestamp flag, timestamp), measurement, tags, fields.
def lp(measurement, tags, fields, split=0, ts=1_700_000_000_123_456_789):
    head = bytes([len(tags), split, 0]) + struct.pack("<q", ts)
    chunks = [head, measurement]
    for k, v in tags:
        chunks += [k, v]
    for k, ty, v in fields:
        chunks += [k, bytes([ty]) + v]
    return SEP.join(chunks)

put("lineproto", "container", lp(b"container:num_flows", [(b"ifid", b"0"), (b"container", b"1edb6c16e3d2"), (b"pod", b"web-0")],
                                 [(b"as_client", 0, struct.pack("<q", 3)), (b"rtt", 2, struct.pack("<i", 1250))], split=2))
put("lineproto", "all-types", lp(b"m", [(b"b", b"2"), (b"a", b"1")],
                                 [(b"i", 0, struct.pack("<q", -42)), (b"f", 1, struct.pack("<d", 0.1)),
                                  (b"b", 3, b"\x01"), (b"s", 4, b'str "q" \\ \n')], split=1))
put("lineproto", "hostile-tags", lp(b"pod:traffic", [(b"pod", HOSTILE[i]) if i == 0 else (b"t%d" % i, HOSTILE[i]) for i in range(len(HOSTILE))],
                                    [(b"bytes_sent", 0, b"\x05")], split=5))
put("lineproto", "hostile-names", lp(b"a b,c=d\\", [(b"k y,=\\", b"v"), (b"\x00", b"\n")], [(b"f\\,", 1, struct.pack("<d", 1e300))]))

# cgroup paths, and /proc/<pid>/cgroup files (first byte 0x01).
UID_ = UID.replace("-", "_")
for name, path in [
    ("docker-systemd", f"/system.slice/docker-{ID}.scope"),
    ("docker-cgroupfs", f"/docker/{ID}"),
    ("cri-systemd", f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
    ("cri-guaranteed", f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
    ("containerd-cgroupfs", f"/kubepods/besteffort/pod{UID}/{ID}"),
    ("crio-systemd", f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"),
    ("crio-conmon", f"/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"),
    ("podman-pod", f"/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope/container"),
    ("systemd-escape", f"/kubepods.slice/kubepods\\x2dbesteffort.slice/cri\\x2dcontainerd\\x2d{ID}.scope"),
    ("runc-colon", f"/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"),
    ("kind-nested", f"/docker/{ID2}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
]:
    put("cgroup", name, path.encode())
put("cgroup", "proc-v1", b"\x01" + f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n".encode())

# Runtime metadata: the unit tests' fixtures, and structured files with hostile values (first byte 0x01).
for f in ["containerd-container", "containerd-sandbox", "containerd-ctr"]:
    put("containerd", f, (fixtures / f"{f}.config.json").read_bytes())
for f in ["crio-container", "crio-sandbox"]:
    put("crio", f, (fixtures / f"{f}.config.json").read_bytes())
put("docker", "docker", (fixtures / "docker.config.v2.json").read_bytes())
shim = json.loads((fixtures / "dockershim.config.v2.json").read_bytes())
shim["ID"] = ID  # read from the directory of the id the target uses
put("docker", "dockershim", json.dumps(shim).encode())
for i in range(0, len(HOSTILE), 3):
    vals = [HOSTILE[i % len(HOSTILE)], HOSTILE[(i + 1) % len(HOSTILE)], HOSTILE[(i + 2) % len(HOSTILE)], UID.encode(), ID2.encode()]
    put("containerd", f"hostile-{i}", structured(vals + [b"container"]))
    put("crio", f"hostile-{i}", structured(vals + [b"container", b"cri-o"]))
    put("docker", f"hostile-{i}", structured(vals + [b"container", b"/" + HOSTILE[(i + 3) % len(HOSTILE)]]))

# kubelet log-link names.
for name, link in [
    ("plain", f"web-7d4f8b9c6-x2k4q_shop_nginx-{ID}.log"),
    ("dots", f"heapster-v1.5.2-6b5d7b57f9-g2cjz_kube-system_heapster-nanny-{ID}.log"),
    ("four-parts", f"a_b_c_d-{ID}.log"),
]:
    put("log_link", name, link.encode())

# sock_diag: structured (first byte 0x01: message count, then each message's choices) and a raw datagram.
def sock(v6, attrs):
    b = bytes([4, 0]) + bytes([1 if v6 else 0, 1]) + struct.pack("<HH", 443, 51000)
    b += bytes(range(16)) + bytes(range(16, 32)) + bytes([3 if v6 else 0])
    b += struct.pack("<IQI", 2, 0xDEADBEEF01, 777) + bytes([len(attrs)])
    for ty, flag, data in attrs:
        b += bytes([ty, flag, len(data) if ty == 0 else len(data)]) + data
    return b
tcp_info = bytes(range(200)) + bytes(32)
put("sock_diag", "sockets-done", b"\x01" + bytes([4]) + sock(False, [(0, 0, tcp_info), (2, 0, struct.pack("<Q", 42))])
    + sock(True, [(1, 1, b"\x01")]) + bytes([0, 0]) + bytes([2, 0, 0]))
put("sock_diag", "error", b"\x01" + bytes([3]) + sock(False, []) + bytes([1, 0, 2]) + sock(True, []))
def nlmsg(ty, seq, payload):
    m = struct.pack("=IHHII", 16 + len(payload), ty, 2, seq, 0) + payload
    return m + bytes((-len(m)) % 4)
diag = bytes([2, 1, 0, 0]) + struct.pack(">HH", 8080, 40000) + bytes([127, 0, 0, 1]) + bytes(12) + bytes([10, 0, 0, 2]) + bytes(12)
diag += struct.pack("=III", 1, 0x1234, 0) + bytes(12) + struct.pack("=I", 99)
diag += struct.pack("=HH", 12, 21) + struct.pack("=Q", 4242)
put("sock_diag", "raw", nlmsg(20, 7, diag) + nlmsg(3, 7, struct.pack("=i", 0)))

# conntrack: GET replies as the kernel writes them (raw), and structured ones (first byte 0x01:
# message count, then each message's choices; an entry's tuples: family, omissions, addresses,
# extra attributes, ports).
def attr(ty, data):
    a = struct.pack("=HH", 4 + len(data), ty) + data
    return a + bytes((-len(a)) % 4)
def nest(ty, *parts):
    return attr(ty | 0x8000, b"".join(parts))
def ct_tuple(src, dst, sport, dport):
    v6 = len(src) == 16
    return nest(1, attr(3 if v6 else 1, src), attr(4 if v6 else 2, dst)) + nest(2, attr(1, b"\x06"),
        attr(2, struct.pack(">H", sport)), attr(3, struct.pack(">H", dport)))
POD, VIP, BACKEND = bytes([10, 244, 1, 5]), bytes([10, 96, 0, 10]), bytes([10, 244, 2, 7])
entry = bytes([2, 0, 0, 0]) + nest(1, ct_tuple(POD, VIP, 43210, 80)) + nest(2, ct_tuple(BACKEND, POD, 8080, 43210))
entry += attr(3, struct.pack(">I", 0x18e)) + attr(7, struct.pack(">I", 120)) + nest(4, nest(1, attr(1, b"\x03")))
entry += attr(8, struct.pack(">I", 0x10000000)) + attr(12, struct.pack(">I", 0x12345678)) + attr(11, struct.pack(">I", 1))
put("conntrack", "raw-dnat", nlmsg(0x100, 7, entry))
P6, V6, B6 = bytes.fromhex("fd000001000000000000000000000002"), bytes.fromhex("fd000096000000000000000000000010"), bytes.fromhex("fd000002000000000000000000000002")
entry6 = bytes([10, 0, 0, 0]) + nest(1, ct_tuple(P6, V6, 40000, 80)) + nest(2, ct_tuple(B6, P6, 8080, 40000))
put("conntrack", "raw-dnat6", nlmsg(0x100, 7, entry6))
put("conntrack", "raw-enoent", nlmsg(2, 7, struct.pack("=i", -2) + bytes(16)))
def s_tuple(v6, flags, src, dst, sport, dport, extra=()):
    b = bytes([1 if v6 else 0, flags]) + src + (b"\x01" if v6 else b"") + dst + (b"\x01" if v6 else b"")
    b += bytes([len(extra)]) + b"".join(bytes([ty, len(d)]) + d for ty, d in extra)
    return b + struct.pack("<HH", sport, dport)
def s_entry(orig, reply, family=0, order=0):
    return bytes([3, 1]) + orig + reply + bytes([family, order])
put("conntrack", "entry", b"\x01" + bytes([1]) + s_entry(s_tuple(False, 0, POD, VIP, 43210, 80),
    s_tuple(False, 0, BACKEND, POD, 8080, 43210, [(1, b"xyz")])))
put("conntrack", "entry6-reply-first", b"\x01" + bytes([2]) + bytes([0, 1]) + s_entry(s_tuple(True, 0, P6, V6, 1, 80),
    s_tuple(True, 0, B6, P6, 8080, 1), 1, 0x11))
put("conntrack", "error-then-entry", b"\x01" + bytes([3]) + bytes([1, 0, 1]) + bytes([1, 1, 0])
    + s_entry(s_tuple(False, 0x84, POD, VIP, 1, 2), s_tuple(False, 0, BACKEND, POD, 3, 4)))

# Configuration files.
put("config", "default", (repo / "packaging/flowlens.toml").read_bytes())
put("config", "small", b'interval_secs = 5\nifid = "eth0"\nprecision = "ms"\nhook_kinds = ["tp_btf", "kprobe"]\nrtt_source = "socket_io"\n')
put("config", "bad", b'interval_secs = "x"\nbogus = 1\n')
put("config", "ifid-hostile", b'ifid = "a,b c=d\\\\"\n')

# DNS messages: raw datagrams as resolvers and servers write them, hostile ones, and structured
# descriptions (first byte 0x01; see the target `dns`).
def dname(*labels):
    return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"
def dheader(id, flags, qd, an):
    return struct.pack(">HHHHHH", id, flags, qd, an, 0, 0)
def drr(owner, ty, ttl, data):
    return owner + struct.pack(">HHIH", ty, 1, ttl, len(data)) + data
Q = dname(b"db", b"shop", b"svc", b"cluster", b"local")
put("dns", "query-a", dheader(0x1234, 0x0100, 1, 0) + Q + struct.pack(">HH", 1, 1))
put("dns", "answer-a", dheader(0x1234, 0x8180, 1, 1) + Q + struct.pack(">HH", 1, 1)
    + drr(b"\xc0\x0c", 1, 30, bytes([10, 96, 14, 2])))
API = dname(b"api", b"Stripe", b"com")
put("dns", "answer-cname-aaaa", dheader(7, 0x8180, 1, 3) + API + struct.pack(">HH", 28, 1)
    + drr(b"\xc0\x0c", 5, 300, dname(b"edge", b"cdn", b"net"))
    + drr(b"\xc0\x2c", 28, 60, bytes.fromhex("20010db8000000000000000000000001"))
    + drr(b"\xc0\x2c", 16, 60, b"\x05hello"))
put("dns", "nxdomain", dheader(9, 0x8183, 1, 0) + dname(b"nope", b"example") + struct.pack(">HH", 1, 1))
put("dns", "loop", dheader(1, 0, 1, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1))
put("dns", "forward-pointer", dheader(1, 0x8180, 1, 1) + dname(b"a") + struct.pack(">HH", 1, 1) + drr(b"\xc0\x20", 1, 1, bytes(4)))
put("dns", "hostile-labels", dheader(1, 0, 1, 0) + dname(b"a.b c,d=e\\f\"g\x00h\xff", b"COM") + struct.pack(">HH", 1, 1))
put("dns", "long-name", dheader(1, 0, 1, 0) + dname(*([b"x" * 63] * 4)) + struct.pack(">HH", 1, 1))
put("dns", "cut", (dheader(1, 0x8180, 1, 2) + Q + struct.pack(">HH", 1, 1) + drr(b"\xc0\x0c", 1, 30, bytes(4)))[:-3])
# structured: id, flags, the question's labels (count, then length and bytes each), qtype, answers
put("dns", "structured", b"\x01" + struct.pack("<HH", 5, 0x8180) + bytes([2, 2]) + b"abc" + bytes([2]) + b"xyz"
    + struct.pack("<H", 1) + bytes([3])
    + bytes([0]) + struct.pack("<I", 30) + bytes([10, 0, 0, 1])
    + bytes([6 | 0x80]) + bytes([1]) + struct.pack("<I", 60) + bytes([0])
    + bytes([9 + 2]) + bytes([0]) + struct.pack("<I", 60) + bytes([5, 7]) + b"hello")
