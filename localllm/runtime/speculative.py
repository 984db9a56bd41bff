"""Speculative decoding: drafts proposed cheaply, verified by the model in one batch (issue 28).

A *drafter* proposes the next few tokens: :class:`NgramDrafter` looks the last tokens up earlier in
the prompt and the reply (prompt lookup: free, and right when the reply repeats its input), and
:class:`DraftModel` lets a small model of the same vocabulary decode them greedily. The target then
evaluates its pending token and the drafts in one ``llama_decode`` with logits at every position,
and picks its own token at each position with its own sampler chain, in order: while its pick
equals the draft, the next position's logits are valid and it goes on; at the first difference its
pick is the reply's next token and the rest are dropped from the KV cache.

Both drafters are deterministic (a draft is one token with probability 1), so this is the standard
acceptance rule exactly: the draft ``d`` is accepted with probability ``p(d)`` and on rejection the
token comes from ``p`` without ``d``, renormalised -- which is the same as drawing from ``p`` and
comparing. Greedy output is the plain argmax at every step, and a seeded sampler draws once per
reply token as plain decoding does.

:class:`Speculation` decides how many tokens to draft: it times plain steps and drafted rounds and
halves the draft length while drafting produces fewer tokens per second than plain decoding, down
to none for a while (doubling the pause each time it fails again), so a reply that repeats nothing
decodes at plain speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import DraftMismatchError, ModelFileError

from .llama import LlamaContext, LlamaModel, greedy_token

NGRAM_MAX = 4  # the longest suffix looked up
NGRAM_MIN = 2  # the shortest: one common token (" the") is no evidence that the text repeats
NGRAM = "ngram"  # the name of the draft-free drafter (``--draft ngram``)


class NgramDrafter:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the longest of the
    history's last ``max_n``..``min_n`` tokens. Indexes the history as it grows (a dict per length)."""

    name = NGRAM

    def __init__(self, max_n: int = NGRAM_MAX, min_n: int = NGRAM_MIN) -> None:
        self.max_n = max_n
        self.min_n = min_n
        self._seen: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_n + 1)]
        self._indexed = 0  # history tokens indexed

    def reset(self) -> None:
        for table in self._seen:
            table.clear()
        self._indexed = 0

    def _index(self, history: Sequence[int]) -> None:
        seen, max_n = self._seen, self.max_n
        for i in range(max(self._indexed, 1), len(history)):
            # the n-grams ending just before i were followed by the token at i
            for n in range(self.min_n, min(max_n, i) + 1):
                seen[n][tuple(history[i - n : i])] = i
        self._indexed = len(history)

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        if self._indexed > len(history):
            self.reset()
        self._index(history)
        end = len(history)
        for n in range(min(self.max_n, end), self.min_n - 1, -1):
            at = self._seen[n].get(tuple(history[end - n :]))
            if at is not None:
                return list(history[at : min(at + k, end)])
        return []

    def close(self) -> None:
        pass


class DraftModel:
    """A small model of the target's vocabulary, in a context of its own, drafting greedily.

    Its KV cache follows the history: what it drafted and the target refused is dropped on the
    next :meth:`propose`, which then evaluates only the tokens it has not seen.
    """

    def __init__(
        self, path: Path, target: LlamaModel, *, n_ctx: int, n_threads: int, n_gpu_layers: int = 0, repack: bool = True
    ) -> None:
        self.path = Path(path)
        self.name = self.path.name
        # ``repack``: the target's choice of extra buffer types, which AMX builds turn off (llama.cpp
        # #20824: AMX's matmul segfaults on some CPUs); a draft loaded with them crashed there.
        self.llama = LlamaModel(self.path, n_gpu_layers=n_gpu_layers, use_extra_bufts=repack)
        try:
            check_same_vocab(target, self.llama, self.path.name)
            self._ctx = LlamaContext(
                self.llama,
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_ubatch=min(512, n_ctx),
                n_seq_max=1,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                what="create a draft context for",
            )
        except BaseException:
            self.llama.close()
            raise
        self._n_vocab = self.llama.n_vocab()
        self._evaluated: list[int] = []

    def reset(self) -> None:
        self._ctx.memory_clear(True)
        self._evaluated = []

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        ctx, evaluated = self._ctx, self._evaluated
        common = 0
        for a, b in zip(evaluated, history):
            if a != b:
                break
            common += 1
        common = min(common, len(history) - 1)  # the last token is fed for its logits
        if common < len(evaluated):
            if not ctx.memory_seq_rm(-1, common, -1):
                ctx.memory_clear(True)
                common = 0
            del evaluated[common:]
        room = ctx.n_ctx - len(history)
        k = min(k, room - 1)
        if k <= 0:
            return []
        todo = list(history[common:])
        for start in range(0, len(todo), ctx.n_batch):
            chunk = todo[start : start + ctx.n_batch]
            if ctx.decode_tokens(chunk) != 0:
                self.reset()
                return []
            evaluated.extend(chunk)
        drafts: list[int] = []
        while True:
            token = greedy_token(ctx, -1, self._n_vocab)
            drafts.append(token)
            if len(drafts) >= k or self.llama.is_eog(token):
                return drafts
            if ctx.decode_token(token) != 0:
                self.reset()
                return drafts
            evaluated.append(token)

    def close(self) -> None:
        self._ctx.close()
        self.llama.close()


