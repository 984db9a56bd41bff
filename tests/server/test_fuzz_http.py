"""Generated request bodies for every API the server speaks (issue 29): OpenAI chat, completions and
embeddings, Ollama chat and generate, Anthropic messages and OpenAI Responses. Each body mixes the
API's own fields, with values of the right shape and of every wrong one (wrong types, huge numbers,
"NaN" strings, nested junk), with unknown fields. One real server (the real SmolLM2) serves the
whole module. Whatever comes in: never a 5xx, and each 4xx carries that API's error body.

Replies stay short: every body holds its API's token limit (a small number, or a wrong value that
is refused), so a generated body never asks for a long reply.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.models import install_starter
from support.serving import MODEL, start_server

from localllm.app.serving import ServeOptions

EXAMPLES = 60  # per API: the module runs in about a minute on two busy cores

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "", "\x00", "\ud7ff\ue000", "5", "true"])
    | st.text(max_size=12)
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def either(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field's value: mostly one of the right shape, sometimes anything at all."""
    return st.one_of(valid, valid, junk)


# A token limit: small, or refused (none, 0 or -1 would be no limit in some APIs: a long reply).
tokens = st.integers(1, 3) | st.sampled_from([10**20, -5, "2", 2.5, True, [1]])
number = st.floats(-3, 3, allow_nan=False) | st.sampled_from([0, 1, 1e308, -1e308, 2**63, "NaN", "0.5"])
text = st.text(max_size=30)
model = st.sampled_from([MODEL, MODEL, MODEL, "", "nope:Q4_0", "../x.gguf", "smollm2-135m-instruct:latest"])
stops = either(st.lists(st.text(min_size=1, max_size=4), max_size=3) | text)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "bogus"])
content = either(text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2))
messages = either(
    st.lists(
        st.fixed_dictionaries({"role": roles, "content": content}, optional={"name": junk}), min_size=1, max_size=3
    )
)
unknown = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: f"x_{k}"), junk, max_size=2)
sampling = {"temperature": either(number), "top_p": either(number), "seed": either(st.integers(-(2**64), 2**64))}


