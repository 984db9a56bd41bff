"""The continuous-batching engine behind ``localllm serve`` (issue 14).

A :class:`BatchEngine` owns a :class:`~localllm.runtime.batching.BatchSession` and one thread that
drives its steps. Any thread may :meth:`~BatchEngine.submit` a request; it waits in a bounded
queue for a free sequence, and its text comes back through a :class:`SequenceStream`, read with a
plain ``for`` loop or, from asyncio, with ``async for`` (the engine wakes the event loop with
``call_soon_threadsafe``; nothing blocks it).

Every stream ends: with one :class:`~localllm.runtime.batching.BatchResult` (finish_reason "stop",
"length" or "cancelled"), or by raising :class:`~localllm.errors.GenerationError` when llama.cpp
fails or the engine thread stops on an error.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

from localllm.errors import EngineClosedError, GenerationError, LocalLLMError, QueueFullError

from .batching import BatchRequest, BatchResult, BatchSession
from .llama import LlamaSampler
from .model import Model


class _Marker(enum.Enum):
    EMPTY = "empty"  # nothing to read yet
    DONE = "done"  # the stream has ended and everything in it was read


_EMPTY: Final = _Marker.EMPTY
_DONE: Final = _Marker.DONE


class SequenceStream:
    """The text of one submitted request, piece by piece, then its :class:`BatchResult` (last).

    Pieces never split a UTF-8 character and never hold the start of a stop string, so no stop
    string reaches the reader; joined, they equal the result's text. Iterating again goes on
    where the last iteration stopped. A reader that gives up early calls :meth:`cancel` (a client
    that went away frees its slot); the sequence otherwise runs to its end.
    """

    def __init__(self, engine: BatchEngine, request: BatchRequest, sampler: LlamaSampler) -> None:
        self.request = request
        self.key = request.key
        self.prompt_tokens = len(request.tokens)
        self.result: BatchResult | None = None  # set once the sequence ends
        self.queued_at = time.perf_counter()
        self._engine = engine
        self._sampler: LlamaSampler | None = sampler  # handed to the session at admission
        self._slot: int | None = None  # the session's slot while it runs
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: collections.deque[str | BatchResult] = collections.deque()
        self._error: BaseException | None = None
        self._ended = False
        self._cancelling = False
        self._wakers: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        """Whether the sequence has ended (its result or error is in the stream)."""
        return self._ended

    def cancel(self) -> None:
        """Stop the sequence (from any thread); its cells are freed before the next decode step
        and the stream ends with finish_reason "cancelled". Nothing happens once it has ended."""
        with self._lock:
            if self._ended or self._cancelling:
                return
            self._cancelling = True
        self._engine._request_cancel(self)

    # -- reading --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[str | BatchResult]:
        return self._blocking()

    def __aiter__(self) -> AsyncIterator[str | BatchResult]:
        return self._async()

    def _blocking(self) -> Iterator[str | BatchResult]:
        while True:
            item = self._next(block=True)
            if item is _DONE or item is _EMPTY:  # a blocking read is never EMPTY
                return
            yield item
            if isinstance(item, BatchResult):
                return

    async def _async(self) -> AsyncIterator[str | BatchResult]:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                return

        with self._lock:
            self._wakers.append(wake)
        try:
            while True:
                item = self._next(block=False)
                if item is _EMPTY:
                    await arrived.wait()
                    arrived.clear()
                    continue
                if item is _DONE:
                    return
                yield item
                if isinstance(item, BatchResult):
                    return
        finally:
            with self._lock:
                self._wakers.remove(wake)

    def _next(self, block: bool) -> str | BatchResult | _Marker:
        with self._lock:
            while not self._items:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return _DONE
                if not block:
                    return _EMPTY
                self._ready.wait()
            return self._items.popleft()

    # -- the engine's side ----------------------------------------------------------------------

    def _put(self, piece: str) -> None:
        with self._lock:
            self._items.append(piece)
            self._wake()

    def _finish(self, result: BatchResult) -> None:
        with self._lock:
            self.result = result
            self._items.append(result)
            self._ended = True
            self._wake()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        self._ready.notify_all()
        for wake in self._wakers:
            wake()


class BatchEngine:
    """Serves requests from any thread through one context and one decoding thread.

    Up to ``n_parallel`` sequences decode together (continuous batching: a sequence joins and
    leaves between two steps); up to ``queue_size`` more wait for a slot, in the order submitted;
    beyond that :meth:`submit` raises :class:`QueueFullError`. The thread sleeps while there is
    nothing to do. :meth:`close` stops it and frees the context.
    """

    def __init__(
        self,
        model: Model,
        n_parallel: int,
        n_ctx_seq: int | None = None,
        *,
        queue_size: int = 64,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        prompt_cache: bool = True,
        cache_ram: int = 0,
        draft: str | None = None,
    ) -> None:
        if queue_size < 0:
            raise ValueError("queue_size must not be negative")
        self.model = model
        self._session = BatchSession(
            model,
            n_parallel,
            n_ctx_seq,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_threads=n_threads,
            prompt_cache=prompt_cache,
            cache_ram=cache_ram,
            draft=draft,
        )
        self.n_parallel = n_parallel
        self.n_ctx_seq = self._session.n_ctx_seq
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[SequenceStream] = collections.deque()
        self._running: dict[int, SequenceStream] = {}  # slot -> stream
        self._cancels: list[SequenceStream] = []
        self._closing = False
        self._deadline = 0.0  # time.monotonic() after which close() cancels what is left
        self._stopped: BaseException | None = None  # why the thread stopped on its own
        self._freed = False
        self._idle_since: float | None = time.monotonic()
        self._sequence_s = 1.0  # a moving average of how long a sequence runs, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="localllm-batch-engine", daemon=True)
        self._thread.start()

    def __enter__(self) -> BatchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the public side ------------------------------------------------------------------------

    def submit(self, request: BatchRequest) -> SequenceStream:
        """Queue ``request``; its stream. Never waits for decoding.

        Raises ContextOverflowError (the prompt does not fit one sequence), UsageError (a LoRA
        adapter not loaded with the model), GrammarError
        (llama.cpp rejects the grammar), QueueFullError, or EngineClosedError.
        """
        self._session.check(request.tokens)
        self.model.adapter_set(request.adapters)  # UsageError for an adapter not loaded with the model
        with self._lock:
            self._check_open()
        sampler = self.model.make_sampler(  # GrammarError
            request.sampling, request.grammar, request.grammar_triggers, check_after=request.grammar_check_after
        )
        try:
            with self._lock:
                self._check_open()
                stream = SequenceStream(self, request, sampler)
                self._queue.append(stream)
                self._idle_since = None
                self._wake.notify()
        except BaseException:
            sampler.close()
            raise
        return stream

    def close(self, grace_s: float = 0.0) -> None:
        """Stop taking requests; let running and queued sequences finish for up to ``grace_s``
        seconds, then cancel the rest; stop the thread and free the context. Safe to call again.
        It blocks until then: from an event loop, call it in a thread (``asyncio.to_thread``)."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + max(0.0, grace_s)
            self._wake.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._freed:
                return
            self._freed = True
        self._session.close()

    def active(self) -> int:
        """How many sequences are decoding."""
        return len(self._running)

    def queued(self) -> int:
        """How many requests wait for a free sequence."""
        return len(self._queue)

    def idle_since(self) -> float | None:
        """``time.monotonic()`` when the engine last ran out of work; None while it has some."""
        return self._idle_since

    def _check_open(self) -> None:
        if self._stopped is not None:
            raise EngineClosedError(f"the batch engine stopped after an error: {self._stopped}")
        if self._closing:
            raise EngineClosedError("the batch engine is closed")
        if len(self._running) + len(self._queue) >= self.n_parallel + self.queue_size:
            retry = max(1.0, round(self._sequence_s * (1 + len(self._queue) / self.n_parallel), 1))
            raise QueueFullError(
                f"all {self.n_parallel} sequences are busy and {len(self._queue)} requests wait",
                hint=f"retry in {retry:g} s",
                retry_after_s=retry,
            )

    def _request_cancel(self, stream: SequenceStream) -> None:
        with self._lock:
            self._cancels.append(stream)
            self._wake.notify()

    # -- the thread -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._next_round():
                self._step()
        except BaseException as exc:  # every stream must end, whatever went wrong
            self._fail_everything(exc)

    def _next_round(self) -> bool:
        """Apply cancels, admit queued requests, sleep while idle; False once closed and done."""
        with self._lock:
            while True:
                self._apply_cancels()
                if self._closing and time.monotonic() >= self._deadline:
                    self._cancel_everything()
                self._admit_queued()
                if self._running:
                    return True
                if self._closing:
                    return False
                if self._idle_since is None:
                    self._idle_since = time.monotonic()
                self._wake.wait()

    def _step(self) -> None:
        try:
            events = self._session.step()
        except GenerationError as exc:  # the session has dropped every running sequence
            with self._lock:
                for stream in self._running.values():
                    stream._fail(exc)
                self._running.clear()
            return
        with self._lock:
            for slot, item in events:
                stream = self._running[slot]
                if isinstance(item, str):
                    stream._put(item)
                else:
                    del self._running[slot]
                    self._ended(stream, item)

    def _ended(self, stream: SequenceStream, result: BatchResult) -> None:
        stream._finish(result)
        took = result.prompt_s + result.generation_s
        self._sequence_s = 0.8 * self._sequence_s + 0.2 * took

    def _admit_queued(self) -> None:
        session = self._session
        while self._queue and session.free_slot() is not None:
            stream = self._queue.popleft()
            sampler, stream._sampler = stream._sampler, None
            try:
                slot = session.admit(stream.request, stream=True, sampler=sampler, queued_at=stream.queued_at)
            except LocalLLMError as exc:  # checked at submit; kept so that no stream waits forever
                stream._fail(exc)
                continue
            stream._slot = slot
            self._running[slot] = stream

    def _apply_cancels(self) -> None:
        for stream in self._cancels:
            if stream.done:
                continue
            slot = stream._slot
            if slot is not None and self._running.get(slot) is stream:
                del self._running[slot]
                self._end_cancelled(slot, stream)
            elif stream in self._queue:
                self._queue.remove(stream)
                self._drop_queued(stream)
        self._cancels.clear()

    def _end_cancelled(self, slot: int, stream: SequenceStream) -> None:
        result = self._session.cancel(slot)
        if result is None:  # the session had nothing in a slot this engine runs: end the stream all the same
            stream._fail(GenerationError(f"slot {slot} ran nothing to cancel"))
        else:
            stream._finish(result)

    def _cancel_everything(self) -> None:
        for slot, stream in list(self._running.items()):
            del self._running[slot]
            self._end_cancelled(slot, stream)
        while self._queue:
            self._drop_queued(self._queue.popleft())

    def _drop_queued(self, stream: SequenceStream) -> None:
        if stream._sampler is not None:
            stream._sampler.close()
            stream._sampler = None
        waited = time.perf_counter() - stream.queued_at
        stream._finish(
            BatchResult(
                key=stream.key,
                text="",
                finish_reason="cancelled",
                prompt_tokens=stream.prompt_tokens,
                completion_tokens=0,
                wait_s=waited,
                prompt_s=0.0,
                generation_s=0.0,
            )
        )

    def _fail_everything(self, exc: BaseException) -> None:
        error = exc if isinstance(exc, GenerationError) else GenerationError(f"the batch engine stopped: {exc!r}")
        with self._lock:
            self._stopped = error
            streams = list(self._running.values()) + list(self._queue)
            self._running.clear()
            self._queue.clear()
            for stream in streams:
                if stream._sampler is not None:
                    stream._sampler.close()
                    stream._sampler = None
                stream._fail(error)
            self._idle_since = time.monotonic()
        self._session.drop_all()
