"""What ordinary clients send beyond the basics (issue 29): token-id inputs, lists of prompts, ``n``,
``logit_bias``, ``dimensions``, the ``developer`` role, and the inputs that once gave a 500 (an
empty prompt or input, a lone surrogate escape, Ollama images), against the real SmolLM2."""

from __future__ import annotations

import math

import httpx
import openai
from support.serving import MODEL, QUESTION

COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"
PROMPT = "The capital of France is"


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def refused(answer: httpx.Response, param: str) -> str:
    """The OpenAI error of a 400 naming ``param``: its message."""
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and param in error["message"]
    return error["message"]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_empty_prompts_and_inputs_are_a_400_naming_the_field(serve):
    server = serve()
    for prompt in ("", [], [""], [[]], ["a", ""]):
        refused(post(server, COMPLETIONS, {"model": MODEL, "prompt": prompt, "max_tokens": 2}), "prompt")
    for value in ("", [], [""], [[]]):
        refused(post(server, EMBEDDINGS, {"model": MODEL, "input": value}), "input")
    for path, field in (("/api/embed", "input"), ("/api/embeddings", "prompt")):
        answer = post(server, path, {"model": MODEL, field: ""})
        assert answer.status_code == 400 and field in answer.json()["error"]
    # A text of characters the tokenizer drops has no tokens: the client's mistake, not a 500
    # (found by the HTTP fuzz test with "\x16").
    for value in ("\x16", ["ok", "\x16"]):
        answer = post(server, EMBEDDINGS, {"model": MODEL, "input": value})
        assert answer.status_code == 400 and "no tokens" in answer.json()["error"]["message"], answer.text


def test_a_lone_surrogate_escape_is_a_400_on_every_api(serve):
    server = serve()
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}' % MODEL.encode()
    for path in (CHAT, "/api/chat", "/v1/messages"):
        answer = httpx.post(server.url + path, content=raw, headers={"content-type": "application/json"})
        assert answer.status_code == 400
        assert "surrogate" in answer.text
    paired = raw.replace(b"\\ud800", b"\\ud83d\\ude00")  # a pair is a character: it is answered
    assert httpx.post(server.url + CHAT, content=paired, timeout=120).status_code == 200


