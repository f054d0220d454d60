"""The scoring engine: every number a confidence method needs, from batched, length-sorted passes.

Design (see docs/models.md):

* Tokenisation follows lm-evaluation-harness exactly (trailing context whitespace moves to the
  continuation; continuation tokens = enc(ctx + cont)[len(enc(ctx)):]; the model input is
  enc(ctx) + those tokens, left-truncated to ``max_length + 1`` then the last token dropped), so
  log-likelihoods equal lm-eval's ``loglikelihood`` to 1e-4.
* Requests are sorted by length (longest first, lm-eval's Collator idea), batched, and restored to
  input order. Batches are left-padded with an attention mask and explicit position ids, so every row
  ends at the same column and only the last ``k`` positions go through the LM head
  (``logits_to_keep``): on small models the vocabulary projection is most of the cost.
* Multiple choice shares the context: the context of each item runs once, its KV cache is expanded
  over the options, and only the option tokens run again. A one-token option needs no second pass.
  Items whose context would be truncated differently per option fall back to full scoring.
* Log-softmax of the scored positions is taken in float64 (lm-eval uses the model dtype; float64
  keeps sums of many tokens stable). CLM token scoring uses float32 softmax for its max probability.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibench.errors import CalibenchError

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer names a context length
_TOKENIZER_INFINITY = 1000000000000000019884624838656


@dataclass
class ContinuationScore:
    """Per-token log-probabilities of one continuation given its context."""

    token_logprobs: np.ndarray  # float64 log P of each continuation token given everything before it
    is_greedy: bool  # every continuation token is the argmax (lm-eval's is_greedy)
    truncated: int = 0  # context tokens dropped from the left to fit the context window

    @property
    def n_tokens(self) -> int:
        return int(self.token_logprobs.shape[0])

    @property
    def sum(self) -> float:
        return float(self.token_logprobs.sum())

    @property
    def mean(self) -> float:
        return float(self.token_logprobs.mean()) if self.n_tokens else float("nan")

    @property
    def min(self) -> float:
        return float(self.token_logprobs.min()) if self.n_tokens else float("nan")


@dataclass
class NextToken:
    """The next-token distribution after a prompt, reduced to what methods use."""

    top_id: int  # argmax over the full vocabulary
    top_logprob: float
    candidate_logprobs: np.ndarray  # full-vocab log-probs of the requested candidate ids (may be empty)
    truncated: int = 0


@dataclass
class Generation:
    """A greedy continuation, cut before the first stop string, with its token log-probs."""

    token_ids: list[int]
    token_logprobs: np.ndarray
    text: str
    truncated: int = 0


@dataclass
class TokenScores:
    """One batch of scored CLM positions (streamed; concatenate or write out per batch)."""

    doc_index: np.ndarray  # index of the document in the input iterable
    position: np.ndarray  # index of the target token within the document's tokens
    target: np.ndarray  # the actual next token
    pred: np.ndarray  # argmax token
    confidence: np.ndarray  # max softmax probability
    target_logprob: np.ndarray | None = None  # log P(target); extra, for perplexity

    def __len__(self) -> int:
        return int(self.doc_index.shape[0])


# ----------------------------------------------------------------------------------------------
# helpers


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


def _length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length descending (ties keep input order) so batches pad little."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), n):
        yield seq[start : start + n]


class _Progress:
    """A tqdm bar that is a no-op when disabled (keeps call sites simple)."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Pair:
    """A tokenised loglikelihood request."""

    context: list[int]
    continuation: list[int]


