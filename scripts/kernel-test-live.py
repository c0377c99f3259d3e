#!/usr/bin/env python3
"""The live capture of scripts/kernel-test: a client and a server, each its own
process, talk over a Unix stream socket while `spf run` captures it; then every
byte spf wrote out is compared with what the peers sent.

    kernel-test-live.py talk SOCK        runs the peers, prints their pids
    kernel-test-live.py check NDJSON CLIENT_PID SERVER_PID
"""

import base64
import json
import os
import socket
import subprocess
import sys
import time

# Write sizes that take each of the probe's copy paths: small and large inline
# records, and chunked ones above 4 KiB.
WRITES = [1, 63, 64, 65, 511, 512, 4096, 4097, 32768, 65536, 100000]
DEADLINE = 120  # seconds for any one peer, under emulation


def payload(seed, n):
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


REQUEST = payload(1, sum(WRITES))
RESPONSE = payload(2, 150000)


def server(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    s.settimeout(DEADLINE)
    c, _ = s.accept()
    c.settimeout(DEADLINE)
    got = bytearray()
    while len(got) < len(REQUEST):
        d = c.recv(65536)
        if not d:
            break
        got += d
    if bytes(got) != REQUEST:
        sys.exit(f"server: received {len(got)} bytes, not the request")
    c.sendall(RESPONSE)
    c.close()


def client(path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(DEADLINE)
    c.connect(path)
    off = 0
    for n in WRITES:
        c.sendall(REQUEST[off : off + n])
        off += n
    back = bytearray()
    while True:
        d = c.recv(65536)
        if not d:
            break
        back += d
    if bytes(back) != RESPONSE:
        sys.exit(f"client: received {len(back)} bytes, not the response")


def talk(path):
    me = os.path.abspath(__file__)
    srv = subprocess.Popen([sys.executable, me, "server", path])
    # The client connects once the server listens: wait for the socket file.
    end = time.monotonic() + DEADLINE
    while not os.path.exists(path):
        if srv.poll() is not None or time.monotonic() > end:
            srv.kill()
            sys.exit("server did not come up")
        time.sleep(0.05)
    cli = subprocess.Popen([sys.executable, me, "client", path])
    rc_c = cli.wait(timeout=DEADLINE)
    rc_s = srv.wait(timeout=DEADLINE)
    if rc_c or rc_s:
        sys.exit(f"peers failed: client {rc_c}, server {rc_s}")
    print(cli.pid, srv.pid)


def check(ndjson, client_pid, server_pid):
    seen = {}
    problems = []
    n = 0
    with open(ndjson) as f:
        for i, line in enumerate(f, 1):
            r = json.loads(line)
            n += 1
            if "lost" in r or "error" in r:
                problems.append(f"line {i}: {line.strip()[:200]}")
                continue
            if r.get("decoder") != "raw":
                continue
            if r.get("truncated"):
                problems.append(f"line {i}: truncated event")
            data = base64.b64decode(r["data_b64"])
            if len(data) != r["len"]:
                problems.append(f"line {i}: {len(data)} bytes captured of {r['len']}")
            seen.setdefault((r["pid"], r["dir"]), bytearray()).extend(data)
    want = {
        (client_pid, "send"): REQUEST,
        (server_pid, "recv"): REQUEST,
        (server_pid, "send"): RESPONSE,
        (client_pid, "recv"): RESPONSE,
    }
    for key, data in want.items():
        got = bytes(seen.get(key, b""))
        if got != data:
            problems.append(f"pid {key[0]} {key[1]}: {len(got)} bytes captured, not the {len(data)} moved")
    for key in seen:
        if key not in want:
            problems.append(f"unexpected events of pid {key[0]} {key[1]}")
    if problems:
        for p in problems:
            print(f"live capture: {p}")
        sys.exit(1)
    print(f"live capture: {n} records, every byte of {len(REQUEST)} sent and {len(RESPONSE)} received matches")


def main():
    cmd = sys.argv[1:2]
    if cmd == ["server"]:
        server(sys.argv[2])
    elif cmd == ["client"]:
        client(sys.argv[2])
    elif cmd == ["talk"]:
        talk(sys.argv[2])
    elif cmd == ["check"]:
        check(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
