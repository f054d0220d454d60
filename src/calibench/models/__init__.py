"""Model loading (HF folders, hub ids + revisions, PEFT adapters, GGUF, built-ins) and the scoring engine.

Importing this package is cheap: torch and transformers load only when a model is loaded or scored.
"""

from calibench.models.engine import (
    ContinuationScore,
    Generation,
    NextToken,
    ScoringEngine,
    TokenScores,
)
from calibench.models.loading import ALLOWED_KEYS, LoadedModel, ModelSpec, load_model, parse_model_args

__all__ = [
    "ALLOWED_KEYS",
    "ContinuationScore",
    "Generation",
    "LoadedModel",
    "ModelSpec",
    "NextToken",
    "ScoringEngine",
    "TokenScores",
    "load_model",
    "parse_model_args",
]
