"""Tool calls and reasoning: one module for every model family (issue 27).

- :mod:`.formats`: each family's markup, and :func:`detect` to pick one from a chat template;
- :mod:`.prompt`: the messages and template variables of a request with tools;
- :mod:`.grammar`: the grammar that keeps calls well formed (lazy for ``tool_choice=auto``);
- :mod:`.parser`: a reply's pieces split into content, reasoning and calls, as they stream.

Pure Python: no llama.cpp (the grammar is turned into GBNF through ``localllm.runtime``), no HTTP.
"""

from __future__ import annotations

from .formats import FORMATS, ToolFormat, detect
from .grammar import Constraint, constraint
from .parser import GenericParser, StreamParser
from .prompt import Prepared, prepare
from .types import ContentDelta, Event, ParsedReply, ReasoningDelta, Tool, ToolCall, ToolCallDelta, ToolChoice

__all__ = [
    "FORMATS",
    "Constraint",
    "ContentDelta",
    "Event",
    "GenericParser",
    "ParsedReply",
    "Prepared",
    "ReasoningDelta",
    "StreamParser",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolFormat",
    "constraint",
    "detect",
    "prepare",
]
