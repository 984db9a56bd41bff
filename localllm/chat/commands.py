"""Slash commands typed in a chat's input (the TUI and the terminal chat share them).

``/system TEXT``, ``/clear``, ``/model NAME``, ``/set NAME VALUE``, ``/lora [NAME SCALE|off]``,
``/docs [NAME|off]``, ``/save PATH``, ``/copy [code]``, ``/help``, ``/bye``. :func:`parse` turns a line into a :class:`Command` (or None: a message to send;
``//text`` sends ``/text``); each shell carries it out with its own screen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from localllm.errors import LocalLLMError
from localllm.options import SAMPLING, OptionError

# What /set accepts: the sampling settings a conversation stores (their types and limits: the schema).
SETTINGS = tuple(SAMPLING)

HELP = [
    ("/system TEXT", "set this chat's system prompt (empty: none)"),
    ("/clear", "start a new chat with the same model, system prompt and settings"),
    ("/model [NAME]", "continue this chat with another installed model (no name: the installed ones)"),
    ("/set NAME VALUE", "a setting for this chat: " + ", ".join(SETTINGS) + " (none: the default)"),
    ("/lora [NAME SCALE|off]", "the LoRA adapters loaded with --lora: list them, set one's scale (0: off), or all off"),
    (
        "/docs [NAME|off]",
        "answer from a document collection (localllm docs add), citing [file:lines]; no name: list them",
    ),
    ("/save PATH", "export this chat (.md Markdown, .json JSON)"),
    ("/copy [code]", "copy the last reply (or its last code block) to the clipboard"),
    ("/help", "this list"),
    ("/bye", "leave"),
]
NAMES = ("system", "clear", "model", "set", "lora", "docs", "save", "copy", "help", "bye")
DOCS_SETTING = "docs"  # where a conversation's settings keep the collection attached to it
ALIASES = {"exit": "bye", "quit": "bye", "?": "help", "export": "save", "new": "clear"}
_CODE_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


class CommandError(LocalLLMError):
    """A slash command that cannot be carried out as typed."""


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""
    setting: tuple[str, Any] | None = None  # /set: (name, value); value None: back to the default
    adapter: tuple[str, float] | None = None  # /lora NAME SCALE: (name, scale); ("off", 0.0): all off; None: list


def parse(text: str) -> Command | None:
    """The command in ``text``, or None if it is a message. Raises :class:`CommandError`."""
    text = text.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    head, _, arg = text[1:].partition(" ")
    name = ALIASES.get(head.lower(), head.lower())
    arg = arg.strip()
    if name not in NAMES:
        raise CommandError(f"unknown command /{head}", hint="/help lists the commands; //text sends /text")
    if name == "save" and not arg:
        raise CommandError("/save needs a file path")
    if name == "set":
        return Command(name, arg, parse_setting(arg))
    if name == "lora":
        return Command(name, arg, adapter=parse_adapter(arg))
    return Command(name, arg)


def parse_adapter(arg: str) -> tuple[str, float] | None:
    """``/lora``'s argument: None (list), ("off", 0.0), or (adapter name, scale)."""
    words = arg.split()
    if not words:
        return None
    if words == ["off"]:
        return "off", 0.0
    if len(words) != 2:
        raise CommandError("/lora takes an adapter's name and a scale (or off)", hint="/lora alpha 0.5")
    try:
        scale = float(words[1])
    except ValueError:
        raise CommandError(f"a LoRA scale is a number, not {words[1]!r}") from None
    if not -100 <= scale <= 100:
        raise CommandError("a LoRA scale must be between -100 and 100")
    return words[0], scale


def describe_adapters(loaded: list[str], active: tuple[tuple[str, float], ...]) -> str:
    """What ``/lora`` shows: each loaded adapter with the scale it is applied with."""
    scales = dict(active)
    return "LoRA adapters: " + ", ".join(f"{n} {scales[n]:g}" if n in scales else f"{n} off" for n in loaded)


def message_text(text: str) -> str:
    """What to send for a line that is not a command (``//x`` sends ``/x``)."""
    return text[1:] if text.lstrip().startswith("//") else text


def parse_setting(arg: str) -> tuple[str, Any]:
    name, _, value = arg.partition(" ")
    name, value = name.strip().lower().replace("-", "_"), value.strip()
    option = SAMPLING.get(name)
    if option is None:
        raise CommandError(
            f"no setting named {name!r}" if name else "/set needs a setting and a value",
            hint="settings: " + ", ".join(SETTINGS),
        )
    if value.lower() in ("", "default", "none"):
        return name, None
    try:
        return name, option.parse(value, f"/set {name}")
    except OptionError as exc:
        back = "" if option.default is None else f" to {option.default}"
        raise CommandError(exc.message, hint=f"'/set {name} default' sets it back{back}") from None


def apply_setting(settings: dict[str, Any], setting: tuple[str, Any]) -> dict[str, Any]:
    """``settings`` with one changed (or removed, for a value of None)."""
    name, value = setting
    changed = {k: v for k, v in settings.items() if k != name}
    if value is not None:
        changed[name] = value
    return changed


def last_code_block(text: str) -> str | None:
    """The last fenced code block in a Markdown reply (without its fences), or None."""
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


def help_text() -> str:
    width = max(len(usage) for usage, _ in HELP)
    return "\n".join(f"{usage:<{width}}  {what}" for usage, what in HELP)
