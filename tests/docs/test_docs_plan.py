"""Issue 25, item 3: the planner counts the embedding model a collection loads beside the chat
model (``fit --docs NAME``; the chats, batch and serve plan their model with it left out of RAM)."""

from __future__ import annotations

import json

from support.docs import make_corpus

from localllm.app import documents, fitting
from localllm.app.types import Hardware


def test_fit_leaves_the_embedding_models_memory_out(tmp_path, minilm_path, smollm2_path, cli):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    embedder = documents.embedder_bytes("notes")
    assert minilm_path.stat().st_size < embedder < 3 * minilm_path.stat().st_size  # weights + its buffers
    alone = fitting.fit_model(str(smollm2_path), Hardware(ram_total=2**40, ram_available=2**40), n_ctx=512)
    need = alone.results[0]["estimate"]["cpu"]["total"]
    room = need + embedder // 2  # holds the chat model, not both
    hw = Hardware(ram_total=room, ram_available=room)
    assert fitting.fit_model(str(smollm2_path), hw, n_ctx=512).results[0]["verdict"] != "no"
    both = fitting.fit_model(str(smollm2_path), hw, n_ctx=512, docs="notes").results[0]
    assert both["verdict"] == "no" and both["docs"] == {"name": "notes", "embedder_bytes": embedder}
    shown = cli("fit", str(smollm2_path), "--docs", "notes", "--ctx", "512")
    assert shown.returncode == 0, shown.stderr
    assert "documents notes: its embedding model takes" in shown.stdout
    as_json = json.loads(cli("fit", str(smollm2_path), "--docs", "notes", "--json").stdout)
    assert as_json["models"][0]["docs"]["embedder_bytes"] == embedder


def test_batch_plans_with_the_embedding_models_of_the_collections_its_lines_name(tmp_path, minilm_path):
    from localllm.app.batching import _embedders_bytes

    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    embedder = documents.embedder_bytes("notes")
    lines = [
        (1, json.dumps({"id": 1, "prompt": "hi"})),
        (2, json.dumps({"id": 2, "prompt": "bake?", "docs": "notes"})),
        (3, json.dumps({"id": 3, "prompt": "tax?", "docs": "notes"})),  # one model per collection
        (4, json.dumps({"id": 4, "prompt": "x", "docs": "nosuch"})),  # fails on its own line
        (5, '{"docs": '),  # malformed: its own error record
    ]
    assert _embedders_bytes(lines) == embedder
    assert _embedders_bytes(lines[:1]) == 0
