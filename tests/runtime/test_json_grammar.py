"""Grammars from JSON schemas give JSON that parses and validates, every time (issue 27).

The schemas are the ones pydantic generates (``$defs``/``$ref``, ``anyOf`` with null, enums, lists,
nested models) and strings that invite line breaks: llama-cpp-python's converter let JSON strings
hold raw control characters, which json.loads and pydantic refuse. Sampled, not greedy, with the
real SmolLM2, so that the grammar (not the model's habits) is what keeps the text valid."""

from __future__ import annotations

import json
from enum import Enum

import pytest
from pydantic import BaseModel

from localllm import runtime
from localllm.runtime.batching import json_schema_grammar, strict_json_strings


class Colour(str, Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    name: str
    age: int
    nickname: str | None = None
    address: Address
    favourite: Colour
    tags: list[str]


class Poem(BaseModel):
    title: str
    lines: str  # the model is asked for line breaks: they must come escaped


@pytest.fixture(scope="module")
def model(smollm2_path):
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=1024, n_batch=256, n_ubatch=256, n_threads=2)) as m:
        yield m


def _generate(model, prompt: str, grammar: str, seed: int) -> runtime.BatchResult:
    tokens = model.tokenize(model.render_chat([{"role": "user", "content": prompt}]), add_special=False)
    sampling = runtime.SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, seed=seed, max_tokens=100)
    with runtime.BatchEngine(model, 1, 1024, n_threads=2) as engine:
        *_, result = list(
            engine.submit(runtime.BatchRequest(key=seed, tokens=tokens, sampling=sampling, grammar=grammar))
        )
    return result


def test_string_characters_are_what_json_allows_unescaped():
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a.*$"}, "t": {"type": "string"}}}
    grammar = json_schema_grammar(schema)
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in grammar
    assert 'dot ::= [^"\\\\\\x7F\\x00-\\x1F]' in grammar
    assert (
        strict_json_strings('char ::= [^"\\\\]')
        == 'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'
    )


@pytest.mark.parametrize(
    ("schema_of", "prompt"),
    [
        (Person, "Describe a person as JSON."),
        (Poem, "Write a poem of four lines, each on its own line, as JSON."),
    ],
)
@pytest.mark.parametrize("seed", [1])
def test_pydantic_schemas_give_json_that_validates(model, schema_of, prompt, seed):
    schema = schema_of.model_json_schema()
    result = _generate(model, prompt, json_schema_grammar(schema), seed)
    assert not any(ord(c) < 0x20 for c in result.text)  # no raw control character, in strings or out
    if result.finish_reason == "length":  # a string the model never ends: cut, but nothing invalid in it
        return
    json.loads(result.text)
    schema_of.model_validate_json(result.text)
