"""The tool-call formats of the model families people run, and which one a chat template speaks.

Each family writes its calls in its own markup (the references: llama.cpp's ``common/chat.cpp`` and
the real templates in its ``models/templates``). A :class:`ToolFormat` holds what the parser, the
prompt and the grammar need to know of one: the markers that open and close a block of calls, how
the text of a block becomes calls, where reasoning goes, and whether the template renders the
``tools`` variable itself. :func:`detect` picks the format from the GGUF's template; a template that
knows nothing of tools gets the *generic* format (the tools described in a system message, the
reply constrained to ``{"tool_calls": [...]}`` or ``{"response": "..."}``), so tools work with any
model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .parser import StreamParser
    from .types import Tool, ToolChoice

__all__ = ["FORMATS", "Open", "RawCall", "ToolFormat", "detect"]

# (name, arguments as a dict or JSON text, the model's own id or None)
RawCall = tuple[str, Any, "str | None"]
Decoder = Callable[[str], list[RawCall]]


@dataclass(frozen=True)
class Open:
    """A marker that opens a block of calls. ``anchored``: only at the very start of the reply (Llama
    3's bare JSON). ``keep``: the marker is part of the block's text (it is the JSON's first brace)."""

    marker: str
    anchored: bool = False
    keep: bool = False


@dataclass(frozen=True)
class ToolFormat:
    name: str
    native_tools: bool  # the template renders the ``tools`` variable itself
    opens: tuple[Open, ...] = ()
    close: str | None = None  # ends one block; None: the block runs to the end of the reply
    decode: Decoder | None = None  # a block's text -> calls; ValueError when it is not calls
    think: tuple[str, str] | None = None  # reasoning's opening and closing markers
    drop: tuple[str, ...] = ()  # markup that is neither content nor reasoning (channel headers)
    args_as_dict: bool = True  # the template writes earlier calls' arguments with tojson
    special_tokens: bool = False  # markers are control tokens: generated pieces must show them
    extras: dict[str, Any] = field(default_factory=dict)  # per-family grammar details

    @property
    def reasoning(self) -> str | None:
        return "think" if self.think is not None else None

    @property
    def trigger_patterns(self) -> tuple[str, ...]:
        """Regular expressions (llama.cpp's lazy-grammar patterns: matched from the start of the
        reply, the grammar fed from the first group) that begin a call."""
        patterns = []
        for o in self.opens:
            if o.anchored:
                patterns.append(r"^\s*(" + re.escape(o.marker) + r")[\s\S]*")
            else:
                patterns.append(r"[\s\S]*?(" + re.escape(o.marker) + r")[\s\S]*")
        return tuple(patterns)

    def parser(self, tools: Sequence[Tool], choice: ToolChoice | None = None, *, in_reasoning: bool = False):
        """A :class:`StreamParser` for one reply in this format. ``in_reasoning``: the prompt ends
        inside a reasoning block (a template that opens ``<think>`` for the model)."""
        from .parser import GenericParser, StreamParser
        from .types import ToolChoice

        choice = choice or ToolChoice()
        cls: type[StreamParser] = GenericParser if self.name == "generic" else StreamParser
        return cls(self, tools if choice.mode != "none" else (), in_reasoning=in_reasoning)


# -- decoding a block ----------------------------------------------------------------------------


def _json_values(text: str) -> list[Any]:
    """The JSON values in ``text``, one after another (separated by whitespace, ``,`` or ``;``)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,;":
            i += 1
        if i >= len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def _objects(values: list[Any]) -> list[dict[str, Any]]:
    flat: list[Any] = []
    for v in values:
        flat.extend(v if isinstance(v, list) else [v])
    if not flat or not all(isinstance(v, dict) for v in flat):
        raise ValueError("not a list of call objects")
    return flat


def _named(
    obj: dict[str, Any], name_key: str = "name", args_keys: Sequence[str] = ("arguments", "parameters")
) -> RawCall:
    if obj.get("type") == "function" and isinstance(obj.get("function"), dict):
        obj = {**obj["function"], "id": obj.get("id")}
    name = obj.get(name_key)
    if not isinstance(name, str) or not name:
        raise ValueError("a call without a name")
    args: Any = {}
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    ident = obj.get("id") or obj.get("tool_call_id")
    return name, args, str(ident) if ident not in (None, "") else None


def decode_json_calls(text: str) -> list[RawCall]:
    """``{"name", "arguments"}`` objects (or a list of them): Hermes, Qwen, Granite, Mistral, Llama 3."""
    return [_named(o) for o in _objects(_json_values(text.strip()))]


def decode_python_tag(text: str) -> list[RawCall]:
    """After Llama 3.1's ``<|python_tag|>``: JSON calls, or a built-in's ``name.call(query="...")``."""
    text = text.strip().removesuffix("<|eom_id|>").strip()
    m = re.fullmatch(r"(\w+)\.call\((.*)\)", text, re.DOTALL)
    if m is None:
        return decode_json_calls(text)
    args = {}
    for key, value in re.findall(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*")', m.group(2)):
        args[key] = json.loads(value)
    return [(m.group(1), args, None)]


def decode_mistral(text: str) -> list[RawCall]:
    """``[{"name", "arguments", "id"}]`` (Nemo, Small 3) or ``name[ARGS]{...}`` repeated (Magistral, Devstral)."""
    text = text.strip()
    if "[ARGS]" not in text:
        return decode_json_calls(text)
    calls: list[RawCall] = []
    for part in text.split("[TOOL_CALLS]"):
        if not part.strip():
            continue
        name, sep, args = part.partition("[ARGS]")
        if not sep or not re.fullmatch(r"[\w.-]+", name.strip()):
            raise ValueError("a [TOOL_CALLS] call without [ARGS]")
        calls.append((name.strip(), json.loads(args), None))
    return calls


_DS_CALL = re.compile("<｜tool▁call▁begin｜>(.*?)<｜tool▁call▁end｜>", re.DOTALL)


def decode_deepseek(text: str) -> list[RawCall]:
    """R1: ``function<｜tool▁sep｜>NAME`` then the arguments in a json fence; V3.1: ``NAME<｜tool▁sep｜>ARGS``."""
    calls: list[RawCall] = []
    for body in _DS_CALL.findall(text):
        left, sep, right = body.partition("<｜tool▁sep｜>")
        if not sep:
            raise ValueError("a DeepSeek call without <｜tool▁sep｜>")
        m = re.fullmatch(r"([^\n`]+)\n```(?:json)?\n(.*?)\n?```\s*", right, re.DOTALL)
        if left.strip() == "function" and m is not None:
            calls.append((m.group(1).strip(), json.loads(m.group(2)), None))
        else:
            calls.append((left.strip(), json.loads(right), None))
    if not calls or _DS_CALL.sub("", text).strip():
        raise ValueError("text in a DeepSeek call block that is not a call")
    return calls


def decode_command_r(text: str) -> list[RawCall]:
    """Command R7B: ``[{"tool_call_id", "tool_name", "parameters"}]``."""
    return [_named(o, "tool_name", ("parameters", "arguments")) for o in _objects(_json_values(text.strip()))]


def decode_harmony(text: str) -> list[RawCall]:
    """gpt-oss: ``NAME <|constrain|>json<|message|>{...}`` after ``to=functions.``."""
    m = re.fullmatch(
        r"([\w.-]+)\s*(?:<\|channel\|>\s*commentary\s*)?(?:<\|constrain\|>)?\s*(?:\w+\s*)?<\|message\|>(.*)",
        text.strip(),
        re.DOTALL,
    )
    if m is None:
        raise ValueError("not a harmony call")
    return [(m.group(1), json.loads(m.group(2)), None)]


_ESCAPED = re.compile(r"<escape>(.*?)<escape>", re.DOTALL)


def decode_functiongemma(text: str) -> list[RawCall]:
    """FunctionGemma: ``call:NAME{key:<escape>text<escape>,n:3}``."""
    m = re.fullmatch(r"\s*call:([\w.-]+)\s*(\{.*\})\s*", text, re.DOTALL)
    if m is None:
        raise ValueError("not a FunctionGemma call")
    strings: list[str] = []

    def hold(s: re.Match[str]) -> str:
        strings.append(s.group(1))
        return f"\x00{len(strings) - 1}\x00"

    body = _ESCAPED.sub(hold, m.group(2))
    body = re.sub(r"([{,])\s*([A-Za-z_][\w-]*)\s*:", r'\1"\2":', body)
    body = re.sub(r"\x00(\d+)\x00", lambda s: json.dumps(strings[int(s.group(1))]), body)
    return [(m.group(1), json.loads(body), None)]


# -- the families ----------------------------------------------------------------------------------

_THINK = ("<think>", "</think>")

HERMES = ToolFormat(
    "hermes", True, (Open("<tool_call>"),), "</tool_call>", decode_json_calls, extras={"keys": ("name", "arguments")}
)
QWEN3 = ToolFormat(
    "qwen3",
    True,
    (Open("<tool_call>"),),
    "</tool_call>",
    decode_json_calls,
    think=_THINK,
    extras={"keys": ("name", "arguments")},
)
SMOLLM3 = ToolFormat(
    "smollm3",
    True,
    (Open("<tool_call>"),),
    "</tool_call>",
    decode_json_calls,
    think=_THINK,
    extras={"keys": ("name", "arguments")},
)
LLAMA3 = ToolFormat(
    "llama3",
    True,
    (Open("<|python_tag|>"), Open('{"', anchored=True, keep=True)),
    None,
    decode_python_tag,
    drop=("<|eom_id|>",),
    special_tokens=True,
    extras={"keys": ("name", "parameters"), "triggers": (1,)},
)
MISTRAL = ToolFormat(
    "mistral",
    True,
    (Open("[TOOL_CALLS]"),),
    None,
    decode_mistral,
    think=("[THINK]", "[/THINK]"),
    args_as_dict=False,
    special_tokens=True,
    extras={"keys": ("name", "arguments")},
)
MISTRAL_ARGS = ToolFormat(
    "mistral-args",
    True,
    (Open("[TOOL_CALLS]"),),
    None,
    decode_mistral,
    think=("[THINK]", "[/THINK]"),
    args_as_dict=False,
    special_tokens=True,
)
DEEPSEEK_R1 = ToolFormat(
    "deepseek-r1",
    True,
    (Open("<｜tool▁calls▁begin｜>"),),
    "<｜tool▁calls▁end｜>",
    decode_deepseek,
    think=_THINK,
    args_as_dict=False,
    special_tokens=True,
)
DEEPSEEK_V3 = ToolFormat(
    "deepseek-v3",
    True,
    (Open("<｜tool▁calls▁begin｜>"),),
    "<｜tool▁calls▁end｜>",
    decode_deepseek,
    think=_THINK,
    args_as_dict=False,
    special_tokens=True,
)
COMMAND_R = ToolFormat(
    "command-r",
    True,
    (Open("<|START_ACTION|>"),),
    "<|END_ACTION|>",
    decode_command_r,
    think=("<|START_THINKING|>", "<|END_THINKING|>"),
    drop=("<|START_RESPONSE|>", "<|END_RESPONSE|>"),
    special_tokens=True,
)
GRANITE = ToolFormat(
    "granite",
    True,
    (Open("<|tool_call|>"),),
    None,
    decode_json_calls,
    think=_THINK,
    drop=("<response>", "</response>"),
    special_tokens=True,
    extras={"keys": ("name", "arguments")},
)
HARMONY = ToolFormat(
    "gpt-oss",
    True,
    (Open("<|channel|>commentary to=functions."), Open(" to=functions.")),
    "<|call|>",
    decode_harmony,
    think=("<|channel|>analysis<|message|>", "<|end|>"),
    drop=("<|start|>assistant", "<|channel|>final<|message|>", "<|return|>", "<|end|>"),
    special_tokens=True,
    extras={"triggers": (0,)},
)
FUNCTIONGEMMA = ToolFormat(
    "functiongemma",
    True,
    (Open("<start_function_call>"),),
    "<end_function_call>",
    decode_functiongemma,
    drop=("<start_function_response>",),
    special_tokens=True,
)
GENERIC = ToolFormat("generic", False)
GENERIC_THINK = ToolFormat("generic", False, think=_THINK)

FORMATS = {
    f.name: f
    for f in (HERMES, QWEN3, SMOLLM3, LLAMA3, MISTRAL, MISTRAL_ARGS, DEEPSEEK_R1, DEEPSEEK_V3, COMMAND_R, GRANITE)
    + (HARMONY, FUNCTIONGEMMA, GENERIC)
}


def detect(template_source: str | None) -> ToolFormat:
    """The tool-call format of the model whose chat template is ``template_source`` (None: no
    template); the generic format for a template that does not render tools."""
    t = template_source or ""
    thinks = "<think>" in t
    if "<|channel|>" in t and "<|message|>" in t:
        return HARMONY
    if "<｜tool▁calls▁begin｜>" in t:
        return DEEPSEEK_R1 if "```json" in t else DEEPSEEK_V3
    if "<|START_ACTION|>" in t:
        return COMMAND_R
    if "<|tool_call|>" in t:
        return GRANITE
    if "[TOOL_CALLS]" in t:
        return MISTRAL_ARGS if "[ARGS]" in t else MISTRAL
    if "<start_function_call>" in t:
        return FUNCTIONGEMMA
    if "<|start_header_id|>" in t and ("<|python_tag|>" in t or "tools" in t):
        return LLAMA3
    if "<tool_call>" in t:
        if "xml_tools" in t or "/no_think" in t:
            return SMOLLM3
        return QWEN3 if thinks else HERMES
    return GENERIC_THINK if thinks else GENERIC
