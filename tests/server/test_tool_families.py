"""A family's own format end to end: SmolLM2 carrying a Qwen 3 style template (written here, with
the markers of the real one: a <tools> block, <tool_call> tags, <think> opened for the model), served
and asked through the official openai client."""

from __future__ import annotations

import json

import openai
import pytest
from support import ggufedit

from localllm.app.serving import ServeOptions

QWEN3_STYLE = """
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions to assist with the user query.

<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}{% if m.role != 'system' %}
{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{{ m.content or '' }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}{% endif %}{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% else %}<think>
{% endif %}{% endif %}
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def qwen_style(serve, smollm2_path, tmp_path):
    parts = ggufedit.split(smollm2_path, keep_data=True)
    path = ggufedit.write(tmp_path / "qwen-style.gguf", parts, {"tokenizer.chat_template": QWEN3_STYLE})
    server = serve(options=ServeOptions(model=str(path), n_ctx_seq=1024, n_parallel=1))
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
    return server, api, str(path)


def test_a_forced_call_in_the_familys_own_markup(qwen_style):
    server, api, model = qwen_style
    reply = api.chat.completions.create(
        model=model,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
        reasoning_effort="none",
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert not choice.message.content  # the <tool_call> markup never reaches content


def test_reasoning_is_split_out_and_can_be_turned_off(qwen_style):
    server, api, model = qwen_style
    thinking = api.chat.completions.create(model=model, messages=ASK, temperature=0, max_tokens=20)
    message = thinking.choices[0].message
    # the template opened <think> for the model: what it wrote (until </think>) is reasoning
    assert getattr(message, "reasoning_content", None)
    assert "<think>" not in (message.content or "")
    off = api.chat.completions.create(
        model=model,
        messages=ASK,
        temperature=0,
        max_tokens=20,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert off.choices[0].message.content
    assert not getattr(off.choices[0].message, "reasoning_content", None)
    import httpx

    show = httpx.post(f"{server.url}/api/show", json={"model": model}, timeout=60).json()
    assert {"completion", "tools", "thinking"} <= set(show["capabilities"])
