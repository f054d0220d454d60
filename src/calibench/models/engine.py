"""The scoring engine: every number a confidence method needs, from batched, length-sorted passes.

Design (see docs/models.md):

* Tokenisation follows lm-evaluation-harness exactly (trailing context whitespace moves to the
  continuation; continuation tokens = enc(ctx + cont)[len(enc(ctx)):]; the model input is
  enc(ctx) + those tokens, left-truncated to ``max_length + 1`` then the last token dropped), so
  log-likelihoods equal lm-eval's ``loglikelihood`` to 1e-4.
* Every shared prefix runs once (``score_items``; see ``calibench.models.tree``): an item's sequences
  form a prefix tree packed into one row with an ancestor mask and depth position ids, and a prefix
  that a group of items shares (few-shot shots) runs once as a header whose KV cache the group's
  rows attend to. Scored nodes sit at the end of each row, so only they go through the LM head
  (``logits_to_keep``). Requests that need truncation, and models whose attention cannot take a
  custom mask, take the plain path: each request its own left-padded sequence in length-sorted
  batches (lm-eval's Collator idea). A one-time check per engine compares both paths on one item.
* Log-softmax of the scored positions is taken in float64 (lm-eval uses the model dtype; float64
  keeps sums of many tokens stable). CLM token scoring uses float32 softmax for its max probability.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibench.errors import CalibenchError
from calibench.models.tree import PrefixTree, common_prefix_length, header_groups

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


@dataclass
class ItemRequest:
    """What one item needs: next-token prompts (with candidate ids each) and (context, options) sets.

    Requests of one item are scored together, so the prefixes they share run once.
    """

    prompts: Sequence[str] = ()
    candidates: Sequence[Sequence[int]] = ()  # one list per prompt, or empty
    option_sets: Sequence[tuple[str, Sequence[str]]] = ()


@dataclass
class ItemScores:
    """``ItemRequest``'s answers, in its order."""

    next_tokens: list[NextToken]
    options: list[list[ContinuationScore]]


@dataclass
class _TreeSeq:
    """A model input for the tree path and the positions whose next-token distribution it needs."""

    ids: list[int]
    queries: list[int]  # positions in ids
    targets: list[int] | None  # the token after each query (a continuation), None for a next-token prompt
    key: tuple  # ("next", prompt index, candidates) or ("cont", option set index, option index)

    @property
    def head(self) -> list[int]:
        """The tokens before the first scored position: what may be shared through a header."""
        return self.ids[: min(self.queries)]


@dataclass
class _Header:
    """A group's shared prefixes, run once: the packed row, its KV cache, where each sequence hangs."""

    row: Any  # PackedRow
    past: list[tuple[Any, Any]] | None  # per layer (keys, values) of the row, batch 1; None if empty
    starts: list[int]  # per sequence index: how many leading tokens the header holds
    anchors: list[int]  # per sequence index: the header column of its last header token (-1: none)


def torch_log_softmax64(logits: Any) -> Any:
    import torch

    return torch.log_softmax(logits.to(torch.float64), dim=-1)


def _next_token(lp: Any, candidates: Sequence[int], truncated: int) -> NextToken:
    """Reduce one float64 log-softmax row to what the methods use."""
    import torch

    top_lp, top_id = lp.max(dim=-1)
    cand = (
        lp[torch.tensor(list(candidates), dtype=torch.long, device=lp.device)].cpu().numpy()
        if len(candidates)
        else np.zeros(0, dtype=np.float64)
    )
    return NextToken(int(top_id), float(top_lp), cand, truncated)


