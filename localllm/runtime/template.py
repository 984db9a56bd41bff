"""A model's chat template (Jinja2, from its GGUF), rendered in a sandbox bounded in time and size.

The template comes from the model file, so it is untrusted code: it runs in Jinja2's immutable
sandbox (no ``__class__``, ``__globals__``, no mutation of the values given to it), as
llama-cpp-python's ``Jinja2ChatFormatter`` does, with the same names (``messages``, ``bos_token``,
``eos_token``, ``add_generation_prompt``, ``raise_exception``, ``strftime_now``) and the same
extensions. On top of that sandbox:

- time: the template's code is traced, and rendering stops after :data:`MAX_SECONDS` or
  :data:`MAX_STEPS` lines executed (nested loops whose product is huge, runaway recursion);
- size: ``*``, ``+`` and ``**`` and the padding filters refuse results longer than
  :data:`MAX_CHARS`, and so does the output;
- errors: a syntax error, a failed render or a bound reached is one :class:`GenerationError` line.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from localllm.errors import GenerationError

__all__ = ["ChatTemplate", "MAX_CHARS", "MAX_SECONDS", "MAX_STEPS"]

MAX_CHARS = 32 << 20  # characters in any string the template builds, and in the prompt
MAX_SECONDS = 10.0
MAX_STEPS = 5_000_000  # lines of template code executed
_HUGE_WIDTH = re.compile(r"\d{6,}")  # a format width of a million or more


class _Bound(Exception):
    """A limit was reached while rendering."""


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class IgnoreGenerationTags(jinja2.ext.Extension):
        """Pass-through for HuggingFace's ``{% generation %}`` tag (as llama-cpp-python does)."""

        tags = {"generation"}

        def parse(self, parser):
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def _sized(value: object) -> object:
        if isinstance(value, (str, list, tuple)) and len(value) > MAX_CHARS:
            raise SecurityError(f"the template built a value of more than {MAX_CHARS} items")
        return value

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_CHARS:
                        raise SecurityError(f"the template built a value of more than {MAX_CHARS} items")
            if operator == "**" and isinstance(right, int) and abs(right) > 1024 and left not in (0, 1, -1):
                raise SecurityError("the template raised a number to a huge power")
            return _sized(super().call_binop(context, operator, left, right))

        def wrap_str_format(self, value):
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            fmt = getattr(value, "__self__", "")

            def bounded(*args, **kwargs):
                if _HUGE_WIDTH.search(str(fmt)):
                    raise SecurityError("the template formats with a huge width")
                return _sized(wrapped(*args, **kwargs))

            return bounded

    env = BoundedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    for name in ("center", "indent", "format", "truncate", "wordwrap"):
        env.filters[name] = _bounded_filter(env.filters[name], SecurityError)
    return env


def _bounded_filter(filter_, error):
    def bounded(value, *args, **kwargs):
        for arg in (*args, *kwargs.values()):
            if (isinstance(arg, int) and abs(arg) > MAX_CHARS) or (isinstance(arg, str) and _HUGE_WIDTH.search(arg)):
                raise error("the template asked a filter for a huge size")
        if isinstance(value, str) and _HUGE_WIDTH.search(value) and filter_.__name__ == "do_format":
            raise error("the template formats with a huge width")
        result = filter_(value, *args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_CHARS:
            raise error(f"the template built a value of more than {MAX_CHARS} items")
        return result

    bounded.__name__ = filter_.__name__
    for attr in ("jinja_pass_arg",):
        if hasattr(filter_, attr):
            setattr(bounded, attr, getattr(filter_, attr))
    return bounded


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(f: str) -> str:
    return datetime.now().strftime(f)


def _raise_exception(message: str):
    raise ValueError(message)


class ChatTemplate:
    """A compiled chat template; :meth:`render` gives the prompt for a list of messages."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        import jinja2

        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise GenerationError(
                f"the model's chat template has a syntax error on line {exc.lineno}: {exc.message}",
                hint="the model file's tokenizer.chat_template is broken",
            ) from None
        except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # a template too deep to compile
            raise GenerationError(f"the model's chat template cannot be compiled: {type(exc).__name__}") from None

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True, **template_vars: Any
    ) -> str:
        """The prompt for ``messages``; ``template_vars`` (``tools``, ``enable_thinking``, a
        client's ``chat_template_kwargs``) are further names the template sees."""
        context = dict(
            messages=list(messages),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=_raise_exception,
            strftime_now=_strftime_now,
            functions=None,
            function_call=None,
            tools=None,
            tool_choice=None,
        )
        for name, value in template_vars.items():
            if name not in ("messages", "raise_exception", "strftime_now"):
                context[name] = value
        try:
            return self._bounded(context)
        except _Bound as exc:
            raise GenerationError(f"the model's chat template {exc}") from None
        except Exception as exc:  # jinja2 and the template's own raise_exception raise many kinds
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise GenerationError(f"the model's chat template failed: {text}") from None

    def _bounded(self, context: dict[str, Any]) -> str:
        deadline = time.monotonic() + MAX_SECONDS
        steps = 0

        def local(frame, event, arg):
            nonlocal steps
            steps += 1
            if steps > MAX_STEPS:
                raise _Bound(f"ran more than {MAX_STEPS} steps (loops too long)")
            if not steps & 0x3FF and time.monotonic() > deadline:
                raise _Bound(f"took more than {MAX_SECONDS:g} s")
            return local

        def tracer(frame, event, arg):
            if frame.f_code.co_filename == "<template>":
                return local(frame, event, arg)
            return None

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            parts: list[str] = []
            size = 0
            for chunk in self._template.generate(**context):
                size += len(chunk)
                if size > MAX_CHARS:
                    raise _Bound(f"wrote more than {MAX_CHARS} characters")
                parts.append(chunk)
        finally:
            sys.settrace(previous)
        return "".join(parts)
