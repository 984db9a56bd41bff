"""``localllm run``: answer one prompt, streaming the reply to stdout."""

from __future__ import annotations

import argparse
import json
import sys

from localllm.app.options import SAMPLING
from localllm.chat.context import reply_reserve
from localllm.errors import LocalLLMError
from localllm.format import json_terminal_safe, terminal_safe

from . import EXIT_INTERRUPTED, add_option, add_rpc_option, draft, lora, print_error, say, use_rpc_workers

SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="*", help="the prompt; text piped on stdin is added after it")
    parser.add_argument(
        "-m",
        "--model",
        help="catalog name[:QUANT], owner/repo[:QUANT], owner/repo/file.gguf or a local .gguf "
        "(default: the last model used, or the starter model)",
    )
    parser.add_argument("-s", "--system", help="system prompt")
    for name in SAMPLING_FLAGS:
        add_option(parser, name, default=SAMPLING[name].default)
    add_option(parser, "ctx", shown="planned for this machine")
    add_option(parser, "gpu_layers", shown="planned")
    lora.add_argument(parser)
    draft.add_argument(parser)
    add_option(parser, "threads", shown="the free physical cores, followed while generating")
    add_rpc_option(parser)
    parser.add_argument(
        "--docs",
        metavar="NAME",
        help="answer from the document collection NAME (localllm docs add), citing [file:lines]",
    )
    parser.add_argument("--ignore-eos", action="store_true", help="generate past the end of the reply (benchmarking)")
    parser.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a reasoning model thinks before it answers (--no-think: the template's enable_thinking=false; "
        "default: the model's own)",
    )
    parser.add_argument(
        "--hide-thinking", action="store_true", help="do not show a reasoning model's thinking (only its answer)"
    )
    parser.add_argument(
        "--reasoning-budget",
        type=int,
        metavar="N",
        help="at most N tokens of thinking: then the model is made to close it and answer (default: no limit)",
    )
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


def _check_budget(args: argparse.Namespace) -> None:
    from localllm.errors import UsageError

    budget = getattr(args, "reasoning_budget", None)
    if budget is not None and budget < 0:
        raise UsageError(f"--reasoning-budget must be 0 or more tokens, not {budget}")


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.chat import reasoning

    from .thinking import ThinkingShown, thinking_stream

    _check_budget(args)
    app.options.check(
        ctx=args.ctx,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        **{name: getattr(args, name) for name in SAMPLING_FLAGS},
    )
    use_rpc_workers(args.rpc)
    if not args.prompt and sys.stdin.isatty() and sys.stdout.isatty() and not args.json:
        return interactive(args)
    prompt = _read_prompt(args)
    app.show_llama_log(args.verbose)
    sampling = app.sampling(**{name: getattr(args, name) for name in SAMPLING_FLAGS}, ignore_eos=args.ignore_eos)
    adapters = app.lora_specs(args.lora)
    found = _retrieve(args.docs, prompt) if args.docs else None  # the embedding model is closed again here
    kept: list = []
    with app.open_model(
        args.model,
        n_ctx=args.ctx,
        n_gpu_layers=args.gpu_layers,
        n_threads=args.threads,
        notice=say,
        adapters=adapters,
        draft=args.draft,
    ) as model:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": prompt}
        ]
        if found is not None:
            messages, kept = app.documents.ground(model, messages, found, reply_reserve(model.n_ctx, args.max_tokens))
        generation = reasoning.chat(model, messages, sampling, think=args.think, budget=args.reasoning_budget)
        shown = None if args.json else thinking_stream(hide=args.hide_thinking)
        interrupted = _stream(generation, quiet=args.json, thinking=ThinkingShown(shown) if shown else None)
        stats, load_s = generation.stats, model.load_report.load_s
        if args.json:
            result = {
                "model": model.label,
                "path": str(model.resolved.path),
                "reply": generation.answer,
                "reasoning": generation.reasoning,
                "finish_reason": stats.finish_reason,
                "stats": {"load_s": round(load_s, 4), **stats.as_dict()},
            }
            if found is not None:
                result["sources"] = [s.record() for s in kept]
            sys.stdout.write(json_terminal_safe(json.dumps(result, ensure_ascii=False)) + "\n")
        else:
            if generation.answer and not generation.answer.endswith("\n"):
                sys.stdout.write("\n")
            if found is not None:
                sys.stdout.write(terminal_safe("\n" + app.documents.sources_text(kept)))
        sys.stdout.flush()
        if args.stats:
            print(_stats_line(model.label, load_s, stats), file=sys.stderr)
    if interrupted:
        print_error("interrupted; the reply above is partial")
        return EXIT_INTERRUPTED
    return 0


