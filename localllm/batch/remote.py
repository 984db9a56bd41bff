"""A batch answered by OpenAI-compatible servers: the lines of one job spread over endpoints.

The job is the local batch's (:class:`localllm.batch.jobs.Job`): the same input lines, error
records, output writer and resume rules; only who answers a line differs. Each line is one
``POST {base}/chat/completions`` (``base`` is the URL given, with ``/v1`` added unless it ends in
it), with the line's messages, its sampling options, ``stop``, and its schema as
``response_format: {"type": "json_schema", ...}``.

Scheduling, per endpoint:
- At most ``limit`` requests in flight: ``parallel`` (the endpoints file's, else ``--parallel``),
  else :data:`DEFAULT_PARALLEL`, rising by one after ``2 x limit`` answers in a row up to
  :data:`MAX_LEARNED_PARALLEL` when nobody said. A 429 or 503 halves it (at least 1), puts the line
  back at the front of the queue and waits the ``Retry-After`` it gave (else a backoff).
- A connection error, a timeout or another 5xx puts the line back (another endpoint may take it)
  and waits an exponential backoff with jitter; :data:`MAX_FAILURES` of them in a row (counted once
  per wave of requests) and the endpoint is down for the rest of the run, its lines going to the
  others. 401, 403 and 404 (a key or a model name it does not take) put it down at once.
- Any other 4xx is the line's own error record (``"error"`` says which endpoint answered what);
  it is not retried. A line that gets :data:`MAX_LINE_ATTEMPTS` 5xx answers becomes an error record
  too, so one line a server cannot answer does not take every server down.
When every endpoint is down, :class:`EndpointsDownError`: what was answered is in the output, and
running the same command again goes on from there.

A line is sent to one endpoint at a time, and :meth:`Job.answer` writes an id once, so a line in
flight on a server that dies is answered once, by another.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from localllm.errors import EndpointsDownError, UsageError

from .jobs import BatchDefaults, BatchProgress, EndpointProgress, Job, LineRequest, ResultWriter, StreamWriter

DEFAULT_PARALLEL = 4  # requests in flight per endpoint when neither the file nor --parallel says
MAX_LEARNED_PARALLEL = 32  # how far an endpoint's limit rises when nobody gave one
MAX_FAILURES = 4  # connection errors / 5xx in a row after which an endpoint is down
MAX_LINE_ATTEMPTS = 3  # 5xx answers one line may get before it becomes an error record (< MAX_FAILURES)
BACKOFF_S = 0.25  # the first wait after an error; doubled each time, with jitter
MAX_BACKOFF_S = 30.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # a reply of many tokens from a loaded server can take minutes


# --------------------------------------------------------------------------------------------
# Endpoints as the user gives them


@dataclass(frozen=True)
class EndpointSpec:
    """One server: its URL, and what the endpoints file says about it."""

    url: str
    model: str | None = None  # the model name to send (default: the line's, --model, or its first)
    parallel: int | None = None  # requests in flight (default: --parallel, else learned)
    key_env: str | None = None  # the environment variable holding its key
    api_key: str | None = field(default=None, repr=False)  # the key itself, once read

    @property
    def base(self) -> str:
        """Where the OpenAI API is: the URL, with ``/v1`` added unless it ends with it."""
        url = self.url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


_KEYS = ("model", "parallel", "key_env")


def check_url(url: str, where: str = "--endpoint") -> str:
    """``url`` as given, or UsageError when it is not an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where}: {url!r} is not an http:// or https:// URL", hint="e.g. http://10.0.0.2:8080")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise UsageError(f"{where}: {url!r} has a port that is not a number") from None
    return url


def parse_endpoints(text: str, source: str = "the endpoints file") -> list[EndpointSpec]:
    """The endpoints of a file: one ``URL [model=NAME] [parallel=N] [key_env=NAME]`` a line;
    blank lines and ``#`` comments (whole lines, or after a space) are ignored."""
    specs = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not line:
            continue
        where = f"{source} line {number}"
        url, *pairs = line.split()
        check_url(url, where)
        given: dict[str, str] = {}
        for pair in pairs:
            name, eq, value = pair.partition("=")
            if not eq or name not in _KEYS or not value:
                raise UsageError(f"{where}: {pair!r} is not one of model=NAME, parallel=N, key_env=NAME")
            given[name] = value
        parallel = None
        if "parallel" in given:
            if not given["parallel"].isdigit() or not 1 <= int(given["parallel"]) <= 1024:
                raise UsageError(f"{where}: parallel= must be a whole number from 1 to 1024")
            parallel = int(given["parallel"])
        specs.append(EndpointSpec(url, given.get("model"), parallel, given.get("key_env")))
    return specs


