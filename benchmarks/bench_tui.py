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
4. Following the stream (during 1): every 20 ms, how far the view is above the end of the transcript;
   the longest time the end of the reply was off screen.
5. With the real SmolLM2 (``--model``, default: the test cache's GGUF): a saved chat of ~2,000 tokens
   is reopened in a fresh app and one more message sent. "Before" is the first reply with no saved
   KV cache (what every reopen cost before issue 12); "after" is the next reopen, which loads the
   cache the previous reply saved. Measured: time to first token (the runtime's) and from Enter to
   the first text on screen.
6. At the context limit (issue 22, ``--only limit``, the real SmolLM2 at ``--limit-ctx``): a chat is
   grown past its context, then 5 more turns are sent through ``ChatSession`` as both shells do.
   Measured: each turn's time to first token and how many old messages it left out, against a
   short chat's first token (target: each under 2x). Old turns leave in large steps, so most turns
   at the limit reuse the KV cache of the one before.
7. UI CPU while streaming (``--only cpu``): the scripted engine at 30 tok/s for 10 s into the chat
   screen (headless, 100x30), for two shapes of reply: one long paragraph, and Markdown with
   paragraphs, one-item lists and a code block every few lines (denser in blocks than most replies).
   Measured: the UI thread's CPU time over the wall time (its share of a core; target < 10%), the
   whole process's (the engine thread only sleeps), and how many times a second the reply was drawn.

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

from support.scripted_engine import FakeServices, ScriptedModel, pieces_of

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

            transcript = screen.query_one("#transcript")
            behind: list[tuple[float, float]] = []  # (time, lines between the view and the end)

            async def follower():
                while running:
                    behind.append((time.perf_counter(), transcript.max_scroll_y - transcript.scroll_y))
                    await asyncio.sleep(0.02)

            task = asyncio.get_running_loop().create_task(ticker())
            follow_task = asyncio.get_running_loop().create_task(follower())
            await pilot.press(*"go", "enter")
            while not screen.generating:
                await pilot.pause(0.001)
            while screen.generating:
                await asyncio.sleep(0.01)
            running = False
            await task
            await follow_task
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
        "max_lines_behind": max(b for _, b in behind),
        "longest_off_end_ms": _longest_off_end(behind) * 1000,
    }


def _longest_off_end(behind: list[tuple[float, float]]) -> float:
    """The longest stretch of samples in which the view was more than one line above the end."""
    longest, since = 0.0, None
    for at, lines in behind:
        if lines > 1:
            since = at if since is None else since
            longest = max(longest, at - since)
        else:
            since = None
    return longest


def first_frame(runs: int) -> list[float]:
    """Seconds from exec to the models screen's text on a pseudo-terminal."""
    times = []
    for _ in range(runs):
        home = tempfile.mkdtemp()
        env = {
            **os.environ,
            "LOCALLLM_HOME": home,
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "COLUMNS": "80",
            "LINES": "24",
        }
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
            return (
                bool(views)
                and views[-1].is_mounted
                and last in views[-1].markdown.source
                and views[-1].region.height > 0
            )

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


def long_chat(db: History, tokens: int) -> int:
    """A saved conversation of about ``tokens`` SmolLM2 tokens (some 70 per exchange)."""
    conv = db.create(title="Long chat", model="smollm2")
    for n in range(max(1, tokens // 70)):
        db.add_message(
            conv,
            "user",
            f"Question {n}: tell me something about rivers, bridges and boats "
            "in old European cities, in two sentences.",
        )
        db.add_message(
            conv,
            "assistant",
            f"Answer {n}: rivers carried boats through old cities, and bridges "
            "joined their banks; trade and stories crossed both ways for "
            "centuries, as ferries do today.",
        )
    return conv


async def _reopen_once(model: Path, db_path: Path, conv: int) -> dict[str, float]:
    """Open the saved chat in a fresh app with the real model, send one message: its first token."""
    from localllm.tui.app import ChatDefaults
    from localllm.tui.services import Services

    defaults = ChatDefaults(n_ctx=4096, n_gpu_layers=0, settings={"temperature": 0.0, "max_tokens": 8})
    target = ChatTarget("smollm2", model)
    app = make_app(services=Services(), history_path=db_path, chat=target, conversation_id=conv, defaults=defaults)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = next(s for s in app.screen_stack if isinstance(s, ChatScreen))
        while screen.loading:
            await pilot.pause(0.01)
        await pilot.press(*"One more?")
        started = time.perf_counter()
        await pilot.press("enter")
        while not (screen._stream_view is not None and screen._stream_view.content):
            if not screen.generating and time.perf_counter() - started > 1:
                break  # the reply ended (or failed) without text
            await asyncio.sleep(0.002)
        on_screen = time.perf_counter() - started
        while screen.generating:
            await asyncio.sleep(0.01)
        while app.holder.lock.locked():  # the cache is saved after the reply
            await asyncio.sleep(0.01)
        stats = app.history.get(conv).messages[-1].stats or {}
    return {
        "ttft_s": stats.get("ttft_s", float("nan")),
        "on_screen_s": on_screen,
        "prompt_tokens": stats.get("prompt_tokens", 0),
        "cached_tokens": stats.get("cached_tokens", 0),
    }


def reopen_real(model: Path, tokens: int, runs: int) -> tuple[list[dict], list[dict]]:
    """(before, after) for each run, each in a fresh data directory."""
    before, after = [], []
    for _ in range(runs):
        home = Path(tempfile.mkdtemp())
        os.environ["LOCALLLM_HOME"] = str(home)
        db_path = home / "h.sqlite3"
        db = History(db_path)
        conv = long_chat(db, tokens)
        db.close()
        before.append(asyncio.run(_reopen_once(model, db_path, conv)))
        after.append(asyncio.run(_reopen_once(model, db_path, conv)))
    return before, after


def at_the_limit(model_path: Path, n_ctx: int, turns: int = 5) -> tuple[float, list[dict]]:
    """(a short chat's first token, [{ttft_s, dropped, prompt_tokens}] for ``turns`` turns at the limit)."""
    from localllm import app
    from localllm.chat.session import ChatSession
    from localllm.models.resolve import ResolvedModel

    os.environ["LOCALLLM_HOME"] = tempfile.mkdtemp()
    db = History(Path(os.environ["LOCALLLM_HOME"]) / "h.sqlite3")
    sampling = app.sampling(temperature=0.0, max_tokens=32)
    resolved = ResolvedModel(path=model_path, label="smollm2")
    with app.open_model(resolved=resolved, n_ctx=n_ctx, n_gpu_layers=0) as model:
        short = ChatSession(db, model_label="smollm2", model_path=model_path)
        short.send("What is the capital of France?")
        short_ttft = short.reply().stream(model, sampling).stats["ttft_s"]
        chat = ChatSession(db, model_label="smollm2", model_path=model_path, system_prompt="Be brief.")
        n, dropped = 0, 0
        while not dropped:  # grow the chat until its first turn leaves the context
            n += 1
            chat.send(f"Tell me fact {n} about rivers, bridges and the towns built along them, in detail.")
            dropped = chat.reply().stream(model, sampling).dropped
        rows = []
        for k in range(turns):
            chat.send(f"And fact {n + k + 1}, please, about another river of Europe.")
            reply = chat.reply().stream(model, sampling)
            rows.append(
                {
                    "ttft_s": reply.stats["ttft_s"],
                    "dropped": reply.dropped,
                    "prompt_tokens": reply.stats["prompt_tokens"],
                }
            )
    db.close()
    return short_ttft, rows


async def _ui_cpu(reply: str, rate: float = 30.0) -> tuple[float, float, float]:
    """(UI thread's share of a core, the process's, draws a second) while ``reply`` streams."""
    model = ScriptedModel([reply], tokens_per_s=rate)
    app = make_app(services=FakeServices(model), history=History(Path(tempfile.mkdtemp()) / "h.sqlite3"), chat=TARGET)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = next(s for s in app.screen_stack if isinstance(s, ChatScreen))
        while screen.loading:
            await pilot.pause(0.05)
        await pilot.click("#prompt")
        await pilot.press(*"go", "enter")
        await pilot.pause(0.5)  # the reply has begun
        draws = 0
        flush = screen.flush

        async def counted() -> None:
            nonlocal draws
            draws += 1
            await flush()

        screen.flush = counted  # type: ignore[method-assign]
        # the app runs in this thread: thread_time is the UI thread's CPU (the measuring loop's own
        # two wake-ups a second included)
        ui, cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
        while screen.generating:
            await pilot.pause(0.5)
        wall = time.perf_counter() - wall
        return (time.thread_time() - ui) / wall, (time.process_time() - cpu) / wall, draws / wall


def print_limit(args) -> None:
    short, rows = at_the_limit(args.model, args.limit_ctx)
    out = [("short chat: first token", f"{short:.2f} s", "")]
    for k, r in enumerate(rows, 1):
        out.append(
            (
                f"turn {k} at the limit ({args.limit_ctx}): first token",
                f"{r['ttft_s']:.2f} s",
                f"{r['ttft_s'] / short:.1f}x short; prompt {r['prompt_tokens']} tokens, {r['dropped']} left out; target < 2x",
            )
        )
    print_rows(out, 1)


def print_cpu(args) -> None:
    rate, seconds = 30.0, 10.0
    shapes = {
        "one paragraph": " ".join(f"word{n}" for n in range(int(rate * seconds))),
        "Markdown (lists, code)": long_reply(int(rate * seconds)),
    }
    rows = []
    for name, reply in shapes.items():
        runs = [asyncio.run(_ui_cpu(reply, rate)) for _ in range(args.runs)]
        ui, proc, draws = (med([r[k] for r in runs]) for k in range(3))
        rows.append(
            (
                f"UI thread CPU, {name} at 30 tok/s",
                f"{ui:.1%}",
                f"max {max(r[0] for r in runs):.1%}; process {proc:.1%}; drawn {draws:.1f}/s; target < 10%",
            )
        )
    print_rows(rows, args.runs)


def default_model() -> Path | None:
    cache = Path(os.environ.get("LOCALLLM_TEST_CACHE", ROOT / ".cache" / "test-models"))
    return next(iter(sorted(cache.glob("*.gguf"))), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--model", type=Path, default=default_model(), help="a SmolLM2 GGUF (reopen test)")
    parser.add_argument("--chat-tokens", type=int, default=2000)
    parser.add_argument("--limit-ctx", type=int, default=2048, help="the context of the at-the-limit test")
    parser.add_argument("--only", choices=["stream", "reopen", "limit", "cpu"], help="run one part only")
    args = parser.parse_args()
    if args.only == "limit":
        return print_limit(args)
    if args.only == "cpu":
        return print_cpu(args)
    if args.only == "reopen":
        return print_reopen(args)
    if args.only == "stream":
        return print_rows(stream_rows(args), args.runs)

    rows = stream_rows(args)
    frames = first_frame(args.runs)
    longs = [asyncio.run(_open_long(500)) for _ in range(args.runs)]
    rows += [
        ("first frame after `localllm`", f"{med(frames):.2f} s", f"max {max(frames):.2f} s; target < 1 s"),
        (
            "open a 500-message chat (last messages on screen)",
            f"{med([r['open_s'] for r in longs]):.2f} s",
            f"max {max(r['open_s'] for r in longs):.2f} s; target < 1 s; shows the last {longs[0]['shown_first']}",
        ),
        ("then mount all 500 ('show earlier')", f"{med([r['show_all_s'] for r in longs]):.2f} s", ""),
    ]
    print_rows(rows, args.runs)
    if args.model is not None:
        print_reopen(args)


def med(values):
    return statistics.median(values)


def stream_rows(args) -> list[tuple[str, str, str]]:
    stream = [asyncio.run(_stream_once(args.tokens, args.rate)) for _ in range(args.runs)]
    return [
        (
            "streamed pieces / engine rate",
            f"{stream[0]['pieces']} at {med([s['engine_rate'] for s in stream]):.0f} tok/s",
            "",
        ),
        (
            "end of reply on screen after last token",
            f"{med([s['end_lag_ms'] for s in stream]):.0f} ms",
            f"max {max(s['end_lag_ms'] for s in stream):.0f} ms; target < 100 ms",
        ),
        (
            "longest event-loop stall while streaming",
            f"{med([s['max_stall_ms'] for s in stream]):.0f} ms",
            f"max {max(s['max_stall_ms'] for s in stream):.0f} ms, p99 {med([s['p99_stall_ms'] for s in stream]):.0f} ms; target < 50 ms",
        ),
        (
            "transcript updates per reply",
            f"{med([s['updates'] for s in stream]):.0f}",
            "paced: at most 10 a second, fewer when drawing is costly",
        ),
        (
            "follow: most lines the view was above the end",
            f"{med([s['max_lines_behind'] for s in stream]):.0f}",
            f"max {max(s['max_lines_behind'] for s in stream):.0f} (a flush's worth)",
        ),
        (
            "follow: longest time the end was off screen",
            f"{med([s['longest_off_end_ms'] for s in stream]):.0f} ms",
            f"max {max(s['longest_off_end_ms'] for s in stream):.0f} ms",
        ),
    ]


def print_rows(rows: list[tuple[str, str, str]], runs: int) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>16}  notes   ({runs} runs)")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


def print_reopen(args) -> None:
    before, after = reopen_real(args.model, args.chat_tokens, args.runs)
    tokens = before[0]["prompt_tokens"]
    rows = [
        (
            f"reopened {tokens}-token chat, no saved cache: first token",
            f"{med([r['ttft_s'] for r in before]):.2f} s",
            f"on screen after Enter {med([r['on_screen_s'] for r in before]):.2f} s; cached {before[0]['cached_tokens']}",
        ),
        (
            f"reopened {tokens}-token chat, saved cache: first token",
            f"{med([r['ttft_s'] for r in after]):.2f} s",
            f"on screen after Enter {med([r['on_screen_s'] for r in after]):.2f} s; cached {after[0]['cached_tokens']}; "
            "target < 1 s",
        ),
    ]
    print_rows(rows, args.runs)


if __name__ == "__main__":
    main()
