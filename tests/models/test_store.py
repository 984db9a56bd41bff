"""The manifest: written whole, and every change made under the manifest lock."""

from __future__ import annotations

import json
import threading
import time

from localllm import paths
from localllm.models import store


def _model(name: str) -> store.InstalledModel:
    return store.InstalledModel(name=name, quant="Q4_K_M", files=[f"{name}/{name}.gguf"], installed_at=1.0)


def test_manifest_format_and_no_temp_files(isolated_home):
    store.record(_model("a"))
    store.record(_model("b"))
    raw = json.loads((isolated_home / "manifest.json").read_text("utf-8"))
    assert raw["version"] == 1 and [m["name"] for m in raw["models"]] == ["a", "b"]
    assert sorted(p.name for p in isolated_home.iterdir()) == ["manifest.json", "manifest.lock"]


def test_touch_waits_for_the_manifest_lock(isolated_home):
    """touch is a read-modify-write: without the lock, an entry recorded meanwhile would be lost."""
    store.record(_model("a"))
    done = threading.Event()
    lock = store._manifest_lock()
    lock.acquire()
    try:
        worker = threading.Thread(target=lambda: (store.touch(_model("a")), done.set()))
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # waiting for the lock, not reading the manifest yet
        models = store.load_manifest() + [_model("b")]  # what record() does under the lock
        store.save_manifest(models)
    finally:
        lock.release()
    worker.join(10)
    by_name = {m.name: m for m in store.load_manifest()}
    assert set(by_name) == {"a", "b"}  # b survived touch's rewrite
    assert by_name["a"].last_used is not None
    assert paths.data_dir() == isolated_home
