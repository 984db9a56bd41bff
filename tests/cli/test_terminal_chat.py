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
    """``python -m localllm ARGV`` on a terminal (a pty), typing ``lines``; (exit code, what it showed)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", *argv], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    shown, typed = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            # Type the next line once the chat asks for one (the prompt is ">>> ").
            if typed < len(lines) and shown.count(b">>> ") > typed:
                os.write(master, lines[typed].encode() + b"\n")
                typed += 1
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), shown.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


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
