"""GPU builds: packaging/gpu/install.sh and the note `localllm hw` prints beside a CPU-only build
name the same command, from the one table in localllm/fit/hardware.py (GPU_BUILDS)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.app import machine
from localllm.cli import main
from localllm.fit import hardware

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "gpu" / "install.sh"


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_the_script_knows_exactly_the_backends_of_the_table():
    backends = set(re.findall(r"^\s+(\w+)\) flags=", SCRIPT.read_text(), re.M))
    assert backends == set(hardware.GPU_BUILDS) == {"cuda", "metal", "rocm", "vulkan", "cpu", "rpc"}
    refused = _script("opencl", "--print")
    assert refused.returncode == 2 and "cuda|metal|rocm|vulkan|cpu|rpc" in refused.stderr


def test_the_rpc_backend_combines_with_a_gpu_backend():
    printed = _script("cuda", "rpc", "--python", "/opt/env/bin/python", "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith('CMAKE_ARGS="-DGGML_CUDA=on -DGGML_RPC=on" /opt/env/bin/python -m pip install')
    assert _script("rpc", "rpc", "--print").stdout.startswith('CMAKE_ARGS="-DGGML_RPC=on" python3')
    assert _script("--print").returncode == 2  # no backend at all


@pytest.mark.parametrize("backend", sorted(hardware.GPU_BUILDS))
def test_the_script_runs_the_command_of_the_table(backend):
    printed = _script(backend, "--python", "/opt/env/bin/python", "--print")
    assert printed.returncode == 0, printed.stderr
    command = hardware.gpu_build_command(backend, "/opt/env/bin/python")
    assert printed.stdout.strip() == command
    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"llama-cpp-python==([^"]+)"', pyproject).group(1)
    assert command.endswith(f'--no-binary llama-cpp-python "llama-cpp-python=={pin}"')  # localllm's pin


@pytest.mark.parametrize(
    "vendor,backend", [("nvidia", "cuda"), ("amd", "rocm"), ("apple", "metal"), ("intel", "vulkan")]
)
def test_hw_beside_a_cpu_only_build_names_the_packaging_command(vendor, backend, monkeypatch, capsys):
    """A GPU made to appear beside a CPU-only llama.cpp build (what CI has; simulated here so that a
    machine with a GPU build gives the same answer)."""
    cpu_only = hardware.BuildInfo(devices=(hardware.Device("CPU", "test CPU", "cpu", 8 << 30, 8 << 30),))
    monkeypatch.setattr(machine, "build_info", lambda: cpu_only)
    gpu = hardware.GPU(f"Test {vendor} GPU", vendor, 8 << 30, 7 << 30)
    monkeypatch.setattr(hardware, "_nvidia_gpus", lambda: [gpu] if vendor == "nvidia" else [])
    monkeypatch.setattr(hardware, "_amd_gpus", lambda: [gpu] if vendor in ("amd", "intel") else [])
    monkeypatch.setattr(hardware, "_apple_gpu", lambda total: gpu if vendor == "apple" else None)
    assert main(["hw"]) == 0
    out = capsys.readouterr().out
    command = hardware.gpu_build_command(backend, sys.executable)
    assert f"note: Test {vendor} GPU is present but this llama.cpp build is CPU-only" in out
    assert f"To use the GPU: {command} (or packaging/gpu/install.sh {backend} in a source checkout)" in out
    printed = _script(backend, "--python", sys.executable, "--print")
    assert printed.stdout.strip() == command


def test_the_gpu_readme_shows_the_table_and_the_command():
    text = (REPO / "packaging" / "gpu" / "README.md").read_text()
    for backend, flags in hardware.GPU_BUILDS.items():
        assert f"| {backend} | `{flags}` |" in text
        assert f"packaging/gpu/install.sh {backend} " in text
    assert f"\n{hardware.gpu_build_command('cuda')}\n" in text  # the pinned version, as pip would get it


def test_the_readme_gives_the_same_command():
    readme = (REPO / "README.md").read_text()
    assert f"\n{hardware.gpu_build_command('cuda')}\n" in readme
    assert "packaging/gpu/install.sh cuda --python .venv/bin/python" in readme
