"""uvicorn started on a socket bound here (so the port is known before the first request, and a
port in use is one clear error), and stopped gracefully: on Ctrl-C (SIGINT) or SIGTERM it stops
accepting, lets the streams in flight finish for up to ``grace_s`` seconds, then cancels the rest."""

from __future__ import annotations

import errno
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from localllm.errors import UsageError

DEFAULT_GRACE_S = 5.0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc.strerror}", hint="pass --host 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use", hint="choose another with --port") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def address_of(sock: socket.socket) -> str:
    """``http://host:port`` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: ASGIApp, grace_s: float = DEFAULT_GRACE_S) -> uvicorn.Server:
    # uvicorn's own access log and startup lines are off: the app logs one line per request.
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        # uvicorn's annotation says int, but it only hands the value to asyncio.timeout, which takes
        # seconds as a float: --grace 0.5 works.
        timeout_graceful_shutdown=grace_s,  # type: ignore[arg-type]
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


@contextmanager
def _quiet_after_stop() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it has stopped: with SIGINT that would be
    a KeyboardInterrupt, with SIGTERM a kill, after a clean stop. Both are ignored once it is done
    (it installs its own handlers while it runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on ``sock`` until Ctrl-C, SIGTERM or ``server.should_exit``."""
    with _quiet_after_stop():
        server.run(sockets=[sock])
