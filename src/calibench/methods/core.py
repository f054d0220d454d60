"""The token-probability methods and what every method shares: options, prompts, the session.

The method signature, the engine calls methods may make and the session's shared passes are described
in ``calibench.methods`` (the package docstring). Here: ``MethodOptions``, ``APPLIES_TO`` / ``OPT_IN``,
prompt and tokenizer helpers, answer normalisation, ``ScoringSession`` (greedy answers, option scores,
choice outputs, samples, hidden states; ``prefetch`` runs choice and continuation-* of one item as one
prefix tree where the engine has ``score_items``), and the methods choice, continuation-*,
first-token, sequence, p-true and token.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError
from calibench.models.engine.tokens import Tokens
from calibench.models.engine.types import ItemRequest
from calibench.tasks.prompts import P_TRUE_TEMPLATE

LETTERS = string.ascii_uppercase
_TAIL = 48  # characters of a prompt's end used to tokenise what follows it
CONTINUATION_METHODS = ("continuation-sum", "continuation-mean", "continuation-min")

APPLIES_TO: dict[str, tuple[str, ...]] = {
    "choice": ("mc",),
    "continuation-sum": ("mc",),
    "continuation-mean": ("mc",),
    "continuation-min": ("mc",),
    "first-token": ("facts",),
    "sequence": ("facts",),
    "p-true": ("facts", "mc"),
    "token": ("clm",),
    # families beyond token probabilities (calibench.methods.verbalized / agreement / ptrue / probe)
    "verbalized": ("facts", "mc"),
    "verbalized-2s": ("facts", "mc"),
    "consistency": ("facts", "mc"),
    "semantic": ("facts", "mc"),
    "p-true-fewshot": ("facts", "mc"),
    "probe": ("facts", "mc"),
}

# Run only when named: ``all`` keeps meaning the token-probability methods, since these sample, prompt
# for a stated confidence or fit probes (several times the cost, and some need an able model).
OPT_IN: frozenset[str] = frozenset({"verbalized", "verbalized-2s", "consistency", "semantic", "p-true-fewshot",
                                    "probe"})
VERBAL_SCALES = ("numeric", "linguistic")
# the MethodOptions fields of those families (a study's settings.method_options, the eval CLI's options)
FAMILY_OPTIONS = ("n_samples", "temperature", "probe_layer", "probe_folds", "verbal_scale")

# The p-true question (Kadavath et al. 2022, simplified to one line of options).


@dataclass(frozen=True)
class MethodOptions:
    """Knobs that change prompts or passes; part of every cache key, recorded in config.json."""

    num_fewshot: int = 0
    chat_template: bool = False
    seed: int = 0  # picks few-shot examples (per item, stable)
    max_new_tokens: int = 8
    window: int | None = None
    stride: int | None = None
    n_samples: int = 10  # consistency, semantic, p-true-fewshot (its brainstormed ideas)
    temperature: float = 1.0  # of those samples
    probe_layer: int | None = None  # hidden-state layer the probe reads (None: the middle layer)
    probe_folds: int = 5  # cross-fitting folds of the probe
    verbal_scale: str = "numeric"  # verbalized confidence: "numeric" (0-100) or "linguistic" (a scale of words)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | MethodOptions | None) -> MethodOptions:
        """Validate a user dict of options (unknown keys are an error, not silently ignored)."""
        if isinstance(options, MethodOptions):
            return options
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CalibenchError(f"unknown method option(s) {unknown}; known: {sorted(known)}")
        opts = cls(**options)
        if opts.num_fewshot < 0:
            raise CalibenchError(f"num_fewshot must be >= 0, got {opts.num_fewshot}")
        if opts.max_new_tokens < 1:
            raise CalibenchError(f"max_new_tokens must be >= 1, got {opts.max_new_tokens}")
        if opts.n_samples < 1:
            raise CalibenchError(f"n_samples must be >= 1, got {opts.n_samples}")
        if not opts.temperature > 0:
            raise CalibenchError(f"temperature must be > 0, got {opts.temperature}")
        if opts.probe_folds < 2:
            raise CalibenchError(f"probe_folds must be >= 2, got {opts.probe_folds}")
        if opts.verbal_scale not in VERBAL_SCALES:
            raise CalibenchError(f"verbal_scale must be one of {', '.join(VERBAL_SCALES)}, got {opts.verbal_scale!r}")
        return opts


# --------------------------------------------------------------------------------------------------
# tokenizer helpers


def _tokens(engine: Any, tok: Any) -> Tokens:
    """The engine's own ``Tokens`` (its BOS rules), else plain encoding with ``tok`` (a fake engine)."""
    own = getattr(engine, "tokens", None)
    return own if isinstance(own, Tokens) else Tokens(tok, lm_eval=False)


