#!/usr/bin/env python3
"""bench/lib/count-proxy.py LISTEN UPSTREAM LOG: a Docker API proxy that counts.

Listens on the unix socket LISTEN, forwards every connection byte for byte to
the unix socket UPSTREAM (dockerd's), and appends one line per HTTP request
the client sends to LOG:

    <unix time, 3 decimals> <method> <path without the query>

bench/up-idle.sh runs `netconnect up --docker-host unix://LISTEN` through it
to count the engine requests `up` makes while nothing happens. Requests are
found by parsing the client's byte stream (request line, headers, then a
Content-Length or chunked body skipped), so keep-alive connections count
every request; an Upgrade request (attach) stops the parsing of its
connection. Standard library only. SIGINT is ignored so that a Ctrl-C in the
terminal leaves the proxy up while `up` tears down through it; the script
ends it with SIGTERM.
"""
import os
import signal
import socket
import sys
import threading
import time

LOCK = threading.Lock()


class Requests:
    """Finds request boundaries in one connection's client-to-server bytes."""

    def __init__(self, log):
        self.log = log
        self.buf = b""
        self.state = "head"
        self.left = 0

    def _skip(self):
        n = min(self.left, len(self.buf))
        self.buf = self.buf[n:]
        self.left -= n
        return self.left == 0

    def feed(self, data):
        self.buf += data
        while True:
            if self.state == "raw":
                self.buf = b""
                return
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = self.buf[:end].decode("latin-1").split("\r\n")
                self.buf = self.buf[end + 4:]
                parts = lines[0].split(" ")
                method = parts[0]
                path = parts[1].split("?", 1)[0] if len(parts) > 1 else "?"
                headers = {}
                for h in lines[1:]:
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
                self.log(method, path)
                if "upgrade" in headers:
                    self.state = "raw"
                elif "chunked" in headers.get("transfer-encoding", "").lower():
                    self.state = "chunk-size"
                else:
                    self.left = int(headers.get("content-length") or 0)
                    self.state = "body"
            elif self.state == "body":
                if not self._skip():
                    return
                self.state = "head"
            elif self.state == "chunk-size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(self.buf[:end].split(b";")[0].strip() or b"0", 16)
                self.buf = self.buf[end + 2:]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.left = size + 2  # the data and its CRLF
                    self.state = "chunk-data"
            elif self.state == "chunk-data":
                if not self._skip():
                    return
                self.state = "chunk-size"
            elif self.state == "trailer":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                line = self.buf[:end]
                self.buf = self.buf[end + 2:]
                if not line:
                    self.state = "head"


def pump(src, dst, on_data=None):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if on_data is not None:
                try:
                    on_data(data)
                except ValueError:
                    on_data = None  # not HTTP as we know it: forward, stop counting
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(client, upstream_path, logf):
    def log(method, path):
        with LOCK:
            logf.write(f"{time.time():.3f} {method} {path}\n")
            logf.flush()

    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(upstream_path)
    except OSError:
        client.close()
        return
    parser = Requests(log)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream, parser.feed)
    back.join()
    client.close()
    upstream.close()


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: count-proxy.py LISTEN UPSTREAM LOG")
    listen, upstream, logpath = sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    logf = open(logpath, "a", encoding="ascii")
    if os.path.exists(listen):
        os.unlink(listen)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen)
    os.chmod(listen, 0o600)
    server.listen(64)
    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client, upstream, logf), daemon=True).start()


if __name__ == "__main__":
    main()
