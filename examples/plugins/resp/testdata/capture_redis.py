#!/usr/bin/env python3
"""Records real Redis traffic as an spf raw NDJSON capture (redis.ndjson).

Starts redis-server on a Unix socket and puts a recording relay in front of it.
Real clients (redis-cli, including its RESP3 mode and --pipe, plus a raw socket
for an inline command) talk to the relay; every read the relay makes from either
side becomes one event, exactly as spf's probe would see the relay's syscalls:
`recv` for the client's bytes (requests), `send` for what the relay writes back
(replies). Some connections are read in tiny chunks so that messages are split
across events.

Needs redis-server and redis-cli (Debian: apt-get install redis-server redis-tools).
Usage: capture_redis.py OUTPUT.ndjson
"""

import base64
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SOCK_PATH = "/run/redis/redis.sock"  # the path the capture claims, as on a Debian host


def rfc3339(ns):
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%09dZ" % frac


class Recorder:
    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()
        self.comm = open("/proc/self/comm").read().strip()

    def event(self, conn, direction, peer_pid, data):
        with self.lock:
            self.lines.append(
                {
                    "ts_ns": time.monotonic_ns(),
                    "time": rfc3339(time.time_ns()),
                    "pid": os.getpid(),
                    "tid": threading.get_native_id(),
                    "comm": self.comm,
                    "peer_pid": peer_pid,
                    "path": SOCK_PATH,
                    "sock": "stream",
                    "dir": direction,
                    "conn": conn,
                    "len": len(data),
                    "captured": len(data),
                    "truncated": False,
                    "decoder": "raw",
                    "data_b64": base64.b64encode(data).decode(),
                }
            )


def relay(client, upstream_path, conn_id, chunk, rec):
    creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    peer_pid = struct.unpack("3i", creds)[0]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.connect(upstream_path)
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, "c")
    sel.register(server, selectors.EVENT_READ, "s")
    open_ = True
    while open_:
        for key, _ in sel.select():
            src = key.fileobj
            data = src.recv(chunk)
            if not data:
                open_ = False
                break
            if key.data == "c":
                rec.event(conn_id, "recv", peer_pid, data)
                server.sendall(data)
            else:
                client.sendall(data)
                rec.event(conn_id, "send", peer_pid, data)
    client.close()
    server.close()


def main():
    out = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="resp-capture-")
    redis_sock = os.path.join(tmp, "redis.sock")
    relay_sock = os.path.join(tmp, "relay.sock")
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", redis_sock, "--save", "", "--appendonly", "no",
         "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        if os.path.exists(redis_sock):
            break
        time.sleep(0.05)

    rec = Recorder()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(relay_sock)
    listener.listen(16)
    # Read sizes per connection, in order: tiny reads split messages across events.
    chunks = {3: 5, 7: 3}
    threads = []

    def accept_loop():
        conn_id = 0
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            conn_id += 1
            t = threading.Thread(target=relay, args=(c, redis_sock, conn_id, chunks.get(conn_id, 65536), rec))
            t.start()
            threads.append(t)

    threading.Thread(target=accept_loop, daemon=True).start()

    def cli(*args, stdin=None):
        subprocess.run(["redis-cli", "-s", relay_sock, *args], input=stdin, check=True,
                       stdout=subprocess.DEVNULL)

    cli("PING")                                              # 1
    cli("SET", "greeting", "hello world")                    # 2
    cli("GET", "greeting")                                   # 3 (5-byte reads)
    cli("RPUSH", "letters", "a", "b", "c")                   # 4
    cli("LRANGE", "letters", "0", "-1")                      # 5
    cli("HSET", "user:1", "name", "ada", "lang", "en")       # 6
    cli("-3", "HGETALL", "user:1")                           # 7 (RESP3, 3-byte reads)
    cli("GET", "missing")                                    # 8
    cli("NOSUCHCOMMAND", "x")                                # 9
    big = "x" * 30_000
    cli("SET", "big", big)                                   # 10
    cli("GET", "big")                                        # 11
    # 12: a pipeline, all commands in one write, through redis-cli --pipe.
    pipe = b""
    for cmd in (["SET", "a", "1"], ["INCR", "a"], ["MGET", "a", "greeting"], ["DEL", "a"]):
        pipe += b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in cmd)
    cli("--pipe", stdin=pipe)
    # 13: an inline command, as typed into telnet.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(relay_sock)
    s.sendall(b"PING\r\n")
    s.recv(100)
    s.close()

    time.sleep(0.3)
    listener.close()
    for t in threads:
        t.join()
    server.terminate()
    server.wait()
    rec.lines.sort(key=lambda l: l["ts_ns"])
    with open(out, "w") as f:
        for line in rec.lines:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    print(f"{len(rec.lines)} events written to {out}")


if __name__ == "__main__":
    main()
