"""OpenAI's Responses API, through the official ``openai`` client and LangChain's
``ChatOpenAI(use_responses_api=True)``, against the real SmolLM2."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from support.serving import MODEL, QUESTION

from localllm.server.responses_api import ResponseStore, Stored

ASK = QUESTION[0]["content"]
# longer than the default system prompt SmolLM2's template adds when there is none
TEACHER = (
    "You are a patient geography teacher. You answer questions about countries, their capitals, "
    "their rivers and their mountains in one short sentence, and never add anything else."
)


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_create_answers_a_string_input_with_usage(serve):
    server = serve()
    response = client(server).responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=40)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == MODEL
    assert [item.type for item in response.output] == ["message"]
    assert "Paris" in response.output_text
    assert response.usage.input_tokens > 5
    assert 0 < response.usage.output_tokens <= 40
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_items_and_instructions_reach_the_prompt(serve):
    server = serve()
    api = client(server)
    plain = api.responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=40)
    items = api.responses.create(
        model=MODEL,
        input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]}],
        temperature=0,
        max_output_tokens=40,
    )
    assert items.output_text == plain.output_text
    assert items.usage.input_tokens == plain.usage.input_tokens
    taught = api.responses.create(model=MODEL, input=ASK, instructions=TEACHER, temperature=0, max_output_tokens=40)
    assert taught.instructions == TEACHER
    assert taught.usage.input_tokens > plain.usage.input_tokens
    turns = api.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello! How can I help?"}]},
            {"role": "user", "content": ASK},
        ],
        temperature=0,
        max_output_tokens=40,
    )
    assert turns.usage.input_tokens > plain.usage.input_tokens + 8
    short = api.responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=3)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
    assert short.usage.output_tokens == 3


def test_the_stream_sends_the_responses_event_types(serve):
    server = serve()
    api = client(server)
    whole = api.responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=40)
    events = list(api.responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=40, stream=True))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 3
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-4].text
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text
    assert done.usage.output_tokens == whole.usage.output_tokens
    assert events[0].response.status == "in_progress"
    with api.responses.stream(model=MODEL, input=ASK, temperature=0, max_output_tokens=40) as stream:
        final = stream.get_final_response()
    assert final.output_text == text


def test_previous_response_id_goes_on_from_a_kept_response(serve):
    server = serve()
    api = client(server)
    first = api.responses.create(model=MODEL, input=ASK, temperature=0, max_output_tokens=40)
    assert api.responses.retrieve(first.id).output_text == first.output_text
    second = api.responses.create(
        model=MODEL, input="And of Italy?", previous_response_id=first.id, temperature=0, max_output_tokens=40
    )
    assert second.previous_response_id == first.id
    # the first turn's cells were kept: its prompt is not read again
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    # the whole conversation was read: the first question, its answer, the new question
    spelled_out = api.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And of Italy?"},
        ],
        max_output_tokens=2,
    )
    assert second.usage.input_tokens == spelled_out.usage.input_tokens
    streamed = list(
        api.responses.create(
            model=MODEL, input="And of Spain?", previous_response_id=second.id, max_output_tokens=4, stream=True
        )
    )
    third = streamed[-1].response
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    assert api.responses.retrieve(third.id).id == third.id  # a streamed response is kept too


def test_store_false_keeps_nothing(serve):
    server = serve()
    api = client(server)
    unstored = api.responses.create(model=MODEL, input=ASK, max_output_tokens=2, store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError, match="previous response") as refused:
        api.responses.create(model=MODEL, input=ASK, max_output_tokens=2, previous_response_id=unstored.id)
    assert refused.value.body["param"] == "previous_response_id"
    kept = api.responses.create(model=MODEL, input=ASK, max_output_tokens=2)
    api.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(kept.id)


def test_json_schema_format_gives_json_matching_the_schema(serve):
    server = serve()
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = client(server).responses.create(
        model=MODEL,
        input="Name the capital city of France, as JSON.",
        temperature=0,
        max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}},
    )
    value = json.loads(response.output_text)
    assert set(value) == {"city", "country"}
    assert response.text.format.type == "json_schema"


def test_bad_requests_name_the_field(serve):
    server = serve()
    api = client(server)
    with pytest.raises(openai.BadRequestError, match="input"):
        api.responses.create(
            model=MODEL, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        )
    with pytest.raises(openai.BadRequestError, match="web_search"):
        api.responses.create(model=MODEL, input=ASK, tools=[{"type": "web_search"}])
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        api.responses.create(model=MODEL, input=ASK, max_output_tokens=0)
    with pytest.raises(openai.NotFoundError):
        api.responses.create(model="no-such-model", input=ASK)
    missing = httpx.get(f"{server.url}/v1/responses/resp_nothing", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_langchain_chat_openai_through_the_responses_api(serve):
    from langchain_openai import ChatOpenAI

    server = serve()
    chat = ChatOpenAI(
        model=MODEL,
        base_url=f"{server.url}/v1",
        api_key="unused",
        use_responses_api=True,
        temperature=0,
        max_tokens=40,
        max_retries=0,
    )
    answer = chat.invoke(ASK)
    assert "Paris" in answer.text
    assert answer.usage_metadata["input_tokens"] > 5
    streamed = "".join(chunk.text for chunk in chat.stream(ASK))
    assert streamed == answer.text


def test_the_store_keeps_the_last_n_responses():
    store = ResponseStore(size=2)
    for ident in ("a", "b", "c"):
        store.put(Stored({"id": ident}, []))
    assert store.get("a") is None
    assert store.get("b") is not None  # now the most recently used
    store.put(Stored({"id": "d"}, []))
    assert store.get("c") is None and store.get("b") is not None and store.get("d") is not None


# -- conversion, without a model: function-call items in, function-call events out --------------


def test_function_call_items_become_internal_messages():
    from localllm.server.responses_api import to_messages

    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]},
    ]
    assert to_messages(items) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]


def test_tool_call_events_stream_as_function_call_items():
    from localllm.server import toolbridge
    from localllm.server.responses_api import _Stream, assistant_message

    s = _Stream()
    lines = []
    for event in (
        toolbridge.ContentDelta("Calling."),
        toolbridge.ToolCallDelta(0, "call_a", "get_weather", '{"city": '),
        toolbridge.ToolCallDelta(0, None, None, '"Paris"}'),
    ):
        lines += s.feed(event)
    lines += s.end()
    events = [json.loads(line.split("data: ", 1)[1]) for line in lines]
    assert [e["type"] for e in events] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e["output_index"] for e in events] == [0] * 6 + [1] * 5
    assert events[-2]["arguments"] == '{"city": "Paris"}'
    assert events[-1]["item"]["call_id"] == "call_a" and events[-1]["item"]["status"] == "completed"
    assert [item["type"] for item in s.output] == ["message", "function_call"]
    message = assistant_message(s.parsed())
    assert message["content"] == "Calling."
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_function_tools_and_tool_choice_convert_or_are_refused():
    from localllm.server import problems, toolbridge
    from localllm.server.responses_api import _tool_choice, _tools

    data = {"tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}]}
    tools = _tools(data)
    assert tools == (toolbridge.Tool("get_weather", "", {"type": "object"}, True),)
    assert _tool_choice({"tool_choice": "required"}, tools) == toolbridge.ToolChoice("required")
    assert _tool_choice({"tool_choice": {"type": "function", "name": "get_weather"}}, tools).name == "get_weather"
    with pytest.raises(problems.RequestError, match="tool_choice"):
        _tool_choice({"tool_choice": {"type": "function", "name": "nope"}}, tools)


def test_reasoning_effort_none_turns_thinking_off(serve):
    server = serve()
    api = client(server)
    off = api.responses.create(model=MODEL, input=ASK, max_output_tokens=2, reasoning={"effort": "none"})
    assert off.usage.output_tokens == 2 and off.output[0].type == "message"
