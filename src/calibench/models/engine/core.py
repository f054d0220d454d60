"""``ScoringEngine``: the facade over the engine's paths (planning, packed, plain, greedy, CLM).

Design (see docs/models.md):

* Tokenisation follows lm-evaluation-harness exactly (``tokens.Tokens.pair``), so log-likelihoods
  equal lm-eval's ``loglikelihood`` to 1e-4.
* Every shared prefix runs once (``score_items``; ``packed``): an item's sequences form a prefix tree
  packed into one row with an ancestor mask and depth position ids, and a prefix that a group of
  items shares (few-shot shots) runs once as a header whose KV cache the group's rows attend to.
  Requests that need truncation, and models whose attention cannot take a custom mask, take the
  plain path (``plain``). A one-time check per engine compares both paths on one item.
* Log-softmax of the scored positions is taken in float64. CLM token scoring (``clm``) uses float32
  softmax for its max probability.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from calibench.errors import CalibenchError
from calibench.models.engine.batching import Progress, chunks, length_order
from calibench.models.engine.clm import Window, token_batch, windows
from calibench.models.engine.forward import Forward
from calibench.models.engine.generate import finish_generation, greedy_batch
from calibench.models.engine.hidden import last_hidden
from calibench.models.engine.packed import run_tree, tree_agrees
from calibench.models.engine.plain import run_plain
from calibench.models.engine.plan import Plan, make_plan
from calibench.models.engine.sample import sample_batch, sample_rng
from calibench.models.engine.tokens import Tokens
from calibench.models.engine.types import (
    ContinuationScore,
    Generation,
    ItemRequest,
    ItemScores,
    NextToken,
    TokenScores,
)

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer names a context length
_TOKENIZER_INFINITY = 1000000000000000019884624838656


def resolve_max_length(model: Any, tokenizer: Any) -> int:
    """Context length as lm-eval resolves it: config (text part first), tokenizer, then 2048."""
    config = getattr(model, "config", None)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    tok_len = getattr(tokenizer, "model_max_length", None)
    if tok_len is not None and tok_len != _TOKENIZER_INFINITY:
        return int(tok_len)
    return DEFAULT_MAX_LENGTH


class ScoringEngine:
    """Batched scoring of causal LMs: log-likelihoods, option scores, next tokens, greedy, CLM.

    ``batch_size`` is the number of sequences (or items, for ``score_options``) per forward pass.
    ``max_length`` defaults to the model's context length as lm-eval resolves it.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str = "cpu",
        progress: bool = True,
        shared_prefix: bool = True,
    ) -> None:
        import torch

        if batch_size < 1:
            raise CalibenchError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length) if max_length else resolve_max_length(model, tokenizer)
        if self.max_length < 2:
            raise CalibenchError(f"max_length must be at least 2, got {self.max_length}")
        self.progress = progress
        self.shared_prefix = shared_prefix
        if device == "auto" or getattr(model, "hf_device_map", None):
            self.device = next(model.parameters()).device
        else:
            self.device = torch.device(device)
            if next(model.parameters()).device != self.device:
                model.to(self.device)
        model.eval()
        # batching needs a pad id (masked out anyway); the caller's tokenizer is left as it is
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.tokens = Tokens(tokenizer)
        if self.tokens.prefix_token_id is None:
            raise CalibenchError(
                "the tokenizer has neither a BOS nor an EOS token; cannot score from an empty context"
            )
        self.prefix_token_id: int = self.tokens.prefix_token_id
        self.forward = Forward(model, self.device, self.pad_id)
        self._tree_ok: bool | None = None  # packed prefix scoring agrees with plain scoring; checked on first use

    @property
    def forward_tokens(self) -> int:
        """Real (unpadded) tokens through the model so far, for tokens/s."""
        return self.forward.tokens

    @forward_tokens.setter
    def forward_tokens(self, value: int) -> None:
        self.forward.tokens = int(value)

    # ------------------------------------------------------------------ tokenisation (lm-eval)

    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode``: tokenizer defaults, but no second BOS if the text starts with one."""
        return self.tokens.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation tokens exactly as lm-eval's HF ``loglikelihood`` builds them."""
        return self.tokens.pair(context, continuation)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts in one tokenizer call."""
        return self.tokens.encode_many(texts)

    # ------------------------------------------------------------------ loglikelihood and options

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[ContinuationScore]:
        """lm-eval ``loglikelihood`` with per-token numbers; requests sharing a context share its pass."""
        groups: dict[str, list[int]] = {}
        for i, (ctx, _cont) in enumerate(requests):
            groups.setdefault(ctx, []).append(i)
        items = [(ctx, [requests[i][1] for i in idx]) for ctx, idx in groups.items()]
        scored = self.score_options(items, _desc="loglikelihood")
        out: list[ContinuationScore | None] = [None] * len(requests)
        for (_ctx, idx), scores in zip(groups.items(), scored, strict=True):
            for i, s in zip(idx, scores, strict=True):
                out[i] = s
        return out  # type: ignore[return-value]

    def score_options(
        self, items: Sequence[tuple[str, Sequence[str]]], *, _desc: str = "scoring options"
    ) -> list[list[ContinuationScore]]:
        """Score each option as a continuation of its item's context (the context computed once per item)."""
        scored = self.score_items([ItemRequest(option_sets=[item]) for item in items], desc=_desc)
        return [s.options[0] for s in scored]

    def next_token(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[int]] | None = None
    ) -> list[NextToken]:
        """Log-probs over the vocabulary after each prompt; candidate ids are looked up in full-vocab log-probs."""
        if candidates is not None and len(candidates) != len(prompts):
            raise CalibenchError(f"{len(candidates)} candidate lists for {len(prompts)} prompts")
        cands = candidates if candidates is not None else [()] * len(prompts)
        requests = [ItemRequest(prompts=[p], candidates=[c]) for p, c in zip(prompts, cands, strict=True)]
        return [s.next_tokens[0] for s in self.score_items(requests, desc="next token")]

    def score_items(self, requests: Sequence[ItemRequest], *, desc: str = "scoring") -> list[ItemScores]:
        """Everything some items need, with every shared prefix computed once.

        Within an item, the prompts and the option sequences form one prefix tree packed into one row
        (``calibench.models.tree``); across items, a long common prefix (few-shot shots) runs once and
        its KV cache serves the whole group. Requests that need truncation to the context window, and
        models whose attention cannot take a custom mask, are scored the plain lm-eval way.
        """
        import torch

        plan = self._plan(requests)
        bar = Progress(self.progress, plan.n_requests, desc)
        with torch.inference_mode():
            if plan.tree_items and self._tree_ok is None:
                self._tree_ok = tree_agrees(self.forward, plan, plan.tree_items[0], max_length=self.max_length)
                if not self._tree_ok:
                    plan = self._plan(requests)  # everything on the plain path now
            run_tree(self.forward, plan, bar, batch_size=self.batch_size)
            run_plain(self.forward, plan, bar, batch_size=self.batch_size, max_length=self.max_length)
        bar.close()
        return [
            ItemScores(next_tokens=list(nt), options=[list(s) for s in opts])  # type: ignore[arg-type]
            for nt, opts in zip(plan.next_tokens, plan.options, strict=True)
        ]

    def tree_supported(self) -> bool:
        """Whether this model can score packed prefix trees (a custom 4D mask and explicit positions)."""
        cfg = getattr(self.model, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        return bool(
            self.shared_prefix and self.forward.has_pos and impl in ("eager", "sdpa") and self._tree_ok is not False
        )

    def _window(self) -> int:
        """Longest sequence the packed path may hold: the context, or a sliding attention window."""
        cfg = getattr(self.model, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        return min(self.max_length, int(window)) if window else self.max_length

    def _plan(self, requests: Sequence[ItemRequest]) -> Plan:
        return make_plan(
            requests, self.tokens, packed=self.tree_supported(), window=self._window(), max_length=self.max_length
        )

    # ------------------------------------------------------------------ greedy decoding

    def greedy(
        self, prompts: Sequence[str], *, max_new_tokens: int = 16, stop: Sequence[str] = ("\n",)
    ) -> list[Generation]:
        """Greedy decoding with a KV cache; each token's log-prob from the raw (unprocessed) logits.

        Generation stops at EOS or when the decoded text contains a stop string; the text is cut before
        the stop string, and the token that only starts the stop string is not part of the answer.
        """
        import torch

        if max_new_tokens < 1:
            raise CalibenchError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stops = [s for s in stop if s]
        budget = max(1, self.max_length - max_new_tokens)
        encoded = []
        for ids in self.encode_many(prompts):
            ids = ids or [self.prefix_token_id]
            encoded.append((ids[-budget:], max(0, len(ids) - budget)))
        results: list[Generation | None] = [None] * len(prompts)
        order = length_order([len(e[0]) for e in encoded])
        bar = Progress(self.progress, len(prompts), "greedy")
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for chunk in chunks(order, self.batch_size):
                gens = greedy_batch(
                    self.forward, self.tokenizer, [encoded[i][0] for i in chunk], max_new_tokens, stops, eos
                )
                for i, (ids, lps) in zip(chunk, gens, strict=True):
                    results[i] = finish_generation(self.tokenizer, ids, lps, stops, encoded[i][1])
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def _encode_for_generation(self, prompts: Sequence[str], max_new_tokens: int) -> list[tuple[list[int], int]]:
        """Prompt ids cut from the left so ``max_new_tokens`` fit, with how many were dropped."""
        budget = max(1, self.max_length - max_new_tokens)
        encoded = []
        for ids in self.encode_many(prompts):
            ids = ids or [self.prefix_token_id]
            encoded.append((ids[-budget:], max(0, len(ids) - budget)))
        return encoded

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        n: int,
        temperature: float = 1.0,
        max_new_tokens: int = 16,
        stop: Sequence[str] = ("\n",),
    ) -> list[list[Generation]]:
        """``n`` temperature samples per prompt, cut like ``greedy``; sample j of prompt i is seeded by
        (``seeds[i]``, j), so the same seeds give the same samples whatever the batch size or company.

        A batch row is one (prompt, sample) pair; the prompt's prefix is recomputed per sample (simple,
        and n times the prompt cost: see docs/performance.md).
        """
        import torch

        if n < 1:
            raise CalibenchError(f"the number of samples must be at least 1, got {n}")
        if not temperature > 0:
            raise CalibenchError(f"the sampling temperature must be > 0, got {temperature}")
        if max_new_tokens < 1:
            raise CalibenchError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if len(seeds) != len(prompts):
            raise CalibenchError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        stops = [s for s in stop if s]
        encoded = self._encode_for_generation(prompts, max_new_tokens)
        pairs = [(i, j) for i in range(len(prompts)) for j in range(n)]
        order = length_order([len(encoded[i][0]) for i, _ in pairs])
        results: list[list[Generation | None]] = [[None] * n for _ in prompts]
        bar = Progress(self.progress, len(pairs), "sampling")
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for chunk in chunks(order, self.batch_size):
                rows = [encoded[pairs[k][0]][0] for k in chunk]
                rngs = [sample_rng(seeds[pairs[k][0]], pairs[k][1]) for k in chunk]
                gens = sample_batch(self.forward, self.tokenizer, rows, rngs, float(temperature), max_new_tokens,
                                    stops, eos)
                for k, (ids, lps) in zip(chunk, gens, strict=True):
                    i, j = pairs[k]
                    results[i][j] = finish_generation(self.tokenizer, ids, lps, stops, encoded[i][1])
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ hidden states

    def hidden_states(self, prompts: Sequence[str], *, layer: int) -> Any:
        """[n, d] float64 hidden states of layer ``layer`` (0: embeddings; negative from the end) at each
        prompt's last token, where the model is about to answer."""
        import numpy as np
        import torch

        n_layers = self.num_layers()
        if n_layers and not -(n_layers + 1) <= layer <= n_layers:
            raise CalibenchError(f"layer {layer} is out of range for a model with {n_layers} layers "
                                 f"(0..{n_layers}, or negative from the end)")
        encoded = [e[0] for e in self._encode_for_generation(prompts, 1)]
        out: list[Any] = [None] * len(prompts)
        bar = Progress(self.progress, len(prompts), "hidden states")
        with torch.inference_mode():
            for chunk in chunks(length_order([len(e) for e in encoded]), self.batch_size):
                states = last_hidden(self.forward, [encoded[i] for i in chunk], layer)
                for i, h in zip(chunk, states, strict=True):
                    out[i] = h
                bar.update(len(chunk))
        bar.close()
        return np.stack(out) if out else np.zeros((0, 0))

    def num_layers(self) -> int:
        """Transformer layers of the model (hidden states run 0..num_layers)."""
        cfg = getattr(self.model, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        return int(getattr(cfg, "num_hidden_layers", 0) or 0)

    # ------------------------------------------------------------------ CLM token scoring

    def score_tokens(
        self, texts: Iterable[str], *, window: int | None = None, stride: int | None = None
    ) -> Iterator[TokenScores]:
        """Score every token of every text once, in sliding windows; yields one batch at a time.

        Each document is ``[prefix token] + enc(text)`` (the prefix is BOS, else EOS, as lm-eval's
        rolling log-likelihood does), so the first token is scored too. A window holds ``window`` input
        tokens; after the first, each window moves by ``stride`` and scores only its last ``stride``
        targets, so every token after the first window sees at least ``window - stride`` tokens of context.
        """
        import torch

        window = int(window or self.max_length)
        stride = int(stride or max(1, window // 2))
        if not 1 <= stride <= window or window > self.max_length:
            raise CalibenchError(
                f"need 1 <= stride <= window <= max_length ({self.max_length}); got window={window}, stride={stride}"
            )
        batch: list[Window] = []
        bar = Progress(self.progress, None, "scoring tokens", unit="tok")
        with torch.inference_mode():
            for w in windows(texts, self.tokens, window=window, stride=stride):
                batch.append(w)
                if len(batch) == self.batch_size:
                    yield token_batch(self.forward, batch)
                    bar.update(sum(len(b.targets) for b in batch))
                    batch = []
            if batch:
                yield token_batch(self.forward, batch)
                bar.update(sum(len(b.targets) for b in batch))
        bar.close()
