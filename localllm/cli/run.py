"""``localllm run``: answer one prompt, streaming the reply to stdout."""

from __future__ import annotations

import argparse
import json
import sys

from localllm.errors import LocalLLMError
from localllm.format import json_terminal_safe

from . import EXIT_INTERRUPTED, print_error, say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="*", help="the prompt; text piped on stdin is added after it")
    parser.add_argument(
        "-m",
        "--model",
        help="catalog name[:QUANT], owner/repo[:QUANT], owner/repo/file.gguf or a local .gguf "
        "(default: the last model used, or the starter model)",
    )
    parser.add_argument("-s", "--system", help="system prompt")
    parser.add_argument("-t", "--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    parser.add_argument("--top-k", type=int, default=40, help="top-k sampling, 0 = off (default 40)")
    parser.add_argument("-n", "--max-tokens", type=int, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable output")
    parser.add_argument("-c", "--ctx", type=int, help="context size in tokens (default: planned for this machine)")
    parser.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU, -1 = all (default: planned)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--ignore-eos", action="store_true", help="generate past the end of the reply (benchmarking)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the reply and its stats as one JSON object")
    out.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")


def _read_prompt(args: argparse.Namespace) -> str:
    from localllm.errors import UsageError

    parts = [" ".join(args.prompt).strip()]
    if any("\udc80" <= c <= "\udcff" for c in parts[0]):  # argv bytes that were not UTF-8
        raise UsageError("the prompt argument is not UTF-8 text", hint="pass UTF-8 text, or pipe the prompt on stdin")
    if not sys.stdin.isatty():
        try:
            stream = getattr(sys.stdin, "buffer", None)  # bytes, decoded here by one policy
            parts.append((stream.read().decode("utf-8") if stream is not None else sys.stdin.read()).strip())
        except UnicodeDecodeError as exc:
            raise UsageError(f"stdin is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    prompt = "\n\n".join(p for p in parts if p)
    if not prompt:
        raise UsageError(
            "no prompt given", hint='pass it as an argument or on stdin: localllm run "Why is the sky blue?"'
        )
    return prompt


def run(args: argparse.Namespace) -> int:
    from localllm import app

    app.options.check(
        ctx=args.ctx,
        threads=args.threads,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        gpu_layers=args.gpu_layers,
    )
    if not args.prompt and sys.stdin.isatty() and sys.stdout.isatty() and not args.json:
        return interactive(args)
    prompt = _read_prompt(args)
    app.show_llama_log(args.verbose)
    sampling = app.sampling(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
    )
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": prompt}
    ]
    with app.open_model(
        args.model, n_ctx=args.ctx, n_gpu_layers=args.gpu_layers, n_threads=args.threads, notice=say
    ) as model:
        generation = model.chat(messages, sampling)
        interrupted = _stream(generation, quiet=args.json)
        stats, load_s = generation.stats, model.load_report.load_s
        if args.json:
            result = {
                "model": model.label,
                "path": str(model.resolved.path),
                "reply": generation.text,
                "finish_reason": stats.finish_reason,
                "stats": {"load_s": round(load_s, 4), **stats.as_dict()},
            }
            sys.stdout.write(json_terminal_safe(json.dumps(result, ensure_ascii=False)) + "\n")
        elif generation.text and not generation.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if args.stats:
            print(_stats_line(model.label, load_s, stats), file=sys.stderr)
    if interrupted:
        print_error("interrupted; the reply above is partial")
        return EXIT_INTERRUPTED
    return 0


def interactive(args: argparse.Namespace, read=None) -> int:
    """A chat in the terminal, as ``ollama run`` opens: slash commands, saved like the TUI's chats;
    lines read with editing and history on a terminal (:mod:`.line_input`), ``read`` in tests."""
    from localllm import app
    from localllm.chat import commands
    from localllm.chat.history import History, input_history_path
    from localllm.chat.session import ChatSession

    from .line_input import read_message, reader

    if read is None:
        read = reader(input_history_path())

    app.show_llama_log(args.verbose)
    settings = {
        k: v
        for k, v in {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "seed": args.seed,
            "max_tokens": args.max_tokens,
        }.items()
        if v is not None
    }
    model = app.open_model(args.model, n_ctx=args.ctx, n_gpu_layers=args.gpu_layers, n_threads=args.threads, notice=say)
    history = History()
    session = ChatSession(
        history,
        model_label=model.label,
        model_path=model.resolved.path,
        system_prompt=args.system or "",
        settings=settings,
    )
    say(f'{model.label}: type a message (/help for commands, """ for several lines, /bye or Ctrl-D to leave)')
    try:
        while True:
            try:
                line = read_message(read, ">>> ")
            except EOFError:
                break
            except KeyboardInterrupt:
                print()
                continue
            try:
                command = commands.parse(line)
                if command is None:
                    if line.strip():
                        _chat_turn(session, model, commands.message_text(line.strip()))
                elif command.name == "bye":
                    break
                elif command.name == "model" and not command.arg:
                    _list_models(model)
                elif command.name == "model":
                    model = _switch_model(session, model, command.arg, args)
                elif command.name == "copy":
                    say("/copy works in the TUI (localllm chat); select the text here to copy it")
                else:
                    say(session.command(command))
            except LocalLLMError as exc:
                print_error(exc)
    finally:
        model.close()
        history.close()
    return 0


def _list_models(model) -> None:
    """``/model`` alone: the installed models, this chat's marked, and how to switch."""
    from localllm import app

    installed = [m for m in app.list_models(judge=False) if m.installed and m.error is None]
    if not installed:
        say("no models installed (localllm pull NAME)")
        return
    current = str(model.resolved.path)
    for m in installed:
        mark = "*" if m.path is not None and str(m.path) == current else " "
        say(f"{mark} {m.key}")
    say("/model NAME continues this chat with another one")


def _switch_model(session, model, reference: str, args: argparse.Namespace):
    """The model the chat goes on with: ``reference`` loaded, or ``model`` again if that fails."""
    from localllm import app

    resolved = app.find(reference, notice=say)  # a wrong name fails here, with the current model still open
    if str(resolved.path) == str(model.resolved.path):
        say(f"this chat already uses {model.label}")
        return model
    current = model.resolved
    load = {"n_ctx": args.ctx, "n_gpu_layers": args.gpu_layers, "n_threads": args.threads, "notice": say}
    model.close()  # one model in memory at a time
    try:
        model = app.open_model(resolved=resolved, **load)
    except LocalLLMError:
        model = app.open_model(resolved=current, **load)  # back to the model that worked
        raise
    session.switch_model(model.label, model.resolved.path)
    say(f"this chat continues with {model.label}")
    return model


def _chat_turn(session, model, text: str) -> None:
    from localllm import app

    from .line_input import WordWrap

    sampling = app.sampling(**session.settings)
    session.send(text)
    wrap = WordWrap(sys.stdout)
    reply = session.reply().stream(
        model,
        sampling,
        on_piece=wrap.write,
        on_trimmed=lambda n: say(f"(old turns left the context: the {n} oldest messages are left out from now on)"),
    )
    if not reply.discarded:
        wrap.end()
    if reply.error is not None:
        raise reply.error


def _stream(generation, *, quiet: bool) -> bool:
    """Write the reply as it comes (unless ``quiet``); True if Ctrl-C stopped it."""
    try:
        for piece in generation:
            if not quiet:
                sys.stdout.write(piece)
                sys.stdout.flush()
    except KeyboardInterrupt:
        generation.close()
        return True
    return False


def _stats_line(label: str, load_s: float, stats) -> str:
    return (
        f"{label}: loaded in {load_s:.2f} s, prompt {stats.prompt_tokens} tokens at {stats.prompt_tokens_per_s:.1f} tok/s, "
        f"{stats.generated_tokens} generated at {stats.tokens_per_s:.1f} tok/s, "
        f"first token {stats.ttft_s * 1000:.0f} ms, finish: {stats.finish_reason}"
    )
