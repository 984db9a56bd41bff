"""Operations: ``GET /health`` for load balancers and ``GET /metrics`` for Prometheus.

``/health`` answers as llama-server does: 200 ``{"status": "ok"}`` when requests can be served,
503 while the first model loads (``"loading"``), 500 when the server is stopping or the last load
failed and nothing is loaded (``"error"``, with the reason).

``/metrics`` is Prometheus' text format (prometheus-client, one registry per server): requests by
route and status, prompt and generated tokens, generation time (tok/s = generated / seconds), the
last reply's tok/s, a time-to-first-token histogram, and, read when scraped, queue depth, busy and
total sequence slots per loaded model and model loads, unloads and failed loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localllm.app.serving import ModelManager

from .middleware import RequestLog

# Seconds from a request's arrival to its first generated token (model load and queueing included).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_OTHER_ROUTE = "other"  # unknown paths share one label: a scanner cannot grow the label set


class _Engines(Collector):
    """What the manager knows when scraped: per loaded model its slots and queue; loads and unloads."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        running = self.manager.running()
        counters = self.manager.counters()
        queue = GaugeMetricFamily("localllm_queue_depth", "Requests waiting for a sequence slot", labels=["model"])
        busy = GaugeMetricFamily("localllm_slots_busy", "Sequence slots decoding now", labels=["model"])
        total = GaugeMetricFamily("localllm_slots_total", "Sequence slots of each loaded model", labels=["model"])
        for model in running:
            queue.add_metric([model.name], model.queued)
            busy.add_metric([model.name], model.active)
            total.add_metric([model.name], model.n_parallel)
        yield queue
        yield busy
        yield total
        yield GaugeMetricFamily("localllm_models_loaded", "Models loaded now", value=len(running))
        yield CounterMetricFamily("localllm_model_loads", "Models loaded since start", value=counters.loads)
        yield CounterMetricFamily("localllm_model_unloads", "Models unloaded since start", value=counters.unloads)
        yield CounterMetricFamily(
            "localllm_model_load_failures", "Model loads that failed since start", value=counters.load_failures
        )


class Metrics:
    """The server's Prometheus registry; :meth:`observe` is called once per finished request."""

    def __init__(self, manager: ModelManager, routes: Iterable[str]) -> None:
        self.routes = frozenset(routes)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "localllm_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.prompt_tokens = Counter("localllm_prompt_tokens", "Prompt tokens read", ["model"], registry=r)
        self.generated_tokens = Counter("localllm_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.generation_seconds = Counter(
            "localllm_generation_seconds", "Seconds from first to last generated token", ["model"], registry=r
        )
        self.tokens_per_second = Gauge(
            "localllm_tokens_per_second", "Generation speed of the last finished reply", ["model"], registry=r
        )
        self.ttft = Histogram(
            "localllm_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        r.register(_Engines(manager))

    def observe(self, method: str, path: str, status: int, log: RequestLog, started: float) -> None:
        route = path if path in self.routes else _OTHER_ROUTE
        self.requests.labels(route, method, str(status or "disconnected")).inc()
        if log.model is None or log.prompt_tokens is None:
            return
        self.prompt_tokens.labels(log.model).inc(log.prompt_tokens)
        if log.completion_tokens:
            self.generated_tokens.labels(log.model).inc(log.completion_tokens)
        if log.first_token_at is not None:
            self.ttft.labels(log.model).observe(max(0.0, log.first_token_at - started))
        if log.generation_s and log.completion_tokens and log.completion_tokens > 1:
            self.generation_seconds.labels(log.model).inc(log.generation_s)
            self.tokens_per_second.labels(log.model).set((log.completion_tokens - 1) / log.generation_s)

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def health(request: Request) -> Response:
    state = request.app.state.manager.health()
    if state.status == "ok":
        return JSONResponse({"status": "ok"})
    status = 503 if state.status == "loading" else 500
    kind = "unavailable_error" if status == 503 else "server_error"
    body = {"status": state.status, "error": {"code": status, "message": state.detail, "type": kind}}
    return JSONResponse(body, status_code=status)


async def metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    text = await run_in_threadpool(metrics.text)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
