"""The downloader's bookkeeping, as `pull`, `rm` and the TUI's download list see it: the partial's
record, what is listed as interrupted, what the disk check and the errors say (issue 16). A small
GGUF from the local Hub keeps each download to milliseconds."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections import namedtuple
from pathlib import Path

import pytest
from support import hubfixtures
from support.hubfixtures import SPLIT_REPO, resolve_gets, sha256

from localllm.format import format_bytes
from localllm.hub import download, errors
from localllm.hub.client import Hub
from localllm.models import store

hub, online = hubfixtures.hub, hubfixtures.online  # fixtures: the local Hub, and network allowed

FAST = download.RetryPolicy(retries=2, backoff=0.01, stall_timeout=5)
FILE = "Tiny-Q8_0.gguf"


@pytest.fixture
def tiny(hub) -> dict:
    path: Path = hub.repos[SPLIT_REPO].files[FILE]
    return {
        "url": Hub().resolve_url(SPLIT_REPO, FILE, "main"),
        "size": path.stat().st_size,
        "sha256": sha256(path),
        "bytes": path.read_bytes(),
    }


def fetch(t: dict, **kwargs) -> Path:
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("sha256", t["sha256"])
    return download.download(t["url"], size=kwargs.pop("size", t["size"]), label=FILE, **kwargs)


def test_the_complete_file_waits_under_its_sha256_and_its_record_names_it(tiny):
    done = fetch(tiny, meta={"repo": SPLIT_REPO, "model": "tiny"})
    assert done == store.partial_dir() / f"{tiny['sha256']}.gguf" and done.read_bytes() == tiny["bytes"]
    [info] = download.partials()
    assert info["key"] == tiny["sha256"] and info["bytes"] == tiny["size"]
    assert (info["url"], info["size"], info["sha256"]) == (tiny["url"], tiny["size"], tiny["sha256"])
    assert info["repo"] == SPLIT_REPO and info["model"] == "tiny"
    assert info["etag"] == f'"{tiny["sha256"]}"'  # the server's ETag, recorded for the next resume


def test_finish_forgets_the_bookkeeping_but_not_the_file(tiny):
    done = fetch(tiny)
    dest = store.install_file(done, "tiny/Tiny-Q8_0.gguf")
    download.finish(done)
    assert download.partials() == []
    assert sorted(p.name for p in store.partial_dir().iterdir()) == []
    assert dest.read_bytes() == tiny["bytes"]


def test_a_finished_download_is_returned_again_without_a_request(tiny, hub):
    first = fetch(tiny)
    hub.reset_counts()
    assert fetch(tiny) == first
    assert resolve_gets(hub) == []


def test_a_sha256_in_capitals_is_the_same_download(tiny, hub):
    fetch(tiny)
    hub.reset_counts()
    assert fetch(tiny, sha256=tiny["sha256"].upper()).name == f"{tiny['sha256']}.gguf"
    assert resolve_gets(hub) == []


def test_discard_forgets_an_interrupted_download(tiny, hub):
    hub.fault("/resolve/", cut_at=1000, times=-1)
    with pytest.raises(errors.DownloadError):
        fetch(tiny)
    [info] = download.partials()
    assert info["bytes"] == 1000
    download.discard_partial(info["key"])
    assert download.partials() == []
    assert not download.partial_paths(info["key"])[0].exists()


def test_partials_lists_nothing_without_a_folder_and_skips_a_damaged_record(tiny):
    assert download.partials() == []
    fetch(tiny)
    (store.partial_dir() / "other.json").write_text("{not json")
    (store.partial_dir() / "lost.json").write_text(json.dumps({"url": "x", "size": 5}))
    infos = download.partials()
    assert [(i["key"], i["bytes"]) for i in infos] == [(tiny["sha256"], tiny["size"]), ("lost", 0)]


def test_a_download_that_keeps_failing_says_how_many_retries_and_what_is_kept(tiny, hub):
    hub.fault("/resolve/", cut_at=1000, times=-1)
    with pytest.raises(errors.DownloadError) as err:
        fetch(tiny)
    assert str(err.value).startswith(f"download of {FILE} failed after 2 retries: ")
    assert err.value.hint == (
        f"{format_bytes(1000)} of {format_bytes(tiny['size'])} kept; the next pull resumes from there"
    )


def test_a_server_error_that_persists_is_reported_as_the_server_error(tiny, hub):
    hub.fault("/resolve/", status=503, times=-1)
    with pytest.raises(errors.HubServerError):
        fetch(tiny)


def test_a_file_without_sha256_is_checked_by_size_and_keyed_by_its_url(tiny):
    done = fetch(tiny, sha256=None)
    assert done.read_bytes() == tiny["bytes"]
    import hashlib

    assert done.name == hashlib.sha256(tiny["url"].encode()).hexdigest() + ".gguf"


def test_a_file_without_sha256_and_a_wrong_size_fails_naming_both(tiny):
    with pytest.raises(errors.IntegrityError) as err:
        fetch(tiny, sha256=None, size=tiny["size"] + 10)  # the listing promised more than the file has
    message = str(err.value)
    assert f"({tiny['size']} bytes), expected (no sha256) ({tiny['size'] + 10} bytes)" in message
    assert message.startswith(f"{FILE} failed verification: sha256 ")
    assert err.value.hint == "run the pull again to download it afresh"
    assert download.partials() == []  # the data and its record are deleted


def test_a_wrong_sha256_names_the_expected_one(tiny):
    wrong = "ab" * 32
    with pytest.raises(errors.IntegrityError) as err:
        fetch(tiny, sha256=wrong)
    assert (
        f"sha256 {tiny['sha256'][:12]}… ({tiny['size']} bytes), expected {wrong[:12]}… ({tiny['size']} bytes)"
        in str(err.value)
    )
    assert list(store.partial_dir().glob("*.part")) == []


def test_a_partial_of_another_size_is_not_trusted(tiny, hub):
    hub.fault("/resolve/", cut_at=2000, times=-1)
    with pytest.raises(errors.DownloadError):
        fetch(tiny)
    part, side, _ = download.partial_paths(tiny["sha256"])
    info = json.loads(side.read_text())
    side.write_text(json.dumps(dict(info, size=tiny["size"] + 1)))  # a record of another file
    hub.faults.clear()
    hub.reset_counts()
    assert fetch(tiny).read_bytes() == tiny["bytes"]
    assert [g.range for g in resolve_gets(hub)] == [None]


def test_a_partial_longer_than_the_file_is_not_trusted(tiny, hub):
    part, side, _ = download.partial_paths(tiny["sha256"])
    part.parent.mkdir(parents=True)
    part.write_bytes(tiny["bytes"] + b"extra")
    side.write_text(json.dumps({"url": tiny["url"], "size": tiny["size"]}))
    assert fetch(tiny).read_bytes() == tiny["bytes"]
    assert [g.range for g in resolve_gets(hub)] == [None]


def test_a_resume_asks_for_the_rest_only(tiny, hub):
    hub.fault("/resolve/", cut_at=3000)
    seen = []
    assert fetch(tiny, progress=seen.append).read_bytes() == tiny["bytes"]
    assert [g.range for g in resolve_gets(hub)] == [None, "bytes=3000-"]
    assert seen[-1].done == seen[-1].total == tiny["size"] and seen[-1].label == FILE


def test_progress_is_forced_at_the_end_and_throttled_between(tiny, hub, monkeypatch):
    ticks = iter(range(0, 10**6))
    monkeypatch.setattr(download.time, "monotonic", lambda: next(ticks) * 0.01)  # 10 ms per call
    monkeypatch.setattr(download, "CHUNK", 1024)
    hub.fault("/resolve/", rate=10**9)  # sent in small blocks
    seen = []
    fetch(tiny, progress=seen.append)
    assert seen[-1].done == tiny["size"]
    assert len(seen) < tiny["size"] // 1024  # not one callback per chunk
    assert all(b.done >= a.done for a, b in zip(seen, seen[1:]))
    assert seen[0].resumed_from == 0


def test_speed_and_time_left_come_from_the_last_seconds():
    speed = download._Speed(window=5.0)
    assert speed.add(0.0, 0) == 0.0
    assert speed.add(1.0, 100) == 100.0
    assert speed.add(2.0, 300) == 150.0
    assert speed.add(10.0, 1100) == 100.0  # samples older than the window age out, two are kept
    assert speed.add(11.0, 1200) == 100.0
    assert speed.add(11.0, 1300) == 200.0
    seen = []
    report = download._Reporter(seen.append, "f", 1000, resumed_from=200)
    report(500, force=True)
    assert seen[0].eta is None and seen[0].speed == 0.0 and seen[0].resumed_from == 200
    report.restarted()
    report(600, force=True)
    assert seen[-1].resumed_from == 0


def test_free_space_must_cover_the_download_and_a_margin(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    free = 10 * 1024 * 1024 + download.DISK_MARGIN
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, free))
    download.check_disk_space(tmp_path / "new", 10 * 1024 * 1024)
    assert (tmp_path / "new").is_dir()
    with pytest.raises(errors.DiskFullError) as err:
        download.check_disk_space(tmp_path, 10 * 1024 * 1024 + 1)
    assert str(err.value) == (
        f"not enough disk space in {tmp_path}: {format_bytes(10 * 1024 * 1024 + 1)} needed, {format_bytes(free)} free"
    )
    assert "LOCALLLM_HOME" in err.value.hint


def test_a_busy_download_can_be_waited_for_and_the_wait_cancelled(tiny):
    from localllm.fs import FileLock

    lock = FileLock(download.partial_paths(tiny["sha256"])[2])
    assert lock.try_acquire()
    try:
        with pytest.raises(errors.DownloadBusyError) as err:
            fetch(tiny)
        assert str(err.value) == f"{FILE} is already being downloaded by another localllm process"
        cancel = threading.Event()
        waits = []
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(errors.DownloadCancelled, match=f"stopped waiting for {FILE}"):
            fetch(tiny, on_wait=waits.append, cancel=cancel)
        assert waits == [f"another localllm process is downloading {FILE}; waiting for it"]
    finally:
        lock.release()


def test_a_cancelled_download_says_how_much_is_kept(tiny, hub):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.DownloadCancelled) as err:
        fetch(tiny, cancel=cancel)
    assert str(err.value) == f"download of {FILE} stopped"
    assert err.value.hint == f"{format_bytes(0)} of {format_bytes(tiny['size'])} kept; the next pull resumes from there"
    assert resolve_gets(hub) == []


class WrongRangeMirror(http.server.BaseHTTPRequestHandler):
    """A mirror that answers a range request with 206 and the whole file's range (a broken cache)."""

    data = b""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.send_response(206 if self.headers.get("Range") else 200)
        if self.headers.get("Range"):
            self.send_header("Content-Range", f"bytes 0-{len(self.data) - 1}/{len(self.data)}")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)


