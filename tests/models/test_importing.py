"""Placing an imported file: each import writes through its own temporary file."""

from __future__ import annotations

import hashlib
import threading

import pytest

from localllm.models import importing


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_imports_of_one_file_at_once_do_not_collide(tmp_path, mode):
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF" + bytes(range(256)) * 4096)
    dest = tmp_path / "models" / "m" / "src.gguf"
    # a temp file a crashed import of the released version left behind (its fixed name)
    dest.parent.mkdir(parents=True)
    (dest.parent / ".src.gguf.import").write_bytes(b"stale")
    barrier = threading.Barrier(6)
    results, errors = [], []

    def place():
        barrier.wait()
        try:
            results.append(importing._place(src, dest, mode))
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=place) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert results == [hashlib.sha256(src.read_bytes()).hexdigest()] * 6
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == [".src.gguf.import", "src.gguf"]  # none of ours
