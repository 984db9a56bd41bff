"""Issue 22, item 5: a streaming reply is drawn cheaply (a piece that only lengthens a paragraph's
last line redraws that line, without a layout of the screen) and no more often than the UI's CPU
budget allows (the pacer); what is drawn is the same as drawing the whole text at once."""

from __future__ import annotations

import re

import pytest
from textual.app import App, ComposeResult

from localllm.tui.pacing import Pacer
from localllm.tui.transcript import ReplyMarkdown, reply_parser

pytestmark = pytest.mark.anyio

# a paragraph that wraps several times at 40 columns, a word restyled when its closing ** arrives,
# then a second paragraph
TEXT = (
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm window sill and "
    "**the bird sings loudly from the top of the old oak tree** and flies off.\n\nA second paragraph, short."
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Reply(App):
    CSS = "ReplyMarkdown { width: 40; }"

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield ReplyMarkdown(self.text, parser_factory=reply_parser)


def screen_text(app: App) -> str:
    return "".join(re.findall(r">([^<]*)</text>", app.export_screenshot())).replace("&#160;", " ")


async def drawn_whole(text: str) -> str:
    app = Reply(text)
    async with app.run_test(size=(50, 20)) as pilot:
        await pilot.pause()
        return screen_text(app)


def pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


async def test_a_reply_drawn_piece_by_piece_shows_what_drawing_it_whole_shows():
    app = Reply()
    streamed = ""
    checkpoints = {}
    async with app.run_test(size=(50, 20)) as pilot:
        markdown = app.query_one(ReplyMarkdown)
        await pilot.pause()
        for piece in pieces(TEXT):
            streamed += piece
            await markdown.append(piece)
            await pilot.pause()
            # before and after the closing ** restyles words on an earlier line, and at the end
            if streamed.endswith(("the old oak", "tree**", "flies", "short.")):
                checkpoints[streamed] = screen_text(app)
    assert len(checkpoints) == 4
    for prefix, shown in checkpoints.items():
        assert shown == await drawn_whole(prefix), prefix
    assert "**" not in shown and "sings loudly" in shown and "oak tree" in shown


def test_cheap_draws_keep_the_fastest_pace():
    pacer = Pacer()
    now = cpu = 0.0
    for _ in range(50):
        assert pacer.due(now)
        pacer.drew(now, cpu)
        now, cpu = now + pacer.interval, cpu + 0.002  # 2 ms a draw: 2% of a core
    assert pacer.interval == pacer.fastest


def test_expensive_draws_are_spaced_out_until_the_budget_is_met_then_speed_up_again():
    pacer = Pacer()
    now = cpu = 0.0
    shares = []
    for _ in range(40):  # 30 ms a draw: 30% of a core at 10 draws a second
        pacer.drew(now, cpu)
        wait = pacer.interval
        assert pacer.due(now + wait) and (wait < 0.2 or not pacer.due(now + 0.1))  # ticks in between draw nothing
        now, cpu = now + wait, cpu + 0.030
        shares.append(0.030 / wait)
    assert shares[0] > 0.25 and max(shares[-10:]) <= pacer.budget * 1.05
    assert pacer.fastest < pacer.interval < pacer.slowest
    for _ in range(40):  # drawing got cheap again (the code block ended)
        pacer.drew(now, cpu)
        now, cpu = now + pacer.interval, cpu + 0.002
    assert pacer.interval == pacer.fastest


def test_drawing_never_waits_longer_than_the_slowest_pace():
    pacer = Pacer()
    now = cpu = 0.0
    for _ in range(30):  # each draw costs more than the budget at any pace
        pacer.drew(now, cpu)
        now, cpu = now + pacer.interval, cpu + 0.5
    assert pacer.interval == pacer.slowest
    pacer.reset()  # a new reply starts at the fastest pace
    assert pacer.interval == pacer.fastest and pacer.due(now)
