# A stand-in container process for the integration tests: it runs in the cgroup and network
# namespace the test put it in and obeys one command per stdin line, answering "ok ..." per line.
#   listen PORT        accept connections forever, echo every byte back 3 ms late, keep them open
#   connect IP PORT N  open N TCP connections and keep them
#   pingpong [N]       N (default 1) request/response round trips on every client connection
#   info               JSON list of [local, remote, tcpi_rtt_us, tcpi_rttvar_us] of client sockets
#   close              close every client connection
#   churn N IP PORT    N times: connect, send 1 byte, read 1 byte, close
#   refused IP PORT N  N connects that must fail with ECONNREFUSED
#   failing IP PORT    one blocking connect that must fail; answers its errno
#   pending IP PORT    start one non-blocking connect and keep it pending
#   await              wait for the pending connect to end; answers its errno (0: connected)
#   backlog PORT N     listen with backlog N and never accept
#   flood IP PORT N    start N non-blocking connects and keep them pending
#   await_all          wait for every pending connect to end; answers their errnos
#   abort IP PORT      start a non-blocking connect and close it at once
#   reset              close every client connection with an RST (SO_LINGER 0)
#   reset_served       close every accepted connection with an RST (sent before the answer)
#   poke_served        send 1 byte on every accepted connection (errors ignored)
#   sink PORT0 N       on each of ports PORT0..PORT0+N-1: accept, read to the end, close
#   sweep NADDR PORT0 N  to each of 127.1.0.1..127.1.0.NADDR on each of ports PORT0..PORT0+N-1,
#                      one connection: send 1 byte, close
import errno
import json
import select
import socket
import struct
import sys
import threading
import time

clients = []
served = []
readers = {}  # accepted connection -> its echo thread, while it runs
pending = []
unaccepted = []


def linger0(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def start_connect(ip, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    rc = sock.connect_ex((ip, port))
    assert rc == errno.EINPROGRESS, rc
    return sock


def echo(conn):
    try:
        echo_until_closed(conn)
    finally:
        readers.pop(conn, None)


def echo_until_closed(conn):
    while True:
        try:
            data = conn.recv(4096)
        except OSError:
            return
        if not data:
            # The peer closed: close our side too, as a real server does.
            if conn in served:  # not reset_served's already
                served.remove(conn)
            conn.close()
            return
        time.sleep(0.003)
        try:
            conn.sendall(data)
        except OSError:
            return


def serve(listener):
    while True:
        conn, _ = listener.accept()
        served.append(conn)
        readers[conn] = threading.Thread(target=echo, args=(conn,), daemon=True)
        readers[conn].start()


def sink(listener):
    while True:
        conn, _ = listener.accept()
        while conn.recv(4096):
            pass
        conn.close()


def tcp_info(sock):
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    rtt, rttvar = struct.unpack_from("II", raw, 68)
    return rtt, rttvar


for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    cmd = words[0]
    if cmd == "listen":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", int(words[1])))
        listener.listen(128)
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        print("ok", flush=True)
    elif cmd == "connect":
        for _ in range(int(words[3])):
            clients.append(socket.create_connection((words[1], int(words[2]))))
        print("ok", flush=True)
    elif cmd == "pingpong":
        for _ in range(int(words[1]) if len(words) > 1 else 1):
            for c in clients:
                c.sendall(b"x")
                c.recv(1)
        print("ok", flush=True)
    elif cmd == "info":
        rows = []
        for c in clients:
            rtt, rttvar = tcp_info(c)
            rows.append([c.getsockname()[0], c.getpeername()[0], rtt, rttvar])
        print("ok " + json.dumps(rows), flush=True)
    elif cmd == "close":
        for c in clients:
            c.close()
        clients.clear()
        print("ok", flush=True)
    elif cmd == "churn":
        for _ in range(int(words[1])):
            c = socket.create_connection((words[2], int(words[3])))
            c.sendall(b"x")
            c.recv(1)
            c.close()
        print("ok", flush=True)
    elif cmd == "refused":
        for _ in range(int(words[3])):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            rc = sock.connect_ex((words[1], int(words[2])))
            sock.close()
            assert rc == errno.ECONNREFUSED, rc
        print("ok", flush=True)
    elif cmd == "failing":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        rc = sock.connect_ex((words[1], int(words[2])))
        sock.close()
        print("ok %d" % rc, flush=True)
    elif cmd == "pending":
        pending.append(start_connect(words[1], int(words[2])))
        print("ok", flush=True)
    elif cmd == "await":
        sock = pending.pop()
        select.select([], [sock], [], 60)
        rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sock.close()
        print("ok %d" % rc, flush=True)
    elif cmd == "backlog":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", int(words[1])))
        listener.listen(int(words[2]))
        unaccepted.append(listener)
        print("ok", flush=True)
    elif cmd == "flood":
        for _ in range(int(words[3])):
            pending.append(start_connect(words[1], int(words[2])))
        print("ok", flush=True)
    elif cmd == "await_all":
        errs = []
        for sock in pending:
            select.select([], [sock], [], 60)
            errs.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            sock.close()
        pending.clear()
        print("ok " + " ".join(str(e) for e in errs), flush=True)
    elif cmd == "abort":
        start_connect(words[1], int(words[2])).close()
        print("ok", flush=True)
    elif cmd == "reset":
        for c in clients:
            linger0(c)
        clients.clear()
        print("ok", flush=True)
    elif cmd == "reset_served":
        for c in list(served):
            served.remove(c)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Its echo thread is blocked in recv, which holds the file: a close here would
            # release nothing until that recv returns, at the peer's FIN when the peer closes.
            # The RST would then race our delayed ACK of that FIN, and come too late (to the
            # peer's TIME_WAIT, no socket of its own any more) whenever the ACK went first.
            # SHUT_RD wakes the reader without a packet; its close is the last one, with the RST.
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already ended: its reader has returned
            reader = readers.get(c)
            if reader:
                reader.join()
            c.close()
        print("ok", flush=True)
    elif cmd == "poke_served":
        for c in served:
            try:
                c.send(b"y")
            except OSError:
                pass
        print("ok", flush=True)
    elif cmd == "sink":
        for port in range(int(words[1]), int(words[1]) + int(words[2])):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", port))
            listener.listen(128)
            threading.Thread(target=sink, args=(listener,), daemon=True).start()
        print("ok", flush=True)
    elif cmd == "sweep":
        for addr in range(1, int(words[1]) + 1):
            for port in range(int(words[2]), int(words[2]) + int(words[3])):
                c = socket.create_connection(("127.1.0.%d" % addr, port))
                c.sendall(b"x")
                c.close()
        print("ok", flush=True)
    else:
        print("error unknown command " + cmd, flush=True)
