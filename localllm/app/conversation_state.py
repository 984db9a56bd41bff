"""The KV cache of a conversation, kept on disk so that reopening a long chat is fast.

After a reply, the model's KV cache (the conversation as evaluated so far) is written to
``<data>/cache/kv/<conversation-id>.bin`` with a small JSON key beside it naming the model file,
its size and modification time, and the load settings (context, KV types, GPU layers...). When the
conversation is next continued, the file is loaded only if the key matches the model now loaded;
the runtime then reuses the longest prefix of the new prompt that it holds, so a stale file costs
nothing but the read. Files are written atomically.

A file holds the KV cache of the tokens evaluated: tokens × the model's KV bytes per token (layers ×
2 × KV heads × head size × 2 bytes at f16), e.g. about 23 KB a token for SmolLM2-135M (165 MB at
7,100 tokens) and 128 KB a token for an 8B Llama (1 GiB at 8,192). All of them together are kept
under :data:`BUDGET` bytes: after each save the least recently saved are removed until they fit
(the one just saved always stays).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localllm import paths
from localllm.fs import atomic_write, ensure_dir

BUDGET = 2 * 1024**3  # bytes of saved caches, all conversations together (oldest evicted past it)
MIN_TOKENS = 256  # shorter conversations are evaluated again faster than a file is written


def state_dir() -> Path:
    return paths.cache_dir() / "kv"


def _files(conversation_id: int) -> tuple[Path, Path]:
    base = state_dir() / str(int(conversation_id))
    return base.with_suffix(".bin"), base.with_suffix(".json")


def key_of(model: Any) -> dict[str, Any]:
    """What the saved cache depends on: the model file and the settings it was loaded with."""
    path = Path(model.path)
    stat = path.stat()
    return {
        "version": 1,
        "model": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "settings": model.load_report.settings,
    }


def save(model: Any, conversation_id: int, budget: int | None = None) -> bool:
    """Save ``model``'s KV cache as ``conversation_id``'s; False if there was little to save."""
    if model.cached_tokens < MIN_TOKENS:
        return False
    state, key = _files(conversation_id)
    ensure_dir(state.parent)
    key.unlink(missing_ok=True)  # a key never describes another state than the one beside it
    if not model.save_state(state):
        return False
    atomic_write(key, json.dumps(key_of(model), sort_keys=True))
    _prune(BUDGET if budget is None else budget)
    return True


def restore(model: Any, conversation_id: int) -> int:
    """Load ``conversation_id``'s saved cache into ``model`` if it was saved by this model with
    these settings; how many tokens it holds (0: none, or invalidated and removed)."""
    state, key = _files(conversation_id)
    try:
        saved = json.loads(key.read_text("utf-8"))
    except (OSError, ValueError):
        return 0
    if saved != key_of(model) or not state.is_file():
        forget(conversation_id)
        return 0
    loaded = model.load_state(state)
    if not loaded:
        forget(conversation_id)
    return loaded


def forget(conversation_id: int) -> None:
    """Remove a conversation's saved cache (the chat was deleted or its cache is stale)."""
    for path in _files(conversation_id):
        path.unlink(missing_ok=True)


def disk_use() -> int:
    """Bytes the saved caches take, all conversations together."""
    return sum(p.stat().st_size for p in state_dir().glob("*.bin"))


def _prune(budget: int) -> None:
    """Remove the least recently saved caches until the rest fit in ``budget`` bytes (the newest stays)."""
    states = sorted(state_dir().glob("*.bin"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    total = 0
    for n, state in enumerate(states):
        total += state.stat().st_size
        if n and total > budget and state.stem.isdigit():
            forget(int(state.stem))
