"""`localllm pull` as a user runs it, against the local Hub."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hubfixtures import FILE, REPO, SPLIT_REPO, hub, online, resolve_gets, sha256  # noqa: F401 - fixtures
from support.signals import default_sigint

from localllm.models import store


def test_pull_without_quant_says_why_and_installs_verified(cli, hub, smollm2_path, isolated_home):
    result = cli("pull", "smollm2-135m-instruct", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "chose Q4_K_M" in result.stderr
    # The quality cost of the choice, labelled (no eval has run: the prior for its type).
    assert "quality: KLD 0.0313 (prior from llama.cpp's published Llama-3-8B table)" in result.stderr
    model = store.find_installed("smollm2-135m-instruct", "Q4_K_M")
    assert sha256(model.path()) == sha256(smollm2_path) == model.sha256
    assert model.revision == "0123456789abcdef0123456789abcdef01234567"
    assert not list(store.partial_dir().glob("*.part"))
    # Installed: a second pull makes no request at all.
    hub.reset_counts()
    again = cli("pull", "smollm2-135m-instruct:Q4_K_M")
    assert again.returncode == 0 and "already installed" in again.stdout
    assert hub.requests == []


def test_dry_run_shows_files_sizes_sha256_and_downloads_nothing(cli, hub, smollm2_path):
    result = cli("pull", f"{REPO}:Q4_K_M", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert FILE in result.stdout and sha256(smollm2_path) in result.stdout and "94 MiB" in result.stdout
    assert resolve_gets(hub) == []
    assert store.installed() == []


def test_split_gguf_pulls_every_part_and_runs_from_the_first(cli, hub):
    result = cli("pull", f"{SPLIT_REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    model = store.find_installed(SPLIT_REPO, "Q4_K_M")
    assert [Path(f).name for f in model.files] == ["Tiny-Q4_K_M-00001-of-00002.gguf", "Tiny-Q4_K_M-00002-of-00002.gguf"]
    assert all((store.paths.models_dir() / f).is_file() for f in model.files)
    from localllm.models.resolve import resolve

    assert resolve(f"{SPLIT_REPO}:Q4_K_M").path.name == "Tiny-Q4_K_M-00001-of-00002.gguf"


def test_hf_file_reference(cli, hub):
    result = cli("pull", f"{SPLIT_REPO}/Tiny-Q8_0.gguf")
    assert result.returncode == 0, result.stderr
    assert store.find_installed(SPLIT_REPO, "Q8_0") is not None


@pytest.mark.parametrize(
    ("ref", "fault", "words"),
    [
        ("nobody/Nothing-GGUF:Q4_K_M", None, "not found"),
        (f"{REPO}:Q2_K", None, "has no Q2_K file"),
        (f"{REPO}/missing.gguf", None, "has no file missing.gguf"),
        ("acme/Gated-GGUF:Q4_K_M", None, "gated"),
        (f"{REPO}:Q4_K_M", {"match": "/resolve/", "status": 403, "times": -1}, "forbidden (403)"),
        (f"{REPO}:Q4_K_M", {"match": "/resolve/", "status": 401, "times": -1}, "not authorized (401)"),
        (f"{REPO}:Q4_K_M", {"match": "/resolve/", "status": 500, "times": -1}, "server error"),
    ],
)
def test_errors_are_one_line_and_nothing_is_installed(cli, hub, ref, fault, words):
    if fault:
        hub.fault(**fault)
    result = cli("pull", ref)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localllm: error:") and words in lines[0], result.stderr
    assert store.installed() == []
    assert not list(store.paths.models_dir().glob("*/*.gguf"))


def test_no_network_is_one_line(cli, online):
    result = cli("pull", f"{REPO}:Q4_K_M", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "cannot reach the Hub" in result.stderr


@pytest.mark.parametrize("how", [["--offline"], []])
def test_offline_makes_no_request(cli, hub, installed_starter, how):
    env = {} if how else {"HF_HUB_OFFLINE": "1"}
    missing = cli("pull", "smollm2-360m-instruct", *how, env=env)
    assert missing.returncode != 0 and "offline mode is on" in missing.stderr
    assert missing.stderr.count("\n") == 1
    present = cli("pull", f"smollm2-135m-instruct:{installed_starter.quant}", *how, env=env)
    assert present.returncode == 0 and "already installed" in present.stdout
    inspected = cli("inspect", "smollm2-135m-instruct", env={"HF_HUB_OFFLINE": "1"})
    assert inspected.returncode == 0, inspected.stderr
    assert hub.requests == []


def test_sigkill_mid_download_then_resume(hub, online, isolated_home, smollm2_path):
    size = smollm2_path.stat().st_size
    hub.fault("/resolve/", rate=15_000_000, times=1)  # slow enough to be killed midway
    env = {**os.environ, **online}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "pull", f"{REPO}:Q4_K_M"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    part_dir = isolated_home / "models" / ".partial"
    deadline = time.monotonic() + 60
    kept = 0
    while time.monotonic() < deadline:
        parts = list(part_dir.glob("*.part"))
        kept = parts[0].stat().st_size if parts else 0
        if kept > 20_000_000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < kept < size
    kept = next(part_dir.glob("*.part")).stat().st_size
    hub.reset_counts()
    result = subprocess.run(
        [sys.executable, "-m", "localllm", "pull", f"{REPO}:Q4_K_M"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    model = store.find_installed(REPO, "Q4_K_M")
    assert sha256(model.path()) == sha256(smollm2_path)
    gets = resolve_gets(hub)
    assert gets[0].range == f"bytes={kept}-"
    assert sum(g.sent for g in gets) == size - kept  # only the missing bytes were sent again
    assert "resuming" in result.stderr


def test_ctrl_c_keeps_the_partial_and_says_the_next_pull_resumes(hub, online, isolated_home):
    hub.fault("/resolve/", rate=10_000_000, times=1)
    env = {**os.environ, **online}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "pull", f"{REPO}:Q4_K_M"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite ignores SIGINT
    )
    part_dir = isolated_home / "models" / ".partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size > 5_000_000 for p in part_dir.glob("*.part")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "resume" in err.splitlines()[-1]
    assert next(part_dir.glob("*.part")).stat().st_size > 5_000_000


def test_progress_lines_when_not_a_terminal(cli, hub):
    result = cli("pull", f"{REPO}:Q4_K_M")
    assert result.returncode == 0
    last = [ln for ln in result.stderr.splitlines() if FILE in ln][-1]
    assert "100%" in last and "ETA" in last
    assert re.search(r"[\d.]+ (?:[KMGT]i)?B/s", last), last


def test_list_json_after_pull(cli, hub):
    cli("pull", f"{REPO}:Q4_K_M")
    rows = json.loads(cli("list", "--json").stdout)
    assert [(r["name"], r["quant"]) for r in rows] == [(REPO, "Q4_K_M")]


def test_hf_file_reference_to_one_part_pulls_all_parts(cli, hub):
    result = cli("pull", f"{SPLIT_REPO}/Q4_K_M/Tiny-Q4_K_M-00002-of-00002.gguf")
    assert result.returncode == 0, result.stderr
    assert len(store.find_installed(SPLIT_REPO, "Q4_K_M").files) == 2


def test_store_core_stays_free_of_shells_and_list_of_heavy_imports():
    code = (
        "import localllm.hub.client, localllm.hub.download, localllm.hub.pull, localllm.models.discover, localllm.models.importing, localllm.fs\n"
        "import sys; bad = [m for m in sys.modules if m.startswith(('textual', 'localllm.cli'))]; print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from localllm.cli import main; main(['list']); "
            "print([m for m in sys.modules if m.split('.')[0] in ('huggingface_hub', 'gguf', 'numpy', 'httpx2', 'llama_cpp')])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.strip().splitlines()[-1] == "[]"


@pytest.fixture
def proxy(monkeypatch):
    from support.proxy import RecordingProxy

    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = RecordingProxy().start()
    yield server
    server.stop()


def test_downloads_go_through_the_proxy_unless_no_proxy_names_the_host(cli, hub, online, proxy, monkeypatch):
    """README (pull): HTTP(S)_PROXY and NO_PROXY are honoured (issue 16). The local Hub is plain
    http, so HTTP_PROXY is the variable that applies to it."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    result = cli("pull", f"{REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    host = hub.url.split("//", 1)[1]
    assert any(r.startswith(f"GET http://{host}/api/models/{REPO}") for r in proxy.requests), proxy.requests
    assert any(r.startswith(f"GET http://{host}/{REPO}/resolve/") for r in proxy.requests), proxy.requests
    assert len(resolve_gets(hub)) == 1  # the proxy forwarded the one download

    proxy.requests.clear()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    result = cli("pull", f"{SPLIT_REPO}:Q8_0")
    assert result.returncode == 0, result.stderr
    assert proxy.requests == []  # went straight to the Hub


def test_https_proxy_is_used_for_an_https_endpoint(cli, online, proxy, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    result = cli("pull", "--dry-run", f"{REPO}:Q4_K_M")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # one line (and its hint)
    assert proxy.requests and all(r.startswith("CONNECT hub.example.invalid:443 ") for r in proxy.requests)


def test_https_proxy_is_used_for_file_bytes(online, proxy, monkeypatch):
    """The file bytes go through urllib, not huggingface_hub: it honours HTTPS_PROXY too."""
    from localllm.hub import download, errors

    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(errors.NetworkError):
        download.download(
            "https://cdn.example.invalid/x.gguf",
            size=10,
            sha256="0" * 64,
            policy=download.RetryPolicy(retries=0, backoff=0.01, stall_timeout=5),
        )
    assert proxy.requests and all(r.startswith("CONNECT cdn.example.invalid:443 ") for r in proxy.requests)


def test_hf_token_is_sent_as_a_bearer_token_for_a_gated_repo(cli, hub, online):
    """README (pull): HF_TOKEN is honoured for gated models (issue 16)."""
    result = cli("pull", "acme/Gated-GGUF:Q4_K_M", env={"HF_TOKEN": "hf_test_secret_token"})
    assert result.returncode == 0, result.stderr
    gets = resolve_gets(hub)
    assert gets and all(g.authorization == "Bearer hf_test_secret_token" for g in gets)
    assert "hf_test_secret_token" not in result.stdout + result.stderr
    without = cli("rm", "-y", "acme/Gated-GGUF")
    assert without.returncode == 0, without.stderr
    hub.requests.clear()
    refused = cli("pull", "acme/Gated-GGUF:Q4_K_M")
    assert refused.returncode != 0 and "HF_TOKEN" in refused.stderr
    assert all(r.authorization is None for r in hub.requests)
