"""Chat templates from model files are untrusted code: sandboxed, bounded in time and size, and
any failure is one GenerationError line (issue 11)."""

from __future__ import annotations

import time

import pytest

from localllm.errors import GenerationError, GrammarError
from localllm.runtime import batching
from localllm.runtime.template import ChatTemplate

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MESSAGES = [{"role": "user", "content": "hi"}]


def render(source: str, messages=MESSAGES) -> str:
    return ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(messages)


def test_a_normal_template_renders_as_before():
    assert render(CHATML) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (
        render("{{ bos_token }}{{ messages | tojson }}{{ eos_token }}") == '<s>[{"role": "user", "content": "hi"}]</s>'
    )
    assert render("{% generation %}x{% endgeneration %}{% for m in messages %}{% break %}{% endfor %}") == "x"


HOSTILE = {
    "nested loops": ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "steps"),
    "nested loops writing": (
        "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        "steps",
    ),
    "string multiplication": ("{{ 'x' * 1000000000 }}", "more than"),
    "list multiplication": ("{{ ([1] * 100000000) | length }}", "more than"),
    "doubling by +": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "more than",
    ),
    "huge power": ("{{ 2 ** 100000000 }}", "huge power"),
    "center": ("{{ 'x' | center(1000000000) }}", "huge size"),
    "format width": ("{{ '%01000000000d' | format(1) }}", "huge width"),
    "str.format width": ("{{ '{:>1000000000}'.format('x') }}", "huge width"),
    "syntax error": ("{% for m in messages %}{{ m.content }", "syntax error on line 1"),
    "unknown tag": ("{% frobnicate %}", "syntax error"),
    "raise_exception": ("{{ raise_exception('only user and assistant roles') }}", "only user and assistant roles"),
    "undefined call": ("{{ nothing() }}", "failed"),
    "sandbox class": ("{{ messages.__class__.__mro__ }}", "failed"),
    "sandbox mutation": ("{{ messages.append(1) }}", "failed"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "template"),
    "deep nesting": ("{{ " + "(" * 200 + "1" + ")" * 200 + " }}", "template"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_one_error_in_bounded_time(name):
    source, message = HOSTILE[name]
    start = time.monotonic()
    with pytest.raises(GenerationError) as info:
        render(source)
    assert time.monotonic() - start < 30
    assert message in str(info.value)
    assert str(info.value).startswith("the model's chat template")
    assert "\n" not in str(info.value)


def test_the_sandbox_shows_no_internals():
    assert render("{{ raise_exception.__globals__ }}{{ messages.__class__ }}x") == "x"


def test_the_trace_function_is_restored():
    import sys

    before = sys.gettrace()
    render(CHATML)
    with pytest.raises(GenerationError):
        render(HOSTILE["nested loops"][0])
    assert sys.gettrace() is before


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string", "minLength": 10**9}, '"minLength" is 1000000000'),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 50000}, '"maxItems"'),
        ({"type": "string", "maxLength": -1}, '"maxLength"'),
        ({"type": "string", "minLength": "many"}, '"minLength"'),
        ({"type": "string", "minLength": float("inf")}, '"minLength"'),
    ],
)
def test_an_enormous_schema_is_refused_before_a_grammar_is_built(schema, message):
    with pytest.raises(GrammarError, match=message):
        batching.json_schema_grammar(schema)


def test_deep_and_long_schemas_are_refused():
    deep: dict = {"type": "string"}
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    with pytest.raises(GrammarError, match="nested more than"):
        batching.json_schema_grammar(deep)
    with pytest.raises(GrammarError, match="longer than"):
        batching.json_schema_grammar(
            {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(10000)}}
        )
    assert batching.json_schema_grammar({"type": "string", "maxLength": 20})
