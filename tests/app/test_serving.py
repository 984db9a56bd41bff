"""app.serving's model manager: models load on demand, at most --max-models stay loaded (the least
recently used unloads first), and each unloads after its keep_alive. Real SmolLM2 loads."""

from __future__ import annotations

import os
import time

import pytest

from localllm.app.serving import ModelManager, ServeOptions
from localllm.models import store

STARTER = "smollm2-135m-instruct:Q4_1"


@pytest.fixture
def three_models(installed_starter, isolated_home):
    """The starter, and the same file installed again as 'second' and 'third'."""
    source = installed_starter.path()
    names = [STARTER]
    for name in ("second", "third"):
        relative = f"{store.model_dir_name(name)}/{source.name}"
        dest = isolated_home / "models" / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, dest)
        store.record(
            store.InstalledModel(name=name, quant="Q4_1", files=[relative], size=installed_starter.size, source="test")
        )
        names.append(f"{name}:Q4_1")
    return names


def loaded(manager: ModelManager) -> list[str]:
    return sorted(r.name for r in manager.running())


def test_the_least_recently_used_model_unloads_first(three_models):
    first, second, third = three_models
    manager = ModelManager(ServeOptions(max_models=2, n_parallel=1, n_ctx_seq=256))
    try:
        manager.load(first)
        manager.load(second)
        assert loaded(manager) == sorted([first, second])
        manager.load(first)  # first is now the more recently used
        manager.load(third)
        assert loaded(manager) == sorted([first, third])
    finally:
        manager.close()
    assert manager.running() == []


def test_one_model_at_a_time_by_default(three_models):
    first, second, _ = three_models
    manager = ModelManager(ServeOptions(n_parallel=1, n_ctx_seq=256))
    try:
        manager.load(first)
        manager.load(second)
        assert loaded(manager) == [second]
    finally:
        manager.close()


def test_an_idle_model_unloads_after_its_keep_alive(three_models):
    first, second, _ = three_models
    manager = ModelManager(ServeOptions(max_models=2, n_parallel=1, n_ctx_seq=256, keep_alive_s=3600))
    try:
        manager.load(first, keep_alive_s=0.5)
        manager.load(second)
        deadline = time.monotonic() + 60
        while first in loaded(manager):
            assert time.monotonic() < deadline, "the idle model was never unloaded"
            time.sleep(0.05)
        assert loaded(manager) == [second]  # the other keeps the server's hour
    finally:
        manager.close()


def test_a_request_for_another_model_waits_for_the_busy_one_then_is_refused_as_busy(three_models):
    from localllm.app.serving import GenerateRequest
    from localllm.errors import ServerBusyError

    first, second, _ = three_models
    manager = ModelManager(ServeOptions(n_parallel=1, n_ctx_seq=256, switch_wait_s=0.5))
    try:
        reply = manager.start(GenerateRequest(model=first, prompt="Once upon a time", max_tokens=200, ignore_eos=True))
        with pytest.raises(ServerBusyError) as caught:
            manager.load(second)  # the one model allowed is busy with a reply
        assert caught.value.retry_after_s > 0
        reply.cancel()  # the reply ends: now the other model may take its place
        assert manager.load(second) == second
        assert loaded(manager) == [second]
    finally:
        manager.close()


def test_unasked_parallelism_is_what_memory_holds_but_at_most_the_default(installed_starter):
    """A server does not know how many clients will come: without --parallel it takes what the
    planner fits, but never a context sized for the whole memory (that took all the RAM)."""
    from localllm.app.serving import DEFAULT_PARALLEL
    from localllm.fit.hardware import profile

    big = ModelManager(ServeOptions(n_ctx_seq=256), hardware=profile("desktop-32gb"))
    try:
        big.load(STARTER)
        assert [r.n_parallel for r in big.running()] == [DEFAULT_PARALLEL]
    finally:
        big.close()
    asked = ModelManager(ServeOptions(n_ctx_seq=256, n_parallel=12), hardware=profile("desktop-32gb"))
    try:
        asked.load(STARTER)
        assert [r.n_parallel for r in asked.running()] == [12]
    finally:
        asked.close()


def test_a_request_resolves_its_model_once_and_a_loaded_model_needs_no_look_up(three_models, monkeypatch):
    """The store is read once per request that loads a model (not again by the load path), and
    not at all for a model already loaded: a request never sees two answers to one name."""
    from localllm.app import loading
    from localllm.app.serving import GenerateRequest

    looked_up: list[str | None] = []
    real = loading.resolve

    def counting(reference, **kwargs):
        looked_up.append(reference)
        return real(reference, **kwargs)

    monkeypatch.setattr(loading, "resolve", counting)
    _, second, _ = three_models
    manager = ModelManager(ServeOptions(n_parallel=1, n_ctx_seq=256))
    try:
        manager.start(GenerateRequest(model=second, prompt="Hello", max_tokens=2)).read()
        assert looked_up == [second]
        manager.start(GenerateRequest(model=second, prompt="Hello", max_tokens=2)).read()
        assert looked_up == [second]
        manager.describe(second)
        assert looked_up == [second]
    finally:
        manager.close()


class _Closing:
    """A loaded model or engine stand-in whose close() blocks until ``release`` is set."""

    def __init__(self, release, closing) -> None:
        self.release, self.closing, self.closed = release, closing, False

    def close(self) -> None:
        self.closing.set()
        assert self.release.wait(30)
        self.closed = True


def test_a_model_unloads_without_holding_the_lock_every_request_needs(three_models):
    import threading

    first, second, _ = three_models
    release, closing = threading.Event(), threading.Event()
    made: dict[str, _Closing] = {}

    def loader(key, resolved):
        made[key] = _Closing(release, closing)
        return made[key], _Closing(release, closing)

    manager = ModelManager(ServeOptions(n_parallel=1, n_ctx_seq=256), loader=loader)
    switch = threading.Thread(target=manager.load, args=(second,))
    try:
        manager.load(first)
        switch.start()  # unloads the first model (one at a time), whose close() blocks
        assert closing.wait(30)
        answered = threading.Event()
        threading.Thread(target=lambda: (manager.health(), manager.counters(), answered.set()), daemon=True).start()
        assert answered.wait(5), "the manager's lock is held while a model is freed"
        assert not made[first].closed
    finally:
        release.set()
        switch.join(30)
        manager.close()
    assert made[first].closed and made[second].closed
