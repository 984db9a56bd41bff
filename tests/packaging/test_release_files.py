"""The Linux desktop entry, and the Homebrew formula and Scoop manifest packaging/generate.py writes."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from localllm import __version__

REPO = Path(__file__).resolve().parents[2]
DESKTOP = REPO / "packaging" / "linux" / "localllm.desktop"
SDIST_SHA, ZIP_SHA = "0123456789abcdef" * 4, "fedcba9876543210" * 4
SDIST_URL = f"https://files.pythonhosted.org/packages/source/l/localllm/localllm-{__version__}.tar.gz"
ZIP_URL = f"https://downloads.example.org/localllm-{__version__}-windows-x86_64.zip"


def test_desktop_entry_opens_the_tui_in_a_terminal():
    entry = configparser.ConfigParser(interpolation=None, strict=True)
    entry.optionxform = str  # keys are case-sensitive
    entry.read_string(DESKTOP.read_text(encoding="utf-8"))
    assert entry.sections() == ["Desktop Entry"]
    keys = entry["Desktop Entry"]
    # what the Desktop Entry Specification requires of an Application, and what opens the UI
    assert keys["Type"] == "Application" and keys["Name"] == "localllm"
    assert keys["Terminal"] == "true"
    scripts = re.search(r"\[project\.scripts\]\n(\w+) =", (REPO / "pyproject.toml").read_text()).group(1)
    assert keys["Exec"] == scripts == "localllm"  # no arguments: `localllm` alone opens the chat UI
    categories = keys["Categories"].split(";")
    assert categories[-1] == "" and "Utility" in categories  # a registered main category, ;-terminated
    if shutil.which("desktop-file-validate"):  # the freedesktop validator, where installed
        checked = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
        assert checked.returncode == 0 and checked.stdout == "", checked.stdout + checked.stderr


def _generate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "packaging" / "generate.py"),
            "--out",
            str(out),
            "--sdist-url",
            SDIST_URL,
            "--sdist-sha256",
            SDIST_SHA,
            "--zip-url",
            ZIP_URL,
            "--zip-sha256",
            ZIP_SHA,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generated_homebrew_formula_names_this_release(tmp_path):
    result = _generate(tmp_path)
    assert result.returncode == 0, result.stderr
    ruby = (tmp_path / "homebrew" / "localllm.rb").read_text()
    assert "\nclass Localllm < Formula\n" in ruby
    assert f'  url "{SDIST_URL}"\n' in ruby and f'  sha256 "{SDIST_SHA}"\n' in ruby
    assert f"localllm {__version__}" in ruby and __version__ in SDIST_URL  # Homebrew reads the version from the URL
    test_block = re.search(r"\n  test do\n(.*?)\n  end\n", ruby, re.S).group(1)
    assert 'shell_output("#{bin}/localllm --version")' in test_block
    openers = len(re.findall(r"^\s*(?:class|def)\b|\bdo$", ruby, re.M))
    assert openers == len(re.findall(r"^\s*end$", ruby, re.M))  # every block closes
    if shutil.which("ruby"):  # Ruby's own syntax check, where Ruby is installed
        checked = subprocess.run(
            ["ruby", "-c", str(tmp_path / "homebrew" / "localllm.rb")], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr


def test_generated_scoop_manifest_names_this_release(tmp_path):
    assert _generate(tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "scoop" / "localllm.json").read_text())
    assert manifest["version"] == __version__
    assert manifest["url"] == ZIP_URL and manifest["hash"] == ZIP_SHA
    assert manifest["bin"] == "localllm.exe" and manifest["extract_dir"] == "localllm"  # the one-folder build
    assert manifest["license"] == "Apache-2.0"


def test_generator_refuses_a_bad_hash_or_url(tmp_path):
    bad_hash = _generate(tmp_path, "--zip-sha256", "abc")
    assert bad_hash.returncode == 2 and "not a sha256" in bad_hash.stderr
    bad_url = _generate(tmp_path, "--sdist-url", 'http://x/"; system "rm')
    assert bad_url.returncode == 2 and "not an https URL" in bad_url.stderr
    assert not (tmp_path / "homebrew").exists()
