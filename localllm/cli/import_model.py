"""``localllm import``: adopt a local GGUF into the store (copy, hard link or symlink)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a .gguf file (the first part, for a split model)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--link", action="store_true", help="hard-link instead of copying (same file system)")
    how.add_argument("--symlink", action="store_true", help="refer to the file where it is (no copy)")
    parser.add_argument("--name", help="the name to use (default: from the file name)")


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.format import format_bytes

    mode = "hardlink" if args.link else "symlink" if args.symlink else "copy"
    imported = app.import_file(Path(args.path), mode=mode, name=args.name)
    model = imported.model
    use = f"use it with: --lora {model.key}" if model.is_adapter else f"run it with: localllm run -m {model.key}"
    if imported.already_installed:
        print(f"{model.key} is already installed (same file, sha256 {model.sha256[:12]}…): nothing copied; {use}")
        return 0
    how = {"copy": "copied", "hardlink": "hard-linked", "symlink": "linked"}[mode]
    kind = "LoRA adapter " if model.is_adapter else ""
    print(f"imported {kind}{model.key} ({format_bytes(model.size)}, {how}); {use}")
    return 0
