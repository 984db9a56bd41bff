"""`localllm --version`: localllm's version and the llama.cpp build, without slowing `--help`."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from localllm import __version__


def test_version_names_localllm_llama_cpp_python_commit_and_backends(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stderr == ""  # llama.cpp's own log stays hidden
    lines = result.stdout.splitlines()
    assert lines[0] == f"localllm {__version__}"
    assert lines[1] == f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    assert lines[2].startswith("llama.cpp: libllama ") and ", commit " in lines[2]
    commit = lines[2].split(", commit ")[1]
    assert len(commit.split("-")[0]) >= 7  # a git hash, perhaps "-dirty"
    assert lines[3].startswith("backends: ") and "CPU" in lines[3].removeprefix("backends: ").split(", ")
    assert lines[4].startswith("devices: CPU") and lines[5].startswith("features: ")


def test_help_does_not_load_llama_cpp():
    probe = (
        "import sys\nfrom localllm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--version" in result.stdout and "llama.cpp build" in result.stdout


def test_version_without_loadable_bindings_still_names_localllm(cli, tmp_path: Path):
    """A llama-cpp-python whose library cannot load: the version still prints, with the reason."""
    broken = tmp_path / "broken"
    (broken / "llama_cpp").mkdir(parents=True)
    (broken / "llama_cpp" / "__init__.py").write_text(
        "raise RuntimeError(\"Failed to load shared library 'libllama.so'\")\n"
    )
    path = os.pathsep.join([str(broken), *sys.path[1:]])
    result = cli("--version", env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"localllm {__version__}",
        "llama-cpp-python: cannot be loaded (Failed to load shared library 'libllama.so')",
    ]
