"""The grammar that keeps a reply's tool calls well formed: each family's markup around arguments
that follow each tool's JSON schema.

For ``required`` and a named function the grammar applies from the first token (the reply *is* the
calls); for ``auto`` it is lazy, applied from the first trigger pattern (the family's opening
marker), so the model may still answer in words. The generic format constrains the whole reply to
``{"tool_calls": [...]}`` (or, for ``auto``, ``{"response": "..."}``) from the start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.errors import GrammarError, ToolSpecError

from .formats import ToolFormat
from .types import Tool, ToolChoice

__all__ = ["Constraint", "chosen_tools", "constraint", "prefixed"]


@dataclass(frozen=True)
class Constraint:
    grammar: str  # GBNF, rule ``root``
    lazy_triggers: tuple[str, ...] = ()  # empty: from the first token; else from the first match


_RULE = re.compile(r"^([A-Za-z0-9_-]+)\s*::=", re.MULTILINE)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|#[^\n]*|[A-Za-z0-9_-]+|.', re.DOTALL)


def prefixed(gbnf: str, prefix: str) -> str:
    """``gbnf`` with every rule renamed ``prefix + name`` (literals and character classes kept), so
    that several grammars can live in one."""
    names = set(_RULE.findall(gbnf))
    return "".join(prefix + t if t in names else t for t in _TOKEN.findall(gbnf))


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _hoisted(wrapper: dict[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` placed inside ``wrapper``: its ``$defs`` move to the top, where ``#/$defs/..`` points."""
    params = dict(parameters)
    for key in ("$defs", "definitions"):
        if key in params:
            wrapper.setdefault(key, {}).update(params.pop(key))
    return params


def _schema_rules(schema: Mapping[str, Any], prefix: str) -> str:
    from localllm import runtime

    try:
        return prefixed(runtime.json_schema_grammar(dict(schema)), prefix)
    except GrammarError as exc:
        raise ToolSpecError(
            f"a tool's parameters cannot be followed: {exc.message}", hint="use a plain JSON schema"
        ) from None


def _params(tool: Tool) -> dict[str, Any]:
    params = dict(tool.parameters) if tool.parameters else {"type": "object"}
    params.setdefault("type", "object")
    return params


