"""The values of tool calling: tools, a tool choice, calls, a parsed reply and streaming events."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ContentDelta",
    "Event",
    "ParsedReply",
    "ReasoningDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "new_call_id",
]


def new_call_id() -> str:
    """An OpenAI-style call id: "call_" and 24 random url-safe characters."""
    return "call_" + secrets.token_urlsafe(18)


def _empty_object() -> Mapping[str, Any]:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    """One function the model may call; ``parameters`` is the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=_empty_object)
    strict: bool = False

    def openai(self) -> dict[str, Any]:
        """The tool as OpenAI's API (and chat templates' ``tools`` variable) spells it."""
        function: dict[str, Any] = {"name": self.name, "description": self.description}
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """ "auto" (the model decides), "none", "required" (at least one call) or a named function."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None  # when mode == "function"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text of an object (OpenAI's shape)

    def args(self) -> dict[str, Any]:
        value = json.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ParsedReply:
    """A finished reply split into its parts; ``content`` never holds tool-call or reasoning markup."""

    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of call ``index``; ``id`` and ``name`` come on the first delta of a call."""

    index: int
    id: str | None
    name: str | None
    arguments: str


Event = ContentDelta | ReasoningDelta | ToolCallDelta
