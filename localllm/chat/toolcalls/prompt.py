"""Messages and template variables for a request with tools.

A template that renders tools gets them as its ``tools`` variable (OpenAI's shape), and earlier
calls in the form it iterates (``arguments`` as a dict where it writes them with ``tojson``). For a
template that knows nothing of tools (the generic format) the tools are described in a system
message, earlier calls become the JSON the model is asked to write, and tool results become user
turns (so a template that insists on alternating roles still renders).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .formats import ToolFormat
from .grammar import chosen_tools
from .types import Tool, ToolChoice

__all__ = ["Prepared", "generic_system_text", "prepare"]


@dataclass(frozen=True)
class Prepared:
    messages: list[dict[str, Any]]
    template_vars: dict[str, Any] = field(default_factory=dict)


def _arguments_dict(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments
        return value if isinstance(value, dict) else arguments
    return arguments


def _native_calls(calls: Sequence[Mapping[str, Any]], as_dict: bool) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        function = dict(call.get("function") or {})
        args = function.get("arguments", "{}")
        if as_dict:
            function["arguments"] = _arguments_dict(args)
        elif not isinstance(args, str):
            function["arguments"] = json.dumps(args, ensure_ascii=False)
        out.append({"id": call.get("id", ""), "type": "function", "function": function})
    return out


def generic_system_text(tools: Sequence[Tool], choice: ToolChoice) -> str:
    listed = json.dumps([t.openai()["function"] for t in tools], ensure_ascii=False, indent=2)
    call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<the arguments, as the tool\'s parameters say>}}]}'
    if choice.mode == "function":
        how = f"Call the tool {choice.name!r}: reply with one JSON object, {call}, and nothing else."
    elif choice.mode == "required":
        how = f"Call one or more of these tools: reply with one JSON object, {call}, and nothing else."
    else:
        how = (
            f"To call tools, reply with one JSON object, {call}. To answer directly, reply with "
            '{"response": "<your answer>"}. Reply with that JSON object and nothing else.'
        )
    return f"You can use these tools:\n{listed}\n\n{how}"


def _generic_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool], choice: ToolChoice) -> list[dict]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": _arguments_dict(c["function"].get("arguments", "{}"))}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": json.dumps({"tool_calls": calls}, ensure_ascii=False)})
        elif role == "assistant" and tools:
            out.append({"role": "assistant", "content": json.dumps({"response": content}, ensure_ascii=False)})
        elif role == "tool":
            result = {"tool_response": {"tool_call_id": m.get("tool_call_id", ""), "content": content}}
            if m.get("name"):
                result["tool_response"]["name"] = m["name"]
            out.append({"role": "user", "content": json.dumps(result, ensure_ascii=False)})
        else:
            out.append({"role": role, "content": content})
    if tools:
        text = generic_system_text(tools, choice)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
    merged: list[dict[str, Any]] = []
    for m in out:  # tool results beside a user turn: one turn, for templates that alternate roles
        if merged and m["role"] == "user" and merged[-1]["role"] == "user":
            merged[-1] = {"role": "user", "content": f"{merged[-1]['content']}\n\n{m['content']}"}
        else:
            merged.append(m)
    return merged


def prepare(
    fmt: ToolFormat,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Tool] = (),
    choice: ToolChoice | None = None,
    *,
    reasoning: bool | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> Prepared:
    """The messages and template variables to render ``messages`` with ``tools`` in ``fmt``."""
    choice = choice or ToolChoice()
    offered = tuple(tools) if choice.mode != "none" else ()
    chosen_tools(tools, choice)  # ToolSpecError for a choice that names no offered tool
    template_vars: dict[str, Any] = {}
    if reasoning is not None:
        template_vars["enable_thinking"] = reasoning
    if fmt.native_tools:
        rewritten = []
        for m in messages:
            m = dict(m)
            if m.get("role") == "assistant" and m.get("tool_calls"):
                m["tool_calls"] = _native_calls(m["tool_calls"], fmt.args_as_dict)
                if not m.get("content"):
                    m["content"] = None if not fmt.args_as_dict else ""
            rewritten.append(m)
        if offered:
            template_vars["tools"] = [t.openai() for t in offered]
    else:
        rewritten = _generic_messages(messages, offered, choice)
    template_vars.update(template_kwargs or {})
    return Prepared(rewritten, template_vars)