def _retrieve(name: str, question: str) -> list:
    from localllm import app

    with app.documents.Retriever(name) as retriever:
        return retriever.retrieve(question)


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
    settings = {name: getattr(args, name) for name in SAMPLING_FLAGS if getattr(args, name) is not None}
    adapters = app.lora_specs(args.lora)
    beside = app.documents.embedder_bytes(args.docs) if args.docs else 0  # loaded beside it: the planner leaves room
    model = app.open_model(
        args.model, n_ctx=args.ctx, n_gpu_layers=args.gpu_layers, n_threads=args.threads, notice=say,
        adapters=adapters, beside=beside, draft=args.draft,
    )  # fmt: skip
    history = History()
    session = ChatSession(
        history,
        model_label=model.label,
        model_path=model.resolved.path,
        system_prompt=args.system or "",
        settings=settings,
        think=getattr(args, "think", None),
        think_budget=getattr(args, "reasoning_budget", None),
    )
    hide_thinking = getattr(args, "hide_thinking", False)
    retriever = None
    try:
        if args.docs:
            retriever = _docs_command(session, None, args.docs)
    except LocalLLMError:
        model.close()
        history.close()
        raise
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
                        _chat_turn(
                            session, model, commands.message_text(line.strip()), retriever, hide_thinking=hide_thinking
                        )
                elif command.name == "bye":
                    break
                elif command.name == "model" and not command.arg:
                    _list_models(model)
                elif command.name == "model":
                    model = _switch_model(session, model, command.arg, args)
                elif command.name == "lora":
                    say(_lora_command(model, command))
                elif command.name == "docs":
                    retriever = _docs_command(session, retriever, command.arg)
                elif command.name == "copy":
                    say("/copy works in the TUI (localllm chat); select the text here to copy it")
                else:
                    say(session.command(command))
            except LocalLLMError as exc:
                print_error(exc)
    finally:
        if retriever is not None:
            retriever.close()
        model.close()
        history.close()
    return 0


def _docs_command(session, retriever, arg: str):
    """``/docs NAME|off`` (or ``--docs NAME``): the collection the chat answers from now on (its
    retriever, the embedding model open beside the chat model), or None; ``/docs`` lists them."""
    from localllm import app

    if not arg:
        found = app.documents.collections()
        for c in found:
            mark = "*" if c.name == session.docs else " "
            say(terminal_safe(f"{mark} {c.name}  ({c.files} files, {c.chunks} chunks)"))
        say("/docs NAME answers from a collection, /docs off from the model alone" if found else
            "no collections (make one with `localllm docs add NAME PATH...`)")  # fmt: skip
        return retriever
    if arg == "off":
        if retriever is not None:
            retriever.close()
        session.attach_docs(None)
        say("answers come from the model alone from now on")
        return None
    attached = app.documents.Retriever(arg)  # an unknown collection fails here, the chat goes on as it was
    if retriever is not None:
        retriever.close()
    session.attach_docs(arg)
    say(f"answers come from the collection {arg} from now on, citing [file:lines] (/docs off to stop)")
    return attached


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
    load = {"n_ctx": args.ctx, "n_gpu_layers": args.gpu_layers, "n_threads": args.threads, "notice": say,
            "draft": args.draft}  # fmt: skip
    model.close()  # one model in memory at a time; the adapters stay with the old base
    try:
        model = app.open_model(resolved=resolved, **load)
    except LocalLLMError:
        model = app.open_model(resolved=current, **load)  # back to the model that worked
        raise
    session.switch_model(model.label, model.resolved.path)
    say(f"this chat continues with {model.label}")
    return model


