"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1 for tests, with fault injection.

It speaks the endpoints huggingface_hub and our downloader call (see shared NOTES.md):
``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (X-Repo-Commit, ETag / X-Linked-Etag, Content-Length /
X-Linked-Size, ``Range`` -> 206), ``GET /api/models/{repo}[/revision/{rev}]``,
``GET /api/models/{repo}/tree/{rev}[/{path}]``, ``POST /api/models/{repo}/paths-info/{rev}``;
errors are 404/401/403 with ``X-Error-Code``. Files are served from real files on disk.

Faults (:meth:`HubServer.fault`) apply to requests whose path contains ``match``: cut the
connection once the body reaches byte N, corrupt a byte, throttle to a rate, answer a status (with
an error code and Retry-After), ignore ``Range`` (answer 200 with the whole file), send no
``Content-Length`` (the body ends when the connection closes), or redirect to a CDN-like
``/cdn/...`` path on the same server (as the Hub does for LFS files), for the next ``times``
matching requests (-1: always). A ``Range`` starting at or past the end is answered 416. Every
request is counted in :attr:`HubServer.requests`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(4 << 20):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


@dataclass
class Fault:
    match: str
    times: int = 1
    cut_at: int | None = None  # close the connection when the body reaches this file offset
    corrupt_at: int | None = None  # flip the byte at this file offset
    rate: float | None = None  # bytes per second
    status: int | None = None
    error_code: str | None = None
    retry_after: str | None = None
    ignore_range: bool = False  # answer 200 with the whole file, as some mirrors and proxies do
    no_length: bool = False  # no Content-Length: the body ends when the connection closes
    redirect: bool = False  # 302 to /cdn/{repo}/{path}, served without authentication
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    sent: int = 0  # file bytes sent in answer to this request


