"""The standalone build's size and start-up (issue 15): one-folder vs one-file vs the source install.

    python benchmarks/bench_standalone.py [--build] [--dir dist/standalone] [--runs 9]

--build runs packaging/standalone/build.sh first (with this Python) and times it. Each binary runs
as in tests/packaging/test_standalone.py: PATH=/usr/bin:/bin, an empty HOME, HF_HUB_OFFLINE=1.
Targets: one-folder `--help` under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links counted once, as their target)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def timed_runs(command: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of each run. On a shared machine the wall time
    includes waiting for a core; the CPU time does not."""
    subprocess.run(command, env=env, capture_output=True, check=True)  # warm the page cache
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return walls, cpus


def ms(times: tuple[list[float], list[float]]) -> str:
    walls, cpus = times
    return f"{statistics.median(walls) * 1000:.0f} ms (CPU {statistics.median(cpus) * 1000:.0f} ms)"


def build(out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["bash", str(REPO / "packaging/standalone/build.sh"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / "dist" / "standalone")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--build", action="store_true", help="run build.sh first and time it")
    args = parser.parse_args()
    if args.build:
        print(f"build.sh (both variants): {build(args.dir):.0f} s")
    home = Path(tempfile.mkdtemp(prefix="bench-standalone-"))
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LOCALLLM_HOME": str(home / "data"), "HF_HUB_OFFLINE": "1"}
    source = {**os.environ, "PYTHONPATH": str(REPO), "LOCALLLM_HOME": str(home / "data"), "HF_HUB_OFFLINE": "1"}
    rows = [
        ("one folder", args.dir / "localllm", [str(args.dir / "localllm" / "localllm")], bare),
        ("one file", args.dir / "localllm-onefile", [str(args.dir / "localllm-onefile")], bare),
        ("source install (this Python)", None, [sys.executable, "-m", "localllm"], source),
    ]
    print(f"Medians of {args.runs} runs: wall clock (CPU time, user + system).")
    print("| build | size | `--help` | `hw --json` |")
    print("| --- | ---: | ---: | ---: |")
    for name, path, command, env in rows:
        size = f"{tree_size(path) / 2**20:.0f} MiB" if path else "-"
        help_times = timed_runs([*command, "--help"], env, args.runs)
        hw_times = timed_runs([*command, "hw", "--json"], env, args.runs)
        print(f"| {name} | {size} | {ms(help_times)} | {ms(hw_times)} |")


if __name__ == "__main__":
    main()
