"""The resumable downloader against the local Hub with faults injected."""

from __future__ import annotations

import errno
import threading

import pytest
from support.hubfixtures import FILE, REPO, hub, online, resolve_gets, sha256  # noqa: F401 - fixtures

from localllm.fs import FileLock
from localllm.hub import download, errors
from localllm.hub.client import Hub
from localllm.hub.errors import HubAuthError, HubFileNotFoundError, HubServerError
from localllm.models import store

FAST = download.RetryPolicy(retries=3, backoff=0.01, stall_timeout=5)


@pytest.fixture
def target(hub, smollm2_path):
    h = Hub()
    return {
        "url": h.resolve_url(REPO, FILE, "main"),
        "size": smollm2_path.stat().st_size,
        "sha256": sha256(smollm2_path),
    }


def fetch(target, **kwargs):
    kwargs.setdefault("policy", FAST)
    return download.download(target["url"], size=target["size"], sha256=target["sha256"], label=FILE, **kwargs)


def test_download_is_verified_and_reports_progress(target, hub):
    seen = []
    done = fetch(target, progress=seen.append)
    assert sha256(done) == target["sha256"]
    assert seen[-1].done == seen[-1].total == target["size"]
    assert len(resolve_gets(hub)) == 1


def test_dropped_connection_is_resumed_with_range(target, hub):
    hub.fault("/resolve/", cut_at=30_000_000)
    done = fetch(target)
    assert sha256(done) == target["sha256"]
    gets = resolve_gets(hub)
    assert [g.range for g in gets] == [None, "bytes=30000000-"]
    assert sum(g.sent for g in gets) == target["size"]  # nothing was sent twice


def test_corrupted_bytes_are_detected_and_deleted(target, hub):
    hub.fault("/resolve/", corrupt_at=12345)
    with pytest.raises(errors.IntegrityError) as caught:
        fetch(target)
    assert "deleted" in str(caught.value)
    assert list(store.partial_dir().glob("*.part")) == []
    assert sha256(fetch(target)) == target["sha256"]  # the next try starts afresh and succeeds


@pytest.mark.parametrize("fault", [{"status": 500, "times": 2}, {"status": 429, "retry_after": "0", "times": 2}])
def test_transient_server_errors_are_retried(target, hub, fault):
    hub.fault("/resolve/", **fault)
    assert sha256(fetch(target)) == target["sha256"]
    assert len(resolve_gets(hub)) == 3


def test_persistent_5xx_gives_up_with_a_server_error(target, hub):
    hub.fault("/resolve/", status=502, times=-1)
    with pytest.raises(HubServerError):
        fetch(target)
    assert len(resolve_gets(hub)) == FAST.retries + 1


@pytest.mark.parametrize(("status", "error"), [(404, HubFileNotFoundError), (403, HubAuthError), (401, HubAuthError)])
def test_client_errors_are_not_retried(target, hub, status, error):
    hub.fault("/resolve/", status=status, times=-1)
    with pytest.raises(error):
        fetch(target)
    assert len(resolve_gets(hub)) == 1


def test_a_stalled_connection_is_dropped_and_resumed(target, hub):
    hub.fault("/resolve/", rate=100_000, times=1)  # first 64 KiB, then a long silence
    policy = download.RetryPolicy(retries=3, backoff=0.01, stall_timeout=0.5)
    assert sha256(fetch(target, policy=policy)) == target["sha256"]
    assert resolve_gets(hub)[1].range is not None


def test_cancel_keeps_the_partial_and_the_next_download_resumes(target, hub):
    cancel = threading.Event()

    def stop_midway(p):
        if p.done > 20_000_000:
            cancel.set()

    hub.fault("/resolve/", rate=50_000_000, times=1)
    with pytest.raises(errors.DownloadCancelled) as caught:
        fetch(target, progress=stop_midway, cancel=cancel)
    assert "resumes" in caught.value.hint
    kept = download.partials()[0]["bytes"]
    assert kept > 20_000_000
    hub.reset_counts()
    seen = []
    assert sha256(fetch(target, progress=seen.append)) == target["sha256"]
    assert seen[0].resumed_from == kept
    assert sum(g.sent for g in resolve_gets(hub)) == target["size"] - kept