Drafter = NgramDrafter | DraftModel

VOCAB_SAMPLES = 256  # token texts compared besides the size and the special tokens


def check_same_vocab(target: LlamaModel, draft: LlamaModel, draft_name: str) -> None:
    """DraftMismatchError unless ``draft`` has ``target``'s vocabulary: the same size, special
    tokens and the text of tokens spread over it (a draft's token ids must mean the target's)."""
    n = target.n_vocab()
    why = ""
    if draft.n_vocab() != n:
        why = f"{draft.n_vocab()} tokens against {n}"
    elif (draft.bos(), draft.eos()) != (target.bos(), target.eos()):
        why = "other begin/end tokens"
    else:
        for token in sorted({*range(0, n, max(1, n // VOCAB_SAMPLES)), n - 1}):
            if draft.token_text(token) != target.token_text(token):
                why = f"token {token} is {draft.token_text(token)!r}, not {target.token_text(token)!r}"
                break
    if why:
        raise DraftMismatchError(
            f"the draft model {draft_name} has another vocabulary than {target.path.name} ({why})",
            hint="pick a draft model of the same family, or --draft ngram",
        )


@dataclass
class Speculation:
    """How many tokens to draft next, from how drafting has paid off so far in this reply.

    ``gain`` is the smoothed ratio of tokens per second in drafted rounds to plain decoding's; while
    it stays below 1 the draft length halves, down to no drafting for ``pause`` tokens (doubled
    each time drafting fails again, at most ``MAX_PAUSE``); full acceptance that pays doubles it, up
    to ``k_max``. It starts (and starts again after a pause) at ``START`` tokens, so a probe of text
    that repeats nothing costs little.
    """

    k_max: int = 8
    k: int = 0
    plain_s: float | None = None  # smoothed seconds of one plain step
    gain: float = 1.0
    paused: int = 0  # plain steps left before drafting is tried again
    pause: int = 8
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0

    MAX_PAUSE = 256
    SMOOTH = 0.3
    START = 2

    def __post_init__(self) -> None:
        self.k = min(self.START, self.k_max)

    def want(self) -> int:
        """Tokens to draft this step (0: a plain step)."""
        if self.plain_s is None or self.paused > 0:
            return 0
        return self.k

    def plain(self, seconds: float, sequences: int = 1) -> None:
        """A plain step took ``seconds`` for a token of each of ``sequences``."""
        seconds /= max(sequences, 1)
        if self.paused > 0:
            self.paused -= 1
            if self.paused == 0:
                self.k, self.gain = min(self.START, self.k_max), 1.0
        s = self.SMOOTH
        self.plain_s = seconds if self.plain_s is None else (1 - s) * self.plain_s + s * seconds

    def round(self, drafted: int, accepted: int, seconds: float, sequences: int = 1) -> None:
        """A drafted round took ``seconds`` for ``drafted`` drafts of which ``accepted`` held, and
        a token of each of ``sequences`` besides."""
        self.drafted += drafted
        self.accepted += accepted
        self.rounds += 1
        assert self.plain_s is not None
        gain = (accepted + sequences) * self.plain_s / max(seconds, 1e-9)
        self.gain = (1 - self.SMOOTH) * self.gain + self.SMOOTH * gain
        if self.gain < 1.0:
            self.k //= 2
            self.gain = 1.0
            if self.k == 0:
                self.paused, self.pause = self.pause, min(self.pause * 2, self.MAX_PAUSE)
        elif accepted == drafted >= self.k and self.gain > 1.1:
            self.k = min(self.k * 2, self.k_max)


def open_drafter(
    draft: str | Path | None,
    target: LlamaModel,
    *,
    n_ctx: int,
    n_threads: int,
    n_gpu_layers: int = 0,
    repack: bool = True,
) -> Drafter | None:
    """The drafter ``draft`` names: None, ``"ngram"``, or a GGUF path for a draft model."""
    if draft is None:
        return None
    if str(draft) == NGRAM:
        return NgramDrafter()
    path = Path(draft)
    if not path.is_file():
        raise ModelFileError(f"the draft model {path} does not exist", hint="give a GGUF file, or --draft ngram")
    return DraftModel(path, target, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, repack=repack)