# ----------------------------------------------------------------------------------------------


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
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; masked out anyway
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise CalibenchError(
                "the tokenizer has neither a BOS nor an EOS token; cannot score from an empty context"
            )
        self.prefix_token_id = int(prefix)
        self._prefix_str = tokenizer.decode(self.prefix_token_id)
        params = inspect.signature(model.forward).parameters
        self._has_keep = "logits_to_keep" in params
        self._has_pos = "position_ids" in params
        self._shared_ok: bool | None = None  # learned on first use

    # ------------------------------------------------------------------ tokenisation (lm-eval)

    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode``: tokenizer defaults, but no second BOS if the text starts with one."""
        if self._prefix_str and text.startswith(self._prefix_str):
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return list(self.tokenizer.encode(text))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation tokens exactly as lm-eval's HF ``loglikelihood`` builds them."""
        if context == "":
            cont = list(self.tokenizer.encode(continuation, add_special_tokens=False))
            if not cont:
                raise CalibenchError("empty continuation with empty context cannot be scored")
            if cont[0] != self.prefix_token_id:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts in one call of the (Rust) tokenizer; same ids, less Python."""
        out: list[list[int]] = [[] for _ in texts]
        marked = [bool(self._prefix_str) and t.startswith(self._prefix_str) for t in texts]
        for flag, kwargs in ((False, {}), (True, {"add_special_tokens": False})):
            idx = [i for i, m in enumerate(marked) if m == flag]
            if idx:
                encoded = self.tokenizer([texts[i] for i in idx], **kwargs)["input_ids"]
                for i, ids in zip(idx, encoded, strict=True):
                    out[i] = list(ids)
        return out

    def _encode_items(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[_Pair]]:
        """``encode_pair`` for every (context, option), batching the tokenizer calls."""
        texts: list[str] = []
        plan: list[tuple[int, list[int]] | None] = []  # (context text index, whole text indices)
        for ctx, options in items:
            if ctx == "":
                plan.append(None)
                continue
            n_spaces = len(ctx) - len(ctx.rstrip())
            head, tail = (ctx[:-n_spaces], ctx[-n_spaces:]) if n_spaces else (ctx, "")
            texts.append(head)
            ctx_index = len(texts) - 1
            wholes = []
            for opt in options:
                texts.append(head + tail + opt)
                wholes.append(len(texts) - 1)
            plan.append((ctx_index, wholes))
        encoded = self.encode_many(texts) if texts else []
        result: list[list[_Pair]] = []
        for (ctx, options), entry in zip(items, plan, strict=True):
            if entry is None:
                result.append([_Pair(*self.encode_pair(ctx, opt)) for opt in options])
                continue
            context = encoded[entry[0]]
            result.append([_Pair(context, encoded[w][len(context) :]) for w in entry[1]])
        return result

    # ------------------------------------------------------------------ low-level forward

    def _tensor(self, rows: list[list[int]], *, left: bool) -> tuple[Any, Any]:
        """Pad rows (left or right) into input ids and an attention mask."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if not r:
                continue
            if left:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
            else:
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _call(
        self,
        ids: Any,
        mask: Any,
        *,
        position_ids: Any = None,
        keep: int = 0,
        past: Any = None,
        use_cache: bool = False,
    ) -> Any:
        """One model forward; ``keep`` > 0 asks for logits of the last ``keep`` positions only."""
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if position_ids is not None and self._has_pos:
            kwargs["position_ids"] = position_ids
        if past is not None:
            kwargs["past_key_values"] = past
        if keep and self._has_keep:
            kwargs["logits_to_keep"] = keep
        out = self.model(**kwargs)
        logits = out.logits
        if keep and logits.shape[1] > keep:
            logits = logits[:, -keep:]
        return out, logits

    def _left_forward(
        self, rows: list[list[int]], keep: int, *, use_cache: bool = False
    ) -> tuple[Any, Any, Any]:
        """Left-padded forward; returns (output, logits of last ``keep`` positions, mask)."""
        ids, mask = self._tensor(rows, left=True)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out, logits = self._call(ids, mask, position_ids=pos, keep=keep, use_cache=use_cache)
        return out, logits, mask

    @staticmethod
    def _score_positions(logits_rows: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """float64 log P(target) and argmax==target for stacked [N, V] logits."""
        import torch

        lp = torch.log_softmax(logits_rows.to(torch.float64), dim=-1)
        tok = lp.gather(1, targets[:, None]).squeeze(1)
        greedy = logits_rows.argmax(dim=-1) == targets
        return tok.cpu().numpy(), greedy.cpu().numpy()

    # ------------------------------------------------------------------ loglikelihood

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
        """Score each option as a continuation of its item's context (context computed once per item)."""
        import torch

        tokenised = self._encode_items(items)
        for pairs in tokenised:
            for p in pairs:
                if not p.continuation:
                    raise CalibenchError("a continuation encodes to zero tokens; nothing to score")
                if len(p.continuation) > self.max_length:
                    raise CalibenchError(
                        f"a continuation of {len(p.continuation)} tokens exceeds max_length {self.max_length}"
                    )
        results: list[list[ContinuationScore | None]] = [[None] * len(p) for p in tokenised]

        shared_items: list[int] = []
        full_pairs: list[tuple[int, int]] = []
        for i, pairs in enumerate(tokenised):
            if not pairs:
                continue
            ctx_len = len(pairs[0].context)
            fits = all(ctx_len + len(p.continuation) <= self.max_length + 1 for p in pairs)
            same_ctx = all(p.context == pairs[0].context for p in pairs)
            if self.shared_prefix and self._shared_ok is not False and fits and same_ctx and len(pairs) > 1:
                shared_items.append(i)
            else:
                full_pairs.extend((i, k) for k in range(len(pairs)))

        bar = _Progress(self.progress, sum(len(p) for p in tokenised), _desc)
        with torch.inference_mode():
            if shared_items:
                lengths = [len(tokenised[i][0].context) for i in shared_items]
                order = [shared_items[j] for j in _length_order(lengths)]
                for chunk in _chunks(order, self.batch_size):
                    scores = self._shared_batch([tokenised[i] for i in chunk])
                    for i, row in zip(chunk, scores, strict=True):
                        results[i] = list(row)
                        bar.update(len(row))
            if full_pairs:
                lengths = [
                    len(tokenised[i][k].context) + len(tokenised[i][k].continuation) for i, k in full_pairs
                ]
                order = [full_pairs[j] for j in _length_order(lengths)]
                for chunk in _chunks(order, self.batch_size):
                    scores = self._full_batch([tokenised[i][k] for i, k in chunk])
                    for (i, k), s in zip(chunk, scores, strict=True):
                        results[i][k] = s
                    bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def _full_batch(self, pairs: Sequence[_Pair]) -> list[ContinuationScore]:
        """Score each (context, continuation) pair with its own sequence, as lm-eval does."""
        import torch

        L = self.max_length
        rows, truncs = [], []
        for p in pairs:
            whole = p.context + p.continuation
            truncs.append(max(0, len(whole) - (L + 1)))
            rows.append(whole[-(L + 1) :][:-1])
        keep = max(len(p.continuation) for p in pairs)
        _, logits, _ = self._left_forward(rows, keep)
        sel, tgt, bounds = [], [], []
        for b, p in enumerate(pairs):
            c = len(p.continuation)
            sel.append(logits[b, keep - c :])
            tgt.extend(p.continuation)
            bounds.append(c)
        lp, greedy = self._score_positions(torch.cat(sel), torch.tensor(tgt, device=self.device))
        return _split(lp, greedy, bounds, truncs)

    def _shared_batch(self, items: Sequence[list[_Pair]]) -> list[list[ContinuationScore]]:
        """Context once per item, its KV cache expanded over the options, then the option tokens."""
        import torch

        contexts = [pairs[0].context for pairs in items]
        need_second = any(len(p.continuation) > 1 for pairs in items for p in pairs)
        out, first_logits, ctx_mask = self._left_forward(contexts, 1, use_cache=need_second)
        first_logits = first_logits[:, -1]  # [B, V]: predicts every option's first token

        # rows of the second pass: options with more than one token
        row_item, row_cont = [], []
        for i, pairs in enumerate(items):
            for k, p in enumerate(pairs):
                if len(p.continuation) > 1:
                    row_item.append(i)
                    row_cont.append((k, p.continuation[:-1]))
        rest: dict[int, Any] = {}  # second-pass row -> logits of its option tokens but the last
        if row_item:
            # Expanding the cache costs rows x context tokens of KV memory: run the option rows in
            # chunks of at most batch_size x max_length cached tokens (one chunk for short prompts).
            width = max(len(c) for c in contexts)
            per_chunk = max(1, (self.batch_size * self.max_length) // max(1, width))
            chunks = list(_chunks(list(range(len(row_item))), per_chunk))
            base = out.past_key_values
            for rows in chunks:
                cache = copy.deepcopy(base) if len(chunks) > 1 else base
                index = torch.tensor([row_item[r] for r in rows], dtype=torch.long, device=self.device)
                try:
                    cache.reorder_cache(index)
                except (AttributeError, NotImplementedError, TypeError):
                    self._shared_ok = False  # this cache type cannot be expanded; score in full from now on
                    return [self._full_batch(pairs) for pairs in items]
                ids, opt_mask = self._tensor([row_cont[r][1] for r in rows], left=False)
                mask = torch.cat([ctx_mask.index_select(0, index), opt_mask], dim=1)
                start = torch.tensor([len(contexts[row_item[r]]) for r in rows], device=self.device)
                pos = start[:, None] + torch.arange(ids.shape[1], device=self.device)[None, :]
                _, logits = self._call(ids, mask, position_ids=pos, past=cache, use_cache=True)
                for j, r in enumerate(rows):
                    rest[r] = logits[j]
            self._shared_ok = True

        sel, tgt, bounds, owners = [], [], [], []
        row_of = {}
        for r, (i, (k, _)) in enumerate(zip(row_item, row_cont, strict=True)):
            row_of[(i, k)] = r
        for i, pairs in enumerate(items):
            for k, p in enumerate(pairs):
                c = len(p.continuation)
                sel.append(first_logits[i : i + 1])
                if c > 1:
                    sel.append(rest[row_of[(i, k)]][: c - 1])
                tgt.extend(p.continuation)
                bounds.append(c)
                owners.append(i)
        lp, greedy = self._score_positions(torch.cat(sel), torch.tensor(tgt, device=self.device))
        flat = _split(lp, greedy, bounds, [0] * len(bounds))
        result: list[list[ContinuationScore]] = [[] for _ in items]
        for i, s in zip(owners, flat, strict=True):
            result[i].append(s)
        return result

    # ------------------------------------------------------------------ next token

    def next_token(
        self, prompts: Sequence[str], candidates: Sequence[Sequence[int]] | None = None
    ) -> list[NextToken]:
        """Log-probs over the vocabulary after each prompt; candidate ids are looked up in full-vocab log-probs."""
        import torch

        if candidates is not None and len(candidates) != len(prompts):
            raise CalibenchError(f"{len(candidates)} candidate lists for {len(prompts)} prompts")
        encoded = []
        for ids in self.encode_many(prompts):
            ids = ids or [self.prefix_token_id]
            encoded.append((ids[-self.max_length :], max(0, len(ids) - self.max_length)))
        results: list[NextToken | None] = [None] * len(prompts)
        order = _length_order([len(e[0]) for e in encoded])
        bar = _Progress(self.progress, len(prompts), "next token")
        with torch.inference_mode():
            for chunk in _chunks(order, self.batch_size):
                _, logits, _ = self._left_forward([encoded[i][0] for i in chunk], 1)
                lp = torch.log_softmax(logits[:, -1].to(torch.float64), dim=-1)
                top_lp, top_id = lp.max(dim=-1)
                for b, i in enumerate(chunk):
                    cand = list(candidates[i]) if candidates is not None else []
                    cand_lp = (
                        lp[b, torch.tensor(cand, dtype=torch.long, device=lp.device)].cpu().numpy()
                        if cand
                        else np.zeros(0, dtype=np.float64)
                    )
                    results[i] = NextToken(int(top_id[b]), float(top_lp[b]), cand_lp, encoded[i][1])
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

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
        order = _length_order([len(e[0]) for e in encoded])
        bar = _Progress(self.progress, len(prompts), "greedy")
        eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for chunk in _chunks(order, self.batch_size):
                gens = self._greedy_batch([encoded[i][0] for i in chunk], max_new_tokens, stops, eos)
                for i, (ids, lps) in zip(chunk, gens, strict=True):
                    results[i] = self._finish_generation(ids, lps, stops, encoded[i][1])
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def _greedy_batch(
        self, rows: list[list[int]], max_new: int, stop: list[str], eos: int | None
    ) -> list[tuple[list[int], list[float]]]:
        import torch

        out, logits, mask = self._left_forward(rows, 1, use_cache=True)
        cache = out.past_key_values
        pos = mask.sum(-1)  # next position id per row
        gen_ids: list[list[int]] = [[] for _ in rows]
        gen_lps: list[list[float]] = [[] for _ in rows]
        done = [False] * len(rows)
        for step in range(max_new):
            lp = torch.log_softmax(logits[:, -1].to(torch.float64), dim=-1)
            top_lp, top_id = lp.max(dim=-1)
            for b in range(len(rows)):
                if done[b]:
                    continue
                tok = int(top_id[b])
                if eos is not None and tok == eos:
                    done[b] = True
                    continue
                gen_ids[b].append(tok)
                gen_lps[b].append(float(top_lp[b]))
                if stop and any(s in self.tokenizer.decode(gen_ids[b]) for s in stop):
                    done[b] = True
            if all(done) or step == max_new - 1:
                break
            ids = top_id[:, None].to(self.device)
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            out, logits = self._call(ids, mask, position_ids=pos[:, None], past=cache, use_cache=True)
            cache = out.past_key_values
            pos = pos + 1
        return list(zip(gen_ids, gen_lps, strict=True))

    def _finish_generation(
        self, ids: list[int], lps: list[float], stop: list[str], truncated: int
    ) -> Generation:
        """Cut at the first stop string; drop trailing tokens that lie wholly at/after the stop."""
        text = self.tokenizer.decode(ids)
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            n = len(ids)
            while n > 0 and len(self.tokenizer.decode(ids[: n - 1])) >= cut:
                n -= 1
            ids, lps = ids[:n], lps[:n]
        return Generation(list(ids), np.asarray(lps, dtype=np.float64), text, truncated)

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

        def windows() -> Iterator[tuple[int, list[int], list[int], int]]:
            """(doc, input ids, targets to score, position of the first scored target)."""
            for d, text in enumerate(texts):
                toks = list(self.tokenizer.encode(text, add_special_tokens=False))
                seq = [self.prefix_token_id, *toks]
                n = len(toks)
                end = 0  # number of targets scored so far
                while end < n:
                    new_end = min(n, window if end == 0 else end + stride)
                    start = max(0, new_end - window)
                    inp = seq[start:new_end]
                    yield d, inp, toks[end:new_end], end
                    end = new_end

        batch: list[tuple[int, list[int], list[int], int]] = []
        bar = _Progress(self.progress, 0, "scoring tokens")
        if self.progress:
            from tqdm.auto import tqdm

            bar.bar = tqdm(desc="scoring tokens", unit="tok", leave=False)
        with torch.inference_mode():
            for w in windows():
                batch.append(w)
                if len(batch) == self.batch_size:
                    yield self._token_batch(batch)
                    bar.update(sum(len(b[2]) for b in batch))
                    batch = []
            if batch:
                yield self._token_batch(batch)
                bar.update(sum(len(b[2]) for b in batch))
        bar.close()

    def _token_batch(self, batch: list[tuple[int, list[int], list[int], int]]) -> TokenScores:
        """Forward a batch of windows; reduce each scored position to argmax, max prob, log P(target).

        Rows are reduced one window at a time (max and logsumexp, no full log-softmax copy), so the
        extra memory beyond the model's logits is one window's worth.
        """
        import torch

        keep = max(len(b[2]) for b in batch)
        _, logits, _ = self._left_forward([b[1] for b in batch], keep)
        preds, confs, tgt_lps, targets = [], [], [], []
        for i, b in enumerate(batch):
            rows = logits[i, keep - len(b[2]) :].float()
            tgt = torch.tensor(b[2], dtype=torch.long, device=rows.device)
            lse = torch.logsumexp(rows, dim=-1)
            top, pred = rows.max(dim=-1)
            preds.append(pred)
            confs.append(torch.exp(top - lse))
            tgt_lps.append(rows.gather(1, tgt[:, None]).squeeze(1) - lse)
            targets.append(tgt)
        doc = np.concatenate([np.full(len(b[2]), b[0], dtype=np.int64) for b in batch])
        pos = np.concatenate([np.arange(b[3], b[3] + len(b[2]), dtype=np.int64) for b in batch])
        return TokenScores(
            doc_index=doc,
            position=pos,
            target=torch.cat(targets).cpu().numpy(),
            pred=torch.cat(preds).cpu().numpy(),
            confidence=torch.cat(confs).double().cpu().numpy(),
            target_logprob=torch.cat(tgt_lps).double().cpu().numpy(),
        )


def _split(
    lp: np.ndarray, greedy: np.ndarray, bounds: list[int], truncs: list[int]
) -> list[ContinuationScore]:
    """Cut flat per-token arrays back into one ContinuationScore per request."""
    out, start = [], 0
    for c, t in zip(bounds, truncs, strict=True):
        out.append(ContinuationScore(lp[start : start + c].copy(), bool(greedy[start : start + c].all()), t))
        start += c
    return out