def test_not_enough_disk_space_stops_before_any_request(target, hub, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(errors.DiskFullError) as caught:
        fetch(target)
    assert "needed" in str(caught.value)
    assert resolve_gets(hub) == []


def test_disk_full_mid_write_keeps_the_partial(target, hub, monkeypatch):
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            if self.written > 5_000_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    with monkeypatch.context() as patch:
        patch.setattr(download, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
        with pytest.raises(errors.DiskFullError) as caught:
            fetch(target)
    assert "kept" in str(caught.value)
    assert download.partials()[0]["bytes"] > 5_000_000


def test_permission_denied_is_one_clear_error(target, hub, monkeypatch):
    from localllm import paths

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(paths, "ensure_dir", denied)
    with pytest.raises(errors.DownloadPermissionError) as caught:
        fetch(target)
    assert "permission denied" in str(caught.value)


def test_a_second_process_cannot_write_the_same_download(target, hub):
    lock = FileLock(download.partial_paths(target["sha256"])[2])
    assert lock.try_acquire()
    try:
        with pytest.raises(errors.DownloadBusyError):
            fetch(target)
        waits = []
        threading.Timer(0.3, lock.release).start()
        done = fetch(target, on_wait=waits.append)
    finally:
        lock.release()
    assert waits and "waiting" in waits[0]
    assert sha256(done) == target["sha256"]


def test_a_stale_partial_without_its_record_is_not_trusted(target, hub):
    part = download.partial_paths(target["sha256"])[0]
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not the file's prefix" * 1000)
    # A stale part from a different file: sidecar missing, so it is not trusted and is rewritten.
    assert sha256(fetch(target)) == target["sha256"]


def test_a_server_ignoring_range_restarts_from_zero_and_does_not_claim_resuming(target, hub):
    cancel = threading.Event()
    hub.fault("/resolve/", rate=50_000_000, times=1)
    with pytest.raises(errors.DownloadCancelled):
        fetch(target, progress=lambda p: p.done > 20_000_000 and cancel.set(), cancel=cancel)
    kept = download.partials()[0]["bytes"]
    hub.reset_counts()
    hub.fault("/resolve/", ignore_range=True, times=1)
    seen = []
    assert sha256(fetch(target, progress=seen.append)) == target["sha256"]
    assert [g.range for g in resolve_gets(hub)] == [f"bytes={kept}-"]
    assert seen and all(p.resumed_from == 0 for p in seen)
    assert seen[-1].done == target["size"]  # written afresh, not appended after the kept bytes


def test_offline_download_makes_no_request(target, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.OfflineError):
        fetch(target)
    assert hub.requests == []


def test_a_redirect_to_a_cdn_is_followed_without_the_token(target, hub, monkeypatch):
    """The Hub answers LFS files with a 302 to its CDN: the bytes come from there, verified, and
    the token never leaves for the other host."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub.fault("/resolve/", redirect=True, times=-1)
    done = fetch(target, hub=Hub())
    assert sha256(done) == target["sha256"]
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and all(r.authorization is None for r in cdn)
    assert any(r.authorization == "Bearer hf_secret" for r in hub.requests if "/resolve/" in r.path)


def test_a_server_that_sends_no_length_is_read_to_the_end(target, hub):
    hub.fault("/resolve/", no_length=True, times=-1)
    assert sha256(fetch(target)) == target["sha256"]


def test_a_dropped_connection_without_length_resumes(target, hub):
    hub.fault("/resolve/", no_length=True, cut_at=40_000_000)
    done = fetch(target)
    assert sha256(done) == target["sha256"]
    assert [g.range for g in resolve_gets(hub)] == [None, "bytes=40000000-"]


def test_a_partial_that_is_already_whole_is_verified_without_a_request(target, hub):
    """Killed after the last byte but before the rename: the next try asks the server for nothing,
    verifies the bytes on disk and keeps them."""
    part, side, _ = download.partial_paths(target["sha256"])

    def stop_at_the_end(p):
        if p.done == p.total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(target, progress=stop_at_the_end)
    assert part.stat().st_size == target["size"] and side.exists()
    hub.reset_counts()
    assert sha256(fetch(target)) == target["sha256"]
    assert resolve_gets(hub) == []


def test_a_server_with_no_more_bytes_than_promised_is_one_clear_error(target, hub):
    """The listing promised more bytes than the file has: the resumed request is answered 416, and
    the download ends with one verification error instead of asking again and again."""
    with pytest.raises(errors.IntegrityError):
        fetch(dict(target, size=target["size"] + 10))
    assert [g.range for g in resolve_gets(hub)] == [None, f"bytes={target['size']}-"]
