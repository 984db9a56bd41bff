"""Tools through the official openai and ollama clients, against the real SmolLM2 (issue 27).

SmolLM2's template (ChatML) renders no tools, so these go through the generic JSON format: the tools
described in a system message, the reply constrained by a grammar. A forced tool_choice must give a
valid call every time: the grammar sees to it."""

from __future__ import annotations

import json

import ollama
import openai
import pytest
from support.serving import MODEL, QUESTION

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def _check_call(call, names=("get_weather", "get_time")):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    if call.function.name == "get_weather":
        assert isinstance(args["city"], str)
    return args


def test_forced_calls_are_valid_every_time_and_results_go_back(serve):
    server = serve()
    api = client(server)
    for seed, choice in enumerate(["required", {"type": "function", "function": {"name": "get_weather"}}]):
        reply = api.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice=choice,
            temperature=0.8,
            seed=seed,
            max_tokens=60,
        )
        choice0 = reply.choices[0]
        assert choice0.finish_reason == "tool_calls", choice0
        assert choice0.message.tool_calls, choice0.message
        for call in choice0.message.tool_calls:
            _check_call(call, ("get_weather",) if isinstance(choice, dict) else ("get_weather", "get_time"))
    # the call and its result sent back: the model answers (the generic format's response)
    call = choice0.message.tool_calls[0]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees."},
    ]
    answer = api.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
    )
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_auto_gives_a_call_or_an_answer_never_markup(serve):
    server = serve()
    api = client(server)
    for messages in (ASK, QUESTION):
        reply = api.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], temperature=0, max_tokens=60
        )
        message = reply.choices[0].message
        if message.tool_calls:
            assert reply.choices[0].finish_reason == "tool_calls"
            _check_call(message.tool_calls[0])
        else:
            assert message.content and '"response"' not in message.content and "tool_calls" not in message.content


def test_streamed_tool_calls_come_as_deltas_with_their_index(serve):
    server = serve()
    api = client(server)
    kwargs = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80)
    whole = api.chat.completions.create(**kwargs)
    chunks = list(api.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = entry["id"] or d.id
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
    assert [c["name"] for c in calls.values()] == [c.function.name for c in whole.choices[0].message.tool_calls]
    assert [json.loads(c["arguments"]) for c in calls.values()] == [
        json.loads(c.function.arguments) for c in whole.choices[0].message.tool_calls
    ]
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_bad_tool_requests_are_400s(serve):
    server = serve()
    api = client(server)
    with pytest.raises(openai.BadRequestError, match="not in 'tools'"):
        api.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    with pytest.raises(openai.BadRequestError, match="tools"):
        api.chat.completions.create(model=MODEL, messages=ASK, tools=[{"type": "function"}])
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        api.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="sometimes")


def test_ollama_tools_give_calls_with_object_arguments(serve):
    server = serve()
    api = ollama.Client(host=server.url, timeout=300)
    show = api.show(MODEL)
    assert "tools" in show.capabilities and "completion" in show.capabilities
    messages = [{"role": "system", "content": "Always call a tool."}, *ASK]
    for stream in (False, True):
        if stream:
            parts = list(
                api.chat(
                    model=MODEL,
                    messages=messages,
                    tools=[WEATHER],
                    stream=True,
                    options={"temperature": 0, "num_predict": 80},
                )
            )
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
            content = "".join(p.message.content or "" for p in parts)
        else:
            reply = api.chat(
                model=MODEL, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 80}
            )
            calls, content = reply.message.tool_calls or [], reply.message.content
        if calls:
            assert calls[0].function.name == "get_weather"
            assert isinstance(calls[0].function.arguments, dict)
        else:
            assert content and '"response"' not in content
    # a tool result sent back with the call it answers
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "Sunny.", "tool_name": "get_weather"},
    ]
    reply = api.chat(model=MODEL, messages=history, options={"temperature": 0, "num_predict": 30})
    assert reply.message.content


def test_a_model_by_id(serve):
    server = serve()
    api = client(server)
    assert api.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("no-such-model")


def test_logprobs_and_top_logprobs(serve):
    import math

    server = serve()
    api = client(server)
    reply = api.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3
    )
    rows = reply.choices[0].logprobs.content
    assert len(rows) == reply.usage.completion_tokens
    assert "".join(r.token for r in rows) == reply.choices[0].message.content
    for r in rows:
        assert r.logprob <= 0 and len(r.top_logprobs) == 3
        # greedy: the token taken is the likeliest
        assert math.isclose(r.logprob, r.top_logprobs[0].logprob, abs_tol=1e-4)
        assert r.top_logprobs[0].logprob >= r.top_logprobs[1].logprob >= r.top_logprobs[2].logprob
    assert api.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2).choices[0].logprobs is None
    done = api.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=4, logprobs=2
    )
    lp = done.choices[0].logprobs
    assert "".join(lp.tokens) == done.choices[0].text and len(lp.top_logprobs[0]) == 2
    assert lp.text_offset[0] == 0
