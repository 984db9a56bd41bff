"""Reranking over HTTP (httpx, as Jina's and Cohere's clients post), against the real llama.cpp: the
cosine path with the real SmolLM2, and llama.cpp's RANK pooling with a GGUF that says it is a
reranker (SmolLM2's weights with ``llama.pooling_type = 4``: the path is real, its scores are not
those of a trained reranker)."""

from __future__ import annotations

import math

import httpx
from support import ggufedit
from support.serving import MODEL

from localllm.app.serving import ServeOptions

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are a good source of potassium.",
    "Paris is the capital and largest city of France.",
    "The Pacific is the largest ocean on Earth.",
    "Football is played by two teams of eleven players.",
]


def post(url: str, path: str = "/v1/rerank", **body) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def test_an_embedding_model_ranks_by_cosine_similarity_the_relevant_document_first(serve):
    server = serve()
    response = post(server.url, model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "cosine" and body["model"] == MODEL
    results = body["results"]
    assert len(results) == 3
    assert results[0]["index"] == 1 and results[0]["document"] == {"text": DOCUMENTS[1]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert body["usage"]["prompt_tokens"] > len(DOCUMENTS) * 5
    # the same scores through the embeddings: the cosine of the unit vectors
    vectors = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": MODEL, "input": [QUERY, DOCUMENTS[1]]}, timeout=120
    ).json()["data"]
    cosine = sum(a * b for a, b in zip(vectors[0]["embedding"], vectors[1]["embedding"]))
    assert math.isclose(results[0]["relevance_score"], cosine, rel_tol=1e-4)


def test_the_aliases_answer_the_same_and_documents_may_be_objects(serve):
    server = serve()
    plain = post(server.url, model=MODEL, query=QUERY, documents=DOCUMENTS).json()
    assert len(plain["results"]) == len(DOCUMENTS)  # no top_n: every document
    assert "document" not in plain["results"][0]
    for path in ("/rerank", "/v1/reranking", "/reranking"):
        other = post(server.url, path, model=MODEL, query=QUERY, documents=[{"text": d} for d in DOCUMENTS]).json()
        assert [r["index"] for r in other["results"]] == [r["index"] for r in plain["results"]]


def test_bad_requests_name_the_field(serve):
    server = serve()
    for body, field in [
        ({"documents": ["a"]}, "query"),
        ({"query": "q"}, "documents"),
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": [1, 2]}, "documents"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ]:
        response = post(server.url, model=MODEL, **body)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field


def test_a_reranker_gguf_is_scored_by_llama_cpps_rank_pooling(serve, smollm2_path, tmp_path):
    parts = ggufedit.split(smollm2_path, keep_data=True)
    reranker = ggufedit.write(tmp_path / "reranker.gguf", parts, {"llama.pooling_type": 4})
    server = serve(options=ServeOptions(model=str(reranker), n_ctx_seq=1024, n_parallel=1))
    first = post(server.url, query=QUERY, documents=DOCUMENTS, top_n=2).json()
    again = post(server.url, query=QUERY, documents=DOCUMENTS).json()
    assert first["method"] == "rank"
    assert len(first["results"]) == 2
    scores = {r["index"]: r["relevance_score"] for r in again["results"]}
    assert len(scores) == len(DOCUMENTS)
    assert [r["index"] for r in first["results"]] == [r["index"] for r in again["results"]][:2]
    assert all(math.isfinite(s) for s in scores.values())
    assert len(set(scores.values())) == len(DOCUMENTS)  # each pair scored on its own
    reversed_ = post(server.url, query=QUERY, documents=DOCUMENTS[::-1]).json()["results"]
    n = len(DOCUMENTS)
    for r in reversed_:  # a document's score does not depend on the others
        assert math.isclose(r["relevance_score"], scores[n - 1 - r["index"]], rel_tol=1e-4, abs_tol=1e-5)
    cosine = serve().url
    by_cosine = post(cosine, model=MODEL, query=QUERY, documents=DOCUMENTS).json()
    assert {r["index"]: r["relevance_score"] for r in by_cosine["results"]} != scores
