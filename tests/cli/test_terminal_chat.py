"""Issue 12: ``localllm run`` with no prompt on a terminal chats (slash commands, saved history), and
``localllm list --catalog`` lists the catalog with verdicts."""

from __future__ import annotations

import argparse

from localllm.chat import history as hist
from localllm.chat.history import History
from localllm.cli import run as run_cli


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.verbose = False
    return args


def test_a_terminal_chat_takes_slash_commands_and_is_saved(installed_starter, tmp_path, capsys):
    lines = iter(
        [
            "/set temperature 0",
            "/system Answer in one short sentence.",
            "",
            "What is the capital city of France?",
            "/nonsense",
            f"/save {tmp_path / 'chat.md'}",
            "/bye",
        ]
    )
    assert run_cli.interactive(args_for("-m", "smollm2-135m-instruct", "-n", "24"), read=lambda _: next(lines)) == 0
    out, err = capsys.readouterr()
    assert "Paris" in out
    assert "unknown command /nonsense" in err and "Saved " + str(tmp_path / "chat.md") in err
    history = History()
    [info] = history.conversations()
    conv = history.get(info.id)
    assert conv.info.system_prompt == "Answer in one short sentence." and conv.info.settings["temperature"] == 0.0
    assert conv.info.model.startswith("smollm2-135m-instruct")
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert "Paris" in conv.messages[1].content and conv.messages[1].status == hist.COMPLETE
    assert "Paris" in (tmp_path / "chat.md").read_text()


def test_list_catalog_shows_every_quant_with_a_verdict(cli, installed_starter):
    from localllm.fit.plan import Verdict
    from localllm.models.catalog import load_catalog

    result = cli("list", "--catalog")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "PARAMS", "QUANT", "SIZE", "FITS"]
    labels = {v.label for v in Verdict}
    starter = [line for line in lines if line.startswith("smollm2-135m-instruct ") and "installed" in line]
    assert len(starter) == 1 and any(label in starter[0] for label in labels - {Verdict.UNKNOWN.label})
    assert {line.split()[0] for line in lines[1:]} == {e.name for e in load_catalog()}


