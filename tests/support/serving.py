"""A real server on 127.0.0.1 (a free port), with uvicorn in a thread of the test process, serving
the real SmolLM2 installed in the test's data directory (the ``serve`` fixture)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from localllm.app.serving import ModelManager, ServeOptions
from localllm.server import running
from localllm.server.app import ServerSettings, create_app

MODEL = "smollm2-135m-instruct:Q4_1"
QUESTION = [{"role": "user", "content": "What is the capital city of France? Answer in one sentence."}]


@dataclass
class RunningServer:
    url: str
    manager: ModelManager
    log: io.StringIO  # the access log, one line per request

    def log_lines(self) -> list[str]:
        return self.log.getvalue().splitlines()


def start_server(
    options: ServeOptions | None = None, settings: ServerSettings | None = None, hardware=None
) -> tuple[RunningServer, Callable[[], None]]:
    """A running server and the function that stops it."""
    manager = ModelManager(options or ServeOptions(n_ctx_seq=1024, n_parallel=2), hardware=hardware)
    log = io.StringIO()
    app = create_app(manager, replace(settings or ServerSettings(), log=log))
    sock = running.bind("127.0.0.1", 0)
    server = running.make_server(app, grace_s=1.0)
    thread = threading.Thread(target=running.serve, args=(server, sock), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        manager.close()

    return RunningServer(running.address_of(sock), manager, log), stop


@pytest.fixture
def serve(installed_starter) -> Iterator:
    """serve(options=..., settings=..., hardware=...) starts a server; each is stopped at the end of the test."""
    stops: list[Callable[[], None]] = []

    def start(
        options: ServeOptions | None = None, settings: ServerSettings | None = None, hardware=None
    ) -> RunningServer:
        handle, stop = start_server(options, settings, hardware)
        stops.append(stop)
        return handle

    yield start
    for stop in stops:
        stop()
