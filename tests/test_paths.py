"""README (Where files live): the platform's user data directory unless LOCALLLM_HOME says otherwise (issue 16)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest
from platformdirs.macos import MacOS
from platformdirs.unix import Unix
from platformdirs.windows import Windows

from localllm import paths


@pytest.fixture
def no_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("LOCALLLM_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path / "user"


def test_linux_default_is_local_share(no_override, monkeypatch):
    monkeypatch.setattr(platformdirs, "PlatformDirs", Unix)
    assert paths.data_dir() == no_override / ".local" / "share" / "localllm"
    assert paths.models_dir() == no_override / ".local" / "share" / "localllm" / "models"


def test_macos_default_is_application_support(no_override, monkeypatch):
    monkeypatch.setattr(platformdirs, "PlatformDirs", MacOS)
    assert paths.data_dir() == no_override / "Library" / "Application Support" / "localllm"


def test_windows_default_is_local_appdata(no_override, tmp_path, monkeypatch):
    import platformdirs.windows

    local = tmp_path / "AppData" / "Local"
    roaming = tmp_path / "AppData" / "Roaming"
    folders = {"CSIDL_LOCAL_APPDATA": str(local), "CSIDL_APPDATA": str(roaming)}
    monkeypatch.setattr(platformdirs, "PlatformDirs", Windows)
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", folders.__getitem__)
    assert paths.data_dir() == local / "localllm"  # %LOCALAPPDATA%\localllm: no author folder, not roaming


def test_localllm_home_overrides_the_platform_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(platformdirs, "PlatformDirs", MacOS)
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "elsewhere"))
    assert paths.data_dir() == tmp_path / "elsewhere"
