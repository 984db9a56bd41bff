"""A reply's text, piece by piece, split into content, reasoning and tool calls.

Text that may be the start of a marker (``<tool_call>``, ``<think>``, a family's channel header) is
held back until the next pieces decide it. A block of calls that cannot be parsed (broken JSON, a
function that was not offered) comes back as content, with a warning: never dropped, never an
error. Reasoning that a template opens for the model (a prompt that ends in ``<think>``) starts the
parser in reasoning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .types import ContentDelta, Event, ParsedReply, ReasoningDelta, Tool, ToolCall, ToolCallDelta, new_call_id

if TYPE_CHECKING:
    from .formats import Open, RawCall, ToolFormat

__all__ = ["GenericParser", "StreamParser", "UNPARSED_WARNING"]

UNPARSED_WARNING = "a tool call could not be parsed; kept as content"
CUT_WARNING = "the reply was cut off in a tool call; the calls that were whole are kept"


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    """The length of the longest end of ``text`` that is the beginning of a marker."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


class StreamParser:
    """Feed the pieces of one reply; take the events; :meth:`reply` after :meth:`finish`."""

    def __init__(self, fmt: ToolFormat, tools: Sequence[Tool] = (), *, in_reasoning: bool = False) -> None:
        self.fmt = fmt
        self.tools = {t.name: t for t in tools}
        self._mode = "reasoning" if in_reasoning and fmt.think else "content"
        self._buf = ""
        self._open: Open | None = None  # the marker of the block being read
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        self._warnings: list[str] = []
        self._started = False  # content other than whitespace was given (anchored markers no longer open)
        self._pending_ws = ""  # whitespace held: dropped if only calls follow
        self._lstrip = False  # drop the whitespace that follows a closed reasoning block
        self._events: list[Event] = []
        self._finished = False

    # -- the public side --------------------------------------------------------------------------

    def feed(self, piece: str) -> list[Event]:
        self._buf += piece
        self._scan(final=False)
        return self._take()

    def finish(self) -> list[Event]:
        if not self._finished:
            self._finished = True
            self._scan(final=True)
            self._end()
        return self._take()

    def reply(self) -> ParsedReply:
        content = "".join(self._content)
        if self._calls and not content.strip():
            content = ""
        return ParsedReply(content, "".join(self._reasoning).strip(), tuple(self._calls), tuple(self._warnings))

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self._warnings)

    # -- scanning ---------------------------------------------------------------------------------

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _content_markers(self) -> list[tuple[str, str, Open | None]]:
        fmt = self.fmt
        found: list[tuple[str, str, Open | None]] = []
        if fmt.think is not None:
            found.append((fmt.think[0], "think", None))
        if self.tools:
            found += [(o.marker, "open", o) for o in fmt.opens if not (o.anchored and self._started)]
        found += [(d, "drop", None) for d in fmt.drop]
        return found

    def _scan(self, *, final: bool) -> None:
        while self._buf:
            if self._mode == "content":
                if not self._scan_content(final):
                    return
            elif self._mode == "reasoning":
                if not self._scan_until(self.fmt.think[1] if self.fmt.think else "", final, reasoning=True):
                    return
            elif not self._scan_block(final):
                return

    def _scan_content(self, final: bool) -> bool:
        """Handle the first marker in the buffer; False when it holds none (the rest is given or held)."""
        markers = self._content_markers()
        best: tuple[int, str, str, Open | None] | None = None
        for marker, kind, opener in markers:
            at = self._buf.find(marker)
            if at < 0:
                continue
            if opener is not None and opener.anchored and (self._buf[:at].strip() or self._started):
                continue
            if best is None or at < best[0] or (at == best[0] and len(marker) > len(best[1])):
                best = (at, marker, kind, opener)
        if best is None:
            hold = 0 if final else _partial_suffix(self._buf, [m for m, _, _ in markers])
            self._give_content(self._buf[: len(self._buf) - hold])
            self._buf = self._buf[len(self._buf) - hold :]
            return False
        at, marker, kind, opener = best
        self._give_content(self._buf[:at])
        self._buf = self._buf[at + len(marker) :]
        if kind == "think":
            self._mode = "reasoning"
        elif kind == "open":
            assert opener is not None
            self._mode, self._open = "block", opener
            if opener.keep:
                self._buf = marker + self._buf
        return True

    def _scan_until(self, close: str, final: bool, *, reasoning: bool) -> bool:
        at = self._buf.find(close) if close else -1
        if at < 0:
            hold = 0 if final else _partial_suffix(self._buf, [close])
            self._give_reasoning(self._buf[: len(self._buf) - hold])
            self._buf = self._buf[len(self._buf) - hold :]
            return False
        self._give_reasoning(self._buf[:at])
        self._buf = self._buf[at + len(close) :]
        self._mode, self._lstrip = "content", True
        return True

    def _scan_block(self, final: bool) -> bool:
        close = self.fmt.close
        at = self._buf.find(close) if close else -1
        if at < 0:
            if final:
                block, self._buf = self._buf, ""
                self._block_done(block, None)
            return False
        block, self._buf = self._buf[:at], self._buf[at + len(close or "") :]
        self._block_done(block, close)
        self._mode = "content"
        return True

    def _end(self) -> None:
        if self._pending_ws and not self._calls:
            self._emit_content(self._pending_ws)
        self._pending_ws = ""

    # -- giving ------------------------------------------------------------------------------------

    def _give_content(self, text: str) -> None:
        if self._lstrip:
            text = text.lstrip()
            if not text:
                return
            self._lstrip = False
        if not text:
            return
        body = text.rstrip()
        if not body:
            self._pending_ws += text
            return
        text, self._pending_ws = self._pending_ws + body, text[len(body) :]  # trailing whitespace waits
        self._started = True
        self._emit_content(text)

    def _emit_content(self, text: str) -> None:
        self._content.append(text)
        self._events.append(ContentDelta(text))

    def _give_reasoning(self, text: str) -> None:
        if text:
            self._reasoning.append(text)
            self._events.append(ReasoningDelta(text))

    def _block_done(self, block: str, close: str | None) -> None:
        opener = self._open
        assert opener is not None and self.fmt.decode is not None
        try:
            calls = [self._checked(raw) for raw in self.fmt.decode(block)]
        except (ValueError, TypeError, KeyError, RecursionError):
            if close is None and self.fmt.close is not None and self._calls:
                # cut off (max_tokens) in a further call after whole ones: the calls stand
                self._warnings.append(CUT_WARNING)
                self._pending_ws = ""
                return
            text = ("" if opener.keep else opener.marker) + block + (close or "")
            self._warnings.append(UNPARSED_WARNING)
            self._started = True
            self._emit_content(self._pending_ws + text)
            self._pending_ws = ""
            return
        self._pending_ws = ""
        self._give_calls(calls)

    def _give_calls(self, calls: list[ToolCall]) -> None:
        for call in calls:
            self._events.append(ToolCallDelta(len(self._calls), call.id, call.name, call.arguments))
            self._calls.append(call)

    def _checked(self, raw: RawCall) -> ToolCall:
        """A call the model wrote, checked: an offered function, arguments that are a JSON object."""
        name, args, ident = raw
        if name not in self.tools:
            raise ValueError(f"the model called {name!r}, which was not offered")
        if isinstance(args, str):
            args = json.loads(args) if args.strip() else {}
        if not isinstance(args, dict):
            raise ValueError("the arguments are not an object")
        return ToolCall(ident or new_call_id(), name, json.dumps(args, ensure_ascii=False))


