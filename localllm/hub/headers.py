"""The GGUF header of a file on the Hugging Face Hub (or a mirror), without downloading the file.

A header is a few MB at most (metadata and tensor infos) in front of GBs of tensor data, so the
memory estimate of every quant of a model costs a few HTTP range requests. Headers are cached
under ``cache_dir()/headers/``, keyed by repository, file and ETag (the file's content hash on the
Hub): a cached header younger than :data:`FRESH_S` is used without asking the server again; an
older one is revalidated with a HEAD request. With ``HF_HUB_OFFLINE=1`` no request is made: a
cached header is used whatever its age, and a missing one is a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from localllm import paths
from localllm.errors import ModelNotFoundError, NetworkError
from localllm.gguf import header as ggufmeta

FIRST_RANGE = 2 << 20  # most headers fit in the first 2 MiB; big vocabularies need a second request
MAX_HEADER = 256 << 20
FRESH_S = 7 * 24 * 3600

__all__ = ["cached_header_for", "read_remote_header", "header_url", "offline"]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def header_url(repo: str, filename: str, revision: str = "main", endpoint: str | None = None) -> str:
    from huggingface_hub import hf_hub_url

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    return hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)


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
    repo: str,
    filename: str,
    *,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | bool | None = None,
    refresh: bool = False,
) -> ggufmeta.GGUFHeader:
    """The header of ``filename`` in Hub repository ``repo`` (range requests; cached)."""
    name = f"{repo}/{filename}"
    index, blob = _cache_paths(repo, filename, revision)
    cached = None if refresh else _load_cached(index, blob, name)
    if offline():
        if cached is not None:
            return cached[0]
        raise NetworkError(
            f"cannot read the header of {name}: offline mode (HF_HUB_OFFLINE=1) and it is not cached",
            hint="unset HF_HUB_OFFLINE to fetch it (a few MB), or download the model",
        )
    if cached is not None and time.time() - cached[1].get("fetched", 0) < FRESH_S:
        return cached[0]

    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import get_session
    from huggingface_hub.utils import build_hf_headers

    url = header_url(repo, filename, revision, endpoint)
    headers = build_hf_headers(token=token)
    session = get_session()
    try:
        if cached is not None:
            head = session.head(url, headers=headers, follow_redirects=True, timeout=15)
            etag = _etag(head.headers)
            if head.status_code < 400 and etag and etag == cached[1].get("etag"):
                _write_cache(index, blob, {**cached[1], "fetched": time.time()}, blob.read_bytes())
                return cached[0]
        data, size, etag = b"", None, None
        want = FIRST_RANGE
        while True:
            start = len(data)
            response = session.get(
                url, headers={**headers, "Range": f"bytes={start}-{want - 1}"}, follow_redirects=True, timeout=30
            )
            _check(response, name)
            chunk = response.content
            if response.status_code == 200:  # the server ignored Range: it sent the whole file
                data = chunk
            else:
                data += chunk
            size = size or _total_size(response.headers) or None
            etag = etag or _etag(response.headers)
            try:
                header = ggufmeta.read_header_bytes(data, name=name, file_size=size)
                break
            except ggufmeta.NeedMoreData as more:
                if not chunk or more.needed > MAX_HEADER or response.status_code == 200:
                    raise NetworkError(f"the header of {name} did not arrive whole") from None
                want = max(more.needed, len(data) + 1)
    except httpx2.HTTPError as exc:  # the Hub session's transport (connection refused, timeout)
        raise NetworkError(f"cannot reach {url}: {exc}", hint="check the connection or HF_ENDPOINT") from exc
    _write_cache(index, blob, {"repo": repo, "file": filename, "revision": revision, "etag": etag,
                               "size": size, "fetched": time.time()}, data[: header.data_offset])  # fmt: skip
    return header


def _write_cache(index: Path, blob: Path, meta: dict, data: bytes) -> None:
    paths.ensure_dir(index.parent)
    tmp = blob.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(blob)
    index.write_text(json.dumps(meta))


def _etag(headers) -> str | None:
    value = headers.get("x-linked-etag") or headers.get("etag")
    return value.strip().strip('"').removeprefix("W/").strip('"') if value else None


def _total_size(headers) -> int | None:
    content_range = headers.get("content-range", "")
    if "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    linked = headers.get("x-linked-size")
    if linked and linked.isdigit():
        return int(linked)
    return None


def _check(response, name: str) -> None:
    code = response.status_code
    if code in (200, 206):
        return
    error = response.headers.get("x-error-code", "")
    if code == 404 or error in ("RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        raise ModelNotFoundError(f"{name} does not exist on the Hub", hint="check the repository and file name")
    if code in (401, 403) or error == "GatedRepo":
        raise NetworkError(f"{name} needs a Hugging Face login or access approval ({code})",
                           hint="accept the model's terms on its page, then log in with 'hf auth login'")
    raise NetworkError(f"reading the header of {name} failed: HTTP {code}")


def cached_header_for(repo: str) -> ggufmeta.GGUFHeader | None:
    """Any cached header of a file in ``repo`` (no network): enough to judge its other quants."""
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
        if isinstance(meta, dict) and str(meta.get("repo", "")).lower() == repo.lower():
            cached = _load_cached(index, index.with_suffix(".gguf-header"), f"{repo}/{meta.get('file')}")
            if cached is not None:
                return cached[0]
    return None
