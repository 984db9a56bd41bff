"""The batch engine behind `localllm serve` (runtime.BatchEngine), with the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading

import pytest

from localllm import runtime
from localllm.errors import (
    ContextOverflowError,
    EngineClosedError,
    GenerationError,
    GrammarError,
    QueueFullError,
)

TOPICS = [
    "the sea",
    "bread",
    "chess",
    "autumn",
    "the moon",
    "bicycles",
    "coffee",
    "a river",
    "volcanoes",
    "music",
    "snow",
    "trains",
    "bees",
    "a library",
    "tea",
    "mountains",
]
LONG_CTX = 2048  # room for a sequence that cannot end before the test cancels it


@pytest.fixture(scope="module")
def model(smollm2_path):
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1)) as m:
        yield m


def request(model, key, text, max_tokens=16, **sampling):
    tokens = model.tokenize(model.render_chat([{"role": "user", "content": text}]), add_special=False)
    options = runtime.SamplingOptions(**{"temperature": 0, "max_tokens": max_tokens, **sampling})
    return runtime.BatchRequest(key=key, tokens=tokens, sampling=options)


def endless(model, key="endless"):
    """A request that runs until its context is full (thousands of steps): it is still running
    whenever the test looks, and ends only when cancelled."""
    return request(model, key, "Count to ten thousand.", max_tokens=None, ignore_eos=True)


def read(stream):
    """(pieces, result) of a whole stream, checking that the result comes last and once."""
    items = list(stream)
    *pieces, result = items
    assert isinstance(result, runtime.BatchResult)
    assert all(isinstance(p, str) and p for p in pieces)
    return pieces, result


def alone(engine, req):
    """The text ``req`` gets with nothing else running."""
    assert engine.active() == engine.queued() == 0
    pieces, result = read(engine.submit(req))
    assert "".join(pieces) == result.text
    return result.text


def test_sixteen_threads_get_the_text_each_gets_alone(model):
    requests = [request(model, i, f"Write one sentence about {topic}.") for i, topic in enumerate(TOPICS)]
    with runtime.BatchEngine(model, 8, 256, queue_size=8, n_threads=1) as engine:
        expected = {r.key: alone(engine, r) for r in requests}
        got: dict[int, tuple[str, runtime.BatchResult]] = {}
        errors = []
        start = threading.Barrier(len(requests))

        def client(req):
            try:
                start.wait()
                pieces, result = read(engine.submit(req))
                got[req.key] = ("".join(pieces), result)
            except BaseException as exc:  # reported below, on the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(r,)) for r in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for key, text in expected.items():
            joined, result = got[key]
            assert result.key == key and result.finish_reason in ("stop", "length")
            assert joined == result.text == text
            assert result.prompt_tokens == len(requests[key].tokens)
        assert engine.active() == engine.queued() == 0


def test_a_cancelled_stream_frees_its_slot_and_the_others_are_unaffected(model):
    short = [request(model, k, f"Name a {k}.", max_tokens=12) for k in ("fruit", "color")]
    with runtime.BatchEngine(model, 2, LONG_CTX, queue_size=2, n_threads=1) as engine:
        expected = {r.key: alone(engine, r) for r in short}
        reference = alone(engine, request(model, "long", "Count to ten thousand.", max_tokens=16, ignore_eos=True))
        cancelled, kept = engine.submit(endless(model, "a")), engine.submit(endless(model, "long"))
        queued = [engine.submit(r) for r in short]  # both slots are taken: these wait
        next(iter(cancelled))  # it runs
        cancelled.cancel()
        for stream in queued:  # each needs the freed slot: `kept` runs on
            pieces, result = read(stream)
            assert "".join(pieces) == result.text == expected[result.key]
        assert not kept.done
        assert cancelled.result.finish_reason == "cancelled"
        kept.cancel()
        pieces, result = read(kept)
        assert result.finish_reason == "cancelled" and result.text == "".join(pieces)
        assert reference.startswith(result.text) or result.text.startswith(reference)


def test_a_full_queue_refuses_with_a_retry_time(model):
    with runtime.BatchEngine(model, 1, LONG_CTX, queue_size=1, n_threads=1) as engine:
        assert engine.idle_since() is not None
        running, waiting = engine.submit(endless(model, 1)), engine.submit(endless(model, 2))
        with pytest.raises(QueueFullError) as refused:
            engine.submit(request(model, 3, "Say hi."))
        assert refused.value.retry_after_s > 0
        assert engine.active() + engine.queued() == 2
        assert engine.idle_since() is None
        waiting.cancel()
        assert read(waiting)[1].finish_reason == "cancelled"
        third = engine.submit(request(model, 3, "Say hi.", max_tokens=4))  # the queue has room again
        running.cancel()
        assert read(third)[1].finish_reason in ("stop", "length")
        assert read(running)[1].finish_reason == "cancelled"


def test_close_lets_sequences_finish_within_the_grace(model):
    engine = runtime.BatchEngine(model, 2, 256, queue_size=4, n_threads=1)
    streams = [engine.submit(request(model, i, f"Write one sentence about {t}.")) for i, t in enumerate(TOPICS[:4])]
    engine.close(grace_s=600)  # returns as soon as they are done
    for stream in streams:
        pieces, result = read(stream)
        assert result.finish_reason in ("stop", "length") and result.completion_tokens > 0
    with pytest.raises(EngineClosedError):
        engine.submit(request(model, 9, "Say hi."))
    engine.close()  # again: nothing happens


def test_close_cancels_what_is_left_after_the_grace(model):
    engine = runtime.BatchEngine(model, 1, LONG_CTX, queue_size=1, n_threads=1)
    running, waiting = engine.submit(endless(model, 1)), engine.submit(endless(model, 2))
    engine.close(grace_s=0.2)
    assert read(running)[1].finish_reason == "cancelled"
    pieces, result = read(waiting)
    assert (pieces, result.text, result.finish_reason, result.completion_tokens) == ([], "", "cancelled", 0)


def test_async_iteration(model):
    requests = [request(model, i, f"Write one sentence about {t}.") for i, t in enumerate(TOPICS[:3])]
    with runtime.BatchEngine(model, 3, LONG_CTX, n_threads=1) as engine:
        expected = {r.key: alone(engine, r) for r in requests}

        async def collect(stream):
            items = [item async for item in stream]
            return "".join(items[:-1]), items[-1]

        async def main():
            endless_stream = engine.submit(endless(model))
            results = await asyncio.gather(*(collect(engine.submit(r)) for r in requests))
            endless_stream.cancel()
            return results, await collect(endless_stream)

        results, (_, cancelled) = asyncio.run(main())
        for joined, result in results:
            assert joined == result.text == expected[result.key]
        assert cancelled.finish_reason == "cancelled"


def test_a_stop_string_never_reaches_a_piece(model):
    with runtime.BatchEngine(model, 2, 256, n_threads=1) as engine:
        question = "What is the capital city of France? Answer in one sentence."
        full = alone(engine, request(model, 0, question, max_tokens=24))
        assert "Paris" in full
        stop = "aris"  # begins inside a token: the text before it must be held back, then cut
        pieces, result = read(engine.submit(request(model, 0, question, max_tokens=24, stop=("aris",))))
        assert result.finish_reason == "stop"
        assert "".join(pieces) == result.text == full[: full.index(stop)]
        assert not any(stop in p for p in pieces)


def test_non_ascii_text_is_never_split_mid_character(model):
    with runtime.BatchEngine(model, 1, 256, n_threads=1) as engine:
        pieces, result = read(
            engine.submit(request(model, 0, "Écris une phrase en français sur l'été à Montréal.", max_tokens=60))
        )
        assert any(ord(c) > 127 for c in result.text)
        assert not any("\ufffd" in p for p in pieces)


def test_requests_it_cannot_take_are_refused_at_submit(model):
    with runtime.BatchEngine(model, 1, 128, n_threads=1) as engine:
        too_long = request(model, 0, "word " * 400)
        with pytest.raises(ContextOverflowError) as overflow:
            engine.submit(too_long)
        assert f"{len(too_long.tokens)} tokens" in str(overflow.value)
        assert f"holds {engine.n_ctx_seq}" in str(overflow.value)
        bad = runtime.BatchRequest(key=1, tokens=request(model, 1, "Hi").tokens, grammar="root ::= nothing-here")
        with pytest.raises(GrammarError):
            engine.submit(bad)
        assert engine.active() == engine.queued() == 0
        assert read(engine.submit(request(model, 2, "Say hi.", max_tokens=4)))[1].completion_tokens > 0


def test_a_decode_failure_ends_every_running_stream(model, monkeypatch):
    """Fault injection: llama.cpp failing a decode cannot be provoked on demand."""
    with runtime.BatchEngine(model, 2, LONG_CTX, n_threads=1) as engine:
        streams = [engine.submit(endless(model, i)) for i in range(2)]
        next(iter(streams[0]))
        session = engine._session

        def failing_step():
            session.drop_all()
            raise GenerationError("llama_decode failed in a batch of 2 tokens (code -3)")

        monkeypatch.setattr(session, "step", failing_step)
        for stream in streams:
            with pytest.raises(GenerationError, match="llama_decode failed"):
                list(stream)
        monkeypatch.undo()
        assert read(engine.submit(request(model, 3, "Say hi.", max_tokens=4)))[1].completion_tokens > 0


def test_an_error_in_the_engine_thread_ends_every_stream_and_the_engine(model, monkeypatch):
    engine = runtime.BatchEngine(model, 1, LONG_CTX, queue_size=2, n_threads=1)
    try:
        streams = [engine.submit(endless(model, i)) for i in range(3)]
        next(iter(streams[0]))
        monkeypatch.setattr(engine._session, "step", lambda: 1 / 0)
        for stream in streams:
            with pytest.raises(GenerationError, match="ZeroDivisionError"):
                list(stream)
        with pytest.raises(EngineClosedError, match="stopped after an error"):
            engine.submit(request(model, 9, "Say hi."))
    finally:
        engine.close()


# -- embeddings (for /v1/embeddings) -----------------------------------------------------------


def test_embeddings_are_unit_vectors_equal_for_equal_texts(model):
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today.", "The cat sat on the mat."]
    vectors, n_tokens = model.embed(texts)
    assert n_tokens == sum(len(model.tokenize(t, add_special=True, parse_special=False)) for t in texts)
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 100
    for v in vectors:
        assert math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-6)
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]
    assert math.fsum(a * b for a, b in zip(vectors[0], vectors[1])) < 0.999


def test_embedding_while_the_engine_decodes(model):
    """Embeddings have a context of their own: decoding in the engine's thread changes nothing."""
    quiet, _ = model.embed(["A quiet sentence."])
    with runtime.BatchEngine(model, 1, LONG_CTX, n_threads=1) as engine:
        busy = engine.submit(endless(model))
        next(iter(busy))
        during, _ = model.embed(["A quiet sentence."])
        busy.cancel()
        assert read(busy)[1].finish_reason == "cancelled"
    assert during == quiet


def test_a_text_longer_than_the_embedding_context_is_refused(model):
    with pytest.raises(ContextOverflowError, match=r"is \d+ tokens but the embedding context holds \d+"):
        model.embed(["Short.", "word " * 2000])


def test_a_stop_string_that_starts_in_one_token_and_ends_in_the_next_stops_the_reply(model):
    # Greedy, the reply is "The capital city of France is Paris." in the tokens "The", " capital",
    # " city", " of", " France", " is", " Paris", ".": "ance is" begins in " France" and ends in " is",
    # so a search of the newest piece alone would miss it.
    with runtime.BatchEngine(model, 1, 256, n_threads=1) as engine:
        question = "What is the capital city of France? Answer in one sentence."
        full = engine.submit(dataclasses.replace(request(model, 0, question, 24), logprobs=0))
        result = read(full)[1]
        assert [raw for raw, _, _ in result.logprobs][4:6] == [b" France", b" is"]
        pieces, stopped = read(engine.submit(request(model, 0, question, max_tokens=24, stop=("ance is",))))
        assert stopped.finish_reason == "stop" and stopped.stop_sequence == "ance is"
        assert (
            "".join(pieces) == stopped.text == result.text[: result.text.index("ance is")] == "The capital city of Fr"
        )
