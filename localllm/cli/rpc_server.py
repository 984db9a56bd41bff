"""``localllm rpc-server``: a llama.cpp RPC worker, so that another machine's ``--rpc`` can put
model layers on this machine's GPU (else its CPU) and memory."""

from __future__ import annotations

import argparse

from . import EXIT_INTERRUPTED, add_option, say

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only). ggml-rpc has no "
        "authentication: anyone who reaches the port can use this machine's memory and compute",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add_option(parser, "threads", shown="physical cores")


def run(args: argparse.Namespace) -> int:
    import threading

    from localllm import app
    from localllm.errors import UsageError

    app.options.check(threads=args.threads)
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {args.port}")
    host, port = app.machine.rpc_endpoint(args.host, args.port)
    if not app.machine.is_loopback(host):
        say(
            f"warning: ggml-rpc has no authentication: anyone who can reach {host}:{port} can use this "
            "worker's memory and compute and read what is sent to it; listen only on a trusted network"
        )
    app.show_llama_log(args.verbose)
    app.machine.check_rpc_listen(host, port)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            app.machine.serve_rpc(host, port, args.threads)
        except BaseException as exc:  # handed to the main thread, which reports it
            failure.append(exc)

    # The worker's C loop never returns to Python; in a thread of its own, Ctrl-C still stops it.
    worker = threading.Thread(target=serve, name="rpc-server", daemon=True)
    worker.start()
    say(f"localllm rpc-server: serving at {host}:{port} (use it with --rpc {host}:{port}); Ctrl-C stops it")
    try:
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        say("localllm rpc-server: stopped")
        return EXIT_INTERRUPTED
    if failure:
        raise failure[0]
    return 0
