"""Document collections against the real runtime and a real embedding GGUF (all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from support.docs import make_corpus

from localllm.app import documents
from localllm.errors import DocumentsError


def top_file(name: str, query: str) -> str:
    hits = documents.search(name, query, k=3)
    return documents.sources(name, hits)[0].cite.rsplit(":", 1)[0]


def test_retrieves_the_right_file_for_each_question(tmp_path, minilm_path):
    corpus = make_corpus(tmp_path / "corpus")
    summary = documents.add("notes", [corpus], str(minilm_path))
    assert (summary.added, summary.skipped) == (4, [])
    assert top_file("notes", "how hot should the oven be for bread") == "kitchen/sourdough.md"
    assert top_file("notes", "when was my tax return submitted") == "money/taxes.txt"
    assert top_file("notes", "function computing fibonacci numbers") == "code/fib.py"
    assert top_file("notes", "when should I cut back my flowers") == "garden/roses.html"
    hits = documents.search("notes", "bake the loaf", k=5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    baking = [h for h in hits if "Dutch oven" in h.text][0]
    assert (baking.start_line, baking.end_line) == (7, 9)  # the "## Baking" section, heading kept with it
    assert baking.heading == "# Sourdough"
    [listed] = documents.collections()
    assert (listed.name, listed.files, listed.embed_model) == ("notes", 4, str(minilm_path))


def test_search_json_gives_file_lines_and_score_best_first(tmp_path, minilm_path, cli):
    corpus = make_corpus(tmp_path / "corpus")
    assert cli("docs", "add", "notes", str(corpus), "--embed", str(minilm_path)).returncode == 0
    result = cli("docs", "search", "notes", "Fibonacci", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["file"] == "code/fib.py" and rows[0]["lines"] == "1-6"
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert cli("docs", "rm", "notes").returncode == 0
    assert "no collection named notes" in cli("docs", "search", "notes", "x").stderr


def test_update_rereads_only_what_changed_and_drops_deleted_files(tmp_path, minilm_path):
    corpus = make_corpus(tmp_path / "corpus")
    documents.add("notes", [corpus], str(minilm_path))
    (corpus / "money/taxes.txt").unlink()
    (corpus / "code/fib.py").write_text("def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)\n")
    roses = corpus / "garden/roses.html"
    os.utime(roses, ns=(roses.stat().st_atime_ns, roses.stat().st_mtime_ns + 10**9))  # touched, same bytes
    (corpus / "new.md").write_text("# Cat\n\nThe cat is fed twice a day, salmon on Sundays.\n")
    summary = documents.update("notes")
    assert (summary.added, summary.changed, summary.unchanged, summary.removed) == (1, 1, 2, 1)
    assert top_file("notes", "what does the cat eat") == "new.md"
    assert top_file("notes", "factorial") == "code/fib.py"
    assert all("tax" not in h.text for h in documents.search("notes", "tax return", k=5))
    again = documents.update("notes")
    assert (again.added, again.changed, again.unchanged, again.removed, again.chunks) == (0, 0, 4, 0, 0)


def test_bad_inputs_are_summary_lines_and_the_rest_is_indexed(tmp_path, minilm_path):
    import pypdf

    corpus = make_corpus(tmp_path / "corpus", {"good.md": "# Good\n\nPlain words about kayaks.\n"})
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (corpus / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 100)
    with open(corpus / "huge.log", "wb") as f:  # sparse: 2 GB on paper, nothing on disk
        f.truncate(2 * 1024**3)
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    with open(corpus / "scan.pdf", "wb") as f:
        writer.write(f)
    (corpus / "loop").symlink_to(corpus)
    (corpus / "dangling.md").symlink_to(corpus / "missing.md")
    (corpus / ".gitignore").write_text("secret/\n*.tmp\n")
    (corpus / "secret").mkdir()
    (corpus / "secret/keys.md").write_text("kayak passwords\n")
    (corpus / "draft.tmp").write_text("kayak draft\n")
    with zipfile.ZipFile(corpus / "report.docx", "w") as z:
        ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
        z.writestr(
            "word/document.xml",
            f'<w:document {ns}><w:body><w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Budget</w:t></w:r></w:p>'
            "<w:p><w:r><w:t>The canoe budget for 2024 is 900 euros.</w:t></w:r></w:p></w:body></w:document>",
        )
    summary = documents.add("notes", [corpus], str(minilm_path))
    why = {Path(p).name: reason for p, reason in summary.skipped}
    assert why.keys() == {"latin1.txt", "image.bin", "huge.log", "scan.pdf", "loop", "dangling.md"}
    assert "UTF-8" in why["latin1.txt"] and "binary" in why["image.bin"] and "too large" in why["huge.log"]
    assert "text layer" in why["scan.pdf"] and "loop" in why["loop"]
    assert summary.added == 2  # good.md and report.docx; .gitignore'd files never read
    assert top_file("notes", "how much money for the canoe") == "report.docx"
    assert {documents.sources("notes", [h])[0].cite.split(":")[0] for h in documents.search("notes", "kayak", k=9)} == {
        "good.md", "report.docx"
    }  # fmt: skip


def test_a_query_with_another_embedding_model_is_refused(tmp_path, minilm_path, smollm2_path):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    with pytest.raises(DocumentsError, match="indexed with all-MiniLM"):
        documents.search("notes", "bread", embed_model=str(smollm2_path))
    with pytest.raises(DocumentsError, match="exists"):
        documents.add("notes", [tmp_path / "corpus"], str(minilm_path))


def _counts(db_path: Path) -> tuple[int, int, int, int, int]:
    from localllm.docs.store import CollectionDB

    db = CollectionDB(db_path)
    try:
        q = lambda sql: db.db.execute(sql).fetchone()[0]  # noqa: E731
        return (q("SELECT count(*) FROM files"), q("SELECT coalesce(sum(n_chunks), 0) FROM files"),
                q("SELECT count(*) FROM chunks"), q("SELECT count(*) FROM chunks_vec"),
                q("SELECT count(*) FROM chunks_fts"))  # fmt: skip
    finally:
        db.close()


def test_a_kill_mid_index_leaves_a_consistent_collection_that_update_finishes(tmp_path, minilm_path, isolated_home):
    corpus = tmp_path / "corpus"
    files = {f"note{i:03}.md": f"# Note {i}\n\n" + "\n\n".join(f"Paragraph {j} of note {i} about topic {i * j}." * 8 for j in range(6)) for i in range(60)}  # fmt: skip
    make_corpus(corpus, files)
    db_path = isolated_home / "docs" / "big.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "docs", "add", "big", str(corpus), "--embed", str(minilm_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.is_file() and _counts(db_path)[0] >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the index finished before it could be killed: make the corpus bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_files, n_chunks, chunks, vecs, fts = _counts(db_path)
    assert 3 <= n_files < 60
    assert n_chunks == chunks == vecs == fts  # no file half-written
    summary = documents.update("big")
    assert summary.added == 60 - n_files and summary.unchanged == n_files
    n_files, n_chunks, chunks, vecs, fts = _counts(db_path)
    assert n_files == 60 and n_chunks == chunks == vecs == fts
    assert top_file("big", "note 42 topic 210") == "note042.md"


def test_run_docs_answers_with_the_sources_listed(tmp_path, minilm_path, smollm2_path, cli):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    result = cli("run", "--docs", "notes", "-m", str(smollm2_path), "--max-tokens", "40", "--temperature", "0",
                 "--ctx", "1024", "At what temperature do I bake the sourdough loaf?")  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("\nSources:\n")
    assert answer.strip()
    assert sources.splitlines()[0].startswith("  [kitchen/sourdough.md:7-9]")
    cited = cli("run", "--docs", "notes", "-m", str(smollm2_path), "--max-tokens", "40", "--temperature", "0",
                "--ctx", "1024", "--json", "When was the tax return filed?")  # fmt: skip
    reply = json.loads(cited.stdout)
    assert reply["sources"][0]["cite"] == "[money/taxes.txt:1-1]"


def test_the_prompt_keeps_to_the_budget():
    found = [documents.Source(f"f{i}.md:1-2", "", "word " * 100) for i in range(10)]
    prompt, kept = documents.docs_prompt("why?", found, 350, lambda text: len(text.split()))
    assert len(prompt.split()) <= 350 and 1 <= len(kept) < 10
    assert "[f0.md:1-2]" in prompt and prompt.endswith("Question: why?")
