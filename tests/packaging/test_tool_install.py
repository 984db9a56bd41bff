"""Tool installs: `uv tool install` and `pipx install` of the built wheel, each into temporary tool
and bin directories, then the installed `localllm` answers from the real SmolLM2.

llama-cpp-python compiles from source for minutes, so both installers are pointed (find-links) at
the wheel pip built for this environment and keeps in its cache (`pip install -e '.[test]'` puts it
there). Without one, it is built once here, slow but the same. The other dependencies come from
the package index as for any user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllm import __version__
from localllm.fit.hardware import pinned_bindings_version

REPO = Path(__file__).resolve().parents[2]
PROMPT = "What is the capital city of France? Answer in one sentence."
INSTALL_TIMEOUT = 1800  # seconds: long enough to compile llama.cpp when no built wheel is cached


def _cached_bindings_wheel(version: str) -> Path | None:
    """The llama-cpp-python wheel pip built earlier for this version, from pip's cache."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "llama_cpp_python", "--format", "abspath"],
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:  # the cache is turned off (PIP_NO_CACHE_DIR)
        return None
    wheels = [Path(line) for line in listed.stdout.splitlines() if f"-{version}-" in Path(line).name]
    return next((w for w in wheels if w.is_file()), None)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path]:
    """(localllm's wheel, a find-links folder holding a built llama-cpp-python wheel)."""
    root = tmp_path_factory.mktemp("wheels")
    dist, links = root / "dist", root / "links"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    version = pinned_bindings_version()
    cached = _cached_bindings_wheel(version)
    links.mkdir()
    if cached is not None:
        shutil.copy2(cached, links / cached.name)
    else:
        compiled = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(links), f"llama-cpp-python=={version}"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert compiled.returncode == 0, compiled.stderr[-3000:]
    (wheel,) = dist.glob("localllm-*.whl")
    return wheel, links


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: not this checkout on PYTHONPATH, no virtualenv active."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _check_installed(executable: Path, smollm2_path: Path, home: Path, cwd: Path) -> None:
    assert executable.is_file(), f"no {executable}"
    env = _clean_env(LOCALLLM_HOME=str(home), HF_HUB_OFFLINE="1")
    version = subprocess.run(
        [str(executable), "--version"], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )
    assert version.returncode == 0, version.stderr
    lines = version.stdout.splitlines()
    assert lines[0] == f"localllm {__version__}"
    assert lines[1] == f"llama-cpp-python {pinned_bindings_version()}" and "CPU" in lines[3]
    catalog = subprocess.run(
        [str(executable), "list", "--catalog"], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )
    assert catalog.returncode == 0 and "smollm2-135m-instruct" in catalog.stdout  # models.toml is in the wheel
    answer = subprocess.run(
        [str(executable), "run", "-t", "0", "-n", "24", "-m", str(smollm2_path), PROMPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout


def test_uv_tool_install_answers(wheels, smollm2_path, tmp_path):
    wheel, links = wheels
    tools, bin_dir = tmp_path / "uv-tools", tmp_path / "uv-bin"
    env = _clean_env(UV_TOOL_DIR=str(tools), UV_TOOL_BIN_DIR=str(bin_dir), UV_PYTHON_DOWNLOADS="never")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "uv",
            "tool",
            "install",
            "--python",
            sys.executable,
            "--find-links",
            str(links),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stderr
    assert (tools / "localllm").is_dir()  # in the temporary tool directory, nowhere else
    _check_installed(bin_dir / "localllm", smollm2_path, tmp_path / "home", tmp_path)


def test_pipx_install_answers(wheels, smollm2_path, tmp_path):
    wheel, links = wheels
    home, bin_dir = tmp_path / "pipx-home", tmp_path / "pipx-bin"
    env = _clean_env(PIPX_HOME=str(home), PIPX_BIN_DIR=str(bin_dir), PIPX_MAN_DIR=str(tmp_path / "pipx-man"))
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipx",
            "install",
            "--python",
            sys.executable,
            "--pip-args",
            f"--find-links {links}",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stderr
    assert (home / "venvs" / "localllm").is_dir()
    _check_installed(bin_dir / "localllm", smollm2_path, tmp_path / "home", tmp_path)
