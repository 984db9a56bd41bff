"""`localllm list`, `rm`, `import`, and reuse of GGUFs other apps already downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.hubfixtures import FILE, REPO, hub, online, resolve_gets, sha256, write_tiny_gguf  # noqa: F401

from localllm.hub import download
from localllm.models import discover, store


def _fake_models(n: int) -> None:
    """n manifest entries whose files are NOT valid GGUF: list must not open them."""
    for i in range(n):
        rel = f"model-{i}/model-{i}-Q4_K_M.gguf"
        path = store.paths.models_dir() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a gguf")
        store.record(store.InstalledModel(name=f"model-{i:02d}", quant="Q4_K_M", files=[rel], size=(i + 1) * 10**9))


def test_list_reads_only_the_manifest(cli):
    _fake_models(20)
    result = cli("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "QUANT", "SIZE", "KLD", "LAST", "USED"]
    assert len(lines) == 21 and "model-19" in lines[-1] and "18.6 GiB" in lines[-1]
    assert "0.0313 llama.cpp table" in lines[-1]  # the quant type's prior: no GGUF opened for it
    rows = json.loads(cli("list", "--json").stdout)
    assert len(rows) == 20 and rows[0]["size"] == 10**9 and rows[0]["last_used"] is None


def test_list_hides_models_whose_files_are_gone(cli):
    _fake_models(2)
    (store.paths.models_dir() / "model-0/model-0-Q4_K_M.gguf").unlink()
    assert [r["name"] for r in json.loads(cli("list", "--json").stdout)] == ["model-01"]


def test_rm_deletes_files_entry_and_partials_without_asking(cli, installed_starter):
    part, side, _ = download.partial_paths("ab" * 32)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)
    side.write_text(json.dumps({"model": installed_starter.name, "quant": installed_starter.quant, "size": 999}))
    path = installed_starter.path()
    result = cli("rm", installed_starter.name)
    assert result.returncode == 0, result.stderr
    assert not path.exists() and not part.exists() and not side.exists()
    assert store.load_manifest() == []
    again = cli("rm", installed_starter.name)
    assert again.returncode == 1 and "not installed" in again.stderr


def test_rm_asks_which_quant_when_several(cli):
    for quant in ("Q4_K_M", "Q8_0"):
        rel = f"m/m-{quant}.gguf"
        (store.paths.models_dir() / "m").mkdir(parents=True, exist_ok=True)
        (store.paths.models_dir() / rel).write_bytes(b"x")
        store.record(store.InstalledModel(name="m", quant=quant, files=[rel]))
    result = cli("rm", "m")
    assert result.returncode == 2 and "m:Q4_K_M, m:Q8_0" in result.stderr
    assert cli("rm", "m:q8_0").returncode == 0
    assert [m.key for m in store.installed()] == ["m:Q4_K_M"]


@pytest.mark.parametrize(("flag", "link"), [([], None), (["--link"], "hardlink"), (["--symlink"], "symlink")])
def test_import_adopts_a_local_gguf(cli, smollm2_path, tmp_path, flag, link):
    src = tmp_path / "My-Model.Q4_1.gguf"
    os.link(smollm2_path, src)
    result = cli("import", str(src), *flag)
    assert result.returncode == 0, result.stderr
    model = store.find_installed("my-model", "Q4_1")
    assert model.link == link and model.sha256 == sha256(smollm2_path)
    dest = model.path()
    if link == "symlink":
        assert dest.is_symlink() and dest.resolve() == src.resolve()
    else:
        assert os.path.samestat(dest.stat(), src.stat()) == (link == "hardlink")
    inspected = cli("inspect", "my-model")  # an imported name resolves like a catalog name
    assert inspected.returncode == 0 and "llama" in inspected.stdout
    assert cli("rm", "my-model").returncode == 0
    assert src.is_file()  # removing the model never deletes the user's own file


def test_import_rejects_what_is_not_gguf(cli, tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"hello world, not a model" * 10)
    result = cli("import", str(bad))
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert store.load_manifest() == []


def test_import_split_brings_every_part(cli, tmp_path):
    for i in (1, 2):
        write_tiny_gguf(tmp_path / f"Tiny-Q4_K_M-0000{i}-of-00002.gguf", i)
    result = cli("import", str(tmp_path / "Tiny-Q4_K_M-00001-of-00002.gguf"), "--link")
    assert result.returncode == 0, result.stderr
    assert len(store.find_installed("tiny", "Q4_K_M").files) == 2


# --- other apps' files -------------------------------------------------------------------------


def _hf_cache(root: Path, repo: str, name: str, src: Path) -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / sha256(src)
    blob.parent.mkdir(parents=True)
    os.link(src, blob)
    snap = folder / "snapshots" / ("c" * 40) / name
    snap.parent.mkdir(parents=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    return snap


def _ollama(root: Path, src: Path, model: str = "smollm2", tag: str = "135m") -> Path:
    digest = sha256(src)
    blob = root / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True)
    os.link(src, blob)
    (root / "blobs" / ("sha256-" + "0" * 64)).write_text("{{ .Prompt }}")  # a template blob
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / model / tag
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "layers": [
                    {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"},
                    {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
                ]
            }
        )
    )
    return blob


def test_discovery_finds_hf_cache_lmstudio_and_ollama(online, smollm2_path, tmp_path):
    _hf_cache(Path(online["HF_HUB_CACHE"]), REPO, FILE, smollm2_path)
    lms = Path(online["LOCALLLM_LMSTUDIO_DIRS"]) / "lmstudio-community" / "SmolLM2-GGUF" / "SmolLM2-Q8_0.gguf"
    lms.parent.mkdir(parents=True)
    os.link(smollm2_path, lms)
    _ollama(Path(online["OLLAMA_MODELS"]), smollm2_path)
    found = {m.source: m for m in discover.scan_all()}
    assert found["hf-cache"].name == REPO and found["hf-cache"].sha256 == sha256(smollm2_path)
    assert found["hf-cache"].quant == "Q4_K_M"
    assert found["lmstudio"].name == "lmstudio-community/SmolLM2-GGUF" and found["lmstudio"].quant == "Q8_0"
    assert found["ollama"].name == "smollm2:135m" and found["ollama"].sha256 == sha256(smollm2_path)
    assert len(found) == 3  # the template blob is not a model


def test_list_all_offers_them(cli, online, smollm2_path):
    _ollama(Path(online["OLLAMA_MODELS"]), smollm2_path)
    result = cli("list", "--all")
    assert result.returncode == 0
    assert "smollm2:135m" in result.stdout and "ollama:" in result.stdout


@pytest.mark.parametrize("where", ["hf-cache", "ollama", "lmstudio"])
def test_pull_links_a_matching_copy_instead_of_downloading(cli, hub, online, smollm2_path, where):
    if where == "hf-cache":
        src = _hf_cache(Path(online["HF_HUB_CACHE"]), REPO, FILE, smollm2_path)
    elif where == "ollama":
        src = _ollama(Path(online["OLLAMA_MODELS"]), smollm2_path)
    else:
        src = Path(online["LOCALLLM_LMSTUDIO_DIRS"]) / "a" / "b" / "renamed.gguf"
        src.parent.mkdir(parents=True)
        os.link(smollm2_path, src)
    result = cli("pull", f"{REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    assert "no download" in result.stderr
    assert resolve_gets(hub) == []
    model = store.find_installed(REPO, "Q4_K_M")
    assert os.path.samestat(model.path().stat(), src.stat())  # one copy on disk, not two


def test_a_copy_with_another_sha256_is_not_reused(cli, hub, online, smollm2_path, tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(smollm2_path.read_bytes()[:-1] + b"\0")  # same size, different bytes
    lms = Path(online["LOCALLLM_LMSTUDIO_DIRS"]) / "a" / "b" / FILE
    lms.parent.mkdir(parents=True)
    os.link(other, lms)
    result = cli("pull", f"{REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    assert len(resolve_gets(hub)) == 1
    assert sha256(store.find_installed(REPO, "Q4_K_M").path()) == sha256(smollm2_path)


def test_no_reuse_downloads_even_when_the_hf_cache_has_the_same_file(cli, hub, online, smollm2_path):
    """README (pull): `--no-reuse` turns linking a matching copy off (issue 16)."""
    src = _hf_cache(Path(online["HF_HUB_CACHE"]), REPO, FILE, smollm2_path)
    result = cli("pull", "--no-reuse", f"{REPO}:Q4_K_M")
    assert result.returncode == 0, result.stderr
    assert "no download" not in result.stderr
    assert len(resolve_gets(hub)) == 1  # downloaded from the Hub
    model = store.find_installed(REPO, "Q4_K_M")
    assert not os.path.samestat(model.path().stat(), src.stat())  # its own file, not a link to the cache
    assert sha256(model.path()) == sha256(smollm2_path)


def _rm_on_a_terminal(*args: str, answer: str | None) -> tuple[int, str]:
    """Run `localllm rm ARGS` with a terminal as stdin/stdout; type ``answer`` once it asks."""
    import pty
    import select
    import subprocess
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "rm", *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    seen = b""
    answered = False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            assert ready, f"no output for 120 s; so far: {seen!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answer is not None and not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        return proc.wait(timeout=60), seen.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_rm_asks_first_on_a_terminal(installed_starter):
    """README (rm): it asks first only on a terminal; no keeps the model, yes removes it (issue 16)."""
    path = installed_starter.path()
    code, out = _rm_on_a_terminal(installed_starter.name, answer="n")
    assert f"remove {installed_starter.key}" in out and "[y/N]" in out
    assert code == 1 and "nothing removed" in out
    assert path.exists() and [m.key for m in store.installed()] == [installed_starter.key]
    code, out = _rm_on_a_terminal(installed_starter.name, answer="y")
    assert code == 0, out
    assert "[y/N]" in out and f"removed {installed_starter.key}" in out
    assert not path.exists() and store.installed() == []


def test_rm_y_does_not_ask_on_a_terminal(installed_starter):
    path = installed_starter.path()
    code, out = _rm_on_a_terminal("-y", installed_starter.name, answer=None)
    assert code == 0, out
    assert "[y/N]" not in out and f"removed {installed_starter.key}" in out
    assert not path.exists() and store.installed() == []
