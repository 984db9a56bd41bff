"""Hub metadata through the real huggingface_hub client against the local Hub."""

from __future__ import annotations

import pytest
from support.hubfixtures import FILE, REPO, SPLIT_REPO, hub, online, sha256  # noqa: F401 - fixtures

from localllm.hub import client as hubmod
from localllm.hub import errors


def test_listing_has_sizes_and_lfs_sha256(hub, smollm2_path):
    listing = hubmod.Hub().list_files(REPO)
    f = listing.get(FILE)
    assert f.size == smollm2_path.stat().st_size
    assert f.sha256 == sha256(smollm2_path)
    assert listing.revision == "0123456789abcdef0123456789abcdef01234567"


def test_real_hf_hub_download_works_against_the_test_server(hub, smollm2_path, tmp_path):
    # The server is what huggingface_hub expects: its own download succeeds and matches.
    from huggingface_hub import constants, hf_hub_download

    constants.HF_HUB_OFFLINE = False  # restored after the test (conftest)
    path = hf_hub_download(REPO, FILE, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert sha256(path) == sha256(smollm2_path)


@pytest.mark.parametrize(
    ("repo", "fault", "error"),
    [
        ("nobody/Missing-GGUF", None, errors.RepoNotFoundError),
        (REPO, {"status": 403}, errors.HubAuthError),
        (REPO, {"status": 401}, errors.HubAuthError),
        (REPO, {"status": 500, "times": -1}, errors.HubServerError),
    ],
)
def test_metadata_errors_are_specific(hub, repo, fault, error):
    if fault:
        hub.fault(f"/api/models/{repo}", **fault)
    with pytest.raises(error) as caught:
        hubmod.Hub(backoff=0.01).list_files(repo)
    assert "\n" not in str(caught.value)


def test_transient_5xx_on_metadata_is_retried(hub):
    hub.fault(f"/api/models/{REPO}", status=503, times=2)
    assert hubmod.Hub(backoff=0.01).list_files(REPO).get(FILE) is not None


def test_no_network_is_its_own_error(online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(errors.NoNetworkError):
        hubmod.Hub(backoff=0.01, retries=1).list_files(REPO)


def test_offline_hub_makes_no_request(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.OfflineError):
        hubmod.Hub().list_files(REPO)
    assert hub.requests == []


def test_gated_repo_error_says_how_to_get_access(hub):
    from localllm.hub import download

    h = hubmod.Hub()
    listing = h.list_files("acme/Gated-GGUF")
    f = listing.files[0]
    with pytest.raises(errors.GatedRepoError) as caught:
        download.download(h.resolve_url("acme/Gated-GGUF", f.path, listing.revision), size=f.size, sha256=f.sha256)
    assert "licence" in str(caught.value) and "HF_TOKEN" in caught.value.hint


def test_a_failing_listing_gives_up_after_a_few_tries_not_a_downloads_minute(hub, monkeypatch):
    """Listings are small: three retries (1 + 2 + 4 s by default), where a download keeps trying."""
    monkeypatch.setenv("LOCALLLM_DOWNLOAD_RETRIES", "6")
    hub.fault(f"/api/models/{REPO}", status=503, times=-1)
    hub.reset_counts()
    client = hubmod.Hub(backoff=0.001)
    assert client.policy.retries == 6
    with pytest.raises(errors.HubServerError):
        client.list_files(REPO)
    assert len([r for r in hub.requests if f"/api/models/{REPO}" in r.path]) == 1 + hubmod.METADATA_RETRIES
