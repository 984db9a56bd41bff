"""The RAM prompt cache's bookkeeping (runtime.promptcache.PromptStore): which entry a prompt gets,
what is dropped when the limit is reached. The cells themselves are tested with the real model in
test_prompt_cache.py."""

from __future__ import annotations

import pytest

from localllm.runtime.promptcache import PromptStore


def test_the_entry_sharing_the_longest_prefix_is_chosen():
    store = PromptStore(1000)
    assert store.put("k", [1, 2, 3, 4], b"a" * 10)
    assert store.put("k", [1, 2, 9, 9, 9], b"b" * 10)
    handle, n = store.best("k", [1, 2, 9, 9, 5])
    assert n == 4 and store.take(handle).data == b"b" * 10
    assert store.best("k", [7, 7]) == (None, 0)
    assert store.best("other key", [1, 2, 3, 4]) == (None, 0)


def test_least_recently_used_entries_go_first_and_the_limit_holds():
    store = PromptStore(25)
    store.put("k", [1], b"x" * 10)
    store.put("k", [2], b"y" * 10)
    store.take(store.best("k", [1])[0])  # [1] is now the most recently used
    store.put("k", [3], b"z" * 10)
    assert store.size == 20 and len(store) == 2
    assert store.best("k", [2]) == (None, 0)
    assert store.best("k", [1])[1] == 1 and store.best("k", [3])[1] == 1


def test_an_entry_larger_than_the_limit_is_not_kept():
    store = PromptStore(5)
    assert not store.put("k", [1, 2], b"x" * 6)
    assert store.size == 0 and len(store) == 0


def test_a_longer_prompt_replaces_the_prefix_it_extends():
    store = PromptStore(100)
    store.put("k", [1, 2], b"x" * 10)
    assert store.put("k", [1, 2, 3], b"y" * 10)
    assert len(store) == 1 and store.size == 10
    assert not store.put("k", [1, 2], b"z" * 10)  # already covered by [1, 2, 3]
    assert store.put("other", [1, 2], b"z" * 10)  # another key never shares


def test_discard_and_a_negative_limit():
    store = PromptStore(100)
    store.put("k", [1], b"x" * 10)
    store.discard(store.best("k", [1])[0])
    assert store.size == 0 and len(store) == 0
    with pytest.raises(ValueError):
        PromptStore(-1)
