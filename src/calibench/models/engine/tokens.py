"""Text -> token ids, written once: the engine's inputs and the methods' answer ids both come from here.

Two ways to tokenise a continuation after its context are needed, and both live in ``Tokens``:

* ``pair`` is lm-evaluation-harness's ``loglikelihood`` encoding (trailing context whitespace moves
  to the continuation; continuation = ``enc(ctx + cont)[len(enc(ctx)):]``, no check), which the
  engine scores so its log-likelihoods equal lm-eval's.
* ``follow`` is the ids the model would produce right after a prompt *as given* (a chat prompt ends
  in a newline and ``next_token`` reads the token after it), which the methods compare with the
  model's next token. When the prompt's own tokens are not a prefix of the joint encoding (the
  boundary merged), it falls back to the lm-eval split with plain encoding, then to the continuation
  encoded on its own.

Both start from ``boundary`` (where the context ends and the continuation starts as text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calibench.errors import CalibenchError


@dataclass
class Pair:
    """A tokenised loglikelihood request."""

    context: list[int]
    continuation: list[int]


def boundary(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's split: trailing whitespace of the context moves to the start of the continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        return context[:-n_spaces], context[-n_spaces:] + continuation
    return context, continuation


class Tokens:
    """How text becomes ids for one tokenizer.

    ``lm_eval=True`` (the engine's) encodes with the tokenizer's defaults, as lm-eval's ``tok_encode``
    does, but adds no second BOS to a text that already starts with one. ``lm_eval=False`` (methods run
    on an engine without a tokeniser of its own) encodes without special tokens.
    """

    def __init__(self, tokenizer: Any, *, lm_eval: bool = True) -> None:
        self.tokenizer = tokenizer
        self.lm_eval = lm_eval
        bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
        prefix = bos if bos is not None else eos
        self.prefix_token_id: int | None = int(prefix) if prefix is not None else None
        self._prefix_str = tokenizer.decode(self.prefix_token_id) if lm_eval and prefix is not None else ""

    # ------------------------------------------------------------------ single texts

    def bare(self, text: str) -> list[int]:
        """The text's ids without any special token."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode`` (``lm_eval``), else ``bare``."""
        if not self.lm_eval or (self._prefix_str and text.startswith(self._prefix_str)):
            return self.bare(text)
        return list(self.tokenizer.encode(text))

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts in one call of the (Rust) tokenizer; same ids, less Python."""
        if not self.lm_eval or not callable(self.tokenizer):
            return [self.encode(t) for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        marked = [bool(self._prefix_str) and t.startswith(self._prefix_str) for t in texts]
        for flag, kwargs in ((False, {}), (True, {"add_special_tokens": False})):
            idx = [i for i, m in enumerate(marked) if m == flag]
            if idx:
                encoded = self.tokenizer([texts[i] for i in idx], **kwargs)["input_ids"]
                for i, ids in zip(idx, encoded, strict=True):
                    out[i] = list(ids)
        return out

    # ------------------------------------------------------------------ a continuation after its context

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation tokens exactly as lm-eval's HF ``loglikelihood`` builds them."""
        if context == "":
            return self._after_nothing(continuation)
        head, tail = boundary(context, continuation)
        ctx = self.encode(head)
        return ctx, self.encode(head + tail)[len(ctx) :]

    def pairs(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[Pair]]:
        """``pair`` for every (context, option), in one batched tokenizer call."""
        texts: list[str] = []
        where: list[tuple[int, list[int]] | None] = []  # (context text index, whole text indices)
        for ctx, options in items:
            if ctx == "":
                where.append(None)
                continue
            texts.append(boundary(ctx, "")[0])
            ctx_index = len(texts) - 1
            wholes = []
            for opt in options:
                texts.append(ctx + opt)  # = head + tail + opt, as ``pair`` encodes it
                wholes.append(len(texts) - 1)
            where.append((ctx_index, wholes))
        encoded = self.encode_many(texts) if texts else []
        result: list[list[Pair]] = []
        for (ctx, options), entry in zip(items, where, strict=True):
            if entry is None:
                result.append([Pair(*self.pair(ctx, opt)) for opt in options])
                continue
            context = encoded[entry[0]]
            result.append([Pair(context, encoded[w][len(context) :]) for w in entry[1]])
        return result

    def follow(self, prompt: str, continuation: str) -> list[int]:
        """Ids of ``continuation`` as the model would produce it right after ``prompt`` as given.

        Trailing whitespace stays in the prompt. If ``encode(prompt)`` is not a prefix of
        ``encode(prompt + continuation)`` or nothing follows it, the lm-eval split (whitespace moved)
        with ``bare`` encoding is used; if that boundary merges too, the moved continuation alone.
        """
        whole, ctx = self.encode(prompt + continuation), self.encode(prompt)
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return whole[len(ctx) :]
        head, tail = boundary(prompt, continuation)
        whole, ctx = self.bare(head + tail), self.bare(head)
        if whole[: len(ctx)] != ctx:
            return self.bare(tail)
        return whole[len(ctx) :]

    def _after_nothing(self, continuation: str) -> tuple[list[int], list[int]]:
        """An empty context: the prefix token (BOS, else EOS) stands in for it, as in lm-eval."""
        cont = self.bare(continuation)
        if not cont:
            raise CalibenchError("empty continuation with empty context cannot be scored")
        if self.prefix_token_id is None:
            raise CalibenchError("the tokenizer has neither a BOS nor an EOS token; cannot score from an empty context")
        if cont[0] != self.prefix_token_id:
            return [self.prefix_token_id], cont
        return cont[:1], cont[1:]

