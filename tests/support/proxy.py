"""A tiny HTTP proxy on 127.0.0.1 that records every request it is asked to make.

Plain-HTTP requests (absolute-form ``GET http://host:port/path``) are forwarded upstream with
``Connection: close`` and the answer relayed byte for byte; ``CONNECT`` (what a client sends for an
https URL) is recorded and refused with 502, so no TLS is needed to see that HTTPS_PROXY was used.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from urllib.parse import urlsplit


class RecordingProxy:
    def __init__(self) -> None:
        self.requests: list[str] = []  # request lines as the client sent them
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65536).decode("latin-1").rstrip("\r\n")
                if not line:
                    return
                headers = []
                while True:
                    h = self.rfile.readline(65536)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    headers.append(h.decode("latin-1").rstrip("\r\n"))
                with proxy._lock:
                    proxy.requests.append(line)
                method, target, _ = line.split(" ", 2)
                if method == "CONNECT":
                    self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                url = urlsplit(target)
                length = 0
                out = [f"{method} {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1"]
                for h in headers:
                    name = h.split(":", 1)[0].strip().lower()
                    if name == "content-length":
                        length = int(h.split(":", 1)[1])
                    if name in ("connection", "proxy-connection", "keep-alive"):
                        continue
                    out.append(h)
                out.append("Connection: close")
                body = self.rfile.read(length) if length else b""
                with socket.create_connection((url.hostname, url.port or 80)) as up:
                    up.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
                    while chunk := up.recv(1 << 16):
                        self.wfile.write(chunk)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RecordingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
