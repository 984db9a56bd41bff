"""Anthropic's Messages API, through the official ``anthropic`` client, against the real SmolLM2."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from support.serving import MODEL, QUESTION

from localllm.server import problems, toolbridge
from localllm.server.app import ServerSettings

GREEDY = {"temperature": 0}  # the client no longer has the sampling fields; the API still takes them


def client(server, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def test_create_answers_with_a_text_block_and_usage(serve):
    server = serve()
    message = client(server).messages.create(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [b.type for b in message.content] == ["text"]
    assert "Paris" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 5
    assert 0 < message.usage.output_tokens <= 40


def test_stop_sequences_and_max_tokens_say_why_the_reply_ended(serve):
    server = serve()
    api = client(server)
    whole = api.messages.create(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY).content[0].text
    assert "Paris" in whole
    cut = api.messages.create(
        model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY, stop_sequences=["nowhere", "Paris"]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == "Paris"
    assert cut.content[0].text == whole.split("Paris")[0]
    short = api.messages.create(
        model=MODEL, max_tokens=3, messages=QUESTION, extra_body={"temperature": 0, "top_k": 40, "top_p": 0.9}
    )
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3


def test_system_as_a_string_or_blocks_and_several_turns_reach_the_prompt(serve):
    server = serve()
    api = client(server)
    # longer than the default system prompt SmolLM2's template adds when there is none
    system = (
        "You are a patient geography teacher. You answer questions about countries, their capitals, "
        "their rivers and their mountains in one short sentence, and never add anything else."
    )
    alone = api.messages.count_tokens(model=MODEL, messages=QUESTION).input_tokens
    as_text = api.messages.count_tokens(model=MODEL, messages=QUESTION, system=system).input_tokens
    as_blocks = api.messages.count_tokens(
        model=MODEL,
        messages=QUESTION,
        system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
    ).input_tokens
    assert as_text == as_blocks > alone
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]},
        *QUESTION,
    ]
    longer = api.messages.count_tokens(model=MODEL, messages=turns, system=system).input_tokens
    assert longer > as_text + 8
    reply = api.messages.create(
        model=MODEL, max_tokens=40, messages=turns, system=system, extra_body=GREEDY, metadata={"user_id": "u1"}
    )
    assert "Paris" in reply.content[0].text
    # count_tokens counts what create reads (the prompt cache's share apart)
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) == longer


def test_streamed_text_matches_the_whole_reply(serve):
    server = serve()
    api = client(server)
    whole = api.messages.create(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY)
    with api.messages.stream(model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3  # piece by piece, not in one go
    assert "".join(pieces) == whole.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    # The second read of the same prompt comes from the prompt cache: Anthropic counts it apart.
    assert final.usage.input_tokens + final.usage.cache_read_input_tokens == whole.usage.input_tokens
    assert final.usage.cache_read_input_tokens == whole.usage.input_tokens - 1


def test_the_stream_sends_anthropics_event_sequence(serve):
    server = serve()
    request = {"model": MODEL, "max_tokens": 40, "messages": QUESTION, "temperature": 0, "stream": True}
    headers = {"x-api-key": "unused", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{server.url}/v1/messages", json=request, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
    deltas = names.count("content_block_delta")
    assert deltas > 3
    expected = ["message_start", "content_block_start", "ping", *["content_block_delta"] * deltas]
    assert names == [*expected, "content_block_stop", "message_delta", "message_stop"]
    assert data[0]["message"]["usage"]["input_tokens"] > 5
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert all(d["delta"]["type"] == "text_delta" and d["index"] == 0 for d in data[3:-3])
    assert data[-2]["delta"]["stop_reason"] == "end_turn"
    assert data[-2]["usage"]["output_tokens"] > 0


def test_streamed_stop_sequence(serve):
    server = serve()
    with client(server).messages.stream(
        model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY, stop_sequences=["Paris"]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Paris" not in text
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "Paris"


def test_count_tokens_matches_the_prompt_create_reads(serve):
    server = serve()
    api = client(server)
    counted = api.messages.count_tokens(model=MODEL, messages=QUESTION)
    made = api.messages.create(model=MODEL, max_tokens=2, messages=QUESTION)
    assert counted.input_tokens == made.usage.input_tokens + (made.usage.cache_read_input_tokens or 0) > 5


def test_bad_requests_get_anthropics_error_types(serve):
    server = serve()
    api = client(server)
    with pytest.raises(anthropic.BadRequestError) as bad:
        api.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.value.body["error"]["message"]
    missing = httpx.post(f"{server.url}/v1/messages", json={"model": MODEL, "messages": QUESTION}, timeout=30)
    assert missing.status_code == 400
    assert missing.json()["error"] == {"type": "invalid_request_error", "message": missing.json()["error"]["message"]}
    assert "max_tokens" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="image"):
        api.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}],
        )
    with pytest.raises(anthropic.NotFoundError) as unknown:
        api.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert unknown.value.body["error"]["type"] == "not_found_error"
    broken = httpx.post(f"{server.url}/v1/messages", content=b"{not json", timeout=30)
    assert broken.status_code == 400 and broken.json()["type"] == "error"


def test_the_api_key_is_taken_from_x_api_key(serve):
    server = serve(settings=ServerSettings(api_key="s3cret"))
    reply = client(server, "s3cret").messages.create(model=MODEL, max_tokens=2, messages=QUESTION)
    assert reply.usage.output_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client(server, "wrong").messages.count_tokens(model=MODEL, messages=QUESTION)
    assert refused.value.body["error"]["type"] == "authentication_error"


def test_thinking_off_and_tool_choice_none_answer_in_text(serve):
    server = serve()
    api = client(server)
    off = api.messages.create(
        model=MODEL, max_tokens=40, messages=QUESTION, extra_body=GREEDY, thinking={"type": "disabled"}
    )
    assert "Paris" in off.content[0].text
    tool = {"name": "get_weather", "description": "Weather in a city", "input_schema": {"type": "object"}}
    none = api.messages.create(model=MODEL, max_tokens=4, messages=QUESTION, tools=[tool], tool_choice={"type": "none"})
    assert none.stop_reason == "max_tokens"  # tool_choice none: the tools are not offered
    assert [b.type for b in none.content] == ["text"]
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        api.messages.create(
            model=MODEL, max_tokens=100, messages=QUESTION, thinking={"type": "enabled", "budget_tokens": 200}
        )


# -- conversion, without a model: tool and thinking blocks in, tool-call events out -------------


def test_tool_use_tool_result_and_thinking_blocks_become_internal_messages():
    from localllm.server.anthropic_api import to_messages

    data = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "x"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18 C"}]},
                    {"type": "text", "text": "Thanks."},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True}]},
        ],
    }
    assert to_messages(data) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "reasoning_content": "I should call the tool.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
        {"role": "user", "content": "Thanks."},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: "},
    ]


def test_tool_events_stream_as_thinking_text_and_tool_use_blocks():
    from types import SimpleNamespace

    from localllm.server.anthropic_api import _Stream, to_message

    reply = SimpleNamespace(
        finish_reason="stop", stop_sequence=None, prompt_tokens=9, completion_tokens=7, model=MODEL, cached_tokens=0
    )
    s = _Stream()
    lines = []
    for event in (
        toolbridge.ReasoningDelta("Think."),
        toolbridge.ContentDelta("Calling."),
        toolbridge.ToolCallDelta(0, "call_a", "get_weather", '{"city": '),
        toolbridge.ToolCallDelta(0, None, None, '"Paris"}'),
        toolbridge.ToolCallDelta(1, "call_b", "get_time", "{}"),
    ):
        lines += s.feed(event)
    lines += s.end(reply)
    events = [json.loads(line.split("data: ", 1)[1]) for line in lines]
    assert [(e["type"], e.get("index")) for e in events] == [
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("content_block_start", 3),
        ("content_block_delta", 3),
        ("content_block_stop", 3),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0]["content_block"]["type"] == "thinking" and events[2]["delta"]["type"] == "thinking_delta"
    assert events[7]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}
    assert "".join(e["delta"]["partial_json"] for e in events[8:10]) == '{"city": "Paris"}'
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    call = toolbridge.ToolCall("call_a", "get_weather", '{"city": "Paris"}')
    message = to_message("msg_1", reply, toolbridge.ParsedReply("", "Think.", (call,), ()))
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use"]
    assert message["content"][1]["input"] == {"city": "Paris"} and message["stop_reason"] == "tool_use"


def test_tools_and_tool_choice_convert_or_are_refused():
    from localllm.server.anthropic_api import _tool_choice, _tools

    data = {
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    }
    tools = _tools(data)
    assert tools == (toolbridge.Tool("get_weather", "Weather", {"type": "object"}),)
    assert _tool_choice(data, tools) == (toolbridge.ToolChoice("function", "get_weather"), False)
    assert _tool_choice({"tool_choice": {"type": "any"}}, tools) == (toolbridge.ToolChoice("required"), True)
    with pytest.raises(problems.RequestError, match="tool_choice.name"):
        _tool_choice({"tool_choice": {"type": "tool", "name": "other"}}, tools)
    with pytest.raises(problems.RequestError, match="server tool"):
        _tools({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})


# -- budget_tokens enforced, on a model whose template opens <think> ---------------------------


def test_budget_tokens_caps_the_thinking_block_and_the_answer_still_comes(serve, smollm2_path, tmp_path):
    from support.thinking import thinking_model

    from localllm.app.serving import ServeOptions
    from localllm.runtime import LoadOptions, Model

    path = thinking_model(smollm2_path, tmp_path / "thinking.gguf")
    server = serve(options=ServeOptions(model=str(path), n_ctx_seq=1024, n_parallel=1))
    api = client(server)
    budget = 3
    message = api.messages.create(
        model=str(path),
        max_tokens=60,
        messages=QUESTION,
        extra_body=GREEDY,
        thinking={"type": "enabled", "budget_tokens": budget},
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    thinking, text = message.content[0].thinking, message.content[1].text
    with Model(path, LoadOptions(n_ctx=256)) as model:  # the model's own tokenizer counts the block
        spent = len(model.tokenize(thinking, add_special=False, parse_special=False))
    assert 0 < spent <= budget
    assert text.strip() and "</think>" not in text and "<think>" not in text
    # without the cap the model reasons longer than the budget (so the cap is what cut it)
    free = api.messages.create(
        model=str(path),
        max_tokens=60,
        messages=QUESTION,
        extra_body=GREEDY,
        thinking={"type": "enabled", "budget_tokens": 50},
    )
    assert free.content[0].type == "thinking" and len(free.content[0].thinking) > len(thinking)
    # streamed: the same blocks, in Anthropic's events
    with api.messages.stream(
        model=str(path),
        max_tokens=60,
        messages=QUESTION,
        extra_body=GREEDY,
        thinking={"type": "enabled", "budget_tokens": budget},
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking.strip() == thinking and final.content[1].text.strip() == text.strip()