@dataclass
class Repo:
    files: dict[str, Path]
    commit: str = COMMIT
    gated: bool = False


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    body_bytes: int = 0  # file bytes sent by resolve GETs
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- setup ---------------------------------------------------------------------------
    def add_repo(self, repo: str, files: dict[str, Path], *, gated: bool = False) -> None:
        self.repos[repo] = Repo(dict(files), gated=gated)

    def fault(self, match: str, **kwargs) -> Fault:
        fault = Fault(match, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def start(self) -> HubServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.body_bytes = 0

    # --- internals ------------------------------------------------------------------------
    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times != 0 and fault.match in path and method in fault.methods:
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def entry(self, repo: Repo, path: str) -> dict:
        data = repo.files[path]
        size = data.stat().st_size
        sha = file_sha256(data)
        return {
            "type": "file",
            "oid": hashlib.sha1(sha.encode()).hexdigest(),
            "size": size,
            "path": path,
            "lfs": {"oid": sha, "size": size, "pointerSize": 134},
        }


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # --- helpers ---------------------------------------------------------------------
        def _json(self, obj, status: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(
            self, status: int, code: str | None = None, message: str = "", retry_after: str | None = None
        ) -> None:
            body = json.dumps({"error": message or code or str(status)}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            if message:
                self.send_header("X-Error-Message", message)
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _repo(self, parts: list[str]) -> tuple[str, Repo | None]:
            name = "/".join(parts[:2])
            return name, hub.repos.get(name)

        # --- dispatch --------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._dispatch()

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            self.record = Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
            with hub.lock:
                hub.requests.append(self.record)
            length = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(length) if length else b""
            fault = hub.take_fault(self.command, path)
            if fault is not None and fault.status is not None:
                return self._error(fault.status, fault.error_code, retry_after=fault.retry_after)
            parts = [p for p in path.split("/") if p]
            if parts[:2] == ["api", "models"]:
                return self._api(parts[2:], url.query, form)
            if len(parts) >= 5 and parts[2] == "resolve":
                if fault is not None and fault.redirect:
                    return self._redirect(parts)
                return self._resolve(parts, fault)
            if len(parts) >= 4 and parts[0] == "cdn":
                return self._resolve(parts[1:3] + ["resolve", "main"] + parts[3:], fault, cdn=True)
            return self._error(404, message="no such route")

        def _api(self, parts: list[str], query: str, form: bytes) -> None:
            name, repo = self._repo(parts)
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            rest = parts[2:]
            if not rest or rest[0] == "revision":
                return self._json(
                    {
                        "id": name,
                        "modelId": name,
                        "sha": repo.commit,
                        "private": False,
                        "gated": "manual" if repo.gated else False,
                        "tags": ["gguf"],
                        "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                    }
                )
            if rest[0] == "tree":
                prefix = "/".join(rest[2:])
                entries = [hub.entry(repo, p) for p in sorted(repo.files) if p.startswith(prefix)]
                return self._json(entries)
            if rest[0] == "paths-info":
                wanted = parse_qs(form.decode()).get("paths", [])
                if not wanted and form.startswith(b"{"):
                    wanted = json.loads(form).get("paths", [])
                return self._json([hub.entry(repo, p) for p in wanted if p in repo.files])
            return self._error(404, message="no such route")

        def _redirect(self, parts: list[str]) -> None:
            """The Hub's answer for an LFS file: 302 to the CDN, with the file's size and hash."""
            _name, repo = self._repo(parts)
            file_path = "/".join(parts[4:])
            if repo is None or file_path not in repo.files:
                return self._error(404, "EntryNotFound", "Entry not found")
            sha = file_sha256(repo.files[file_path])
            self.send_response(302)
            self.send_header("Location", f"/cdn/{'/'.join(parts[:2])}/{file_path}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(repo.files[file_path].stat().st_size))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _resolve(self, parts: list[str], fault: Fault | None, cdn: bool = False) -> None:
            _name, repo = self._repo(parts)
            if repo is None:
                return self._error(401, "RepoNotFound", "Repository not found")
            if repo.gated and not cdn and not self.headers.get("Authorization"):
                return self._error(401, "GatedRepo", "Access to this model is restricted")
            file_path = "/".join(parts[4:])
            if file_path not in repo.files:
                return self._error(404, "EntryNotFound", "Entry not found")
            data = repo.files[file_path]
            size = data.stat().st_size
            sha = file_sha256(data)
            start, end, status = 0, size - 1, 200
            wanted = None if fault is not None and fault.ignore_range else self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[6:].partition("-")
                start = int(first) if first else 0
                if last:
                    end = min(int(last), size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if fault is not None and fault.no_length:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(end + 1 - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            self._send_body(data, start, end + 1, fault)

        def _send_body(self, data: Path, start: int, size: int, fault: Fault | None) -> None:
            with open(data, "rb") as f:
                if fault is None:
                    try:
                        sent = self.connection.sendfile(f, start, size - start)
                    except (BrokenPipeError, ConnectionResetError):  # the client went away
                        self.close_connection = True
                        return
                    with hub.lock:
                        hub.body_bytes += sent
                        self.record.sent += sent
                    return
                f.seek(start)
                pos = start
                end = size if fault.cut_at is None or fault.cut_at < start else min(size, fault.cut_at)
                chunk = 64 << 10
                began = time.monotonic()
                try:
                    while pos < end:
                        block = bytearray(f.read(min(chunk, end - pos)))
                        if fault.corrupt_at is not None and pos <= fault.corrupt_at < pos + len(block):
                            block[fault.corrupt_at - pos] ^= 0xFF
                        self.wfile.write(block)
                        pos += len(block)
                        with hub.lock:
                            hub.body_bytes += len(block)
                            self.record.sent += len(block)
                        if fault.rate:
                            ahead = (pos - start) / fault.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                if end < size:  # cut: drop the connection mid-body
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    return Handler


def main() -> None:
    """``python tests/support/hubserver.py REPO FILE...``: serve files as one repo (for benchmarks)."""
    import sys

    repo, files = sys.argv[1], [Path(p) for p in sys.argv[2:]]
    hub = HubServer()
    hub.add_repo(repo, {p.name: p for p in files})
    hub.start()
    print(hub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
