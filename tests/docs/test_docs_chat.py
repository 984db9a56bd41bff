"""Issue 25, item 4: a collection attached to the terminal chat (``/docs NAME``, ``run --docs NAME``
with no prompt): each question retrieves, the answer lists its sources, the chat saves which
collection it answers from; an unknown collection is one line and the chat goes on."""

from __future__ import annotations

from support.docs import chat_args as args_for
from support.docs import make_corpus

from localllm.app import documents
from localllm.chat.history import History
from localllm.cli import run as run_cli


def test_docs_in_the_terminal_chat_cites_sources_and_is_saved(tmp_path, minilm_path, smollm2_path, capsys):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    lines = iter(
        [
            "/docs nosuch",
            "/docs notes",
            "At what temperature do I bake the sourdough loaf?",
            "/docs",
            "/docs off",
            "Say hello.",
            "/bye",
        ]
    )
    argv = ("-m", str(smollm2_path), "-n", "24", "--temperature", "0", "--ctx", "1024")
    assert run_cli.interactive(args_for(*argv), read=lambda _: next(lines)) == 0
    out, err = capsys.readouterr()
    assert "no collection named nosuch" in err  # one line; the chat went on
    assert "answers come from the collection notes" in err and "* notes  (4 files" in err
    answer, _, rest = out.partition("Sources:\n")
    assert answer.strip()
    assert rest.splitlines()[0].startswith("  [kitchen/sourdough.md:7-9]")
    assert out.count("Sources:") == 1  # the turn after /docs off has none
    history = History()
    [info] = history.conversations()
    conv = history.get(info.id)
    assert "docs" not in conv.info.settings  # detached again
    first = conv.messages[1]
    assert first.stats["sources"][0]["cite"] == "[kitchen/sourdough.md:7-9]"
    assert "Dutch oven" in first.stats["sources"][0]["text"]
    assert conv.messages[0].content == "At what temperature do I bake the sourdough loaf?"  # saved as asked
    assert "sources" not in conv.messages[3].stats


def test_run_docs_with_no_prompt_opens_a_chat_attached_and_saves_it(tmp_path, minilm_path, smollm2_path, capsys):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    lines = iter(["When was the tax return filed?", "/bye"])
    argv = ("-m", str(smollm2_path), "-n", "24", "--temperature", "0", "--ctx", "1024", "--docs", "notes")
    assert run_cli.interactive(args_for(*argv), read=lambda _: next(lines)) == 0
    out, _ = capsys.readouterr()
    assert "  [money/taxes.txt:1-1]" in out.partition("Sources:\n")[2].splitlines()[0]
    [info] = History().conversations()
    assert History().info(info.id).settings["docs"] == "notes"


def test_an_unknown_collection_on_the_command_line_is_one_line(smollm2_path, cli):
    result = cli("run", "--docs", "nosuch", "-m", str(smollm2_path), "hello")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "localllm: error: no collection named nosuch (see `localllm docs list`, or make one with `localllm docs add`)"
    ]
