"""``localllm chat [MODEL]``: open the terminal UI straight into a chat (``localllm`` alone opens it
on the models screen)."""

from __future__ import annotations

import argparse
import sys

from localllm.app.options import SAMPLING

from . import add_option, draft, lora, say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        help="catalog name[:QUANT], owner/repo[:QUANT], owner/repo/file.gguf or a local .gguf "
        "(default: the last model used, or the starter model)",
    )
    parser.add_argument("-s", "--system", default="", help="system prompt for new chats")
    add_option(parser, "temperature", shown=SAMPLING["temperature"].default)
    add_option(parser, "ctx", shown="what fits this machine, up to the model's own; the status bar shows it")
    add_option(parser, "gpu_layers", shown="planned")
    parser.add_argument(
        "--think",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a reasoning model thinks before it answers (--no-think: the template's enable_thinking=false)",
    )
    parser.add_argument("--reasoning-budget", type=int, metavar="N", help="at most N tokens of thinking per reply")
    parser.add_argument(
        "--docs", metavar="NAME", help="new chats answer from the document collection NAME (/docs in a chat changes it)"
    )
    draft.add_argument(parser)
    lora.add_argument(parser)
    parser.add_argument("--light", action="store_true", help="light theme (F9 toggles)")


def run(args: argparse.Namespace) -> int:
    from localllm import app

    from .run import _check_budget

    _check_budget(args)
    app.options.check(ctx=args.ctx, temperature=args.temperature, gpu_layers=args.gpu_layers)
    # Resolve before the UI starts: a wrong name is one clear line on stderr, not a screen.
    resolved = app.find(args.model, notice=say)
    settings = {"temperature": args.temperature} if args.temperature is not None else {}
    if args.docs:
        app.documents.require(args.docs)  # an unknown collection: one line, before the UI starts
        settings["docs"] = args.docs
    app.lora_specs(args.lora)  # a missing or damaged adapter is one line here, not a screen
    return launch(
        lora=tuple(app.adapters.parse_reference(text) for text in args.lora or ()),
        chat=resolved,
        open_chat=True,
        ctx=args.ctx,
        gpu_layers=args.gpu_layers,
        system=args.system,
        settings=settings,
        light=args.light,
        think=args.think,
        think_budget=args.reasoning_budget,
        draft=args.draft,
    )


def launch(
    *,
    chat=None,
    open_chat=False,
    ctx=None,
    gpu_layers=None,
    system="",
    settings=None,
    light=False,
    think=None,
    think_budget=None,
    draft=None,
    lora=(),
) -> int:
    """Run the TUI (also what ``localllm`` with no command does)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        from localllm.errors import UsageError

        raise UsageError(
            "the terminal UI needs an interactive terminal", hint="run 'localllm run PROMPT' in scripts and pipes"
        )
    from localllm.tui.app import ChatDefaults, make_app
    from localllm.tui.services import ChatTarget

    target = ChatTarget.of(chat) if chat is not None else None
    app = make_app(
        chat=target,
        open_chat=open_chat,
        defaults=ChatDefaults(
            n_ctx=ctx,
            n_gpu_layers=gpu_layers,
            system_prompt=system,
            settings=settings or {},
            think=think,
            think_budget=think_budget,
            draft=draft,
            lora=tuple(lora),
        ),
        theme="textual-light" if light else None,  # None: the theme chosen last time
    )
    app.run()
    return app.return_code or 0