def check_distinct(specs: Sequence[EndpointSpec]) -> None:
    if not specs:
        raise UsageError("no endpoints given", hint="pass --endpoint URL, or --endpoints FILE with one URL a line")
    seen: set[str] = set()
    for spec in specs:
        if spec.base in seen:
            raise UsageError(f"endpoint {spec.url} is given twice", hint="give each server once (parallel=N for more)")
        seen.add(spec.base)


def _labels(specs: Sequence[EndpointSpec]) -> list[str]:
    """host:port for each endpoint, or its whole URL when two share a host and port."""
    short = [urlsplit(s.url).netloc for s in specs]
    return [name if short.count(name) == 1 else spec.url for name, spec in zip(short, specs)]


# --------------------------------------------------------------------------------------------
# One endpoint while the job runs


class _Endpoint:
    def __init__(self, spec: EndpointSpec, label: str, parallel: int | None, stats: EndpointProgress) -> None:
        self.spec, self.label, self.stats = spec, label, stats
        given = spec.parallel or parallel
        self.limit = given or DEFAULT_PARALLEL
        self.ceiling = given or MAX_LEARNED_PARALLEL
        self.in_flight = 0
        self.failures = 0  # errors in a row (one per wave)
        self.throttles = 0  # 429/503 answers in a row (one per wave)
        self.streak = 0  # answers in a row at the present limit
        self.last_trouble = 0.0  # when the last counted error or 429/503 came
        self.not_before = 0.0  # waiting until then (monotonic)
        self.down: str | None = None  # why it is down
        self.model: str | None = spec.model
        self.model_lock = asyncio.Lock()
        self.headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}

    def ready(self, now: float) -> bool:
        return self.down is None and now >= self.not_before and self.in_flight < self.limit

    def sync(self) -> None:
        s = self.stats
        s.limit, s.in_flight = self.limit, self.in_flight
        s.state = "down" if self.down else "waiting" if time.monotonic() < self.not_before else "up"


def _backoff(n: int) -> float:
    """The wait after the n-th trouble in a row: exponential, capped, with jitter (0.5x to 1.5x)."""
    return min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, n - 1)) * random.uniform(0.5, 1.5)


def _retry_after(headers: Any) -> float | None:
    try:
        return min(60.0, max(0.0, float(headers.get("retry-after", ""))))
    except ValueError:
        return None


def _server_message(response: Any) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except ValueError:
        pass
    text = " ".join(response.text.split())
    return text[:200] or response.reason_phrase


# --------------------------------------------------------------------------------------------
# One request


@dataclass
class _Outcome:
    kind: str  # "ok", "line_error", "throttled", "failed", "endpoint_down"
    message: str = ""
    record: dict | None = None
    retry_after: float | None = None
    counts_for_line: bool = False  # a 5xx answer (not a lost connection): the line may be the cause


def _body(req: LineRequest, model: str, defaults: BatchDefaults) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": req.messages,
        "max_tokens": defaults.max_tokens,
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
        "seed": defaults.seed,
        **req.sampling,
        "stream": False,
    }
    if req.stop:
        body["stop"] = list(req.stop)
    if req.ignore_eos:
        body["ignore_eos"] = True
    if req.schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "line", "schema": req.schema, "strict": True},
        }
    return body