class _Plan:
    """Where each request of a ``score_items`` call goes, and the slots its answer fills."""

    def __init__(self, requests: Sequence[ItemRequest]) -> None:
        self.next_tokens: list[list[NextToken | None]] = [[None] * len(r.prompts) for r in requests]
        self.options: list[list[list[ContinuationScore | None]]] = [
            [[None] * len(opts) for _ctx, opts in r.option_sets] for r in requests
        ]
        self.n_requests = sum(len(r.prompts) + sum(len(o) for _c, o in r.option_sets) for r in requests)
        self.tree_items: list[int] = []
        self.tree_seqs: dict[int, list[_TreeSeq]] = {}
        self.plain_prompts: list[tuple[int, int, list[int], int, list[int]]] = []  # item, prompt, ids, trunc, cands
        self.plain_pairs: list[tuple[int, int, int, _Pair]] = []  # item, option set, option, pair

    def fill(self, item: int, seqs: Sequence[_TreeSeq], answers: Sequence[Any]) -> None:
        for s, got in zip(seqs, answers, strict=True):
            if s.targets is None:
                _, j, cand = s.key
                self.next_tokens[item][j] = _next_token(got[0], cand, 0)
            else:
                _, j, k = s.key
                lp, greedy = got
                self.options[item][j][k] = ContinuationScore(lp, bool(greedy.all()), 0)


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
        # batching needs a pad id (masked out anyway); the caller's tokenizer is left as it is
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
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
        self.forward_tokens = 0  # real tokens through the model so far
        self._tree_ok: bool | None = None  # packed prefix scoring agrees with plain scoring; checked on first use

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
        real_tokens: int | None = None,
    ) -> Any:
        """One model forward; ``keep`` > 0 asks for logits of the last ``keep`` positions only.

        ``forward_tokens`` counts the real (unpadded) tokens that went through the model, for tokens/s.
        """
        self.forward_tokens += int(real_tokens if real_tokens is not None else mask[:, -ids.shape[1] :].sum())
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
        bar = _Progress(self.progress, plan.n_requests, desc)
        with torch.inference_mode():
            if plan.tree_items and self._tree_ok is None:
                self._tree_ok = self._tree_agrees(plan, plan.tree_items[0])
                if not self._tree_ok:
                    plan = self._plan(requests)  # everything on the plain path now
            self._run_tree(plan, bar)
            self._run_plain(plan, bar)
        bar.close()
        return [
            ItemScores(next_tokens=list(nt), options=[list(s) for s in opts])  # type: ignore[arg-type]
            for nt, opts in zip(plan.next_tokens, plan.options, strict=True)
        ]

    # ------------------------------------------------------------------ planning

    def tree_supported(self) -> bool:
        """Whether this model can score packed prefix trees (a custom 4D mask and explicit positions)."""
        cfg = getattr(self.model, "config", None)
        impl = getattr(cfg, "_attn_implementation", None)
        return bool(self.shared_prefix and self._has_pos and impl in ("eager", "sdpa") and self._tree_ok is not False)

    def _window(self) -> int:
        """Longest sequence the tree path may hold: the context, or a sliding attention window."""
        cfg = getattr(self.model, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        return min(self.max_length, int(window)) if window else self.max_length

    def _plan(self, requests: Sequence[ItemRequest]) -> _Plan:
        """Tokenise every request and route it to the tree path or the plain path."""
        prompts = [p for r in requests for p in r.prompts]
        sets = [s for r in requests for s in r.option_sets]
        prompt_ids = self.encode_many(prompts) if prompts else []
        pair_sets = self._encode_items(sets) if sets else []
        for pairs in pair_sets:
            for p in pairs:
                if not p.continuation:
                    raise CalibenchError("a continuation encodes to zero tokens; nothing to score")
                if len(p.continuation) > self.max_length:
                    raise CalibenchError(
                        f"a continuation of {len(p.continuation)} tokens exceeds max_length {self.max_length}"
                    )
        plan = _Plan(requests)
        tree = self.tree_supported()
        window = self._window()
        pi = si = 0
        for i, r in enumerate(requests):
            if len(r.candidates) not in (0, len(r.prompts)):
                raise CalibenchError(f"{len(r.candidates)} candidate lists for {len(r.prompts)} prompts")
            seqs: list[_TreeSeq] = []
            for j, _ in enumerate(r.prompts):
                ids = prompt_ids[pi] or [self.prefix_token_id]
                pi += 1
                cand = list(r.candidates[j]) if r.candidates else []
                if tree and len(ids) <= window:
                    seqs.append(_TreeSeq(ids, [len(ids) - 1], None, ("next", j, cand)))
                else:
                    trunc = max(0, len(ids) - self.max_length)
                    plan.plain_prompts.append((i, j, ids[-self.max_length :], trunc, cand))
            for j, _ in enumerate(r.option_sets):
                for k, p in enumerate(pair_sets[si]):
                    whole = p.context + p.continuation
                    if tree and len(whole) <= window + 1:
                        first = len(p.context) - 1
                        seqs.append(
                            _TreeSeq(whole[:-1], list(range(first, len(whole) - 1)), p.continuation, ("cont", j, k))
                        )
                    else:
                        plan.plain_pairs.append((i, j, k, p))
                si += 1
            if seqs:
                plan.tree_items.append(i)
                plan.tree_seqs[i] = seqs
        return plan

    # ------------------------------------------------------------------ the tree path

    def _tree_agrees(self, plan: _Plan, item: int) -> bool:
        """Score one item both ways, once per engine: a model that ignores custom masks fails here.

        Half of each sequence's prefix goes through a header cache, so the check covers that path too.
        """
        import warnings

        seqs = plan.tree_seqs[item]
        header = self._shared_header([seqs], check=True)
        worst = 0.0
        for s, got in zip(seqs, self._tree_rows(header, [seqs])[0], strict=True):
            if s.targets is None:
                _, logits, _ = self._left_forward([s.ids], 1)
                diff = (got - torch_log_softmax64(logits[:, -1])).abs().max()
            else:
                ref = self._full_batch([_Pair(s.ids[: s.queries[0] + 1], list(s.targets))])[0]
                diff = np.abs(got[0] - ref.token_logprobs).max()
            worst = max(worst, float(diff))
        # float32 noise is ~1e-5; 16-bit models differ between any two batch layouts by up to ~1e-2.
        # A model that ignores the mask sees other branches' tokens: differences of a nat or more.
        dtype = next(self.model.parameters()).dtype
        tol = 1e-3 if dtype.itemsize >= 4 else 1e-1
        if worst > tol:
            warnings.warn(
                f"packed prefix scoring disagrees with plain scoring on this model (max diff {worst:.2e}); "
                "scoring every request as its own sequence",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        return True

    def _run_tree(self, plan: _Plan, bar: _Progress) -> None:
        """Header groups (items sharing a long prefix), then one packed row per item, batch_size rows a pass."""
        if not plan.tree_items:
            return
        items = plan.tree_items
        keys = [plan.tree_seqs[i][0].head for i in items]
        for header_len, members in header_groups(keys):
            group = [items[m] for m in members]
            header = self._shared_header([plan.tree_seqs[i] for i in group]) if header_len else None
            lengths = [sum(len(s.ids) for s in plan.tree_seqs[i]) for i in group]  # enough to sort by
            order = [group[j] for j in _length_order(lengths)]
            for chunk in _chunks(order, self.batch_size):
                outs = self._tree_rows(header, [plan.tree_seqs[i] for i in chunk])
                for i, per_seq in zip(chunk, outs, strict=True):
                    plan.fill(i, plan.tree_seqs[i], per_seq)
                    bar.update(len(plan.tree_seqs[i]))

    def _shared_header(self, group: list[list[_TreeSeq]], *, check: bool = False) -> _Header:
        """Run once what a group of items shares: for the k-th sequence of every item, their common prefix.

        The prefixes (choice prompts' shots, continuations' shots, ...) form one header tree, packed
        and run as one row; its KV cache is what every item row of the group then attends to.
        ``check`` takes half of each sequence's own prefix (one item), to test the header path.
        """
        import torch

        starts: list[int] = []
        tree = PrefixTree()
        paths: list[list[int]] = []
        for k in range(max(len(seqs) for seqs in group)):
            have = [seqs[k].head for seqs in group if len(seqs) > k]
            prefix = have[0][: len(have[0]) // 2] if check else have[0]
            for h in have[1:]:
                prefix = prefix[: common_prefix_length(prefix, h)]
            if len(have) < 2 and not check:
                prefix = []  # nobody else to share it with
            starts.append(len(prefix))
            paths.append(tree.add(prefix))
        row = tree.pack()
        anchors = [row.column[p[-1]] if p else -1 for p in paths]
        if not len(row):
            return _Header(row, None, starts, anchors)
        out, _ = self._call(
            torch.from_numpy(row.tokens)[None].to(self.device),
            self._additive_mask(row.allowed[None]),
            position_ids=torch.from_numpy(row.positions)[None].to(self.device),
            keep=1,
            use_cache=True,
            real_tokens=len(row),
        )
        past = [(layer[0], layer[1]) for layer in out.past_key_values]
        return _Header(row, past, starts, anchors)

    def _additive_mask(self, allowed: np.ndarray) -> Any:
        """[B, Q, K] booleans -> the [B, 1, Q, K] float mask (0 or the dtype's min) attention adds.

        Float, not bool: eager attention adds the mask to the scores, and sdpa accepts either.
        """
        import torch

        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros((allowed.shape[0], 1, *allowed.shape[1:]), dtype=dtype)
        mask.masked_fill_(~torch.from_numpy(allowed)[:, None], torch.finfo(dtype).min)
        return mask.to(self.device)

    def _tree_rows(self, header: _Header | None, items: list[list[_TreeSeq]]) -> list[list[Any]]:
        """One forward over the packed rows of ``items``; per item, per sequence, its scored log-probs.

        A next-token sequence gets a float64 [1, V] log-softmax row; a continuation gets the float64
        log-probs of its target tokens and whether each was the argmax (as a pair).
        """
        import torch
        from transformers import DynamicCache

        head_row = header.row if header is not None and header.past is not None else None
        rows, paths = [], []
        for seqs in items:
            tree = PrefixTree(head_row)
            item_paths = []
            for k, s in enumerate(seqs):
                start, anchor = (header.starts[k], header.anchors[k]) if head_row is not None else (0, -1)
                path = tree.add(s.ids, start, anchor)
                for q in s.queries:
                    tree.score(path[q - start])
                item_paths.append((start, path))
            rows.append(tree.pack())
            paths.append(item_paths)
        H = 0 if head_row is None else len(head_row)
        B, W = len(rows), max(len(r) for r in rows)
        keep = max(r.n_scored for r in rows)
        ids = np.full((B, W), self.pad_id, dtype=np.int64)
        pos = np.zeros((B, W), dtype=np.int64)
        allowed = np.zeros((B, W, H + W), dtype=bool)
        for b, r in enumerate(rows):
            t = len(r)
            ids[b, W - t :] = r.tokens
            pos[b, W - t :] = r.positions
            allowed[b, W - t :, :H] = r.header_allowed
            allowed[b, W - t :, H + W - t :] = r.allowed
            allowed[b, np.arange(W - t), H + np.arange(W - t)] = True  # padding attends to itself
        cache = None
        if head_row is not None:
            cache = DynamicCache(
                ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in header.past]
            )
        _, logits = self._call(
            torch.from_numpy(ids).to(self.device),
            self._additive_mask(allowed),
            position_ids=torch.from_numpy(pos).to(self.device),
            keep=keep,
            past=cache,
            real_tokens=sum(len(r) for r in rows),
        )
        # gather every scored position of every sequence into one [N, V] block
        picks, targets, spans = [], [], []
        for b, (r, item_paths, seqs) in enumerate(zip(rows, paths, items, strict=True)):
            item_spans = []
            for s, (start, path) in zip(seqs, item_paths, strict=True):
                begin = len(picks)
                for n, q in enumerate(s.queries):
                    col = W - len(r) + r.column[path[q - start]]
                    picks.append((b, keep - (W - col)))
                    targets.append(s.targets[n] if s.targets is not None else -1)
                item_spans.append((begin, len(picks)))
            spans.append(item_spans)
        picked = logits[
            torch.tensor([b for b, _ in picks], device=logits.device),
            torch.tensor([c for _, c in picks], device=logits.device),
        ]
        lp = torch_log_softmax64(picked)
        tgt = torch.tensor(targets, device=lp.device)
        sel = (tgt >= 0).nonzero().squeeze(1)
        tok_lp = torch.zeros(len(targets), dtype=torch.float64, device=lp.device)
        greedy = torch.zeros(len(targets), dtype=torch.bool, device=lp.device)
        if len(sel):
            tok_lp[sel] = lp[sel].gather(1, tgt[sel][:, None]).squeeze(1)
            greedy[sel] = picked[sel].argmax(dim=-1) == tgt[sel]
        tok_np, greedy_np = tok_lp.cpu().numpy(), greedy.cpu().numpy()
        out: list[list[Any]] = []
        for seqs, item_spans in zip(items, spans, strict=True):
            out.append(
                [
                    lp[a:e] if s.targets is None else (tok_np[a:e].copy(), greedy_np[a:e].copy())
                    for s, (a, e) in zip(seqs, item_spans, strict=True)
                ]
            )
        return out

    # ------------------------------------------------------------------ the plain path

    def _run_plain(self, plan: _Plan, bar: _Progress) -> None:
        """lm-eval's way: each request its own left-truncated sequence, length-sorted batches."""

        prompts = plan.plain_prompts
        for chunk in _chunks([prompts[j] for j in _length_order([len(p[2]) for p in prompts])], self.batch_size):
            _, logits, _ = self._left_forward([p[2] for p in chunk], 1)
            lp = torch_log_softmax64(logits[:, -1])
            for b, (i, j, _ids, trunc, cand) in enumerate(chunk):
                plan.next_tokens[i][j] = _next_token(lp[b], cand, trunc)
            bar.update(len(chunk))
        pairs = plan.plain_pairs
        lengths = [len(p[3].context) + len(p[3].continuation) for p in pairs]
        for chunk in _chunks([pairs[j] for j in _length_order(lengths)], self.batch_size):
            scores = self._full_batch([p[3] for p in chunk])
            for (i, j, k, _), s in zip(chunk, scores, strict=True):
                plan.options[i][j][k] = s
            bar.update(len(chunk))

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