def _lora_command(model, command) -> str:
    """Carry out ``/lora`` on the loaded model; what to tell the user."""
    from localllm.chat import commands

    if not model.adapters:
        return "no LoRA adapter is loaded (start the chat with --lora FILE)"
    if command.adapter is not None:
        name, scale = command.adapter
        current = dict(model.active_adapters)
        if name == "off":
            current = {}
        else:
            current[name] = scale
        model.set_adapters(model.adapter_set(list(current.items())))
    return commands.describe_adapters(list(model.adapters), model.active_adapters)


def _chat_turn(session, model, text: str, retriever=None, *, hide_thinking: bool = False) -> None:
    from localllm import app

    from .line_input import WordWrap
    from .thinking import ThinkingShown

    sampling = app.sampling(**session.settings)
    session.send(text)
    wrap = WordWrap(sys.stdout)
    # the thinking dimmed above the answer on a terminal; a pipe gets the answers alone
    thinking = ThinkingShown(sys.stdout) if sys.stdout.isatty() and not hide_thinking else None

    def answer(piece: str) -> None:
        if thinking is not None:
            thinking.done()
        wrap.write(piece)

    try:
        reply = session.reply().stream(
            model,
            sampling,
            on_piece=answer,
            on_reasoning=thinking.write if thinking is not None else None,
            on_trimmed=lambda n: say(f"(old turns left the context: the {n} oldest messages are left out from now on)"),
            ground=retriever.ground if retriever is not None else None,
        )
    finally:
        if thinking is not None:
            thinking.done()
    if not reply.discarded:
        wrap.end()
    if retriever is not None and not reply.discarded:
        sys.stdout.write(terminal_safe(app.documents.sources_text(reply.sources)))
        sys.stdout.flush()
    if reply.error is not None:
        raise reply.error


def _stream(generation, *, quiet: bool, thinking=None) -> bool:
    """Write the answer as it comes (unless ``quiet``), the reasoning to ``thinking`` (a
    :class:`~.thinking.ThinkingShown`, None: not shown); True if Ctrl-C stopped it."""
    from localllm.chat.toolcalls import ReasoningDelta

    try:
        for part in generation:
            if isinstance(part, ReasoningDelta):
                if thinking is not None:
                    thinking.write(part.text)
                continue
            if thinking is not None:
                thinking.done()
            if not quiet:
                sys.stdout.write(part.text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        generation.close()
        return True
    finally:
        if thinking is not None:
            thinking.done()
    return False


def _stats_line(label: str, load_s: float, stats) -> str:
    return (
        f"{label}: loaded in {load_s:.2f} s, prompt {stats.prompt_tokens} tokens at {stats.prompt_tokens_per_s:.1f} tok/s, "
        f"{stats.generated_tokens} generated at {stats.tokens_per_s:.1f} tok/s, "
        f"first token {stats.ttft_s * 1000:.0f} ms, finish: {stats.finish_reason}"
        + threads_stats(stats)
        + draft_stats(stats)
    )


def threads_stats(stats) -> str:
    """The CPU threads part of a stats line: the generation count at the end of the reply, and
    the prompt's when it differs ("" when unknown)."""
    if not getattr(stats, "threads", 0):
        return ""
    prompt = getattr(stats, "threads_batch", 0)
    return f", threads {stats.threads}" + (f" (prompt {prompt})" if prompt and prompt != stats.threads else "")


def draft_stats(stats) -> str:
    """The speculative decoding part of a stats line ("" without ``--draft``)."""
    if not stats.draft:
        return ""
    text = (
        f", draft {stats.draft}: {stats.accepted_tokens} of {stats.drafted_tokens} drafted tokens accepted "
        f"({stats.acceptance:.0%})"
    )
    if stats.speedup:
        text += f", about {stats.speedup:.2f}x plain decoding"
    return text
