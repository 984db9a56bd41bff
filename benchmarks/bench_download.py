"""Download throughput of localllm's downloader vs curl, and `localllm list` wall time.

    python benchmarks/bench_download.py [--size-mb 1024] [--runs 3]

Starts the test Hub (tests/support/hubserver.py) in its own process on 127.0.0.1, serving one file of
--size-mb MB; downloads it with curl and with localllm (the downloader alone, which hashes while
writing, and a whole `localllm pull`, Python start-up and Hub metadata included), alternating,
and prints a table (best of --runs). Then times `localllm list` with 20 installed models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = "bench/Bench-GGUF"


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        f.write(b"GGUF")
        for _ in range(size >> 20):
            f.write(block)


def start_server(file: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "hubserver.py"), REPO, str(file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


DOWNLOAD_ONLY = """
import json, sys, time
from localllm.hub import download
from localllm.hub.client import Hub
hub = Hub()
listing = hub.list_files(sys.argv[1])
f = listing.files[0]
t = time.perf_counter()
download.download(hub.resolve_url(sys.argv[1], f.path, listing.revision), size=f.size, sha256=f.sha256, hub=hub)
print(json.dumps({"seconds": time.perf_counter() - t, "size": f.size}))
"""


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1"}
    env.pop("HF_HUB_OFFLINE", None)
    with tempfile.TemporaryDirectory(prefix="bench-dl-") as tmp:
        tmp = Path(tmp)
        src = tmp / "Bench-Q4_K_M.gguf"
        make_file(src, args.size_mb << 20)
        size = src.stat().st_size
        server, url = start_server(src)
        env["HF_ENDPOINT"] = url
        file_url = f"{url}/{REPO}/resolve/main/{src.name}"
        results: dict[str, list[float]] = {"curl": [], "localllm download": [], "localllm pull (end to end)": []}
        try:
            subprocess.run(["curl", "-s", "-o", "/dev/null", file_url], check=True)  # warm the page cache
            for i in range(args.runs):
                out = tmp / f"curl-{i}"
                t = time.perf_counter()
                subprocess.run(["curl", "-s", "-f", "-o", str(out), file_url], check=True)
                results["curl"].append(time.perf_counter() - t)
                out.unlink()
                home = tmp / f"home-dl-{i}"
                r = subprocess.run(
                    [sys.executable, "-c", DOWNLOAD_ONLY, REPO],
                    env={**env, "LOCALLLM_HOME": str(home)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results["localllm download"].append(json.loads(r.stdout)["seconds"])
                subprocess.run(["rm", "-rf", str(home)], check=True)
                home = tmp / f"home-pull-{i}"
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "localllm", "pull", f"{REPO}:Q4_K_M"],
                    env={**env, "LOCALLLM_HOME": str(home)},
                    check=True,
                    capture_output=True,
                )
                results["localllm pull (end to end)"].append(time.perf_counter() - t)
                subprocess.run(["rm", "-rf", str(home)], check=True)
        finally:
            server.terminate()
            server.wait()
        best_curl = min(results["curl"])
        print(f"download of {size / 1e6:.0f} MB from the local test Hub (best of {args.runs})")
        print(f"{'client':<28} {'seconds':>8} {'MB/s':>8} {'vs curl':>8}")
        for name, times in results.items():
            best = min(times)
            print(f"{name:<28} {best:8.2f} {size / best / 1e6:8.0f} {best_curl / best:8.0%}")

        # `localllm list` with 20 installed models.
        home = tmp / "home-list"
        sys.path.insert(0, str(ROOT))
        os.environ["LOCALLLM_HOME"] = str(home)
        from localllm.models import store

        for i in range(20):
            rel = f"model-{i}/model-{i}-Q4_K_M.gguf"
            (home / "models" / f"model-{i}").mkdir(parents=True)
            (home / "models" / rel).write_bytes(b"GGUF")
            store.record(store.InstalledModel(name=f"model-{i}", quant="Q4_K_M", files=[rel], size=4 << 30))
        walls = []
        for _ in range(10):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "localllm", "list"],
                env={**env, "LOCALLLM_HOME": str(home)},
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - t)
        print()
        print(
            f"localllm list, 20 installed models: median {statistics.median(walls) * 1000:.0f} ms, "
            f"best {min(walls) * 1000:.0f} ms (10 runs, process start included)"
        )


if __name__ == "__main__":
    run()
