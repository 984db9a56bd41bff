"""`localllm completion bash|zsh|fish`: scripts generated from the argument parser.

The bash script is loaded in a real bash and its completion function called as bash would call it
(COMP_WORDS/COMP_CWORD). zsh and fish are not on every machine (CI has neither): their scripts are
checked for structure everywhere, and for syntax with `zsh -n` / `fish -n` where the shell exists;
where fish exists, also for what `complete -C` offers. (zsh completes only inside its line editor,
which a test could reach only through a pseudo-terminal and sleeps: checked by hand, not here.)
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localllm.cli import build_parser, completion
from localllm.models import store


@pytest.fixture
def localllm_bin(tmp_path: Path) -> Path:
    """A `localllm` on PATH that runs this checkout, as the installed console script would."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "localllm"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m localllm "$@"\n')
    script.chmod(0o755)
    return folder


def complete(line: str, bin_dir: Path, script: str | None = None) -> list[str]:
    """What bash offers for ``line`` (a trailing space starts a new, empty word)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    source = "source <(localllm completion bash)" if script is None else f"source {shlex.quote(script)}"
    program = (
        f"{source}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={shlex.quote(line)}\nCOMP_POINT=${{#COMP_LINE}}\n"
        "_localllm\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completes_commands_and_options(localllm_bin):
    assert complete("localllm ru", localllm_bin) == ["run"]
    assert complete("localllm i", localllm_bin) == ["inspect", "import"]
    assert complete("localllm run --te", localllm_bin) == ["--temperature"]
    assert complete("localllm --ver", localllm_bin) == ["--version", "--verbose"]
    assert complete("localllm completion ", localllm_bin) == ["bash", "zsh", "fish"]


def test_bash_completes_installed_model_names(localllm_bin, installed_starter):
    name = installed_starter.name
    assert complete("localllm run -m ", localllm_bin) == [name]
    assert complete(f"localllm run --model {name[:3]}", localllm_bin) == [name]
    assert complete("localllm rm ", localllm_bin) == [name]
    assert complete("localllm chat ", localllm_bin) == [name]
    # the value of an option is not taken for the command's positional: -t 0 then the model
    assert complete("localllm chat -t 0 ", localllm_bin) == [name]
    assert complete("localllm run -m x ", localllm_bin) == []  # a prompt: nothing to offer


def test_a_new_command_or_option_completes_without_editing_the_script(localllm_bin, tmp_path):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = sub.add_parser("frobnicate", help="a command this test adds")
    extra.add_argument("--wobble", choices=["low", "high"])
    script = tmp_path / "localllm.bash"
    script.write_text(completion.bash(completion.describe(parser)))
    assert complete("localllm frob", localllm_bin, str(script)) == ["frobnicate"]
    assert complete("localllm frobnicate --wob", localllm_bin, str(script)) == ["--wobble"]
    assert complete("localllm frobnicate --wobble h", localllm_bin, str(script)) == ["high"]


def test_bash_completes_name_and_quant_across_the_colon(localllm_bin):
    """bash splits words at ':' (COMP_WORDBREAKS); the reply is what follows it, so `qwen:Q8<TAB>`
    becomes `qwen:Q8_0`."""
    _install_fake("qwen", "Q4_K_M")
    _install_fake("qwen", "Q8_0")
    assert complete("localllm rm qw", localllm_bin) == ["qwen", "qwen:Q4_K_M", "qwen:Q8_0"]
    assert complete("localllm rm qwen:Q8", localllm_bin) == ["Q8_0"]
    assert complete("localllm run -m qwen: ", localllm_bin) == []  # the model is given: a prompt follows


def _install_fake(name: str, quant: str) -> None:
    rel = f"{store.model_dir_name(name)}/{name.replace('/', '-')}-{quant}.gguf"
    path = store.paths.models_dir() / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by completion")
    store.record(store.InstalledModel(name=name, quant=quant, files=[rel], size=1))


def test_models_helper_lists_installed_names_without_loading_llama_cpp(cli):
    _install_fake("qwen", "Q4_K_M")
    _install_fake("qwen", "Q8_0")
    _install_fake("owner/repo", "Q4_0")
    manifest = store.paths.data_dir() / "manifest.json"
    text = manifest.read_text().replace('"name": "owner/repo"', '"name": "$(touch pwned)"')
    manifest.write_text(text)  # a hand edit: not a name completion would ever offer
    result = cli("completion", "--models")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["qwen", "qwen:Q4_K_M", "qwen:Q8_0"]
    probe = (
        "import sys; from localllm.cli import main; main(['completion', '--models']); "
        "assert 'llama_cpp' not in sys.modules and 'localllm.runtime' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_completion_without_a_shell_is_a_usage_error(cli):
    result = cli("completion")
    assert result.returncode != 0 and "bash|zsh|fish" in result.stderr


def _script(shell: str) -> str:
    result = subprocess.run([sys.executable, "-m", "localllm", "completion", shell], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _syntax_ok(shell: str, text: str, tmp_path: Path) -> None:
    """`zsh -n` / `fish -n` where that shell is installed; the structure tests run everywhere."""
    if shutil.which(shell) is None:
        return
    path = tmp_path / f"localllm.{shell}"
    path.write_text(text)
    result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_zsh_script_names_every_command_option_and_model_argument(tmp_path):
    text = _script("zsh")
    assert text.startswith("#compdef localllm\n") and "compdef _localllm localllm" in text
    shlex.split(text, comments=True)  # every quote closes
    _, commands = completion.describe(build_parser())
    for command in commands:
        assert f"        '{command.name}:" in text  # offered, with its help
        assert re.search(rf"^            {re.escape(command.name)}\)$", text, re.M)  # and its own arguments
    assert "'(-m --model)'{-m,--model}'[" in text and "]:model:_localllm_models'" in text
    assert "'--top-p[nucleus sampling (default 0.95)]:top_p: '" in text
    commands_text = dict(re.findall(r"^            (\S+)\)\n(.*?) ;;$", text, re.M | re.S))
    assert "':model:_localllm_models'" in commands_text["rm"]  # a model, required
    assert "'::model:_localllm_models'" in commands_text["chat"]  # a model, optional
    assert "'*:prompt: '" in commands_text["run"]  # any number of words, nothing to offer
    _syntax_ok("zsh", text, tmp_path)


_FISH_WORD = re.compile(r"'(?:[^'\\]|\\.)*'|[^\s']+")


def test_fish_script_names_every_command_option_and_model_argument(tmp_path, localllm_bin, installed_starter):
    text = _script("fish")
    lines = [line for line in text.splitlines() if line.startswith("complete ")]
    for line in lines:  # fish quoting: each word is plain or one '...' with \' and \\ escapes
        assert re.fullmatch(rf"(?:{_FISH_WORD.pattern})(?: (?:{_FISH_WORD.pattern}))*", line), line
    _, commands = completion.describe(build_parser())
    for command in commands:
        assert any(
            line.startswith(f"complete -c localllm -n __fish_use_subcommand -f -a {command.name} -d ") for line in lines
        )
    run_model = [line for line in lines if "'__fish_seen_subcommand_from run'" in line and "-l model" in line]
    assert run_model == [
        next(
            line
            for line in lines
            if line.startswith(
                "complete -c localllm -n '__fish_seen_subcommand_from run' -s m -l model -r -f -a '(__localllm_models)'"
            )
        )
    ]
    assert "complete -c localllm -n '__fish_seen_subcommand_from rm' -r -f -a '(__localllm_models)'" in lines
    assert "-d 'show llama.cpp\\'s log on stderr'" in text
    _syntax_ok("fish", text, tmp_path)
    if shutil.which("fish"):  # fish answers `complete -C LINE` without a terminal
        name = installed_starter.name
        offered = {
            line: _fish_offers(tmp_path / "localllm.fish", line, localllm_bin)
            for line in ("localllm ru", "localllm run --te", "localllm run -m ", "localllm rm ")
        }
        assert offered == {
            "localllm ru": ["run"],
            "localllm run --te": ["--temperature"],
            "localllm run -m ": [name],
            "localllm rm ": [name],
        }


def _fish_offers(script: Path, line: str, bin_dir: Path) -> list[str]:
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C {shlex.quote(line)}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [row.split("\t")[0] for row in result.stdout.splitlines()]
