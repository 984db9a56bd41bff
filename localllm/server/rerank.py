"""Reranking: ``POST /v1/rerank`` and its aliases ``/rerank``, ``/v1/reranking``, ``/reranking``
(the paths llama-server answers; Jina's and Cohere's clients post to ``/v1/rerank``).

``query`` and ``documents`` (strings, or ``{"text": ...}`` objects as Cohere v2 and Jina send them)
-> ``results`` sorted by ``relevance_score``, each with the document's ``index`` (and, with
``return_documents``, its text), at most ``top_n`` of them. A reranker GGUF scores each pair with
its classification head (llama.cpp's RANK pooling: ``"method": "rank"``); any other model, by the
cosine similarity of mean-pooled embeddings (``"method": "cosine"``).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import fields, problems
from .common import answers_errors, body, manager
from .middleware import log_of

MAX_DOCUMENTS = 1000


def _documents(data: dict[str, Any]) -> list[str]:
    value = data.get("documents")
    bad = problems.RequestError(
        f'\'documents\' must be a list of 1 to {MAX_DOCUMENTS} strings (or {{"text": "..."}} objects)',
        param="documents",
    )
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_DOCUMENTS:
        raise bad
    texts = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise bad
        texts.append(item)
    return texts


@answers_errors
async def rerank(request: Request) -> Response:
    data = await body(request)
    f = fields.Fields(data)
    model = f.string("model")
    query = f.string("query", required=True)
    documents = _documents(data)
    top_n = f.integer("top_n", 1, MAX_DOCUMENTS) or len(documents)
    with_text = f.boolean("return_documents") or False
    ranking = await run_in_threadpool(manager(request).rerank, model, query or "", documents)
    log = log_of(request.scope)
    log.model, log.prompt_tokens = ranking.model, ranking.n_tokens
    order = sorted(range(len(documents)), key=lambda i: ranking.scores[i], reverse=True)[:top_n]
    results = []
    for i in order:
        row: dict[str, Any] = {"index": i, "relevance_score": ranking.scores[i]}
        if with_text:
            row["document"] = {"text": documents[i]}
        results.append(row)
    usage = {"prompt_tokens": ranking.n_tokens, "total_tokens": ranking.n_tokens}
    return JSONResponse(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "object": "list",
            "model": ranking.model,
            "method": ranking.method,
            "results": results,
            "usage": usage,
            "meta": {"tokens": {"input_tokens": ranking.n_tokens, "output_tokens": 0}},  # Cohere's
        }
    )


def routes() -> list[Route]:
    return [Route(path, rerank, methods=["POST"]) for path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking")]