def _chat_in_a_pty(*argv: str, lines: list[str], timeout: float = 240) -> tuple[int, str]:
    """``python -m localllm ARGV`` on a terminal (a pty), typing ``lines``; (exit code, what it showed).
    A line is typed once the chat asks for one (``>>> ``, or ``... `` inside a \"\"\" message)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", *argv], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    shown, typed, since, quiet = b"", 0, 0, time.monotonic()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                quiet = time.monotonic()
                for _ in range(chunk.count(b"\x1b[6n")):  # a terminal answers where its cursor is
                    os.write(master, b"\x1b[1;1R")
            # Type the next line once the chat asks for one and has gone quiet.
            if typed < len(lines) and _asking(shown[since:]) and time.monotonic() - quiet > 0.3:
                os.write(master, lines[typed].encode() + b"\r")
                typed += 1
                since = len(shown)
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _asking(shown: bytes) -> bool:
    """Whether what the chat showed ends with its prompt (``>>>``, or ``...`` in a \"\"\" message) at
    the start of a line, terminal escapes left out (prompt_toolkit draws the prompt's space as a
    cursor move)."""
    import re

    plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r|\x08", b"", shown)
    return re.search(rb"(?:^|\n)(?:>>>|\.\.\.)+\s*$", plain) is not None  # redrawn: ">>>>>>"


def test_a_wrong_model_name_keeps_the_chat_going_with_the_current_model(installed_starter):
    """Issue 22: `/model nonesuch` closed the model before checking the name; the next message then
    crashed (AttributeError n_ctx, exit 1) and left an empty "interrupted" reply in the history."""
    rc, shown = _chat_in_a_pty(
        "run",
        "-m",
        "smollm2-135m-instruct",
        "-t",
        "0",
        "-n",
        "24",
        "-s",
        "Answer in one short sentence.",
        lines=["/model nonesuch", "What is the capital city of France?", "/bye"],
    )
    assert rc == 0, shown
    assert "Traceback" not in shown and "AttributeError" not in shown
    assert "nonesuch" in shown and "Paris" in shown
    history = History()
    [info] = history.conversations()
    conv = history.get(info.id)
    assert [(m.role, m.status) for m in conv.messages] == [("user", hist.COMPLETE), ("assistant", hist.COMPLETE)]
    assert conv.messages[1].content.strip() and conv.info.model.startswith("smollm2-135m-instruct")


CHAT = ("run", "-m", "smollm2-135m-instruct", "-t", "0", "-n", "16", "-s", "Answer in one short sentence.")


def test_lines_are_edited_and_remembered_across_sessions(installed_starter):
    """Issue 22: Up printed ^[[A. Now it recalls a line, also one typed in an earlier session."""
    rc, shown = _chat_in_a_pty(*CHAT, lines=["/system Be kind.", "/bye"])
    assert rc == 0, shown
    # Up twice: "/bye", then "/system Be kind."; Left and a typed letter edit it: "/system Be kindd."
    rc, shown = _chat_in_a_pty(*CHAT, lines=["\x1b[A\x1b[A\x1b[Dd", "/bye"])
    assert rc == 0, shown
    assert "^[[A" not in shown and "System prompt set" in shown


def test_a_paste_and_a_triple_quoted_message_are_one_turn_each(installed_starter):
    """Issue 22: a pasted three-line text became three turns. A paste (bracketed) and lines between
    \"\"\" fences are one message each."""
    paste = "\x1b[200~Here is a list:\nred\nblue\x1b[201~"
    rc, shown = _chat_in_a_pty(*CHAT, lines=[paste, '"""', "one", 'two"""', "/bye"])
    assert rc == 0, shown
    history = History()
    [info] = history.conversations()
    users = [m.content for m in history.get(info.id).messages if m.role == "user"]
    assert users == ["Here is a list:\nred\nblue", "one\ntwo"]


def test_model_with_no_name_lists_the_installed_models(installed_starter):
    rc, shown = _chat_in_a_pty(*CHAT, lines=["/model", "/bye"])
    assert rc == 0, shown
    assert "* smollm2-135m-instruct" in shown and "needs a model name" not in shown


def test_replies_wrap_at_word_boundaries():
    import io

    from localllm.cli.line_input import WordWrap

    out = io.StringIO()
    wrap = WordWrap(out, width=20)
    for piece in ["The quick", " brown fox jum", "ps over the lazy", " dog.\nA", "nd then some", "."]:
        wrap.write(piece)
    wrap.end()
    assert out.getvalue().splitlines() == ["The quick brown fox", "jumps over the lazy", "dog.", "And then some."]
    assert all(len(line) <= 20 for line in out.getvalue().splitlines())


def test_piped_replies_each_end_their_line():
    import io

    from localllm.cli.line_input import WordWrap

    out = io.StringIO()  # not a terminal: written as it comes, but a reply still ends its line
    for reply in (["The capital", " is Paris."], ["Ends with a newline\n"]):
        wrap = WordWrap(out)
        for piece in reply:
            wrap.write(piece)
        wrap.end()
    assert out.getvalue() == "The capital is Paris.\nEnds with a newline\n"


def test_a_reasoning_models_thinking_is_dimmed_on_the_terminal_and_never_saved_as_the_answer(
    smollm2_path, tmp_path, monkeypatch
):
    import os
    import pty
    import sys

    from support.thinking import thinking_model

    path = thinking_model(smollm2_path, tmp_path / "thinking.gguf")
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")  # stdout is a terminal, as for a person
    monkeypatch.setattr(sys, "stdout", terminal)
    lines = iter(["What is the capital of France?", "/bye"])
    args = args_for("-m", str(path), "--temperature", "0", "-n", "30", "--reasoning-budget", "3")
    try:
        assert run_cli.interactive(args, read=lambda _: next(lines)) == 0
        terminal.flush()
        shown = b""
        while True:
            import select

            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            shown += os.read(master, 65536)
    finally:
        terminal.close()
        os.close(master)
    text = shown.decode("utf-8", "replace").replace("\r\n", "\n")
    history = History()
    [info] = history.conversations()
    reply = history.get(info.id).messages[1]
    assert reply.role == "assistant" and reply.status == hist.COMPLETE
    assert reply.reasoning and reply.content.strip()  # saved apart
    assert "<think>" not in reply.content and "</think>" not in reply.content
    assert reply.reasoning not in reply.content.split("\n")[0] or not reply.content.startswith(reply.reasoning)
    assert "\x1b[2mThinking...\x1b[0m" in text and "...done thinking." in text
    assert text.index("...done thinking.") < text.index(reply.content.strip().splitlines()[0])
    # what the next turn would be given: the answer alone
    given = history.get(info.id).chat_messages()
    assert given[-1] == {"role": "assistant", "content": reply.content}
