"""The tool and reasoning fields of both APIs' chat requests, read and checked (issue 27).

OpenAI: ``tools``, ``tool_choice``, ``parallel_tool_calls``, messages with ``tool_calls`` and the
``tool`` role, ``reasoning_effort``, ``chat_template_kwargs``. Ollama: ``tools``, ``think``,
messages whose ``tool_calls`` carry arguments as objects. Each becomes the app's internal form
(OpenAI's chat shape), or a 400 that names the field."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from localllm.app.serving import GenerateRequest
from localllm.chat.toolcalls import Tool, ToolChoice

from .problems import RequestError

MAX_TOOLS = 128
_ROLES = ("system", "developer", "user", "assistant", "tool")


def _text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") in ("text", "input_text", "output_text")]
        if len(texts) == len(content) and all(isinstance(t, str) for t in texts):
            return "".join(texts)
        raise RequestError(f"'{where}' may hold only text parts: images and audio are not supported", param=where)
    raise RequestError(f"'{where}' must be a string or a list of text parts", param=where)


def tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """``tools``: a list of ``{"type": "function", "function": {"name", "description", "parameters"}}``."""
    value = body.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise RequestError(f"'tools' must be a list of at most {MAX_TOOLS} tools", param="tools")
    out, seen = [], set()
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or item.get("type", "function") != "function":
            raise RequestError(f'\'{where}\' must be {{"type": "function", "function": {{...}}}}', param=where)
        name = function.get("name")
        if not isinstance(name, str) or not name or len(name) > 128:
            raise RequestError(f"'{where}.function.name' must be a non-empty string", param=where)
        if name in seen:
            raise RequestError(f"'{where}.function.name' repeats {name!r}", param=where)
        seen.add(name)
        params = function.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise RequestError(f"'{where}.function.parameters' must be a JSON schema object", param=where)
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise RequestError(f"'{where}.function.description' must be a string", param=where)
        out.append(Tool(name, description, params, bool(function.get("strict"))))
    return tuple(out)


def tool_choice(body: dict[str, Any]) -> ToolChoice:
    value = body.get("tool_choice")
    if value is None:
        return ToolChoice()
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    if isinstance(value, dict):
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else value.get("name")
        if isinstance(name, str) and name:
            return ToolChoice("function", name)
    raise RequestError(
        '\'tool_choice\' must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _calls(value: object, where: str, *, arguments_as_text: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RequestError(f"'{where}' must be a list of calls", param=where)
    out = []
    for j, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise RequestError(f"'{where}[{j}].function.name' must be a string", param=where)
        args = function.get("arguments", {} if not arguments_as_text else "{}")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        ident = call.get("id") or f"call_{j}"
        out.append({"id": str(ident), "type": "function", "function": {"name": name, "arguments": args}})
    return out


def messages(body: dict[str, Any], *, ollama: bool = False) -> list[dict[str, Any]]:
    """The chat ``messages`` in the internal (OpenAI) shape, tool calls and results included."""
    value = body.get("messages")
    if not isinstance(value, list) or not value:
        raise RequestError('\'messages\' must be a non-empty list of {"role", "content"} objects', param="messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"'{where}' must be an object with a string 'role'", param=where)
        role = "system" if m["role"] == "developer" else m["role"]
        message: dict[str, Any] = {"role": role, "content": _text(m.get("content"), f"{where}.content")}
        if m.get("tool_calls"):
            message["tool_calls"] = _calls(m["tool_calls"], f"{where}.tool_calls", arguments_as_text=not ollama)
        for key in ("tool_call_id", "name", "reasoning_content"):
            if isinstance(m.get(key), str):
                message[key] = m[key]
        if ollama:
            if isinstance(m.get("tool_name"), str):
                message["name"] = m["tool_name"]
            if isinstance(m.get("thinking"), str):
                message["reasoning_content"] = m["thinking"]
        out.append(message)
    return out


def _kwargs(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("chat_template_kwargs")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("'chat_template_kwargs' must be an object", param="chat_template_kwargs")
    return dict(value)


def openai_chat(body: dict[str, Any], request: GenerateRequest) -> GenerateRequest:
    """``request`` (the common fields) with the tool and reasoning fields of an OpenAI chat request."""
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise RequestError("'parallel_tool_calls' must be true or false", param="parallel_tool_calls")
    kwargs = _kwargs(body)
    reasoning: bool | None = None
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in ("none", "minimal", "low", "medium", "high"):
            raise RequestError(
                "'reasoning_effort' must be none, minimal, low, medium or high", param="reasoning_effort"
            )
        reasoning = effort != "none"
        kwargs.setdefault("reasoning_effort", "low" if effort == "minimal" else effort)
    if isinstance(kwargs.get("enable_thinking"), bool):
        reasoning = kwargs["enable_thinking"]
    return dataclasses.replace(
        request,
        messages=messages(body),
        tools=tools(body),
        tool_choice=tool_choice(body),
        parallel_tool_calls=parallel,
        reasoning=reasoning,
        template_kwargs=kwargs,
    )


def ollama_chat(body: dict[str, Any], request: GenerateRequest) -> GenerateRequest:
    """``request`` with Ollama's ``tools``, ``think`` and tool messages."""
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in ("low", "medium", "high"):
        raise RequestError("'think' must be true, false, or low, medium, high", param="think")
    kwargs: dict[str, Any] = {}
    if isinstance(think, str):
        kwargs["reasoning_effort"] = think
    return dataclasses.replace(
        request,
        messages=messages(body, ollama=True),
        tools=tools(body),
        reasoning=None if think is None else bool(think),
        template_kwargs=kwargs,
    )
