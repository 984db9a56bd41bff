"""Odd files, hostile names and undecodable bytes on the command line: one line, never a traceback,
never raw escape sequences on the terminal (issue 11)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ggufedit


def run(*args, input: bytes = b"", env=None, timeout=120) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "localllm", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def one_error_line(code: int, err: str, *words: str) -> None:
    assert code not in (0, -6, -11), err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localllm: error: "), err
    for word in words:
        assert word in lines[0], err


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.gguf"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.gguf"
    broken.symlink_to(tmp_path / "nowhere.gguf")
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    return {
        "named pipe (FIFO)": fifo,
        "symbolic link loop": loop,
        "broken symbolic link": broken,
        "is a directory": folder,
    }


@pytest.mark.parametrize("command", ["inspect", "fit", "run"])
def test_odd_files_give_one_specific_line(odd_files, command):
    for words, path in odd_files.items():
        args = [command, "-m", str(path), "hi"] if command == "run" else [command, str(path)]
        code, _, err = run(*args, timeout=60)
        one_error_line(code, err, words)
        assert "no such file" not in err


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch, capsys):
    """A file the user may not read. Root reads everything, so as root (CI) the permission check
    is told the truth a normal user would get; the command runs in-process either way."""
    from localllm.cli import main

    path = tmp_path / "secret.gguf"
    path.write_bytes(b"GGUF")
    path.chmod(0)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode, **kw: False if Path(p) == path else real_access(p, mode, **kw)
        )
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    one_error_line(code, err, "permission denied")


def test_escape_sequences_in_names_are_shown_escaped(smollm2_path, tmp_path):
    parts = ggufedit.split(smollm2_path)
    path = ggufedit.write(
        tmp_path / "evil\x1b[2J.gguf",
        parts,
        {"general.name": "\x1b[2J\x1b[H\x9b31mowned\x07", "general.license": "\x1b]0;title\x07"},
    )
    for args in (
        ["inspect", str(path)],
        ["inspect", "--json", str(path)],
        ["fit", str(path)],
        ["fit", "--json", str(path)],
    ):
        code, out, err = run(*args)
        assert code == 0, err
        assert "\x1b" not in out + err and "\x9b" not in out + err and "\x07" not in out + err, args
    code, out, _ = run("inspect", str(path))
    assert "\\x1b[2J" in out


def test_bad_metadata_is_one_line_naming_the_key(smollm2_path, tmp_path):
    parts = ggufedit.split(smollm2_path)
    for changes, key in (
        ({"llama.block_count": 1000}, "llama.block_count"),
        ({"llama.context_length": "8192"}, "llama.context_length"),
        ({"llama.attention.head_count": [9, 9]}, "llama.attention.head_count"),
        ({"llama.expert_used_count": 2}, "llama.expert_used_count"),
    ):
        path = ggufedit.write(tmp_path / "bad.gguf", parts, changes)
        for args in (["inspect", str(path)], ["fit", str(path)], ["run", "-m", str(path), "hi"]):
            code, out, err = run(*args)
            one_error_line(code, err, key)
            assert "fits" not in out


def test_a_non_utf8_prompt_argument_or_stdin_is_one_line(smollm2_path, tmp_path):
    code, _, err = run("run", "-m", str(smollm2_path), os.fsdecode(b"caf\xe9"))
    one_error_line(code, err, "not UTF-8")
    code, _, err = run("run", "-m", str(smollm2_path), input=b"caf\xe9 au lait")
    one_error_line(code, err, "stdin is not UTF-8")


def test_a_non_utf8_path_is_one_line(tmp_path):
    name = os.fsdecode(tmp_path / os.fsdecode(b"mod\xe8le.gguf"))
    code, _, err = run("inspect", name)
    one_error_line(code, err, "no such file", "\\xe8")