_RESPONSE_HEAD = re.compile(r'\s*\{\s*"response"\s*:\s*"')
_CALLS_HEAD = re.compile(r'\s*\{\s*"tool_calls"\s*:\s*\[')


def _whole_items(text: str) -> list[Any]:
    """The JSON values that are whole at the start of a cut-off list's items."""
    decoder, i = json.JSONDecoder(), 0
    items: list[Any] = []
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        try:
            item, i = decoder.raw_decode(text, i)
        except ValueError:
            return items
        items.append(item)


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class GenericParser(StreamParser):
    """The generic format: the reply is ``{"tool_calls": [{"name", "arguments"}...]}`` or
    ``{"response": "text"}`` (the grammar sees to it); the response's text streams as it comes."""

    def __init__(self, fmt: ToolFormat, tools: Sequence[Tool] = (), *, in_reasoning: bool = False) -> None:
        super().__init__(fmt, tools, in_reasoning=in_reasoning)
        self._json = ""  # the reply's JSON so far
        self._pos: int | None = None  # where the response string's unread text starts
        self._closed = False  # the response string has ended

    def _give_content(self, text: str) -> None:
        if not self.tools:
            super()._give_content(text)
            return
        self._json += text
        if self._pos is None:
            m = _RESPONSE_HEAD.match(self._json)
            if m is None:
                return
            self._pos = m.end()
        self._stream_response()

    def _stream_response(self) -> None:
        out, s, i = [], self._json, self._pos or 0
        while i < len(s) and not self._closed:
            c = s[i]
            if c == '"':
                self._closed = True
                i += 1
            elif c == "\\":
                if i + 1 >= len(s):
                    break
                e = s[i + 1]
                if e == "u":
                    if i + 6 > len(s):
                        break
                    try:
                        out.append(chr(int(s[i + 2 : i + 6], 16)))
                    except ValueError:
                        out.append(s[i : i + 6])
                    i += 6
                else:
                    out.append(_ESCAPES.get(e, e))
                    i += 2
            else:
                out.append(c)
                i += 1
        self._pos = i
        text = "".join(out)
        if text:
            self._emit_content(text)

    def _end(self) -> None:
        if not self.tools:
            super()._end()
            return
        raw = self._json
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if self._pos is not None:  # a response: its text has streamed (a cut-off string included)
            if not isinstance(value, dict) or set(value) != {"response"}:
                tail = raw[self._pos :] if not self._closed else ""
                if tail:
                    self._emit_content(tail)
            return
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
            try:
                calls = [self._checked(self._raw(c)) for c in value["tool_calls"]]
            except (ValueError, TypeError, KeyError, RecursionError):
                calls = []
            if calls:
                self._give_calls(calls)
                return
        head = _CALLS_HEAD.match(raw) if value is None else None
        if head is not None:  # cut off (max_tokens): the calls that are whole
            try:
                calls = [self._checked(self._raw(c)) for c in _whole_items(raw[head.end() :])]
            except (ValueError, TypeError, KeyError, RecursionError):
                calls = []
            if calls:
                self._warnings.append(CUT_WARNING)
                self._give_calls(calls)
                return
        if isinstance(value, dict) and isinstance(value.get("response"), str):
            self._emit_content(value["response"])
            return
        if raw.strip():
            if raw.lstrip().startswith("{"):
                self._warnings.append(UNPARSED_WARNING)
            self._emit_content(raw)

    @staticmethod
    def _raw(obj: Any) -> RawCall:
        from .formats import _named

        if not isinstance(obj, dict):
            raise ValueError("a call that is not an object")
        return _named(obj)