async def _first_model(client: Any, ep: _Endpoint) -> str:
    """The first model the endpoint lists at ``GET /models`` (asked once); ``_Unanswered`` when
    it cannot say."""
    async with ep.model_lock:
        if ep.model is None:
            response = await client.get(ep.spec.base + "/models", headers=ep.headers)
            if response.status_code != 200:
                raise _Unanswered(response.status_code, _server_message(response))
            try:
                data = response.json()["data"]
                ep.model = str(data[0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise _Unanswered(502, "its /v1/models lists no model (give one with --model or model=NAME)") from None
        return ep.model


class _Unanswered(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _classify(status: int, message: str, ep: _Endpoint, line_model: bool, headers: Any = None) -> _Outcome:
    said = f"{ep.label} answered {status}: {message}"
    if status in (429, 503):
        return _Outcome("throttled", said, retry_after=_retry_after(headers or {}))
    if status in (401, 403) or (status == 404 and not line_model):
        return _Outcome("endpoint_down", said)
    if status in (408, 409) or status >= 500:
        return _Outcome("failed", said, counts_for_line=status >= 500)
    return _Outcome("line_error", said)


def _answer_record(req: LineRequest, data: Any, ep: _Endpoint, wait_s: float, request_s: float) -> dict:
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    if not isinstance(text, str):
        raise TypeError("content is not a string")
    usage = data.get("usage") or {}
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "id": req.id,
        "text": text,
        "finish_reason": choice.get("finish_reason") or "stop",
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": completion,
        "timing": {
            "wait_s": round(wait_s, 4),
            "request_s": round(request_s, 4),
            "tokens_per_s": round(completion / request_s, 2) if request_s > 0 else 0.0,
        },
        "endpoint": ep.label,
    }


async def _ask(client: Any, ep: _Endpoint, req: LineRequest, defaults: BatchDefaults, model: str | None, queued: float):
    import httpx

    sent = time.perf_counter()
    try:
        name = req.model if req.model and ep.spec.model is None else model
        if name is None:
            name = await _first_model(client, ep)
        response = await client.post(
            ep.spec.base + "/chat/completions", json=_body(req, name, defaults), headers=ep.headers
        )
    except _Unanswered as exc:
        return _classify(exc.status, exc.message, ep, False)
    except httpx.TransportError as exc:  # refused, reset, timed out, DNS, TLS
        return _Outcome("failed", f"{ep.label}: {type(exc).__name__}: {exc}".rstrip(": "))
    if response.status_code != 200:
        return _classify(response.status_code, _server_message(response), ep, req.model is not None, response.headers)
    try:
        record = _answer_record(req, response.json(), ep, sent - queued, time.perf_counter() - sent)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return _Outcome("failed", f"{ep.label} answered 200 with no chat completion", counts_for_line=True)
    return _Outcome("ok", record=record)


# --------------------------------------------------------------------------------------------
# The job


@dataclass
class _Line:
    req: LineRequest
    queued: float = field(default_factory=time.perf_counter)
    server_errors: int = 0


class _Lines:
    """The lines to send: those put back (first, in the order they came back), then the job's."""

    def __init__(self, source: Iterator[LineRequest]) -> None:
        self.source = source
        self.back: deque[_Line] = deque()

    def take(self) -> _Line | None:
        if self.back:
            return self.back.popleft()
        req = next(self.source, None)
        return _Line(req) if req is not None else None

    def put_back(self, line: _Line) -> None:
        self.back.appendleft(line)

    def any_left(self) -> bool:
        line = self.take()
        if line is None:
            return False
        self.put_back(line)
        return True


class _Run:
    def __init__(self, job: Job, endpoints: list[_Endpoint], defaults: BatchDefaults, model: str | None, notice):
        self.job, self.endpoints, self.defaults, self.model = job, endpoints, defaults, model
        self.notice = notice or (lambda text: None)
        self.lines = _Lines(self._answerable(job.requests()))

    def _answerable(self, requests: Iterator[LineRequest]) -> Iterator[LineRequest]:
        """The lines a server can answer: one naming a document collection (``docs``) gets its error
        record (the collection is on this machine; another server would answer without it)."""
        for req in requests:
            if req.docs is not None:
                self.job.reject(req.line, req.id, '"docs" is answered by a local batch only (not over --endpoint)')
                continue
            yield req

    def _say(self, text: str) -> None:
        self.notice(text)

    def _pick(self, now: float) -> _Endpoint | None:
        """The ready endpoint with the most room for one more line, relative to its limit."""
        ready = [ep for ep in self.endpoints if ep.ready(now)]
        return min(ready, key=lambda ep: (ep.in_flight / ep.limit, ep.in_flight), default=None)

    def _trouble(self, ep: _Endpoint, sent: float, outcome: _Outcome) -> None:
        """Count a 429/503 or an error once per wave (requests sent before the last one counted
        were already in flight when it came), lower the limit, back off, or put the endpoint down."""
        now = time.monotonic()
        if outcome.kind == "endpoint_down":
            self._down(ep, outcome.message)
            return
        if sent < ep.last_trouble:
            return
        ep.last_trouble = now
        ep.streak = 0
        if outcome.kind == "throttled":
            ep.throttles += 1
            lowered = max(1, min(ep.limit, ep.in_flight + 1) // 2)
            if lowered < ep.limit:
                ep.limit = lowered
                self._say(f"{outcome.message}; sending it {lowered} at a time")
            wait = outcome.retry_after if outcome.retry_after is not None else _backoff(ep.throttles)
            ep.not_before = now + wait
            return
        ep.failures += 1
        if ep.failures >= MAX_FAILURES:
            self._down(ep, outcome.message)
        else:
            ep.not_before = now + _backoff(ep.failures)

    def _down(self, ep: _Endpoint, why: str) -> None:
        if ep.down is None:
            ep.down = why
            others = [e for e in self.endpoints if e.down is None]
            reason = why.removeprefix(ep.label).lstrip(": ")
            self._say(f"{ep.label} is down ({reason})" + ("; its lines go to the others" if others else ""))

    def _success(self, ep: _Endpoint) -> None:
        ep.failures = ep.throttles = 0
        ep.streak += 1
        if ep.streak >= 2 * ep.limit and ep.limit < ep.ceiling:
            ep.limit += 1
            ep.streak = 0

    def _handle(self, ep: _Endpoint, line: _Line, sent: float, outcome: _Outcome) -> None:
        ep.in_flight -= 1
        if outcome.kind == "ok":
            assert outcome.record is not None
            self._success(ep)
            if self.job.answer(outcome.record):
                ep.stats.done += 1
                ep.stats.completion_tokens += outcome.record["completion_tokens"]
            return
        if outcome.kind == "line_error":
            self._success(ep)  # the server is fine; the line is not
            self.job.reject(line.req.line, line.req.id, outcome.message)
            return
        if outcome.counts_for_line:
            line.server_errors += 1
            if line.server_errors >= MAX_LINE_ATTEMPTS:
                self.job.reject(
                    line.req.line, line.req.id, f"{outcome.message} ({line.server_errors} times; not retried)"
                )
                self._trouble(ep, sent, outcome)
                return
        self.lines.put_back(line)
        self._trouble(ep, sent, outcome)

    def _sync(self) -> None:
        wall = time.perf_counter() - self.job.state.started
        for ep in self.endpoints:
            ep.sync()
            ep.stats.wall_s = wall

    async def run(self, client: Any, cancel: threading.Event | None) -> None:
        tasks: dict[asyncio.Task, tuple[_Endpoint, _Line, float]] = {}
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return
                now = time.monotonic()
                while (ep := self._pick(now)) is not None and (line := self.lines.take()) is not None:
                    ep.in_flight += 1
                    task = asyncio.ensure_future(_ask(client, ep, line.req, self.defaults, self.model, line.queued))
                    tasks[task] = (ep, line, now)
                self._sync()
                self.job.report()
                if not tasks:
                    if not self.lines.any_left():
                        return
                    if all(ep.down for ep in self.endpoints):
                        raise EndpointsDownError(
                            f"every endpoint is down ({'; '.join(f'{ep.down}' for ep in self.endpoints)})",
                            hint="the results written so far are kept; run the same command when a server is back",
                        )
                waits = [ep.not_before - now for ep in self.endpoints if ep.down is None and ep.not_before > now]
                timeout = min(waits, default=None)
                if cancel is not None:
                    timeout = min(timeout or 0.2, 0.2)
                if not tasks:
                    await asyncio.sleep(timeout if timeout is not None else 0.05)
                    continue
                done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ep, line, sent = tasks.pop(task)
                    self._handle(ep, line, sent, task.result())
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._sync()


def run_on_endpoints(
    lines: list[tuple[int, str]],
    writer: ResultWriter | StreamWriter,
    endpoints: Sequence[EndpointSpec],
    *,
    n_parallel: int | None = None,
    model: str | None = None,
    defaults: BatchDefaults | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
    notice: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> BatchProgress:
    """Run every line not already in the output on ``endpoints``; returns the counts (with one
    :class:`EndpointProgress` per endpoint). ``model`` is the name sent for lines without their own
    to endpoints without their own (None: each endpoint's first listed model)."""
    import httpx

    check_distinct(endpoints)
    job = Job(lines, writer, progress)
    eps = []
    for spec, label in zip(endpoints, _labels(endpoints)):
        stats = EndpointProgress(label=label, limit=0)
        eps.append(_Endpoint(spec, label, n_parallel, stats))
        job.state.endpoints.append(stats)
    for ep in eps:
        ep.sync()
    run = _Run(job, eps, defaults or BatchDefaults(), model, notice)

    async def main() -> None:
        # No connection limit of the pool's own: each endpoint's limit is the limit.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=True) as client:
            await run.run(client, cancel)

    job.report()
    asyncio.run(main())
    job.report()
    return job.state
