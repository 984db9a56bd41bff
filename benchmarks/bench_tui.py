"""TUI responsiveness: streaming lag and event-loop stalls, first frame, opening a long chat.

    PYTHONPATH=. python benchmarks/bench_tui.py [--runs 3]

1. A scripted engine (same interface as engine.Model) streams a 2,000-token reply at 1,000
   tokens/s into the chat screen (headless, 80x24). Measured: the delay from the last token leaving
   the engine to the end of the reply being in the Markdown widget, and the longest stall of the
   event loop while streaming (a 5 ms ticker in the app's loop; a stall is how late it woke).
2. First frame: ``python -m localllm`` in a pseudo-terminal; time until the models screen's text
   is written to the terminal.
3. A saved conversation of 500 messages: time from asking the app to open it until its last
   message is on screen (headless), and until all 500 are mounted after "show earlier".

Prints a table; figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.scripted_engine import FakeServices, ScriptedModel, pieces_of  # noqa: E402

from localllm.chat.history import History
from localllm.tui import chat_screen as chat_module
from localllm.tui.app import make_app
from localllm.tui.chat_screen import ChatScreen, MessageView
from localllm.tui.services import ChatTarget

TARGET = ChatTarget("scripted:Q4_K_M", Path("scripted.gguf"), "Q4_K_M")


def long_reply(tokens: int) -> str:
    """Markdown with paragraphs, a list and code blocks, ``tokens`` pieces long."""
    words = []
    n = 0
    while len(words) < tokens:
        n += 1
        if n % 7 == 0:
            words += ["\n\n```python\n", "def", " f(x):\n", "   ", " return", " x", " *", f" {n}\n", "```\n\n"]
        elif n % 5 == 0:
            words += ["\n\n-", " item", f" {n}", " with", " **bold**", " text\n"]
        else:
            words += [f" word{n}"] * 9 + [".\n\n" if n % 3 == 0 else "."]
    text = "".join(words[:tokens])
    assert len(pieces_of(text)) >= tokens * 0.8
    return text


async def _stream_once(tokens: int, rate: float) -> dict[str, float]:
    reply = long_reply(tokens)
    n_pieces = len(pieces_of(reply))
    model = ScriptedModel([reply], tokens_per_s=rate, n_ctx=tokens * 4)
    app = make_app(services=FakeServices(model), history=History(Path(tempfile.mkdtemp()) / "h.sqlite3"), chat=TARGET)
    shown_at: list[tuple[float, int]] = []
    original_flush = ChatScreen.flush

    async def timed_flush(self):
        await original_flush(self)
        view = self._stream_view
        if view is not None:
            shown_at.append((time.perf_counter(), len(view.markdown.source)))

    ChatScreen.flush = timed_flush
    stalls: list[float] = []
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = next(s for s in app.screen_stack if isinstance(s, ChatScreen))
            while screen.loading:
                await pilot.pause(0.01)
            running = True

            async def ticker():
                while running:
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    stalls.append(time.perf_counter() - before - 0.005)

            task = asyncio.get_running_loop().create_task(ticker())
            await pilot.press(*"go", "enter")
            while not screen.generating:
                await pilot.pause(0.001)
            while screen.generating:
                await asyncio.sleep(0.01)
            running = False
            await task
            view = list(screen.query(MessageView))[-1]
            assert view.markdown.source == reply, "the reply on screen differs from the engine's"
    finally:
        ChatScreen.flush = original_flush
    last_token = model.emitted[-1]
    complete = next(t for t, length in shown_at if length >= len(reply))
    first = model.emitted[0]
    return {
        "pieces": n_pieces,
        "engine_rate": (n_pieces - 1) / (model.emitted[-1] - first),
        "end_lag_ms": (complete - last_token) * 1000,
        "max_stall_ms": max(stalls) * 1000,
        "p99_stall_ms": sorted(stalls)[int(len(stalls) * 0.99)] * 1000,
        "updates": len(shown_at),
    }


def first_frame(runs: int) -> list[float]:
    """Seconds from exec to the models screen's text on a pseudo-terminal."""
    times = []
    for _ in range(runs):
        home = tempfile.mkdtemp()
        env = {**os.environ, "LOCALLLM_HOME": home, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color",
               "COLUMNS": "80", "LINES": "24"}
        started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(sys.executable, [sys.executable, "-m", "localllm"], env)
        seen = b""
        elapsed = None
        while time.perf_counter() - started < 15:
            ready, _, _ = select.select([fd], [], [], 0.01)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                if b"Models" in seen and b"smollm2" in seen:
                    elapsed = time.perf_counter() - started
                    break
        os.write(fd, b"\x11")  # ctrl+q
        deadline = time.time() + 5
        while time.time() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            try:
                select.select([fd], [], [], 0.05) and os.read(fd, 65536)
            except OSError:
                pass  # the pty closes as the child exits
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
        if elapsed is None:
            raise RuntimeError("the models screen never appeared")
        times.append(elapsed)
    return times


