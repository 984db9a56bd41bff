"""Issue 25, item 4: serve answers from a collection a client names, with the request field
``docs`` (OpenAI's chat/completions through the official client's ``extra_body``, Ollama's
/api/chat) or the model name ``MODEL@docs:NAME`` (any endpoint); the response's ``sources`` lists
the chunks; an unknown collection is a 404 with the reason."""

from __future__ import annotations

import httpx
import openai
import pytest
from support.docs import make_corpus
from support.serving import MODEL, serve  # noqa: F401  (the fixture)

from localllm.app import documents

QUESTION = [{"role": "user", "content": "At what temperature do I bake the sourdough loaf?"}]


@pytest.fixture
def notes(tmp_path, minilm_path, installed_starter):
    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    return "notes"


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_clients_get_an_answer_and_its_sources(serve, notes):
    server = serve()
    api = client(server)
    reply = api.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, extra_body={"docs": notes}
    )
    assert reply.choices[0].message.content.strip()
    sources = reply.to_dict()["sources"]
    assert sources[0]["cite"] == "[kitchen/sourdough.md:7-9]" and "Dutch oven" in sources[0]["text"]
    assert reply.usage.prompt_tokens > 100  # the chunks went into the prompt
    chunks = list(
        api.chat.completions.create(
            model=f"{MODEL}@docs:{notes}", messages=QUESTION, temperature=0, max_tokens=8, stream=True
        )
    )
    assert chunks[0].to_dict()["sources"][0]["file"] == "kitchen/sourdough.md"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    plain = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=4)
    assert "sources" not in plain.to_dict()


def test_ollama_chat_takes_the_docs_field(serve, notes):
    server = serve()
    body = {"model": MODEL, "messages": QUESTION, "docs": notes, "stream": False, "options": {"num_predict": 8}}
    reply = httpx.post(f"{server.url}/api/chat", json=body, timeout=120).json()
    assert reply["done"] and reply["sources"][0]["cite"] == "[kitchen/sourdough.md:7-9]"


def test_an_unknown_collection_is_a_404_with_the_reason(serve, installed_starter):
    server = serve()
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(model=MODEL, messages=QUESTION, extra_body={"docs": "nosuch"})
    assert "no collection named nosuch" in caught.value.message
    bad = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "x", "docs": "nosuch"})
    assert bad.status_code == 400 and "'docs' answers chat messages" in bad.json()["error"]["message"]
    ollama = httpx.post(f"{server.url}/api/chat", json={"model": f"{MODEL}@docs:no/such", "messages": QUESTION})
    assert ollama.status_code == 400 and "is not a collection name" in ollama.json()["error"]


def test_anthropic_messages_take_the_docs_field(serve, notes):
    import anthropic

    server = serve()
    api = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    message = api.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, extra_body={"docs": notes})
    assert message.to_dict()["sources"][0]["cite"] == "[kitchen/sourdough.md:7-9]"
    assert message.content[0].text.strip()
