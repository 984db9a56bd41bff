"""Each family's replies, fed whole and one character at a time: content, reasoning and calls.

The cases are written here in each family's format (llama.cpp's tests/test-chat.cpp and the real
templates in its models/templates are the references); the expected values are what a client must
get back."""

from __future__ import annotations

import json

import pytest

from localllm.chat.toolcalls import FORMATS, ContentDelta, ReasoningDelta, Tool, ToolCallDelta, ToolChoice
from localllm.chat.toolcalls.formats import GENERIC_THINK
from localllm.chat.toolcalls.parser import UNPARSED_WARNING

WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = Tool("get_time", "The time in a zone", {"type": "object", "properties": {"zone": {"type": "string"}}})
TOOLS = (WEATHER, TIME)
PARIS = ("get_weather", {"city": "Paris"})
UTC = ("get_time", {"zone": "UTC"})

# (format, reply text, content, reasoning, calls, warned)
CASES = [
    ("hermes", "Hello there.", "Hello there.", "", [], False),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        "",
        [PARIS],
        False,
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>',
        "",
        "",
        [PARIS, UTC],
        False,
    ),
    (
        "hermes",
        'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "Let me look.",
        "",
        [PARIS],
        False,
    ),
    ("hermes", "a < b and <tool> is not a call", "a < b and <tool> is not a call", "", [], False),
    # broken JSON and an unknown function: content and a warning, never dropped
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>',
        "",
        [],
        True,
    ),
    (
        "hermes",
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
        "",
        [],
        True,
    ),
    # cut off before the closing tag (max_tokens): still a call when the JSON is whole
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', "", "", [PARIS], False),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "argu',
        '<tool_call>\n{"name": "get_weather", "argu',
        "",
        [],
        True,
    ),
    # arguments as a JSON string (some models double-encode)
    (
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        "",
        "",
        [PARIS],
        False,
    ),
    (
        "qwen3",
        '<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        "The user wants weather.",
        [PARIS],
        False,
    ),
    ("qwen3", "<think>\nhmm\n</think>\n\nParis is in France.", "Paris is in France.", "hmm", [], False),
    (
        "smollm3",
        '<think>\nok\n</think>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>',
        "",
        "ok",
        [UTC],
        False,
    ),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", "", [PARIS], False),
    (
        "llama3",
        '  {"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        "",
        [PARIS],
        False,
    ),
    ("llama3", '<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}<|eom_id|>', "", "", [UTC], False),
    ("llama3", 'The answer is {"name": "x"} in JSON.', 'The answer is {"name": "x"} in JSON.', "", [], False),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}]',
        "",
        "",
        [PARIS],
        False,
    ),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"zone": "UTC"}}]',
        "",
        "",
        [PARIS, UTC],
        False,
    ),
    (
        "mistral-args",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}',
        "",
        "",
        [PARIS, UTC],
        False,
    ),
    ("mistral-args", "[THINK]short[/THINK]It is sunny.", "It is sunny.", "short", [], False),
    (
        "deepseek-r1",
        "<think>\nneed weather\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "",
        "need weather",
        [PARIS],
        False,
    ),
    (
        "deepseek-v3",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>'
        '<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"zone": "UTC"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "",
        "",
        [PARIS, UTC],
        False,
    ),
    (
        "command-r",
        "<|START_THINKING|>I will look it up.<|END_THINKING|><|START_ACTION|>[\n"
        '    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}}\n]<|END_ACTION|>',
        "",
        "I will look it up.",
        [PARIS],
        False,
    ),
    ("command-r", "<|START_RESPONSE|>Hello!<|END_RESPONSE|>", "Hello!", "", [], False),
    ("granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]', "", "", [PARIS], False),
    ("granite", "<think>hm</think><response>Hi.</response>", "Hi.", "hm", [], False),
    (
        "gpt-oss",
        "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}',
        "",
        "Need the weather.",
        [PARIS],
        False,
    ),
    (
        "gpt-oss",
        "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>Hi!",
        "Hi!",
        "Easy.",
        [],
        False,
    ),
    (
        "functiongemma",
        "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>",
        "",
        "",
        [PARIS],
        False,
    ),
    ("generic", '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}', "", "", [PARIS], False),
    ("generic", '{"response": "Hello, \\"world\\"\\n\\u00e9!"}', 'Hello, "world"\né!', "", [], False),
    ("generic", "plain words", "plain words", "", [], False),
    # cut off by max_tokens in the second call: the first, whole, is kept
    (
        "generic",
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_ti',
        "",
        "",
        [PARIS],
        False,
    ),
    (
        "generic",
        '{"tool_calls": [{"name": "nope", "arguments": {}}]}',
        '{"tool_calls": [{"name": "nope", "arguments": {}}]}',
        "",
        [],
        True,
    ),
]

