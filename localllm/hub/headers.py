"""The GGUF header of a file on the Hugging Face Hub (or a mirror), without downloading the file.

A header is a few MB at most (metadata and tensor infos) in front of GBs of tensor data, so the
memory estimate of every quant of a model costs a few HTTP range requests, made through
:meth:`localllm.hub.client.Hub.open` with the client's retries and errors. Headers are cached
under ``cache_dir()/headers/`` (``<key>.json`` + ``<key>.gguf-header``), keyed by repository,
file and revision, with the ETag (the file's content hash on the Hub) recorded: a cached header
younger than :data:`FRESH_S` is used without asking the server again; an older one is revalidated
with a HEAD request. Offline no request is made: a cached header is used whatever its age, and a
missing one is an :class:`~localllm.hub.errors.OfflineError`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from localllm import fs, paths
from localllm.gguf import header as ggufmeta

from .client import Hub
from .errors import OFFLINE_OFF_HINT, HubError, OfflineError

FIRST_RANGE = 2 << 20  # most headers fit in the first 2 MiB; big vocabularies need a second request
MAX_HEADER = 256 << 20
FRESH_S = 7 * 24 * 3600

__all__ = ["cached_header_for", "read_remote_header"]


def _cache_paths(repo: str, filename: str, revision: str) -> tuple[Path, Path]:
    key = hashlib.sha256(f"{repo}/{filename}@{revision}".encode()).hexdigest()[:32]
    base = paths.cache_dir() / "headers"
    return base / f"{key}.json", base / f"{key}.gguf-header"


def _load_cached(index: Path, blob: Path, name: str) -> tuple[ggufmeta.GGUFHeader, dict] | None:
    try:
        meta = json.loads(index.read_text())
        data = blob.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    try:
        header = ggufmeta.read_header_bytes(data, name=name, file_size=meta.get("size"))
    except (ggufmeta.NeedMoreData, ggufmeta.ModelFileError):
        return None
    return header, meta


def read_remote_header(
    repo: str, filename: str, *, revision: str = "main", hub: Hub | None = None, refresh: bool = False
) -> ggufmeta.GGUFHeader:
    """The header of ``filename`` in Hub repository ``repo`` (range requests; cached)."""
    hub = hub or Hub()
    name = f"{repo}/{filename}"
    index, blob = _cache_paths(repo, filename, revision)
    cached = None if refresh else _load_cached(index, blob, name)
    if hub.offline:
        # Offline, a header read at another revision (a listing's commit, say) is the best there is.
        cached = cached or _cached(repo, filename)
        if cached is not None:
            return cached[0]
        raise OfflineError(
            f"cannot read the header of {name}: offline mode is on and it is not cached",
            hint=f"to fetch it (a few MB), {OFFLINE_OFF_HINT}; or download the model",
        )
    if cached is not None and time.time() - cached[1].get("fetched", 0) < FRESH_S:
        return cached[0]
    url = hub.resolve_url(repo, filename, revision)
    if cached is not None and hub.retrying(lambda: _etag_of(hub, url, name, repo), name) == cached[1].get("etag"):
        fs.atomic_write(index, json.dumps({**cached[1], "fetched": time.time()}))
        return cached[0]
    header, data, size, etag = hub.retrying(lambda: _fetch(hub, url, name, repo), name)
    fs.atomic_write(blob, data[: header.data_offset])
    fs.atomic_write(index, json.dumps({"repo": repo, "file": filename, "revision": revision, "etag": etag,
                                       "size": size, "fetched": time.time()}))  # fmt: skip
    return header


def _etag_of(hub: Hub, url: str, name: str, repo: str) -> str | None:
    with hub.open(url, method="HEAD", what=name, repo=repo) as response:
        return _etag(response.headers)


def _fetch(hub: Hub, url: str, name: str, repo: str) -> tuple[ggufmeta.GGUFHeader, bytes, int | None, str | None]:
    """Range requests until the header parses: (header, bytes read, file size, ETag)."""
    data, size, etag = b"", None, None
    want = FIRST_RANGE
    while True:
        with hub.open(url, len(data), want - 1, what=name, repo=repo) as response:
            if response.status == 200:  # the server ignored Range: read the start of the whole file
                data = response.read(want)
                size = size or _int(response.headers.get("Content-Length"))
            else:
                data += response.read()
            size = size or _total_size(response.headers)
            etag = etag or _etag(response.headers)
        try:
            return ggufmeta.read_header_bytes(data, name=name, file_size=size), data, size, etag
        except ggufmeta.NeedMoreData as more:
            if more.needed > MAX_HEADER or len(data) < want or (size is not None and len(data) >= size):
                raise HubError(f"the header of {name} did not arrive whole") from None
            want = max(more.needed, len(data) + 1)


def _etag(headers) -> str | None:
    value = headers.get("x-linked-etag") or headers.get("etag")
    return value.strip().strip('"').removeprefix("W/").strip('"') if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _total_size(headers) -> int | None:
    content_range = headers.get("content-range", "")
    if "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return _int(headers.get("x-linked-size"))


def _cached(repo: str, filename: str | None = None) -> tuple[ggufmeta.GGUFHeader, dict] | None:
    """A cached header of ``filename`` (any file, when None) in ``repo``, at whatever revision."""
    base = paths.cache_dir() / "headers"
    try:
        indexes = sorted(base.glob("*.json"))
    except OSError:
        return None
    for index in indexes:
        try:
            meta = json.loads(index.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or str(meta.get("repo", "")).lower() != repo.lower():
            continue
        if filename is not None and meta.get("file") != filename:
            continue
        cached = _load_cached(index, index.with_suffix(".gguf-header"), f"{repo}/{meta.get('file')}")
        if cached is not None:
            return cached
    return None


def cached_header_for(repo: str) -> ggufmeta.GGUFHeader | None:
    """Any cached header of a file in ``repo`` (no network): enough to judge its other quants."""
    cached = _cached(repo)
    return cached[0] if cached is not None else None