async def _open_long(messages: int) -> dict[str, float]:
    db = History(Path(tempfile.mkdtemp()) / "h.sqlite3")
    conv = db.create(title="Long chat")
    for n in range(messages // 2):
        db.add_message(conv, "user", f"Question {n}: how does *this* work?")
        db.add_message(conv, "assistant", f"Answer {n}:\n\n- point one\n- point two\n\n```python\nprint({n})\n```")
    app = make_app(services=FakeServices(), history=db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        started = time.perf_counter()
        app.open_chat(None, conv)
        last = f"print({messages // 2 - 1})"

        def shown() -> bool:
            screens = [s for s in app.screen_stack if isinstance(s, ChatScreen)]
            if not screens:
                return False
            views = list(screens[0].query(MessageView))
            return bool(views) and views[-1].is_mounted and last in views[-1].markdown.source and views[-1].region.height > 0

        while not shown():
            await asyncio.sleep(0.001)
        await pilot.pause()  # one refresh: on screen
        opened = time.perf_counter() - started
        screen = app.screen
        started = time.perf_counter()
        button = screen.query_one("#show-earlier")
        button.press()
        while len(screen.query(MessageView)) < messages:
            await asyncio.sleep(0.005)
        await pilot.pause()
        all_shown = time.perf_counter() - started
    return {"open_s": opened, "show_all_s": all_shown, "shown_first": chat_module.SHOWN_MESSAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()

    stream = [asyncio.run(_stream_once(args.tokens, args.rate)) for _ in range(args.runs)]
    frames = first_frame(args.runs)
    longs = [asyncio.run(_open_long(500)) for _ in range(args.runs)]

    def med(values):
        return statistics.median(values)

    rows = [
        ("streamed pieces / engine rate", f"{stream[0]['pieces']} at {med([s['engine_rate'] for s in stream]):.0f} tok/s", ""),
        ("end of reply on screen after last token", f"{med([s['end_lag_ms'] for s in stream]):.0f} ms",
         f"max {max(s['end_lag_ms'] for s in stream):.0f} ms; target < 100 ms"),
        ("longest event-loop stall while streaming", f"{med([s['max_stall_ms'] for s in stream]):.0f} ms",
         f"max {max(s['max_stall_ms'] for s in stream):.0f} ms, p99 {med([s['p99_stall_ms'] for s in stream]):.0f} ms; target < 50 ms"),
        ("transcript updates per reply", f"{med([s['updates'] for s in stream]):.0f}", "50 ms batching"),
        ("first frame after `localllm`", f"{med(frames):.2f} s", f"max {max(frames):.2f} s; target < 1 s"),
        ("open a 500-message chat (last messages on screen)", f"{med([r['open_s'] for r in longs]):.2f} s",
         f"max {max(r['open_s'] for r in longs):.2f} s; target < 1 s; shows the last {longs[0]['shown_first']}"),
        ("then mount all 500 ('show earlier')", f"{med([r['show_all_s'] for r in longs]):.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>16}  notes   ({args.runs} runs)")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


if __name__ == "__main__":
    main()
