"""Confidence extraction methods: from the scoring engine's raw numbers to contract records.

Every method is a function ``(engine, task, *, tokenizer=None, options=None, session=None) ->
list[dict]`` that returns one record dict per item (``model``/``revision`` are filled in later by
``calibench.scoring``). The methods only talk to the engine through ``score_options``,
``next_token``, ``greedy``, ``sample``, ``hidden_states`` and ``score_tokens`` (plus its ``tokens``
when it has them, to tokenise exactly as it does), so tests can drive them with a fake engine whose
numbers are set by hand.

Modules: ``core`` (options, prompts, the shared ``ScoringSession``, the token-probability methods),
``answers`` (the model's own answer and when two answers mean the same), ``agreement`` (consistency,
semantic), ``verbalized`` (stated confidence), ``ptrue`` (few-shot P(True)), ``probe`` (cross-fitted
hidden-state probes) and ``registry`` (``METHODS``, ``parse_methods``, ``resolve_methods``).

Several methods need the same forward passes: continuation-sum/mean/min are three views of one
``score_options`` call, sequence / p-true share one greedy generation, and consistency / semantic /
p-true-fewshot share one set of samples. A ``ScoringSession`` (one per run, made by
``calibench.scoring.score``) holds those passes, so each is computed once per task; a method called
without one makes its own and shares nothing.

Which method applies to which task kind is in ``APPLIES_TO``; calling a method on another kind raises
``CalibenchError``. ``resolve_methods`` expands ``all`` to the methods that fit each task, leaving out
the ``OPT_IN`` families (they sample, prompt or fit probes, and run only when named).
"""

from calibench.methods.agreement import agreement_share, cluster_probs, consistency, entropy, semantic
from calibench.methods.answers import GOLD_KEY, Proposal, answer_key, parse_letter
from calibench.methods.core import (
    APPLIES_TO,
    CONTINUATION_METHODS,
    FAMILY_OPTIONS,
    LETTERS,
    OPT_IN,
    P_TRUE_TEMPLATE,
    VERBAL_SCALES,
    MethodOptions,
    ScoringSession,
    answer_matches,
    answer_token_ids,
    choice,
    continuation_mean,
    continuation_min,
    continuation_sum,
    first_sentence,
    first_token,
    item_seed,
    iter_token_records,
    normalize_answer,
    p_true,
    sequence,
    token,
)
from calibench.methods.probe import CrossFit, cross_fit, probe
from calibench.methods.ptrue import P_TRUE_SHOTS, p_true_fewshot
from calibench.methods.registry import METHODS, parse_methods, resolve_methods
from calibench.methods.verbalized import (
    LINGUISTIC,
    NoStatedConfidence,
    Stated,
    parse_labelled,
    parse_value,
    verbalized,
    verbalized_2s,
)

__all__ = [
    "APPLIES_TO", "CONTINUATION_METHODS", "FAMILY_OPTIONS", "GOLD_KEY", "LETTERS", "LINGUISTIC", "METHODS",
    "NoStatedConfidence", "OPT_IN", "P_TRUE_SHOTS",
    "P_TRUE_TEMPLATE", "VERBAL_SCALES", "CrossFit", "MethodOptions", "Proposal", "ScoringSession", "Stated",
    "agreement_share", "answer_key", "answer_matches", "answer_token_ids", "choice", "cluster_probs", "consistency",
    "continuation_mean", "continuation_min", "continuation_sum", "cross_fit", "entropy", "first_sentence",
    "first_token", "item_seed", "iter_token_records", "normalize_answer", "p_true", "p_true_fewshot",
    "parse_labelled", "parse_letter", "parse_methods", "parse_value", "probe", "resolve_methods", "semantic",
    "sequence", "token", "verbalized", "verbalized_2s",
]
