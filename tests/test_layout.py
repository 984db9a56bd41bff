"""How the package is put together: a core free of UI code, lazy heavy imports, one llama_cpp user."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "localllm"
CORE = [
    "errors", "paths", "fs", "gguf.header", "gguf.cache", "models.catalog", "models.refs", "models.store",
    "models.resolve", "models.starter", "models.inspect", "models.discover", "models.importing",
    "runtime.options", "runtime.llama", "runtime.model", "runtime.batching", "runtime.bench",
    "runtime.devices", "runtime.quantize", "runtime.synthetic", "batch.jobs", "fit.hardware", "fit.estimate", "fit.plan",
    "fit.loadlog", "hub.client", "hub.headers", "hub.pull", "hub.download", "chat.history", "chat.context",
]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_core_never_imports_the_shells():
    loaded = _modules_after("; ".join(f"import localllm.{m}" for m in CORE))
    assert "textual" not in loaded
    assert not any(m.startswith("localllm.cli") or m.startswith("localllm.tui") for m in loaded)


def test_help_imports_nothing_heavy():
    loaded = _modules_after(
        "from localllm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass"
    )
    for heavy in ("llama_cpp", "textual", "gguf", "numpy", "huggingface_hub"):
        assert heavy not in loaded, heavy


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_exactly_one_module_imports_llama_cpp():
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "llama_cpp" in _imports(p))
    assert users == ["runtime/llama.py"]


def test_version_flag(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("localllm ")


def test_ci_runs_the_readme_test_command():
    root = PACKAGE.parent
    ci_command = [ln for ln in (root / ".ci" / "run").read_text().splitlines() if "pytest" in ln]
    assert len(ci_command) == 1
    assert f"\n{ci_command[0]}\n" in (root / "README.md").read_text()