def body(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    """A JSON object with the ``required`` fields, some ``optional`` ones and unknown ones."""
    return st.builds(lambda a, b: {**b, **a}, st.fixed_dictionaries(required, optional=optional), unknown)


OPENAI_COMMON = {
    "model": model,
    "stream": either(st.booleans()),
    "stop": stops,
    "n": either(st.integers(-1, 20)),
    "logit_bias": either(st.dictionaries(st.integers(-2, 60000).map(str), number, max_size=3)),
    "response_format": either(st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "x"}])),
    "logprobs": junk,
    **sampling,
}
APIS = {
    "/v1/chat/completions": body(
        {"messages": messages, "max_tokens": tokens},
        {**OPENAI_COMMON, "max_completion_tokens": tokens, "tools": junk, "tool_choice": junk},
    ),
    "/v1/completions": body(
        {
            "prompt": either(
                text
                | st.lists(text, max_size=3)
                | st.lists(st.integers(-3, 50000), max_size=4)
                | st.lists(st.lists(st.integers(0, 50000), max_size=3), max_size=2)
            ),
            "max_tokens": tokens,
        },
        {**OPENAI_COMMON, "echo": junk, "suffix": junk},
    ),
    "/v1/embeddings": body(
        {
            "input": either(
                text | st.lists(text, max_size=3) | st.lists(st.lists(st.integers(-3, 60000), max_size=3), max_size=2)
            )
        },
        {
            "model": model,
            "dimensions": either(st.integers(-2, 2000)),
            "encoding_format": either(st.sampled_from(["float", "base64", "int8"])),
        },
    ),
    "/api/chat": body(
        {
            "messages": messages,
            "options": st.fixed_dictionaries({"num_predict": tokens}, optional={"temperature": number, "top_k": junk}),
        },
        {
            "model": model,
            "stream": either(st.booleans()),
            "format": either(st.sampled_from(["json", "", {"type": "object"}])),
            "keep_alive": either(st.sampled_from(["5m", "1h30m", -1, "x"])),
            "tools": junk,
            "think": junk,
        },
    ),
    "/api/generate": body(
        {
            "prompt": either(text),
            "options": st.fixed_dictionaries({"num_predict": tokens}, optional={"seed": junk, "stop": stops}),
        },
        {"model": model, "stream": either(st.booleans()), "system": either(text), "raw": either(st.booleans())},
    ),
    "/v1/messages": body(
        {"messages": messages, "max_tokens": tokens},
        {
            "model": model,
            "system": either(text),
            "stream": either(st.booleans()),
            "stop_sequences": stops,
            "thinking": junk,
            "tools": junk,
            **sampling,
        },
    ),
    "/v1/responses": body(
        {"input": either(text | messages), "max_output_tokens": tokens},
        {
            "model": model,
            "instructions": either(text),
            "stream": either(st.booleans()),
            "text": junk,
            "tools": junk,
            "reasoning": junk,
            **sampling,
        },
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_path):
    home = tmp_path_factory.mktemp("fuzz") / "home"
    patch = pytest.MonkeyPatch()
    patch.setenv("LOCALLLM_HOME", str(home))
    patch.setenv("HF_HUB_OFFLINE", "1")
    install_starter(home, smollm2_path)
    handle, stop = start_server(ServeOptions(n_ctx_seq=512, n_parallel=4))
    handle.manager.load(MODEL)
    with httpx.Client(base_url=handle.url, timeout=120) as client:
        yield handle, client, home
    stop()
    patch.undo()


@pytest.fixture(autouse=True)
def isolated_home(server, monkeypatch):
    """Every test here reads the module's data directory, the one its server serves."""
    monkeypatch.setenv("LOCALLLM_HOME", str(server[2]))
    return server[2]


def well_formed_error(path: str, error: object) -> bool:
    """Each API's own error body: Ollama's {"error": str}, Anthropic's {"type": "error", "error":
    {"type", "message"}}, OpenAI's {"error": {"message", "type", "param", "code"}}."""
    if not isinstance(error, dict):
        return False
    if path.startswith("/api/"):
        return isinstance(error.get("error"), str) and bool(error["error"])
    if path == "/v1/messages":
        inner = error.get("error")
        return (
            error.get("type") == "error"
            and isinstance(inner, dict)
            and all(isinstance(inner.get(k), str) and inner[k] for k in ("type", "message"))
        )
    inner = error.get("error")
    return (
        isinstance(inner, dict)
        and isinstance(inner.get("message"), str)
        and bool(inner["message"])
        and isinstance(inner.get("type"), str)
        and {"param", "code"} <= inner.keys()
    )


def check(server, path: str, payload: dict) -> None:
    handle, client, _ = server
    raw = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    with client.stream("POST", path, content=raw, headers={"content-type": "application/json"}) as answer:
        data = answer.read()
    assert answer.status_code < 500, (path, payload, data[:500])
    if answer.status_code >= 400:
        assert well_formed_error(path, json.loads(data)), (path, payload, data[:500])
    else:
        assert b"internal server error" not in data, (path, payload, data[:500])
    assert "internal error" not in handle.log.getvalue(), handle.log.getvalue()[-3000:]


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.mark.parametrize("path", list(APIS))
def test_no_body_gets_a_5xx_and_every_4xx_has_the_apis_error_shape(server, path):
    @FUZZ
    @given(APIS[path])
    def one(payload):
        check(server, path, payload)

    one()


@FUZZ
@given(path=st.sampled_from(list(APIS)), payload=junk)
def test_any_json_at_all_gets_a_4xx_or_an_answer(server, path, payload):
    check(server, path, payload)  # an object, or any other JSON value (a 400)