def _call_object(tool: Tool, keys: tuple[str, str], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The schema of one call as a JSON object ``{name_key: NAME, args_key: {...}}``."""
    name_key, args_key = keys
    wrapper: dict[str, Any] = {"type": "object"}
    props: dict[str, Any] = dict(extra or {})
    props[name_key] = {"const": tool.name}
    props[args_key] = _hoisted(wrapper, _params(tool))
    wrapper["properties"] = props
    wrapper["required"] = list(props)
    return wrapper


def _json_calls(tools: Sequence[Tool], keys: tuple[str, str], extra: Mapping[str, Any] | None = None) -> str:
    """Rules ``call`` (one call object, any tool) and their helpers."""
    rules = []
    for i, tool in enumerate(tools):
        rules.append(_schema_rules(_call_object(tool, keys, extra), f"t{i}-"))
    rules.append("call ::= " + " | ".join(f"t{i}-root" for i in range(len(tools))))
    return "\n".join(rules)


def _args(tools: Sequence[Tool], head: str, between: str, tail: str) -> str:
    """Rules ``call`` ::= head NAME between ARGS tail, one alternative per tool."""
    rules, alts = [], []
    for i, tool in enumerate(tools):
        rules.append(_schema_rules(_params(tool), f"t{i}-"))
        alts.append(f"{_lit(head + tool.name + between)} t{i}-root {_lit(tail) if tail else ''}".strip())
    rules.append("call ::= " + " | ".join(f"( {a} )" for a in alts))
    return "\n".join(rules)


def _many(item: str, sep: str, parallel: bool) -> str:
    return f"{item} ( {sep} {item} )*" if parallel else item


WS = "ws ::= [ \\n]{0,2}"
COMMA = '"," ws'


def _family(fmt: ToolFormat, tools: Sequence[Tool], parallel: bool) -> str | None:
    """The grammar of a block (or blocks) of calls in ``fmt``, rule ``root``."""
    n = fmt.name
    if n in ("hermes", "qwen3", "smollm3"):
        body = _json_calls(tools, ("name", "arguments"))
        block = '"<tool_call>" ws call ws "</tool_call>"'
        return f"{body}\n{WS}\nblock ::= {block}\nroot ::= {_many('block', 'ws', parallel)}"
    if n == "llama3":
        body = _json_calls(tools, ("name", "parameters"))
        return f"{body}\nroot ::= call"
    if n == "mistral":
        body = _json_calls(tools, ("name", "arguments"))
        return f'{body}\nroot ::= "[TOOL_CALLS]" "[" {_many("call", COMMA, parallel)} "]"\n{WS}'
    if n == "mistral-args":
        body = _args(tools, "[TOOL_CALLS]", "[ARGS]", "")
        return f"{body}\nroot ::= {_many('call', '', parallel)}"
    if n == "granite":
        body = _json_calls(tools, ("name", "arguments"))
        return f'{body}\nroot ::= "<|tool_call|>" "[" {_many("call", COMMA, parallel)} "]"\n{WS}'
    if n == "command-r":
        body = _json_calls(
            tools, ("tool_name", "parameters"), {"tool_call_id": {"type": "string", "pattern": "^[0-9]{1,3}$"}}
        )
        items = _many("call", '"," ws', parallel)
        return f'{body}\n{WS}\nroot ::= "<|START_ACTION|>" "[" ws {items} ws "]" "<|END_ACTION|>"'
    if n == "deepseek-r1":
        body = _args(tools, "<｜tool▁call▁begin｜>function<｜tool▁sep｜>", "\n```json\n", "\n```<｜tool▁call▁end｜>")
        return f'{body}\nroot ::= "<｜tool▁calls▁begin｜>" {_many("call", "", parallel)} "<｜tool▁calls▁end｜>"'
    if n == "deepseek-v3":
        body = _args(tools, "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>")
        return f'{body}\nroot ::= "<｜tool▁calls▁begin｜>" {_many("call", "", parallel)} "<｜tool▁calls▁end｜>"'
    if n == "gpt-oss":
        body = _args(tools, "<|channel|>commentary to=functions.", " <|constrain|>json<|message|>", "")
        return f"{body}\nroot ::= call"
    if n == "functiongemma":
        names = " | ".join(_lit(t.name) for t in tools)
        return (
            f'root ::= "<start_function_call>call:" ( {names} ) "{{" arg* "}}<end_function_call>"\n'
            'arg ::= [^}<] | "<escape>" [^<]* "<escape>"'
        )
    return None


def _generic(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> str:
    calls: dict[str, Any] = {"type": "object"}
    items = [_call_object(t, ("name", "arguments")) for t in tools]
    for item in items:  # definitions of each tool's parameters live at the top of the one schema
        for key in ("$defs", "definitions"):
            if key in item:
                calls.setdefault(key, {}).update(item.pop(key))
    array: dict[str, Any] = {"type": "array", "items": {"anyOf": items} if len(items) > 1 else items[0], "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    calls.update(properties={"tool_calls": array}, required=["tool_calls"])
    if choice.mode == "auto":
        defs: dict[str, Any] = {k: calls.pop(k) for k in ("$defs", "definitions") if k in calls}
        response = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
        schema: dict[str, Any] = {"anyOf": [calls, response], **defs}
    else:
        schema = calls
    return _schema_rules(schema, "")


def chosen_tools(tools: Sequence[Tool], choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools the reply may call: all, none, or the named one (ToolSpecError if it is not offered)."""
    if choice.mode == "none":
        return ()
    if choice.mode == "function":
        named = tuple(t for t in tools if t.name == choice.name)
        if not named:
            raise ToolSpecError(
                f"tool_choice names {choice.name!r}, which is not in 'tools'", hint="name one of the tools given"
            )
        return named
    if choice.mode == "required" and not tools:
        raise ToolSpecError('tool_choice is "required" but no tools were given')
    return tuple(tools)


def constraint(fmt: ToolFormat, tools: Sequence[Tool], choice: ToolChoice, *, parallel: bool) -> Constraint | None:
    """The grammar for a reply that may (``auto``) or must (``required``, a named function) call
    ``tools``; None when nothing is constrained (no tools, ``none``)."""
    chosen = chosen_tools(tools, choice)
    if not chosen:
        return None
    parallel = parallel and choice.mode != "function"  # a named function: that one call
    if fmt.name == "generic":
        return Constraint(_generic(chosen, choice, parallel))
    grammar = _family(fmt, chosen, parallel)
    if grammar is None:
        return None
    if choice.mode == "auto":
        patterns = fmt.trigger_patterns
        which = fmt.extras.get("triggers")  # the opens the grammar begins with (others: no grammar)
        return Constraint(grammar, tuple(patterns[i] for i in which) if which is not None else patterns)
    return Constraint(grammar)