def test_a_resume_answered_with_another_range_is_never_appended(tiny, online):
    """A 206 whose Content-Range does not start where the partial ends would put bytes in the
    wrong place: the download stops with the range named, and the partial is kept as it was."""
    WrongRangeMirror.data = tiny["bytes"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongRangeMirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tiny.gguf"
    try:
        part, side, _ = download.partial_paths(tiny["sha256"])
        part.parent.mkdir(parents=True)
        part.write_bytes(tiny["bytes"][:1000])
        side.write_text(json.dumps({"url": url, "size": tiny["size"]}))
        with pytest.raises(errors.DownloadError) as err:
            fetch(dict(tiny, url=url))
    finally:
        server.shutdown()
        server.server_close()
    assert f"server answered an unexpected range bytes 0-{tiny['size'] - 1}/{tiny['size']}" in str(err.value)
    assert part.read_bytes() == tiny["bytes"][:1000]


def test_errors_name_the_download_and_its_repository(tiny, hub):
    """A refused file is named as the user knows it; a missing repository by its name."""
    hub.fault("/resolve/", status=404, error_code="EntryNotFound")
    with pytest.raises(errors.HubFileNotFoundError) as err:
        download.download(tiny["url"], size=tiny["size"], sha256=tiny["sha256"], label="the tiny model", policy=FAST)
    assert str(err.value).startswith("the tiny model: not found on ")
    hub.fault("/resolve/", status=404, error_code="RepoNotFound")
    with pytest.raises(errors.HubError) as err:
        download.download(
            tiny["url"],
            size=tiny["size"],
            sha256=tiny["sha256"],
            label="the tiny model",
            policy=FAST,
            meta={"repo": SPLIT_REPO},
        )
    assert str(err.value).startswith(f"repository {SPLIT_REPO} not found on ")


class CdnMirror(http.server.BaseHTTPRequestHandler):
    """A CDN or mirror as the Hub's redirect reaches it: its own ``ETag``, and ``X-Linked-Etag``
    (the file's hash on the Hub) only when ``linked`` is set."""

    data = b""
    linked: str | None = None

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("ETag", '"cdn-etag"')
        if self.linked:
            self.send_header("X-Linked-Etag", self.linked)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)


@pytest.mark.parametrize("linked", [None, '"hub-sha"'])
def test_the_record_keeps_the_hub_etag_and_else_the_servers_own(tiny, online, linked):
    """After the Hub's redirect the CDN's answer carries its own ETag only; a mirror may pass the
    Hub's X-Linked-Etag on beside a different ETag: the partial's record keeps the Hub's when sent."""
    CdnMirror.data, CdnMirror.linked = tiny["bytes"], linked
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CdnMirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetch(dict(tiny, url=f"http://127.0.0.1:{server.server_address[1]}/tiny.gguf"))
    finally:
        server.shutdown()
        server.server_close()
    [info] = download.partials()
    assert info["etag"] == (linked or '"cdn-etag"')
