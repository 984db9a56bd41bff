"""``localllm serve``: an OpenAI- and Ollama-compatible server on this machine."""

from __future__ import annotations

import argparse

from . import add_option, add_rpc_option, draft, lora, say, use_rpc_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--model",
        help="model for requests that name none (default: the last model used); "
        "any installed model loads when a request names it",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; Ollama's apps expect 11434)")
    add_option(
        parser, "parallel", help="sequences decoded at once per model (default: as many as the planner fits, at most 8)"
    )
    add_option(parser, "ctx", help="context of each sequence in tokens (default: 4096 or the model's)")
    parser.add_argument(
        "--max-models",
        type=int,
        default=1,
        help="models kept loaded at once; the least recently used unloads first (default 1)",
    )
    parser.add_argument(
        "--keep-alive",
        default="5m",
        help='how long an idle model stays loaded: "5m", "30s", "1h", 0 = unload when done, '
        "-1 = forever (default 5m; a request's keep_alive overrides it)",
    )
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $LOCALLLM_API_KEY, else none)")
    parser.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN call the server (repeatable; default: none)",
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds streams in flight get to finish after Ctrl-C (default 5)"
    )
    parser.add_argument(
        "--cache-ram",
        default="1G",
        metavar="SIZE",
        help="RAM per model for the KV cells of prompts no sequence holds any more, so that a "
        "conversation that lost its sequence is not read again (default 1G; 0: off)",
    )
    add_option(parser, "gpu_layers", shown="planned")
    add_option(parser, "threads", shown="the free physical cores, followed while generating")
    lora.add_argument(parser)
    draft.add_argument(parser)
    add_rpc_option(parser)


def _options(args: argparse.Namespace):
    from localllm import app
    from localllm.app.serving import ServeOptions, parse_cache_ram, parse_keep_alive
    from localllm.errors import UsageError

    app.options.check(ctx=args.ctx, parallel=args.parallel, threads=args.threads, gpu_layers=args.gpu_layers)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, not {args.port}")
    if args.max_models < 1:
        raise UsageError(f"--max-models must be at least 1, not {args.max_models}")
    if not 0 <= args.grace <= 3600:
        raise UsageError(f"--grace must be from 0 to 3600 seconds, not {args.grace}")
    try:
        keep_alive = parse_keep_alive(args.keep_alive)
    except ValueError as exc:
        raise UsageError(f"--keep-alive: {exc}") from None
    cache_ram = parse_cache_ram(args.cache_ram)  # UsageError
    return ServeOptions(
        model=args.model,
        n_parallel=args.parallel,
        n_ctx_seq=args.ctx,
        max_models=args.max_models,
        keep_alive_s=keep_alive,
        n_gpu_layers=args.gpu_layers,
        n_threads=args.threads,
        adapters=app.lora_specs(args.lora),
        draft=draft.ngram_only(args.draft, "serve"),
        cache_ram=cache_ram,
    )


def _how_to_connect(url: str, key: str | None) -> None:
    say(f"localllm serve: listening on {url} (OpenAI API under /v1, Ollama API under /api)")
    say(f'  OpenAI clients: base_url="{url}/v1", api_key="{"YOUR KEY" if key else "anything"}"')
    say(f'  Ollama clients: host "{url}" (OLLAMA_HOST={url})')
    say("  Ctrl-C stops it")


def run(args: argparse.Namespace) -> int:
    options = _options(args)
    use_rpc_workers(args.rpc)
    from localllm import app, config
    from localllm.app.serving import ModelManager
    from localllm.server import running
    from localllm.server.app import ServerSettings, create_app

    app.show_llama_log(args.verbose)
    key = config.api_key(args.api_key)
    settings = ServerSettings(api_key=key, cors=tuple(args.cors), debug=bool(getattr(args, "debug", False)))
    manager = ModelManager(options)
    try:
        if args.model:
            manager.resolve(args.model)  # a model that is not there is an error now, not at the first request
        sock = running.bind(args.host, args.port)
        server = running.make_server(create_app(manager, settings), grace_s=args.grace)
        _how_to_connect(running.address_of(sock), key)
        running.serve(server, sock)
    finally:
        manager.close()
    say("localllm serve: stopped")
    return 0
