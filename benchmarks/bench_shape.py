"""The shape of the code and the cost of starting it (issue 10), for this tree and optionally another.

    .venv/bin/python benchmarks/bench_shape.py [--against OTHER_CHECKOUT] [--model FILE]

Prints, per tree: lines per package, functions over 60 lines (and the longest), the localllm
modules each CLI command module imports (directly, lazy imports included), then the median wall
time of `localllm --help` and of `localllm list` with 20 installed models (hard links of a real
GGUF, so every header is parsed once and then read from the header cache). `--against` runs the
same on another checkout (e.g. `git worktree add /tmp/before <commit>`) with this environment.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lines_per_package(tree: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in sorted((tree / "localllm").rglob("*.py")):
        rel = path.relative_to(tree / "localllm")
        key = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        counts[key] = counts.get(key, 0) + len(path.read_text().splitlines())
    return counts


def long_functions(tree: Path) -> list[tuple[int, str]]:
    found = []
    for path in sorted((tree / "localllm").rglob("*.py")):
        rel = path.relative_to(tree / "localllm")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
    return sorted(found, reverse=True)


def cli_imports(tree: Path) -> dict[str, list[str]]:
    """localllm modules (outside the CLI) each command module imports, lazy imports included."""
    result = {}
    for path in sorted((tree / "localllm" / "cli").glob("*.py")):
        mods = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 2:  # from .. import x / from ..x import y (the flat layout)
                mods.update(f"{a.name}" for a in node.names) if node.module is None else mods.add(node.module)
            elif node.level == 0 and node.module and node.module.startswith("localllm"):
                if node.module.startswith("localllm.cli"):
                    continue
                if node.module == "localllm":
                    mods.update(a.name for a in node.names if a.name != "__version__")
                else:
                    mods.add(node.module.removeprefix("localllm."))
        if path.stem not in ("__init__", "__main__", "progress"):
            result[path.stem] = sorted(mods)
    return result


def _median_wall(cmd: list[str], env: dict[str, str], runs: int) -> float:
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def _store_with(home: Path, model: Path, n: int) -> None:
    """A data directory with ``n`` installed models (manifest version 1, as every release writes it)."""
    entries = []
    for i in range(n):
        rel = f"model-{i:02d}/model-{i:02d}-Q4_1.gguf"
        (home / "models" / f"model-{i:02d}").mkdir(parents=True)
        os.link(model, home / "models" / rel)
        entries.append(
            {
                "name": f"model-{i:02d}",
                "quant": "Q4_1",
                "files": [rel],
                "size": model.stat().st_size,
                "source": "bench",
                "installed_at": 1700000000.0 + i,
            }
        )
    (home / "manifest.json").write_text(json.dumps({"version": 1, "models": entries}))


def timings(tree: Path, model: Path, runs: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:  # same file system: hard links
        home = Path(tmp) / "home"
        _store_with(home, model, 20)
        env["LOCALLLM_HOME"] = str(home)
        base = [sys.executable, "-m", "localllm"]
        subprocess.run([*base, "list"], env=env, check=True, capture_output=True)  # parse each header once
        return {
            "--help": _median_wall([*base, "--help"], env, runs),
            "list (20 models)": _median_wall([*base, "list"], env, runs),
        }


def report(tree: Path, model: Path, runs: int) -> None:
    print(f"## {tree}")
    counts = lines_per_package(tree)
    print("lines per package: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    print(f"total lines: {sum(counts.values())}")
    longest = long_functions(tree)
    over = [f for f in longest if f[0] > 60]
    print(f"functions over 60 lines: {len(over)}" + ("".join(f"\n  {n:>4}  {name}" for n, name in over)))
    print("CLI command -> localllm modules it imports:")
    for command, mods in cli_imports(tree).items():
        print(f"  {command:<14} {len(mods):>2}  {', '.join(mods)}")
    for name, seconds in timings(tree, model, runs).items():
        print(f"localllm {name}: {seconds * 1000:.0f} ms (median of {runs})")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout to measure the same way")
    parser.add_argument(
        "--model",
        type=Path,
        default=ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
        help="a GGUF to install 20 times (default: the test suite's SmolLM2)",
    )
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"no model at {args.model}: run the tests once, or pass --model FILE")
    for tree in [ROOT] + ([args.against.resolve()] if args.against else []):
        report(tree, args.model.resolve(), args.runs)


if __name__ == "__main__":
    main()
