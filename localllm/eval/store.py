"""What eval keeps in the data directory, under ``eval/``:

- ``references/SHA-TEXT-ctxN.npz``: a reference model's top logits over a text at a context size
  (numpy arrays only, read with ``allow_pickle=False``), so comparing five quantizations with one
  reference costs one reference pass, as llama-perplexity's ``--kl-divergence-base`` file does.
- ``results/SHA.json``: every eval of one model file (by its sha256), the latest per text,
  context and reference, read by ``fit`` and the planner to show a measured quality cost; and
  ``bench --draft``'s speed-ups with each draft (``kind: speculative``), read by ``fit`` to propose
  a draft (localllm.app.drafting).
- ``hashes.json``: the sha256 of local files by path, size and modification time.

Each file is written atomically (localllm.fs): a crash leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm import fs, paths

if TYPE_CHECKING:  # numpy is imported by the functions that read or write arrays: fit and list need none
    import numpy as np

    from .metrics import Reference

FORMAT = 1


def eval_dir() -> Path:
    return paths.data_dir() / "eval"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, remembered by path, size and mtime (a multi-GB file is hashed once)."""
    path = Path(path).resolve()
    st = path.stat()
    cache_path = eval_dir() / "hashes.json"
    cache = _read_json(cache_path)
    cache = cache if isinstance(cache, dict) else {}
    known = cache.get(str(path))
    if isinstance(known, dict) and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        sha = known.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    sha = digest.hexdigest()
    cache[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    fs.atomic_write(cache_path, json.dumps(cache, indent=1), sync=False)
    return sha


# --- the reference's logits ---------------------------------------------------------------------


def reference_path(ref_sha: str, text_sha: str, n_ctx: int) -> Path:
    return eval_dir() / "references" / f"{ref_sha[:32]}-{text_sha[:16]}-ctx{n_ctx}.npz"


def save_reference(path: Path, ref: Reference, tokens: np.ndarray, complete: bool) -> None:
    """Write the reference's rows and the chunk tokens they were computed on, all or nothing
    (``complete``: they are every chunk of the text)."""
    import numpy as np

    from .metrics import Reference

    with fs.replacing(path) as out:
        np.savez(
            out,
            format=np.int32(FORMAT),
            complete=np.bool_(complete),
            tokens=tokens.astype(np.int32),
            **{name: getattr(ref, name) for name in Reference.__dataclass_fields__},
        )


def load_reference(path: Path) -> tuple[Reference, np.ndarray, bool] | None:
    """The reference saved at ``path``, its chunk tokens (n_chunks, n_ctx) and whether they are all
    the text's chunks; None when absent, damaged, or of another format."""
    import numpy as np

    from .metrics import Reference

    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != FORMAT:
                return None
            ref = Reference(*(data[name] for name in Reference.__dataclass_fields__))
            tokens = data["tokens"]
            complete = bool(data["complete"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(tokens)
    if (
        tokens.ndim != 2
        or n == 0
        or len(ref.ids) % n
        or any(len(getattr(ref, f)) != len(ref.ids) for f in Reference.__dataclass_fields__)
    ):
        return None
    return ref, tokens, complete


# --- results per model file ----------------------------------------------------------------------


def results_path(sha: str) -> Path:
    return eval_dir() / "results" / f"{sha}.json"


def record(sha: str, file: dict[str, Any], run: dict[str, Any]) -> None:
    """Add ``run`` to the results of the file with ``sha``, replacing an earlier run on the same text,
    context and reference."""
    path = results_path(sha)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        data = {"format": FORMAT, "sha256": sha, "runs": []}
    data.update(file)
    key = _key(run)
    data["runs"] = [r for r in data["runs"] if isinstance(r, dict) and _key(r) != key]
    data["runs"].append({**run, "time": time.time()})
    fs.atomic_write(path, json.dumps(data, indent=1))


def _key(run: dict[str, Any]) -> tuple:
    ref = run.get("reference") or {}
    draft = run.get("draft")  # bench --draft: one result per draft
    draft_sha = draft.get("sha256") if isinstance(draft, dict) else None
    return (run.get("text", {}).get("sha256"), run.get("n_ctx"), ref.get("sha256"), run.get("kind", "perplexity"),
            draft_sha)  # fmt: skip


def all_results() -> list[dict[str, Any]]:
    folder = eval_dir() / "results"
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("runs"), list):
            out.append(data)
    return out


def measured_kld(path: Path | None = None, size: int | None = None, sha: str | None = None) -> dict[str, Any] | None:
    """The latest KL divergence measured for a model file (by sha256, or by path and size): its
    mean, the reference it was measured against, and when; None when eval has not measured it."""
    resolved = str(Path(path).resolve()) if path is not None else None
    best: dict[str, Any] | None = None
    for data in all_results():
        if not (
            (sha and data.get("sha256") == sha)
            or (resolved and data.get("path") == resolved and data.get("size") == size)
        ):
            continue
        for run in data["runs"]:
            if (run.get("reference") or {}).get("sha256") == data.get("sha256"):
                continue  # the file against itself: 0 by construction, nothing measured
            kld = run.get("kl_divergence")
            if isinstance(kld, dict) and isinstance(kld.get("mean"), (int, float)) and not run.get("interrupted"):
                if best is None or run.get("time", 0) > best.get("time", 0):
                    best = {"kld": float(kld["mean"]), "p99": kld.get("p99"), "reference": run.get("reference"),
                            "perplexity": run.get("perplexity"), "time": run.get("time", 0)}  # fmt: skip
    return best