def answer_token_ids(tok: Any, words: Sequence[str], *, context: str = "Answer:", chat: bool = False,
                     engine: Any = None) -> tuple[list[int], str]:
    """One token id per answer word (letters ``A``, ``B``...) as it follows ``context``.

    Plain prompts end in "Answer:" and the answer is ``" A"`` (one token in GPT-2/NeoX BPE, ``▁A`` in
    SentencePiece); in a chat turn the answer starts the assistant message bare (``"A"``), as
    ``calibench.tasks.prompts.mc_choice_letters`` says. If the preferred form is not one token per
    word after the context (small BPE vocabularies without ``ĠE``), the other form is tried, then the
    bare word on its own. The ids must be distinct. Returns (ids, variant): "space", "bare" or "alone".
    """
    tokens = _tokens(engine, tok)
    order = ("bare", "space") if chat else ("space", "bare")
    tries: list[tuple[str, Callable[[str], list[int]]]] = [
        (v, lambda w, v=v: tokens.follow(context, (" " if v == "space" else "") + w)) for v in order
    ]
    tries.append(("alone", tokens.bare))
    for variant, encode in tries:
        ids: list[int] = []
        for word in words:
            t = encode(word)
            if len(t) != 1:
                break
            ids.append(t[0])
        else:
            if len(set(ids)) == len(ids):
                return ids, variant
    raise CalibenchError(
        f"the tokenizer has no distinct single token for each of {list(words)} (with or without a "
        "leading space), so the 'choice' method cannot read their next-token probabilities"
    )


