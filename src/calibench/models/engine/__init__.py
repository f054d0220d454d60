"""The scoring engine: every number a confidence method needs, from batched, length-sorted passes.

Modules, along the data flow: ``tokens`` (text -> ids, the one place a continuation is tokenised
after its context), ``plan`` (route each request to a path, named slots for the answers),
``packed`` (prefix trees in one row, shared headers through a KV cache), ``plain`` (lm-eval's one
sequence per request), ``generate`` (greedy decoding), ``sample`` (seeded temperature sampling),
``hidden`` (hidden states for probes), ``clm`` (sliding CLM windows), ``forward``
(one model call), and ``core`` (``ScoringEngine``, the facade the rest of calibench uses).
"""

from calibench.models.engine.core import DEFAULT_MAX_LENGTH, ScoringEngine, resolve_max_length
from calibench.models.engine.forward import torch_log_softmax64
from calibench.models.engine.tokens import Pair, Tokens
from calibench.models.engine.types import (
    ContinuationScore,
    Generation,
    ItemRequest,
    ItemScores,
    NextToken,
    TokenScores,
)

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "ContinuationScore",
    "Generation",
    "ItemRequest",
    "ItemScores",
    "NextToken",
    "Pair",
    "ScoringEngine",
    "TokenScores",
    "Tokens",
    "resolve_max_length",
    "torch_log_softmax64",
]