def test_token_id_prompts_answer_as_their_text_does(serve):
    server = serve()
    manager = server.manager
    manager.load(MODEL)
    model = manager._resident[MODEL].batch.opened.model
    ids = model.tokenize(PROMPT, add_special=True, parse_special=False)
    by_text = post(server, COMPLETIONS, {"model": MODEL, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}).json()
    for prompt in (ids, [ids]):
        answer = post(server, COMPLETIONS, {"model": MODEL, "prompt": prompt, "max_tokens": 6, "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["text"] == by_text["choices"][0]["text"]
        assert answer.json()["usage"]["prompt_tokens"] == len(ids)
    message = refused(post(server, COMPLETIONS, {"model": MODEL, "prompt": [1, 10**7], "max_tokens": 2}), "prompt")
    assert "10000000" in message and "vocabulary" in message
    refused(post(server, COMPLETIONS, {"model": MODEL, "prompt": [1, -3], "max_tokens": 2}), "prompt")
    refused(post(server, COMPLETIONS, {"model": MODEL, "prompt": [1, True], "max_tokens": 2}), "prompt")


def test_a_list_of_prompts_gives_one_choice_per_prompt_in_order(serve):
    server = serve()
    prompts = [PROMPT, "One, two, three,", "The capital of Italy is"]
    alone = [
        post(server, COMPLETIONS, {"model": MODEL, "prompt": p, "max_tokens": 5, "temperature": 0}).json()
        for p in prompts
    ]
    together = client(server).completions.create(model=MODEL, prompt=prompts, max_tokens=5, temperature=0)
    assert [c.index for c in together.choices] == [0, 1, 2]
    assert [c.text for c in together.choices] == [a["choices"][0]["text"] for a in alone]
    assert together.usage.prompt_tokens == sum(a["usage"]["prompt_tokens"] for a in alone)
    assert together.usage.completion_tokens == sum(a["usage"]["completion_tokens"] for a in alone)
    streamed = client(server).completions.create(model=MODEL, prompt=prompts, max_tokens=5, temperature=0, stream=True)
    texts = ["", "", ""]
    finished = set()
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == [c.text for c in together.choices] and finished == {0, 1, 2}


def test_n_gives_n_choices_sampled_independently_and_is_capped(serve):
    server = serve()
    api = client(server)
    sampled = {"n": 6, "max_tokens": 12, "temperature": 1.5, "top_p": 1.0, "seed": 7, "extra_body": {"top_k": 0}}
    reply = api.chat.completions.create(model=MODEL, messages=QUESTION, **sampled)
    assert [c.index for c in reply.choices] == list(range(6))
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) > 1  # one seed per choice: not six copies of one sample
    assert 6 <= reply.usage.completion_tokens <= 6 * 12  # the usage counts every choice
    again = api.chat.completions.create(model=MODEL, messages=QUESTION, **sampled)
    assert [c.message.content for c in again.choices] == texts  # the same seed: the same choices
    greedy = api.completions.create(model=MODEL, prompt=PROMPT, n=2, max_tokens=5, temperature=0)
    assert [c.index for c in greedy.choices] == [0, 1] and greedy.choices[0].text == greedy.choices[1].text
    refused(post(server, CHAT, {"model": MODEL, "messages": QUESTION, "n": 17}), "n")
    refused(post(server, CHAT, {"model": MODEL, "messages": QUESTION, "n": 0}), "n")


def test_logit_bias_is_applied_and_its_ids_checked(serve):
    server = serve()
    manager = server.manager
    manager.load(MODEL)
    model = manager._resident[MODEL].batch.opened.model
    plain = post(server, COMPLETIONS, {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "temperature": 0}).json()
    first = model.tokenize(plain["choices"][0]["text"], add_special=False, parse_special=False)[0]
    forced = model.tokenize(" banana", add_special=False, parse_special=False)[0]
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "temperature": 0}
    banned = post(server, COMPLETIONS, {**body, "logit_bias": {str(first): -100}}).json()["choices"][0]["text"]
    assert model.tokenize(banned, add_special=False, parse_special=False)[0] != first
    pushed = post(server, COMPLETIONS, {**body, "logit_bias": {str(forced): 100}}).json()["choices"][0]["text"]
    assert pushed.startswith(" banana")
    message = refused(post(server, COMPLETIONS, {**body, "logit_bias": {"99999999": 5}}), "logit_bias")
    assert "vocabulary" in message
    refused(post(server, COMPLETIONS, {**body, "logit_bias": {"12": 101}}), "logit_bias")
    refused(post(server, COMPLETIONS, {**body, "logit_bias": {"x": 1}}), "logit_bias")
    refused(post(server, COMPLETIONS, {**body, "logit_bias": [1]}), "logit_bias")


def test_token_id_inputs_and_dimensions_on_embeddings(serve):
    server = serve()
    api = client(server)
    text = api.embeddings.create(model=MODEL, input="hello world").data[0].embedding
    manager = server.manager
    model = manager._resident[MODEL].batch.opened.model
    ids = model.tokenize("hello world", add_special=True, parse_special=False)
    for value in ([ids], ids):
        answer = post(server, EMBEDDINGS, {"model": MODEL, "input": value})
        assert answer.status_code == 200, answer.text
        got = answer.json()["data"][0]["embedding"]
        assert len(got) == len(text) and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, text))
    two = post(server, EMBEDDINGS, {"model": MODEL, "input": [[15339, 1917], [15339]]}).json()["data"]
    assert [row["index"] for row in two] == [0, 1]
    refused(post(server, EMBEDDINGS, {"model": MODEL, "input": [[15339, 10**8]]}), "input")
    short = api.embeddings.create(model=MODEL, input="hello world", dimensions=64).data[0].embedding
    assert len(short) == 64
    assert math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    norm = math.sqrt(sum(x * x for x in text[:64]))
    assert all(math.isclose(a, b / norm, rel_tol=1e-4, abs_tol=1e-6) for a, b in zip(short, text[:64]))
    message = refused(
        post(server, EMBEDDINGS, {"model": MODEL, "input": "x", "dimensions": len(text) + 1}), "dimensions"
    )
    assert str(len(text)) in message
    refused(post(server, EMBEDDINGS, {"model": MODEL, "input": "x", "dimensions": 0}), "dimensions")


