"""detect() picks each family from its template; the prompt and grammar of each family.

The templates here are short ones written in each family's style (the markers the real templates
in llama.cpp's models/templates carry); the real SmolLM2 template (ChatML without tools) must come
out generic."""

from __future__ import annotations

import json

import pytest

from localllm.chat.toolcalls import FORMATS, Tool, ToolChoice, constraint, detect, prepare
from localllm.chat.toolcalls.grammar import prefixed
from localllm.errors import ToolSpecError

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
TEMPLATES = {
    "hermes": CHATML + "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}<tool_call>",
    "qwen3": CHATML
    + "{% if tools %}<tool_call>{% endif %}{% if enable_thinking is false %}<think>\n\n</think>{% endif %}",
    "smollm3": CHATML + "{% set xml_tools = tools %}/no_think <tool_call> <think>",
    "llama3": "<|start_header_id|>system<|end_header_id|>{% if tools %}{{ tools | tojson }}{% endif %}<|python_tag|>",
    "mistral": "[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS][TOOL_CALLS]{{ calls | tojson }}",
    "mistral-args": "[AVAILABLE_TOOLS][TOOL_CALLS]{{ name }}[ARGS]{{ args }}",
    "deepseek-r1": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>x\n```json\n{}\n```<think>",
    "deepseek-v3": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{{ name }}<｜tool▁sep｜>{{ args }}",
    "command-r": "<|START_THINKING|><|END_THINKING|><|START_ACTION|>{{ calls }}<|END_ACTION|>",
    "granite": "<|start_of_role|>available_tools<|end_of_role|><|tool_call|>",
    "gpt-oss": "<|start|>assistant<|channel|>commentary to=functions.x<|message|>",
    "functiongemma": "<start_function_declaration><start_function_call>call:x{}<end_function_call>",
    "generic": CHATML,
}


@pytest.mark.parametrize(("family", "template"), list(TEMPLATES.items()))
def test_each_family_is_detected_from_its_template(family, template):
    assert detect(template).name == family


def test_no_template_and_the_real_smollm2_template_are_generic(smollm2_path):
    from localllm.runtime.llama import LlamaModel

    assert detect(None).name == "generic"
    model = LlamaModel(smollm2_path)
    try:
        source = model.chat_template()
    finally:
        model.close()
    assert source and "<|im_start|>" in source
    assert detect(source).name == "generic"


WEATHER = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Tool("get_time", "", {"type": "object", "properties": {"zone": {"type": "string"}}})


def test_native_templates_get_tools_and_earlier_calls_as_they_iterate_them():
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    p = prepare(FORMATS["hermes"], history, (WEATHER,), reasoning=False, template_kwargs={"x": 1})
    assert p.template_vars["tools"][0]["function"]["name"] == "get_weather"
    assert p.template_vars["enable_thinking"] is False and p.template_vars["x"] == 1
    assert p.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    # DeepSeek concatenates the arguments: they stay text
    p = prepare(FORMATS["deepseek-v3"], history, (WEATHER,))
    assert p.messages[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def test_the_generic_format_describes_tools_and_turns_results_into_user_turns():
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    p = prepare(FORMATS["generic"], history, (WEATHER,))
    assert "tools" not in p.template_vars
    assert p.messages[0]["role"] == "system" and p.messages[0]["content"].startswith("Be brief.")
    assert "get_weather" in p.messages[0]["content"]
    assert json.loads(p.messages[2]["content"]) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    }
    assert p.messages[3]["role"] == "user" and "sunny" in p.messages[3]["content"]


def test_a_named_choice_must_be_offered():
    with pytest.raises(ToolSpecError):
        prepare(FORMATS["hermes"], [], (WEATHER,), ToolChoice("function", "nope"))
    with pytest.raises(ToolSpecError):
        constraint(FORMATS["hermes"], (WEATHER,), ToolChoice("function", "nope"), parallel=True)
    with pytest.raises(ToolSpecError):
        constraint(FORMATS["hermes"], (), ToolChoice("required"), parallel=True)


def test_prefixing_renames_rules_but_not_literals():
    gbnf = 'root ::= "root" space [root] item\nitem ::= "x" space\nspace ::= " "?'
    assert prefixed(gbnf, "a-") == 'a-root ::= "root" a-space [root] a-item\na-item ::= "x" a-space\na-space ::= " "?'


@pytest.mark.parametrize("family", sorted(FORMATS))
@pytest.mark.parametrize("mode", ["auto", "required"])
def test_every_family_has_a_grammar_llama_cpp_accepts(family, mode, smollm2_path):
    from localllm.runtime.llama import LlamaModel, LlamaSampler

    c = constraint(FORMATS[family], (WEATHER, TIME), ToolChoice(mode), parallel=True)
    assert c is not None
    assert bool(c.lazy_triggers) is (mode == "auto" and family != "generic")
    model = LlamaModel(smollm2_path)
    try:
        sampler = LlamaSampler()
        if c.lazy_triggers:
            sampler.add_grammar_lazy(model, c.grammar, c.lazy_triggers)
        else:
            sampler.add_grammar(model, c.grammar)
        sampler.close()
    finally:
        model.close()


def test_none_and_no_tools_constrain_nothing():
    assert constraint(FORMATS["hermes"], (WEATHER,), ToolChoice("none"), parallel=True) is None
    assert constraint(FORMATS["generic"], (), ToolChoice(), parallel=True) is None
