"""Slash commands: /set takes the limits every other surface has (issue 20)."""

from __future__ import annotations

import pytest

from localllm.app.options import check
from localllm.chat import commands
from localllm.errors import UsageError


@pytest.mark.parametrize(
    ("typed", "flag"),
    [("max_tokens -3", "--max-tokens"), ("top_p 50", "--top-p"), ("top_k -100", "--top-k"), ("min_p 2", "--min-p")],
)
def test_set_refuses_what_the_command_line_refuses(typed, flag):
    name, value = typed.split()
    with pytest.raises(commands.CommandError) as caught:
        commands.parse(f"/set {typed}")
    assert str(caught.value).startswith(f"/set {name} must be ") and caught.value.hint.startswith(
        f"'/set {name} default'"
    )
    with pytest.raises(UsageError, match=f"^{flag} must be "):
        check(**{name: float(value) if "." in value or name in ("top_p", "min_p") else int(value)})


def test_set_takes_a_value_in_range_and_default():
    assert commands.parse("/set top-k 0").setting == ("top_k", 0)
    assert commands.parse("/set repeat_penalty 1.1").setting == ("repeat_penalty", 1.1)
    assert commands.parse("/set temperature 0").setting == ("temperature", 0.0)
    assert commands.parse("/set max_tokens default").setting == ("max_tokens", None)
    with pytest.raises(commands.CommandError, match="not x"):
        commands.parse("/set seed x")
    with pytest.raises(commands.CommandError, match="no setting named 'ctx'"):
        commands.parse("/set ctx 4096")
