"""Speculative decoding on this machine: what a draft gains (``bench --draft``) and whether to
propose one (``fit``).

A draft helps only where a verified batch of tokens costs much less than the tokens one at a time
(a GPU, a large model reading its weights from RAM); on a small model on a CPU core it can cost
more than it saves. So the planner does not guess: ``localllm bench MODEL --draft DRAFT`` decodes
two greedy replies with and without the draft, one that repeats its prompt (drafts are mostly
right) and one that repeats nothing, and keeps the speed-ups per model file (by sha256, with
``eval``'s results). ``fit`` then proposes the catalog's draft for a model when it fits beside it
and a measurement says it helps.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localllm.errors import UsageError
from localllm.eval import store
from localllm.fit.hardware import Hardware
from localllm.fit.plan import Verdict, plan_load, with_draft
from localllm.gguf.header import GGUFHeader
from localllm.models import catalog
from localllm.models import store as model_store
from localllm.models.catalog import CatalogEntry

from .loading import Notice, find, open_model, sampling

NGRAM = "ngram"
KIND = "speculative"
# A draft is proposed when it makes the repeating task at least this much faster and costs the
# other task at most what the runtime's own switch-off allows (it stops drafting below plain speed).
PROPOSE_GAIN = 1.1
WORST_LOSS = 0.95

_PASSAGE = (
    "The river town woke slowly on market days. Before the sun cleared the hills, the bakers had "
    "already lit their ovens, and the smell of bread drifted down the narrow lanes toward the water. "
    "Fishermen pulled their boats onto the gravel and laid out the night's catch on wet boards, "
    "calling prices to anyone who passed. Farmers arrived with carts of apples, cabbages and "
    "potatoes, and the cheese maker set up her table under the old chestnut tree, as her mother had "
    "done for forty years. Children ran between the stalls with coins in their fists, looking for "
    "honey cakes. By noon the square was full of voices, dogs and music from a fiddler who played "
    "the same three songs every week."
)
TASKS = {
    "repeat": f"Repeat the following text exactly, word for word:\n\n{_PASSAGE}",
    "free": "Write a short story about a dragon who learns to cook.",
}

Emit = Callable[[dict[str, Any]], None]


def _sha(path: Path, installed_sha: str | None) -> str:
    if installed_sha and len(installed_sha) == 64:
        return installed_sha.lower()
    return store.file_sha256(path)


def bench_draft(
    reference: str | None,
    draft: str,
    *,
    reps: int = 3,
    n_gen: int = 128,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    notice: Notice | None = None,
    emit: Emit | None = None,
) -> dict[str, Any]:
    """Greedy replies to each task, plain and with ``draft`` ("ngram" or a model reference),
    ``reps`` times each (the median counts); a row per task and mode goes to ``emit``. The
    speed-ups are kept for ``fit``. Raises DraftMismatchError for a draft of another vocabulary."""
    if reps < 1 or n_gen < 1:
        raise UsageError("--reps and --n-gen must be at least 1")
    resolved = find(reference, notice)
    is_ngram = draft.strip().lower() == NGRAM
    draft_resolved = None if is_ngram else find(draft, notice)
    settings = sampling(temperature=0.0, max_tokens=n_gen)
    messages = {task: [{"role": "user", "content": prompt}] for task, prompt in TASKS.items()}
    rows: list[dict[str, Any]] = []
    replies: dict[tuple[str, str], list[str]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    accepted: dict[str, list[float]] = {}
    threads = 0
    for mode in ("plain", "draft"):
        with open_model(
            resolved=resolved, n_ctx=2048, n_gpu_layers=n_gpu_layers, n_threads=n_threads, notice=notice,
            draft=None if mode == "plain" else draft,
        ) as opened:  # fmt: skip
            for _ in range(reps):
                for task, chat in messages.items():
                    generation = opened.chat(chat, settings)
                    replies.setdefault((task, mode), []).append(generation.read())
                    stats = generation.stats
                    threads = stats.threads or threads
                    rates.setdefault((task, mode), []).append(stats.tokens_per_s)
                    if mode == "draft":
                        accepted.setdefault(task, []).append(stats.acceptance)
    speedups: dict[str, float] = {}
    for task in TASKS:
        plain = statistics.median(rates[(task, "plain")])
        drafted = statistics.median(rates[(task, "draft")])
        speedups[task] = round(drafted / plain, 3) if plain > 0 else 0.0
        same = _agreement(replies[(task, "plain")], replies[(task, "draft")])
        for mode, rate in (("plain", plain), ("draft", drafted)):
            row: dict[str, Any] = {"test": f"{task} {mode if mode == 'plain' else 'draft ' + draft}",
                                   "task": task, "mode": mode, "tokens_per_s": round(rate, 2)}  # fmt: skip
            if mode == "draft":
                row.update(speedup=speedups[task], acceptance=round(statistics.median(accepted[task]), 3),
                           same_reply=same == 1.0, agreement=same)  # fmt: skip
            rows.append(row)
            if emit is not None:
                emit(row)
    model_sha = _sha(resolved.path, resolved.installed.sha256 if resolved.installed else None)
    draft_info = {"name": NGRAM, "sha256": NGRAM}
    if draft_resolved is not None:
        draft_info = {"name": draft_resolved.label,
                      "sha256": _sha(draft_resolved.path, draft_resolved.installed.sha256 if draft_resolved.installed else None)}  # fmt: skip
    file = {"path": str(resolved.path.resolve()), "size": resolved.path.stat().st_size, "model": resolved.label}
    run = {"kind": KIND, "draft": draft_info, "speedup": speedups, "threads": threads, "n_gen": n_gen,
           "reps": reps, "same_reply": all(r.get("same_reply", True) for r in rows)}  # fmt: skip
    store.record(model_sha, file, run)
    return {"model": resolved.label, "path": str(resolved.path), "draft": draft_info["name"], "threads": threads,
            "results": rows, "speedup": speedups}  # fmt: skip


def _agreement(plain: list[str], drafted: list[str]) -> float:
    """How much of the plain replies the drafted ones repeat before they first differ (1.0: the
    same replies). Greedy drafting keeps exactly the model's own picks, but llama.cpp's logits are
    not bit-for-bit the same for a batch of tokens as for one at a time (llama-server warns of the
    same with ``cache_prompt``), so a near-tie can break the other way late in a reply."""
    total = sum(len(p) for p in plain)
    if total == 0:
        return 1.0
    same = 0
    for p, d in zip(plain, drafted):
        same += len(os.path.commonprefix([p, d])) if p != d else len(p)
    return round(same / total, 3)


def measured(model_sha: str | None, path: Path | None, draft_sha: str) -> dict[str, Any] | None:
    """The latest ``bench --draft`` of a model file with a draft (by sha256, or "ngram"): its
    speed-ups per task and when; None when not measured here."""
    resolved = str(path.resolve()) if path is not None else None
    size = path.stat().st_size if path is not None and path.is_file() else None
    best: dict[str, Any] | None = None
    for data in store.all_results():
        if not ((model_sha and data.get("sha256") == model_sha) or
                (resolved and data.get("path") == resolved and data.get("size") == size)):  # fmt: skip
            continue
        for run in data["runs"]:  # a file edited by hand or damaged holds anything: skip what is not a run
            if not isinstance(run, dict) or run.get("kind") != KIND:
                continue
            draft, speedup, when = run.get("draft"), run.get("speedup"), run.get("time", 0)
            if not isinstance(draft, dict) or draft.get("sha256") != draft_sha or not isinstance(when, (int, float)):
                continue
            if not isinstance(speedup, dict) or not all(isinstance(speedup.get(t), (int, float)) for t in TASKS):
                continue
            if best is None or when > best["time"]:
                best = {"speedup": {t: float(speedup[t]) for t in TASKS}, "time": when, "threads": run.get("threads")}
    return best


def helps(speedup: dict[str, float]) -> bool:
    return speedup["repeat"] >= PROPOSE_GAIN and speedup["free"] >= WORST_LOSS


def propose(
    entry: CatalogEntry | None, header: GGUFHeader, path: Path | None, sha: str | None, hw: Hardware,
    n_ctx: int | None,
) -> dict[str, Any] | None:  # fmt: skip
    """What ``fit`` says of speculative decoding for one model file: the catalog's draft for it
    (installed? fits beside it? measured to help?), and n-gram drafts when measured. ``status`` is
    "proposed", "not measured", "slower", "does not fit" or "not installed"; None when there is
    nothing to say (no catalog draft and nothing measured)."""
    out: dict[str, Any] = {}
    if path is not None:
        ngram = measured(sha, path, NGRAM)
        if ngram is not None:
            out["ngram"] = {"status": "proposed" if helps(ngram["speedup"]) else "slower", **ngram}
    name = entry.draft if entry is not None else None
    if name is not None:
        out["model"] = _model_draft(catalog.load_catalog().get(name), header, path, sha, hw, n_ctx)
    return out or None


def _model_draft(
    draft: CatalogEntry, header: GGUFHeader, path: Path | None, sha: str | None, hw: Hardware, n_ctx: int | None
) -> dict[str, Any]:
    installed = [m for m in model_store.installed() if m.name.lower() == draft.name]
    info: dict[str, Any] = {"name": draft.name}
    if not installed:
        return {**info, "status": "not installed"}
    # The smallest installed quantization drafts: a draft's worth is its speed.
    chosen = min(installed, key=lambda m: m.size)
    from localllm.gguf import cache as headercache

    draft_header = headercache.read_header(chosen.path())
    info.update(name=chosen.key, bytes=draft_header.file_size or 0)
    if plan_load(with_draft(header, draft_header), hw, n_ctx).verdict is Verdict.NO:
        return {**info, "status": "does not fit"}
    found = measured(sha, path, _sha(chosen.path(), chosen.sha256)) if path is not None else None
    if found is None:
        return {**info, "status": "not measured"}
    return {**info, "status": "proposed" if helps(found["speedup"]) else "slower", **found}
