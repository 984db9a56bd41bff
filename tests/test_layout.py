"""How the package is put together: layers that depend downwards only, a core free of UI code, one
llama_cpp importer, lazy heavy imports, no side effects at import.

The rules live in pyproject.toml (import-linter contracts) and are checked here; the module lists
are derived from the package itself, so a new module is checked the day it is added.
"""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "localllm"
SHELLS = ("localllm.cli", "localllm.tui", "localllm.server")


def _all_modules() -> list[str]:
    return sorted(["localllm"] + [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="localllm.")])


def _top_level() -> set[str]:
    return {f"localllm.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])} - {"localllm.__main__"}


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    """import-linter's layers and forbidden contracts (static: every import, lazy ones included)."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_every_package_is_in_a_layer():
    [layers] = [c for c in _contracts() if c["type"] == "layers"]
    layered = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    assert _top_level() - layered == set(), "add new packages to the layers contract in pyproject.toml"
    [core] = [c for c in _contracts() if c["name"].startswith("The core never imports")]
    assert set(core["source_modules"]) == _top_level() - set(SHELLS)


# What a shell may import besides localllm.app: the error types it maps, the formatters it shows
# with, the configuration, and the chat turn it drives.
SHELL_MAY_IMPORT = {"localllm.app", "localllm.errors", "localllm.format", "localllm.config", "localllm.chat"}


def test_shells_reach_every_other_core_package_only_through_app():
    """The contract names every core package a shell may not import, so a new package is covered
    the day it is added (and one a shell may use must be named here on purpose)."""
    [shells] = [c for c in _contracts() if c["name"].startswith("Shells reach the core only")]
    assert set(shells["source_modules"]) == set(SHELLS)
    assert set(shells["forbidden_modules"]) == _top_level() - set(SHELLS) - SHELL_MAY_IMPORT


def _modules_after(code: str, env: dict | None = None) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return set(out.split())


def test_core_never_loads_the_shells(tmp_path):
    """Importing every core module (as code runs, not as written) loads no shell and no textual,
    and creates nothing: looking a path up never creates it."""
    core = [m for m in _all_modules() if not m.startswith(SHELLS) and m != "localllm.__main__"]
    home = tmp_path / "home"
    loaded = _modules_after("; ".join(f"import {m}" for m in core), env={"LOCALLLM_HOME": str(home)})
    assert "textual" not in loaded
    assert not any(m.startswith(SHELLS) for m in loaded)
    assert not home.exists()


def test_the_server_never_loads_textual():
    """The HTTP shell and the TUI are independent: `localllm serve` runs without textual."""
    server = [m for m in _all_modules() if m.startswith("localllm.server")] + ["localllm.cli.serve"]
    loaded = _modules_after("; ".join(f"import {m}" for m in server))
    assert "textual" not in loaded
    assert not any(m.startswith("localllm.tui") for m in loaded)


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
    [rule] = [c for c in _contracts() if "llama_cpp" in c.get("forbidden_modules", [])]
    [allowed] = rule["ignore_imports"]
    assert users == [allowed.split(" -> ")[0].removeprefix("localllm.").replace(".", "/") + ".py"]


def test_nothing_else_reads_the_environment():
    """localllm.config is the one reader of environment variables."""
    readers = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "os.environ" in p.read_text() or "getenv(" in p.read_text()
    )
    assert readers == ["config.py"]


def test_version_flag(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("localllm ")


def test_ci_runs_the_readme_test_command():
    ci_command = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in ln]
    assert len(ci_command) == 1
    assert f"\n{ci_command[0]}\n" in (ROOT / "README.md").read_text()
