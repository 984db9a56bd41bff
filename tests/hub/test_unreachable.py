"""Offline, or with no DNS, localllm answers at once: a Hub that cannot be reached at all is not
retried like a server error, and the message says why in words, with hints that name only flags
that exist."""

from __future__ import annotations

import socket
import time

import pytest
from support.hubfixtures import REPO, hub, online  # noqa: F401 - fixtures

from localllm.hub import client as hubmod
from localllm.hub import errors


@pytest.fixture
def waits(monkeypatch):
    """The back-off sleeps the client would take (none are taken)."""
    taken: list[float] = []
    monkeypatch.setattr(hubmod.time, "sleep", taken.append)
    return taken


def test_a_name_that_does_not_resolve_is_one_attempt(online, monkeypatch, waits):
    lookups: list[str] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.localllm.invalid")  # .invalid never resolves (RFC 2606)
    with pytest.raises(errors.UnreachableError) as caught:
        hubmod.Hub(retries=6).list_files(REPO)
    assert waits == []
    assert lookups.count("hub.localllm.invalid") == 1
    message = str(caught.value)
    assert "does not resolve" in message and "urlopen" not in message and "Errno" not in message


def test_a_refused_connection_is_one_attempt(online, monkeypatch, waits):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(errors.UnreachableError, match="refused"):
        hubmod.Hub(retries=6).list_files(REPO)
    assert waits == []


def test_a_server_error_is_still_retried(hub, waits):
    hub.fault(f"/api/models/{REPO}", status=503, times=2)
    assert hubmod.Hub(retries=6).list_files(REPO) is not None
    assert len(waits) == 2


def test_a_connection_lost_after_progress_is_retried(online, waits):
    """A download that had bytes through and then lost the network is a blip, not offline."""
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "done"

    assert hubmod.Hub(retries=6).retrying(flaky, "a file", progressed=lambda: True) == "done"
    assert len(attempts) == 3 and len(waits) == 2


def test_the_message_has_no_urllib_wrapper():
    import urllib.error

    wrapped = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    error = errors.no_network_error(wrapped, "https://huggingface.co")
    assert isinstance(error, errors.UnreachableError)
    assert "<urlopen" not in str(error)
    timeout = errors.no_network_error(urllib.error.URLError(TimeoutError("timed out")), "https://huggingface.co")
    assert not isinstance(timeout, errors.UnreachableError) and "timed out" in str(timeout)


def test_fit_with_no_network_answers_at_once_in_one_line(cli, online):
    started = time.monotonic()
    result = cli(
        "fit", "qwen3-8b", env={**online, "HF_ENDPOINT": "http://127.0.0.1:9", "LOCALLLM_DOWNLOAD_BACKOFF": "40"}
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Hub mirror at http://127.0.0.1:9" in lines[0], result.stderr
    assert "--offline" not in lines[0]
    # With a 40 s back-off a single retry would wait 40 s: the command must end well before that.
    assert elapsed < 30


def test_offline_fit_names_only_flags_that_exist(cli, online):
    result = cli("fit", "qwen3-8b", env={**online, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "offline" in line and "HF_HUB_OFFLINE" in line
    # `fit` has no --offline flag: the hint may only name pull's.
    assert "without --offline" not in line and "pull's --offline" in line
