"""Remote GGUF headers through the Hub client: the same retries, errors and offline rule as
listings and downloads, against the local Hub."""

from __future__ import annotations

import hashlib

import pytest
from support.hubfixtures import FILE, REPO, hub, online, resolve_gets  # noqa: F401 - fixtures

from localllm import paths
from localllm.gguf import header as ggufmeta
from localllm.hub import errors
from localllm.hub.client import Hub
from localllm.hub.headers import cached_header_for, read_remote_header


def test_header_is_read_by_ranges_and_matches_the_file(hub, smollm2_path):
    header = read_remote_header(REPO, FILE)
    local = ggufmeta.read_header(smollm2_path)
    assert header.data_offset == local.data_offset and len(header.tensors) == len(local.tensors)
    assert all(g.range and g.range.startswith("bytes=") for g in resolve_gets(hub))
    assert hub.body_bytes < smollm2_path.stat().st_size // 4  # the header, not the file


def test_header_cache_keeps_its_on_disk_format(hub):
    read_remote_header(REPO, FILE)
    key = hashlib.sha256(f"{REPO}/{FILE}@main".encode()).hexdigest()[:32]
    base = paths.cache_dir() / "headers"
    assert sorted(p.name for p in base.iterdir()) == [f"{key}.gguf-header", f"{key}.json"]
    hub.reset_counts()
    assert read_remote_header(REPO, FILE) is not None  # fresh: no request
    assert cached_header_for(REPO.lower()) is not None
    assert hub.requests == []


def test_header_read_is_retried_through_a_503(hub):
    read_remote_header(REPO, FILE)
    plain = len(resolve_gets(hub))
    hub.reset_counts()
    hub.fault("/resolve/", status=503, times=1, retry_after="0")
    header = read_remote_header(REPO, FILE, refresh=True)
    assert header.tensors
    assert len(resolve_gets(hub)) == plain + 1


def test_header_read_gives_up_on_persistent_5xx_like_a_listing(hub):
    hub.fault("/resolve/", status=500, times=-1)
    with pytest.raises(errors.HubServerError):
        read_remote_header(REPO, FILE, hub=Hub(retries=2))
    assert len(resolve_gets(hub)) == 3


def test_a_404_is_the_same_error_for_a_header_and_a_listing(hub):
    hub.fault(f"/api/models/{REPO}", status=404, times=1)
    with pytest.raises(errors.HubError) as listing:
        Hub().list_files(REPO)
    with pytest.raises(errors.HubError) as header:
        read_remote_header(REPO, "missing.gguf")
    assert type(listing.value) is type(header.value) is errors.HubFileNotFoundError
    with pytest.raises(errors.RepoNotFoundError):
        Hub().list_files("nobody/Missing-GGUF")
    with pytest.raises(errors.RepoNotFoundError):
        read_remote_header("nobody/Missing-GGUF", FILE)


@pytest.mark.parametrize("how", ["env", "flag"])
def test_offline_header_read_of_an_uncached_file_makes_no_request(hub, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.OfflineError) as caught:
        read_remote_header(REPO, FILE, hub=Hub(offline=how == "flag"))
    assert "offline" in str(caught.value)
    assert hub.requests == []


def test_offline_header_read_uses_the_cache_whatever_its_age(hub, monkeypatch):
    read_remote_header(REPO, FILE)
    hub.reset_counts()
    monkeypatch.setattr("localllm.hub.headers.FRESH_S", -1)  # everything is stale
    assert read_remote_header(REPO, FILE, hub=Hub(offline=True)) is not None
    assert hub.requests == []


def test_a_mirror_is_named_in_not_found_messages(hub):
    with pytest.raises(errors.HubFileNotFoundError) as header:
        read_remote_header(REPO, "missing.gguf")
    with pytest.raises(errors.RepoNotFoundError) as listing:
        Hub().list_files("nobody/Missing-GGUF")
    for caught in (header.value, listing.value):
        assert f"on {hub.url}" in str(caught) and "the Hub" not in str(caught)
        assert "huggingface.co" not in (caught.hint or "")


def test_the_hub_itself_is_called_the_hub(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    missing = errors.status_error(401, "x", "RepoNotFound")
    assert "not found on the Hub" in str(missing) and "huggingface.co/settings/tokens" in missing.hint
    mirror = errors.status_error(401, "x", "RepoNotFound", endpoint="https://hf-mirror.example")
    assert "on https://hf-mirror.example" in str(mirror) and "huggingface.co" not in mirror.hint
