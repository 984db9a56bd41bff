"""Issue 25, item 4: ``batch`` lines with a ``docs`` field are answered from that collection, their
records carry the sources; a line naming an unknown collection is an error record, the rest runs."""

from __future__ import annotations

import json

from support.docs import make_corpus

from localllm.app import documents


def test_batch_lines_with_docs_get_sources_and_bad_collections_error_records(tmp_path, minilm_path, smollm2_path, cli):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    lines = [
        {"id": "bake", "prompt": "At what temperature do I bake the sourdough loaf?", "docs": "notes"},
        {"id": "plain", "prompt": "Say hello."},
        {"id": "nosuch", "prompt": "Anything?", "docs": "nosuch"},
        {"id": "bad", "prompt": "Anything?", "docs": 3},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines)
    result = cli("batch", "-m", str(smollm2_path), "--ctx", "1024", "--max-tokens", "16", "-q", "-", input=data)
    assert result.returncode == 3 and "2 of 4 lines failed" in result.stderr  # the batch's exit for failed lines
    records = {r["id"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["bake"]["text"].strip()
    assert records["bake"]["sources"][0] == {
        "cite": "[kitchen/sourdough.md:7-9]",
        "file": "kitchen/sourdough.md",
        "lines": "7-9",
        "heading": "# Sourdough",
    }
    assert records["bake"]["prompt_tokens"] > 100  # the chunks went into the prompt
    assert "sources" not in records["plain"] and records["plain"]["text"]
    assert records["nosuch"]["error"].startswith("no collection named nosuch")
    assert records["bad"]["error"] == '"docs" must be the name of a document collection'