def test_the_developer_role_is_the_system_role_on_every_api(serve):
    server = serve()
    system = "Answer every question with the single word BANANA."
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    chat = {"model": MODEL, "max_tokens": 8, "temperature": 0}

    def openai_text(role: str) -> str:
        messages = [{"role": role, "content": system}, *ask]
        return post(server, CHAT, {**chat, "messages": messages}).json()["choices"][0]["message"]["content"]

    assert openai_text("developer") == openai_text("system")

    def ollama_text(role: str) -> str:
        body = {"model": MODEL, "stream": False, "options": {"temperature": 0, "num_predict": 8}}
        answer = post(server, "/api/chat", {**body, "messages": [{"role": role, "content": system}, *ask]})
        return answer.json()["message"]["content"]

    assert ollama_text("developer") == ollama_text("system") == openai_text("system")

    def responses_text(role: str) -> str:
        body = {"model": MODEL, "max_output_tokens": 8, "temperature": 0}
        answer = post(server, "/v1/responses", {**body, "input": [{"role": role, "content": system}, *ask]})
        assert answer.status_code == 200, answer.text
        return answer.json()["output"][-1]["content"][0]["text"]

    assert responses_text("developer") == responses_text("system") == openai_text("system")
    # Anthropic's Messages API has no system or developer message: the system prompt is the
    # top-level `system`, and a message with another role is refused, naming the field.
    anthropic = {"model": MODEL, "max_tokens": 8, "temperature": 0}
    answer = post(server, "/v1/messages", {**anthropic, "messages": [{"role": "developer", "content": system}, *ask]})
    assert answer.status_code == 400
    assert answer.json()["type"] == "error" and "messages[0]" in answer.json()["error"]["message"]
    answer = post(server, "/v1/messages", {**anthropic, "system": system, "messages": ask})
    assert answer.json()["content"][0]["text"] == openai_text("system")


def test_ollama_images_are_a_400_saying_the_model_cannot_see_them(serve):
    server = serve()
    image = "iVBORw0KGgo="
    generate = post(server, "/api/generate", {"model": MODEL, "prompt": "What is this?", "images": [image]})
    assert generate.status_code == 400 and "cannot see images" in generate.json()["error"]
    messages = [{"role": "user", "content": "What is this?", "images": [image]}]
    chat = post(server, "/api/chat", {"model": MODEL, "messages": messages, "stream": False})
    assert chat.status_code == 400
    assert "cannot see images" in chat.json()["error"] and "messages[0].images" in chat.json()["error"]
    fine = {"model": MODEL, "stream": False, "options": {"num_predict": 2}}
    assert post(server, "/api/chat", {**fine, "messages": [{**messages[0], "images": []}]}).status_code == 200


def test_a_stop_string_across_two_tokens_stops_the_served_reply(serve):
    # Greedy, the reply's tokens are "The", " capital", " city", " of", " France", " is", " Paris",
    # ".": "ance is" begins in " France" and ends in " is".
    server = serve()
    api = client(server)
    whole = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, logprobs=True)
    assert [t.token for t in whole.choices[0].logprobs.content][4:6] == [" France", " is"]
    cut = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stop=["ance is"])
    assert cut.choices[0].message.content == "The capital city of Fr"
    assert cut.choices[0].finish_reason == "stop"
    streamed = api.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24, stop=["ance is"], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "The capital city of Fr"