# cut off in a second call: the whole first one stands, the broken rest is dropped (with a warning)
CUT = '<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call>\n<tool_call>{"name": "get_w'
CASES.append(("hermes", CUT, "", "", [UTC], False))


def _run(fmt_name: str, text: str, *, pieces: list[str]):
    fmt = FORMATS[fmt_name]
    parser = fmt.parser(TOOLS, ToolChoice())
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish()
    return parser.reply(), events


@pytest.mark.parametrize(("fmt", "text", "content", "reasoning", "calls", "warned"), CASES)
@pytest.mark.parametrize("split", ["whole", "chars"])
def test_a_reply_splits_into_content_reasoning_and_calls(fmt, text, content, reasoning, calls, warned, split):
    reply, events = _run(fmt, text, pieces=[text] if split == "whole" else list(text))
    assert reply.content == content
    assert reply.reasoning == reasoning
    assert [(c.name, c.args()) for c in reply.tool_calls] == calls
    assert (UNPARSED_WARNING in reply.warnings) is warned
    # the events say the same as the reply
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)).strip() == content.strip()
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)).strip() == reasoning
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [d.index for d in deltas] == list(range(len(calls)))
    assert all(d.id and d.id == c.id for d, c in zip(deltas, reply.tool_calls))


@pytest.mark.parametrize(("fmt", "text", "content", "reasoning", "calls", "warned"), [c for c in CASES if c[4]])
def test_markup_never_reaches_content_while_streaming(fmt, text, content, reasoning, calls, warned):
    """A call's markup is held back until decided: no delta shows a piece of it."""
    _, events = _run(fmt, text, pieces=list(text))
    shown = "".join(e.text for e in events if isinstance(e, ContentDelta))
    for marker in ("<tool_call", "[TOOL_CALLS", "<|", "<｜", '"name"', "<start_function"):
        assert marker not in shown


def test_ids_are_openai_shaped_and_arguments_json_text():
    reply, _ = _run("hermes", CASES[1][1], pieces=[CASES[1][1]])
    [call] = reply.tool_calls
    assert call.id.startswith("call_") and len(call.id) == 29
    assert json.loads(call.arguments) == {"city": "Paris"}


def test_a_model_given_id_is_kept():
    reply, _ = _run("mistral", CASES[17][1], pieces=[CASES[17][1]])
    assert reply.tool_calls[0].id == "abcDEF123"


def test_a_template_that_opens_think_starts_the_reply_in_reasoning():
    parser = FORMATS["qwen3"].parser(TOOLS, in_reasoning=True)
    parser.feed("still thinking</think>\n\nDone.")
    parser.finish()
    assert parser.reply().reasoning == "still thinking"
    assert parser.reply().content == "Done."


def test_tool_choice_none_leaves_markup_as_content():
    text = CASES[1][1]
    parser = FORMATS["hermes"].parser(TOOLS, ToolChoice("none"))
    parser.feed(text)
    parser.finish()
    assert parser.reply().content == text and not parser.reply().tool_calls


def test_generic_response_streams_as_it_comes():
    parser = FORMATS["generic"].parser(TOOLS)
    assert parser.feed('{"response": "Hel') == [ContentDelta("Hel")]
    assert parser.feed("lo\\") == [ContentDelta("lo")]  # an escape waits for its letter
    assert parser.feed('n"}') == [ContentDelta("\n")]
    assert parser.finish() == []
    assert parser.reply().content == "Hello\n"


def test_generic_with_think_splits_reasoning_before_the_json():
    parser = GENERIC_THINK.parser(TOOLS)
    parser.feed('<think>why</think>{"tool_calls": [{"name": "get_time", "arguments": {"zone": "UTC"}}]}')
    parser.finish()
    assert parser.reply().reasoning == "why"
    assert [c.name for c in parser.reply().tool_calls] == ["get_time"]
