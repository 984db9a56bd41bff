"""Tool round trips through the Anthropic Messages and OpenAI Responses APIs, with their official
clients against the real server: a forced call (the grammar makes it valid every time), the same
call streamed, the tool's result sent back, and count_tokens counting the tools the prompt carries."""

import json

import anthropic
import openai
from support.serving import MODEL

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_anthropic_tool_round_trip(serve):
    server = serve()
    api = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    first = api.messages.create(model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    use = [b for b in first.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    with api.messages.stream(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    second = api.messages.create(
        model=MODEL,
        max_tokens=60,
        tools=[WEATHER],
        messages=[
            *ASK,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C and sunny"}]},
        ],
    )
    assert second.content
    counted = api.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"})
    assert counted.input_tokens == first.usage.input_tokens


def test_responses_function_call_round_trip(serve):
    server = serve()
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": WEATHER["input_schema"],
    }
    first = api.responses.create(
        model=MODEL, input="What is the weather in Paris?", tools=[tool], tool_choice="required"
    )
    call = [i for i in first.output if i.type == "function_call"][0]
    assert json.loads(call.arguments)["city"]
    events = list(
        api.responses.create(
            model=MODEL, input="What is the weather in Paris?", tools=[tool], tool_choice="required", stream=True
        )
    )
    assert events[-1].response.output[-1].type == "function_call"
    second = api.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=[tool],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}],
    )
    assert second.status in ("completed", "incomplete")
