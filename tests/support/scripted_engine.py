"""A scripted stand-in for ``engine.Model``: same methods, fixed replies, a chosen speed.

For UI timing and snapshots, where the real model's words and speed would make results vary. Stats
are computed from the nominal rate, never from a clock, so status lines are deterministic.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import ContextOverflowError
from localllm.runtime import GenerationStats, SamplingOptions
from localllm.tui.services import ChatTarget, Hardware, PullCancelled, PullProgress, Services

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def pieces_of(text: str) -> list[str]:
    """Split text the way a tokenizer roughly would: a word with its leading space."""
    return _TOKEN_RE.findall(text)


@dataclass(frozen=True)
class ScriptedOptions:
    n_gpu_layers: int = 0


class ScriptedGeneration:
    def __init__(
        self,
        model: ScriptedModel,
        prompt_tokens: int,
        reply: str,
        cancel: threading.Event | None,
        max_tokens: int | None,
    ) -> None:
        self.model = model
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)
        self.text = ""
        self._pieces = pieces_of(reply)[:max_tokens] if max_tokens else pieces_of(reply)
        self._cancel = cancel
        self._prompt_started: float | None = None
        self._iter = self._run()

    @property
    def prompt_fraction(self) -> float | None:
        """As the runtime's: how much of the prompt is evaluated, while the scripted delay runs."""
        if self._prompt_started is None or not self.model.prompt_s:
            return None
        return min(1.0, (time.perf_counter() - self._prompt_started) / self.model.prompt_s)

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _run(self) -> Iterator[str]:
        stats, model = self.stats, self.model
        stats.finish_reason = "cancelled"
        delay = 1.0 / model.tokens_per_s if model.tokens_per_s else 0.0
        if model.prompt_s:  # a real model evaluates the prompt before the first token
            self._prompt_started = time.perf_counter()
            if self._cancel is not None:
                self._cancel.wait(model.prompt_s)
            else:
                time.sleep(model.prompt_s)
        start = time.perf_counter()
        for n, piece in enumerate(self._pieces, 1):
            if n == len(self._pieces) and model.hold is not None:
                model.hold.wait(30)  # the test says when the reply may end
            if self._cancel is not None and self._cancel.is_set():
                break
            if delay:
                # Sleep to an absolute schedule so the rate holds however long the consumer takes.
                wait = start + n * delay - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            stats.generated_tokens += 1
            self.text += piece
            model.emitted.append(time.perf_counter())
            yield piece
        else:
            stats.finish_reason = "stop"
        if model.tokens_per_s and stats.generated_tokens > 1:
            stats.generation_s = (stats.generated_tokens - 1) / model.tokens_per_s


class ScriptedModel:
    """Replies with ``replies`` in turn (the last one repeats); ``tokens_per_s=0`` is instant."""

    def __init__(
        self,
        replies: Sequence[str] = ("Hello! How can I help?",),
        *,
        tokens_per_s: float = 0.0,
        n_ctx: int = 4096,
        path: Path = Path("scripted.gguf"),
        prompt_s: float = 0.0,
        hold: threading.Event | None = None,
        chat_template_source: str | None = None,
    ) -> None:
        self.replies = list(replies)
        # a template with <think> in it makes the chat split each reply's reasoning out, as for a real one
        self.chat_template_source = chat_template_source
        self.hold = hold  # when given, each reply's last piece waits for it: "still generating" without a race
        self.tokens_per_s = tokens_per_s
        self.prompt_s = prompt_s  # seconds before the first piece, as a long prompt takes to evaluate
        self.n_ctx = n_ctx
        self.n_ctx_train = n_ctx
        self.path = path
        self.options = ScriptedOptions()
        self.prompts: list[list[dict[str, str]]] = []  # what each chat() call was given
        self.emitted: list[float] = []  # perf_counter of each piece (benchmarks)
        self.closed = False
        self._turn = 0

    def render_chat(self, messages: Sequence[dict[str, str]], **template_vars: object) -> str:
        return "".join(f"<{m['role']}> {m['content']}\n" for m in messages) + "<assistant>"

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return list(range(len(pieces_of(text))))

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenize(self.render_chat(messages))

    def chat(
        self,
        messages,
        sampling: SamplingOptions | None = None,
        cancel: threading.Event | None = None,
        *,
        template_vars: dict | None = None,
        special_tokens: bool = False,
    ):
        tokens = len(self.chat_tokens(messages))
        if tokens >= self.n_ctx:
            raise ContextOverflowError(f"the prompt is {tokens} tokens but the context holds {self.n_ctx}")
        self.prompts.append(list(messages))
        reply = self.replies[min(self._turn, len(self.replies) - 1)]
        self._turn += 1
        return ScriptedGeneration(self, tokens, reply, cancel, sampling.max_tokens if sampling else None)

    def close(self) -> None:
        self.closed = True


FIXED_HARDWARE = Hardware(
    ram_total=16 * 2**30,
    ram_available=8 * 2**30,
    cpu_model="Test CPU 3000",
    cores_physical=4,
    cores_logical=8,
)


class FakeServices(Services):
    """Real catalog and store; fixed hardware; scripted models; a downloader that only pretends."""

    def __init__(
        self, model: ScriptedModel | None = None, *, pull_steps: int = 5, pull_gate: threading.Event | None = None
    ) -> None:
        self.model = model or ScriptedModel()
        self.loaded: list[ChatTarget] = []
        self.loaded_lora: list[tuple] = []  # the LoRA adapters of each load
        self.pull_steps = pull_steps
        self.pull_gate = pull_gate  # when set, the fake download waits on it before each step
        self.pulled: list[str] = []
        self.restored: list[int] = []  # conversations whose KV cache a reply asked for
        self.saved: list[int] = []  # ... and kept after it

    def hardware(self) -> Hardware:
        return FIXED_HARDWARE

    def quick_hardware(self) -> Hardware:
        return FIXED_HARDWARE

    def load_model(self, target, n_ctx=None, n_gpu_layers=0, lora=(), draft=None, docs=None):
        self.loaded.append(target)
        self.loaded_lora.append(tuple(lora))
        self.model.closed = False
        return self.model

    def restore_state(self, model, conversation_id):
        self.restored.append(conversation_id)
        return 0

    def save_state(self, model, conversation_id):
        self.saved.append(conversation_id)
        return False

    def forget_state(self, conversation_id):
        self.saved = [c for c in self.saved if c != conversation_id]

    def sampling(self, settings):
        known = {k: v for k, v in settings.items() if k in SamplingOptions.__dataclass_fields__}
        return SamplingOptions(**known)

    def pull(self, entry, quant, progress, cancel):
        total = 100 * 10**6
        for step in range(1, self.pull_steps + 1):
            if self.pull_gate is not None:
                self.pull_gate.wait(5)
                self.pull_gate.clear()
            if cancel.is_set():
                raise PullCancelled("cancelled")
            done = total * step // self.pull_steps
            progress(PullProgress(done, total, 25 * 10**6, (total - done) / (25 * 10**6)))
        self.pulled.append(f"{entry.name}:{quant}")
        from localllm.models import store

        path = Path(store.paths.models_dir()) / entry.name / f"{entry.name}-{quant}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF" + bytes(60))
        model = store.InstalledModel(
            name=entry.name,
            quant=quant,
            files=[f"{entry.name}/{path.name}"],
            size=path.stat().st_size,
            source="fake",
            installed_at=1.0,
        )
        store.record(model)
        return model