def _decode(tok: Any, ids: Sequence[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------
# answer normalisation (SQuAD-style exact match)

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def first_sentence(text: str) -> str:
    """The answer up to its first sentence end (``.``/``!``/``?`` before whitespace or the end, or a
    newline), stripped; "Washington, D.C. is..." keeps "Washington, D.C"."""
    m = _SENTENCE_END.search(text)
    return (text[: m.start()] if m else text).strip()


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(answer: str, gold: Sequence[str]) -> bool:
    """Normalised exact match of ``answer`` against any gold string (an empty answer never matches)."""
    norm = normalize_answer(answer)
    return bool(norm) and any(norm == normalize_answer(g) for g in gold if g)


# --------------------------------------------------------------------------------------------------
# prompts


def _shots(task: Any, item: Any, opts: MethodOptions) -> list:
    """k solved examples for ``item`` (never itself; stable per item and seed)."""
    from calibench.tasks.prompts import select_fewshot

    return select_fewshot(task, item, opts.num_fewshot, seed=opts.seed) if opts.num_fewshot else []


def _chat_tok(tok: Any, opts: MethodOptions) -> Any:
    return tok if opts.chat_template else None


def _choice_prompts(task: Any, tok: Any, opts: MethodOptions) -> list[str]:
    from calibench.tasks.prompts import mc_choice_prompt

    chat = _chat_tok(tok, opts)
    return [mc_choice_prompt(item, fewshot=_shots(task, item, opts), chat_template=chat) for item in task.items]


def _continuation_requests(task: Any, tok: Any, opts: MethodOptions) -> list[tuple[str, list[str]]]:
    from calibench.tasks.prompts import mc_continuation_context, mc_continuation_options

    chat = _chat_tok(tok, opts)
    return [(mc_continuation_context(item, fewshot=_shots(task, item, opts), chat_template=chat),
             mc_continuation_options(item, chat=opts.chat_template)) for item in task.items]


def _fact_prompts(task: Any, tok: Any, opts: MethodOptions) -> list[str]:
    """Cloze prompts ("The capital of France is"), chat-wrapped on request."""
    from calibench.tasks.prompts import fact_prompt

    chat = _chat_tok(tok, opts)
    return [fact_prompt(item, fewshot=_shots(task, item, opts), chat_template=chat) for item in task.items]


def _sep(opts: MethodOptions) -> str:
    """What precedes an answer: a space after plain text, nothing at the start of an assistant turn."""
    return "" if opts.chat_template else " "


# --------------------------------------------------------------------------------------------------
# shared passes, held by one run's session


class ScoringSession:
    """One run's shared passes: what several methods of a task read, computed once per task.

    ``calibench.scoring.score`` makes one per run and drops it at the end; a method called without
    one makes its own (nothing shared). Passes are keyed by task (name, content hash, item ids); the
    engine, tokenizer and options are fixed for the session.
    """

    def __init__(self, engine: Any, tokenizer: Any = None, options: Mapping[str, Any] | MethodOptions | None = None
                 ) -> None:
        self.engine = engine
        self._tok = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
        self.options = MethodOptions.from_mapping(options)
        self._passes: dict[tuple, Any] = {}

    @property
    def tok(self) -> Any:
        """The model's tokenizer (prompts, decoding); an error for methods that need one when absent."""
        if self._tok is None:
            raise CalibenchError("this method needs the model's tokenizer (pass tokenizer=...)")
        return self._tok

    @property
    def tokens(self) -> Tokens:
        return _tokens(self.engine, self.tok)

    def _pass(self, name: str, task: Any, compute: Callable[[], Any]) -> Any:
        key = (name, *_task_key(task))
        if key not in self._passes:
            self._passes[key] = compute()
        return self._passes[key]

    def option_scores(self, task: Any) -> list[list[Any]]:
        """One ``score_options`` pass: every option as " " + option after the question context."""
        return self._pass("options", task, lambda: self.engine.score_options(
            _continuation_requests(task, self.tok, self.options)))

    def greedy_answers(self, task: Any) -> list[_Answer]:
        """One greedy pass over the fact prompts, each answer cut at its first sentence end."""

        def compute() -> list[_Answer]:
            prompts = _fact_prompts(task, self.tok, self.options)
            gens = self.engine.greedy(prompts, max_new_tokens=self.options.max_new_tokens, stop=("\n",))
            return [_cut_generation(self.tok, g) for g in gens]

        return self._pass("greedy", task, compute)

    def choice_outputs(self, task: Any) -> tuple[list, list, list]:
        """One ``next_token`` pass over the choice prompts: (outputs, letter ids, letter spellings)."""

        def compute() -> tuple[list, list, list]:
            prompts, cands, variants = _choice_requests(self, task)
            return self.engine.next_token(prompts, cands), cands, variants

        return self._pass("choice", task, compute)

    def samples(self, task: Any) -> list[list[_Answer]]:
        """``n_samples`` seeded samples per item at ``temperature`` (facts: the fact prompt, each sample cut
        like the greedy answer; mc: the choice prompt, two tokens for the letter)."""

        def compute() -> list[list[_Answer]]:
            opts = self.options
            if task.kind == "mc":
                prompts, new = _choice_prompts(task, self.tok, opts), 2
            else:
                prompts, new = _fact_prompts(task, self.tok, opts), opts.max_new_tokens
            seeds = [item_seed(opts.seed, task.name, it.item_id, "sample") for it in task.items]
            gens = self.engine.sample(prompts, seeds=seeds, n=opts.n_samples, temperature=opts.temperature,
                                      max_new_tokens=new, stop=("\n",))
            return [[_cut_generation(self.tok, g) for g in row] for row in gens]

        return self._pass("samples", task, compute)

    def hidden(self, task: Any) -> tuple[np.ndarray, int]:
        """Hidden states at the last prompt token (the fact prompt, or the choice prompt) and the layer."""

        def compute() -> tuple[np.ndarray, int]:
            opts = self.options
            layer = opts.probe_layer if opts.probe_layer is not None else self.engine.num_layers() // 2
            prompts = _choice_prompts(task, self.tok, opts) if task.kind == "mc" else _fact_prompts(task, self.tok, opts)
            return np.asarray(self.engine.hidden_states(prompts, layer=layer), dtype=np.float64), int(layer)

        return self._pass("hidden", task, compute)

    def prefetch(self, task: Any, methods: Sequence[str]) -> None:
        """Run the passes of several methods in one engine call, before the methods read them.

        Scored together (``ScoringEngine.score_items``), each item's choice prompt and option sequences
        go in one packed row, so there is one forward per batch of items instead of one per method
        family. Whatever they share (the options' context, few-shot shots across items) runs once.
        """
        wanted = set(methods)
        if getattr(task, "kind", None) != "mc" or "choice" not in wanted or not wanted & set(CONTINUATION_METHODS):
            return
        if not hasattr(self.engine, "score_items"):
            return
        key = _task_key(task)
        if ("choice", *key) in self._passes and ("options", *key) in self._passes:
            return
        prompts, cands, variants = _choice_requests(self, task)
        requests = [ItemRequest(prompts=[p], candidates=[c], option_sets=[o]) for p, c, o in
                    zip(prompts, cands, _continuation_requests(task, self.tok, self.options), strict=True)]
        scored = self.engine.score_items(requests, desc="choice + continuation")
        self._passes.setdefault(("choice", *key), ([s.next_tokens[0] for s in scored], cands, variants))
        self._passes.setdefault(("options", *key), [s.options[0] for s in scored])


def _session(engine: Any, tokenizer: Any, options: Mapping[str, Any] | MethodOptions | None,
             session: ScoringSession | None) -> ScoringSession:
    """The caller's session (checked against the arguments), else a fresh one for this call."""
    if session is None:
        return ScoringSession(engine, tokenizer, options)
    if session.engine is not engine:
        raise CalibenchError("the scoring session belongs to another engine")
    if tokenizer is not None and tokenizer is not session._tok:
        raise CalibenchError("the tokenizer differs from the scoring session's tokenizer")
    if options is not None and MethodOptions.from_mapping(options) != session.options:
        raise CalibenchError("method options differ from the scoring session's options")
    return session


def item_seed(seed: int, task_name: str, item_id: Any, purpose: str) -> int:
    """A 64-bit seed per (run seed, task, item, purpose): stable across runs, limits and batch sizes."""
    digest = hashlib.sha256(f"{seed}\x1f{task_name}\x1f{item_id}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _task_key(task: Any) -> tuple:
    ids = tuple(getattr(it, "item_id", i) for i, it in enumerate(task.items))
    return (task.name, getattr(task, "content_hash", ""), hash(ids))


@dataclass
class _Answer:
    text: str  # the answer cut at the first sentence end
    logprob: float  # sum of the log-probs of the tokens that spell it
    n_tokens: int
    raw: str  # the full greedy generation
    truncated: int


def _cut_generation(tok: Any, gen: Any) -> _Answer:
    """Cut the generation at its first sentence end and keep the log-prob of the tokens spelling it.

    The tokens counted are the shortest prefix whose decoding covers the cut answer, so the period
    after "Paris" does not lower the confidence in "Paris".
    """
    ids = list(gen.token_ids)
    lps = np.asarray(gen.token_logprobs, dtype=np.float64)
    full = _decode(tok, ids)
    answer = first_sentence(full)
    k = 0
    if answer:
        end = full.find(answer) + len(answer)
        for j in range(1, len(ids) + 1):
            if len(_decode(tok, ids[:j])) >= end:
                k = j
                break
    return _Answer(answer, float(lps[:k].sum()), k, full, int(getattr(gen, "truncated", 0)))


# --------------------------------------------------------------------------------------------------
# record helpers


def _softmax(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    e = np.exp(a - a.max())
    return e / e.sum()


def _record(task: Any, method: str, item_id: str, *, confidence: float, correct: bool, pred: str,
            probs: list[float] | None = None, label: int | None = None, extra: dict | None = None) -> dict:
    return {
        "task": task.name,
        "method": method,
        "item_id": str(item_id),
        "probs": probs,
        "label": label,
        "pred": pred,
        "confidence": float(min(max(confidence, 0.0), 1.0)),
        "correct": bool(correct),
        "extra": extra or {},
    }


def _class_record(task: Any, method: str, item: Any, probs: np.ndarray, extra: dict) -> dict:
    pred = int(np.argmax(probs))
    return _record(task, method, item.item_id, confidence=float(probs[pred]), correct=pred == item.label,
                   pred=str(pred), probs=probs.tolist(), label=int(item.label), extra=extra)


def _check_kind(task: Any, method: str) -> None:
    kinds = APPLIES_TO[method]
    if task.kind not in kinds:
        raise CalibenchError(
            f"method '{method}' does not apply to task '{task.name}' (a {task.kind} task); "
            f"it needs a {' or '.join(kinds)} task"
        )


# --------------------------------------------------------------------------------------------------
# the methods


def _choice_requests(session: ScoringSession, task: Any) -> tuple[list[str], list, list]:
    """Choice prompts, the token ids of each item's letters, and which letter spelling was used."""
    tok, opts = session.tok, session.options
    prompts = _choice_prompts(task, tok, opts)
    cands, variants, memo = [], [], {}
    for item, prompt in zip(task.items, prompts, strict=True):
        key = (prompt[-_TAIL:], len(item.options))  # the boundary depends only on the prompt's end
        if key not in memo:
            memo[key] = answer_token_ids(tok, LETTERS[: len(item.options)], context=prompt[-_TAIL:],
                                         chat=opts.chat_template, engine=session.engine)
        ids, variant = memo[key]
        cands.append(ids)
        variants.append(variant)
    return prompts, cands, variants


def choice(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
           session: ScoringSession | None = None) -> list[dict]:
    """Letters after "Answer:": next-token probabilities of the item's letters, renormalised.

    ``extra`` keeps the raw letter probabilities (HELM's unnormalised number), their sum (how much
    mass the model puts on any valid letter) and whether the top token overall was a letter.
    """
    _check_kind(task, "choice")
    ses = _session(engine, tokenizer, options, session)
    outs, cands, variants = ses.choice_outputs(task)
    records = []
    for item, out, ids, variant in zip(task.items, outs, cands, variants, strict=True):
        lp = np.asarray(out.candidate_logprobs, dtype=np.float64)
        raw = np.exp(lp)
        extra = {
            "letter_probs": raw.tolist(),
            "letter_mass": float(raw.sum()),
            "top_is_letter": int(out.top_id) in ids,
            "letter_tokens": variant,
            "truncated": int(getattr(out, "truncated", 0)),
        }
        records.append(_class_record(task, "choice", item, _softmax(lp), extra))
    return records


def _continuation(method: str, stat: str) -> Callable[..., list[dict]]:
    def run(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
            session: ScoringSession | None = None) -> list[dict]:
        _check_kind(task, method)
        ses = _session(engine, tokenizer, options, session)
        records = []
        for item, scores in zip(task.items, ses.option_scores(task), strict=True):
            values = [float(getattr(s, stat)) for s in scores]
            extra = {
                "loglik": [float(s.sum) for s in scores],
                "n_tokens": [int(s.n_tokens) for s in scores],
                "is_greedy": [bool(s.is_greedy) for s in scores],
                "score": values,
                "truncated": max(int(getattr(s, "truncated", 0)) for s in scores),
            }
            records.append(_class_record(task, method, item, _softmax(values), extra))
        return records

    run.__name__ = method.replace("-", "_")
    run.__doc__ = f"Options scored as continuations; score = {stat} of token log-probs; softmax over options."
    return run


continuation_sum = _continuation("continuation-sum", "sum")
continuation_mean = _continuation("continuation-mean", "mean")
continuation_min = _continuation("continuation-min", "min")


def first_token(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
                session: ScoringSession | None = None) -> list[dict]:
    """Facts: probability of the greedy first answer token; correct = it is the gold object's first
    token as it follows the prompt (``enc(prompt + " " + object)`` after ``enc(prompt)``)."""
    _check_kind(task, "first-token")
    ses = _session(engine, tokenizer, options, session)
    opts, tok = ses.options, ses.tok
    prompts = _fact_prompts(task, tok, opts)
    gold = []
    for p, item in zip(prompts, task.items, strict=True):
        ids = ses.tokens.follow(p, _sep(opts) + item.object)
        if not ids:
            raise CalibenchError(f"task '{task.name}' item '{item.item_id}': the object encodes to no token")
        gold.append(ids[0])
    outs = engine.next_token(prompts, [[g] for g in gold])
    records = []
    for item, out, g in zip(task.items, outs, gold, strict=True):
        top = int(out.top_id)
        extra = {
            "pred_id": top,
            "gold_id": g,
            "gold_token": _decode(tok, [g]),
            "gold_prob": float(np.exp(np.asarray(out.candidate_logprobs, dtype=np.float64)[0])),
            "truncated": int(getattr(out, "truncated", 0)),
        }
        records.append(_record(task, "first-token", item.item_id, confidence=float(np.exp(out.top_logprob)),
                               correct=top == g, pred=_decode(tok, [top]), extra=extra))
    return records


def _fact_gold(item: Any) -> list[str]:
    return [item.object, *list(getattr(item, "aliases", []) or [])]


def sequence(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
             session: ScoringSession | None = None) -> list[dict]:
    """Facts: greedy answer (``max_new_tokens``, default 8) cut at the first sentence end; confidence =
    product of its token probabilities; correct = normalised exact match with the object or an alias."""
    _check_kind(task, "sequence")
    ses = _session(engine, tokenizer, options, session)
    records = []
    for item, ans in zip(task.items, ses.greedy_answers(task), strict=True):
        extra = {"generation": ans.raw, "n_tokens": ans.n_tokens, "logprob": ans.logprob,
                 "truncated": ans.truncated}
        # an empty answer is an abstention: confidence 0 (it cannot be right, and claims nothing)
        conf = float(np.exp(ans.logprob)) if ans.text else 0.0
        records.append(_record(task, "sequence", item.item_id, confidence=conf,
                               correct=answer_matches(ans.text, _fact_gold(item)), pred=ans.text, extra=extra))
    return records


def p_true(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
           session: ScoringSession | None = None) -> list[dict]:
    """Kadavath et al.'s P(True): after a proposed answer, P(" True") / (P(" True") + P(" False")).

    The proposal is the model's own answer: the greedy answer (facts) or the continuation-sum argmax
    (multiple choice); correct = the proposal is correct. " True"/" False" are scored as whole
    continuations, so tokenizers that split them into several tokens still give exact probabilities.
    """
    _check_kind(task, "p-true")
    ses = _session(engine, tokenizer, options, session)
    opts, tok = ses.options, ses.tok
    if task.kind == "facts":
        answers = ses.greedy_answers(task)
        questions = _fact_prompts(task, tok, MethodOptions())  # the bare zero-shot cloze
        proposals = [a.text for a in answers]
        correct = [answer_matches(a.text, _fact_gold(it)) for a, it in zip(answers, task.items, strict=True)]
    else:
        scores = ses.option_scores(task)
        picks = [int(np.argmax([s.sum for s in sc])) for sc in scores]
        questions = [it.question for it in task.items]
        proposals = [it.options[k] for it, k in zip(task.items, picks, strict=True)]
        correct = [k == it.label for k, it in zip(picks, task.items, strict=True)]
    prompts = [P_TRUE_TEMPLATE.format(question=q, answer=a) for q, a in zip(questions, proposals, strict=True)]
    if opts.chat_template:
        from calibench.tasks.prompts import apply_chat

        prompts = [apply_chat(p, tok) for p in prompts]
    sep = _sep(opts)
    outs = engine.score_options([(p, [sep + "True", sep + "False"]) for p in prompts])
    records = []
    for item, prop, ok, (s_true, s_false) in zip(task.items, proposals, correct, outs, strict=True):
        lt, lf = float(s_true.sum), float(s_false.sum)
        conf = 1.0 / (1.0 + np.exp(lf - lt))
        extra = {"p_true": float(np.exp(lt)), "p_false": float(np.exp(lf)),
                 "truncated": max(int(getattr(s_true, "truncated", 0)), int(getattr(s_false, "truncated", 0)))}
        records.append(_record(task, "p-true", item.item_id, confidence=float(conf), correct=ok,
                               pred=prop, extra=extra))
    return records


def iter_token_records(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
                       session: ScoringSession | None = None) -> Iterator[pd.DataFrame]:
    """CLM: one record per scored token, yielded as one DataFrame per engine batch (streamable).

    item_id is ``"<doc id>:<position>"``; pred is the argmax token id; confidence its softmax
    probability; correct = argmax equals the next token; ``extra`` holds the target id.
    """
    _check_kind(task, "token")
    opts = _session(engine, tokenizer, options, session).options
    docs = task.items
    texts = (doc.text for doc in docs)
    for batch in engine.score_tokens(texts, window=opts.window, stride=opts.stride):
        doc_idx = np.asarray(batch.doc_index, dtype=np.int64)
        pos = np.asarray(batch.position, dtype=np.int64)
        target = np.asarray(batch.target, dtype=np.int64)
        pred = np.asarray(batch.pred, dtype=np.int64)
        n = len(pos)
        if n == 0:
            continue
        yield pd.DataFrame({
            "task": [task.name] * n,
            "method": ["token"] * n,
            "item_id": [f"{docs[d].item_id}:{p}" for d, p in zip(doc_idx.tolist(), pos.tolist(), strict=True)],
            "probs": [None] * n,
            "label": pd.array([None] * n, dtype="Int64"),
            "pred": [str(p) for p in pred.tolist()],
            "confidence": np.clip(np.asarray(batch.confidence, dtype=np.float64), 0.0, 1.0),
            "correct": pred == target,
            "extra": [f'{{"target": {t}}}' for t in target.tolist()],
        })


def token(engine: Any, task: Any, *, tokenizer: Any = None, options: Mapping[str, Any] | None = None,
          session: ScoringSession | None = None) -> list[dict]:
    """CLM token records as a list (small corpora; ``run_eval`` streams ``iter_token_records``)."""
    rows: list[dict] = []
    for frame in iter_token_records(engine, task, tokenizer=tokenizer, options=options, session=session):
        for rec in frame.to_dict("records"):
            rec["label"] = None
            rec["extra"] = json.loads(rec["extra"])
            rows.append(rec)
    return rows
