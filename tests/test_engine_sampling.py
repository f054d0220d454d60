"""Seeded sampling and hidden states on a real tiny GPT-NeoX: same seed, same samples, whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest

from calibench.errors import CalibenchError
from calibench.models.engine import ScoringEngine
from calibench.models.engine.sample import draw

TEXTS = ["the cat sat on the mat.", "a dog ran in the park.", "the capital of france is paris.",
         "birds fly over the sea."] * 8
PROMPTS = ["the cat", "a dog ran in", "the capital of france is", "birds"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibench.models.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", TEXTS, vocab_size=300, hidden=32, layers=2,
                            heads=4, context=64, seed=0)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _samples(tiny, batch_size, prompts=PROMPTS, seeds=(11, 12, 13, 14), n=3):
    model, tok = tiny
    eng = ScoringEngine(model, tok, batch_size=batch_size, progress=False)
    gens = eng.sample(prompts, seeds=list(seeds), n=n, temperature=1.5, max_new_tokens=6, stop=())
    return [[g.token_ids for g in row] for row in gens], [[g.token_logprobs for g in row] for row in gens]


def test_same_seed_same_samples_whatever_the_batch(tiny) -> None:
    one, lp_one = _samples(tiny, 1)
    for batch in (5, 12):
        ids, lps = _samples(tiny, batch)
        assert ids == one  # the same tokens exactly
        for a, b in zip(lps, lp_one, strict=True):  # log-probs up to padding's last bits
            np.testing.assert_allclose(np.concatenate(a), np.concatenate(b), atol=1e-7)
    # a prompt's samples do not depend on which prompts come with it
    alone, _ = _samples(tiny, 4, prompts=PROMPTS[2:3], seeds=(13,))
    assert alone[0] == one[2]
    # different samples of a prompt, and another seed, give other draws (temperature 1.5: a flat distribution)
    assert len({tuple(ids) for ids in one[0]}) > 1
    assert _samples(tiny, 4, seeds=(99, 12, 13, 14))[0][0] != one[0]


def test_sample_logprobs_are_the_models_untempered_ones(tiny) -> None:
    import torch

    model, tok = tiny
    eng = ScoringEngine(model, tok, batch_size=2, progress=False)
    g = eng.sample(["the cat"], seeds=[5], n=1, temperature=2.0, max_new_tokens=3, stop=())[0][0]
    ids = eng.encode("the cat")
    with torch.no_grad():
        logits = model(torch.tensor([ids + g.token_ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    expect = [float(lp[len(ids) - 1 + k, t]) for k, t in enumerate(g.token_ids)]
    np.testing.assert_allclose(g.token_logprobs, expect, atol=1e-6)


def test_draw_inverts_the_tempered_cdf() -> None:
    lp = np.log(np.array([0.5, 0.25, 0.25]))
    assert [draw(lp, 1.0, u) for u in (0.0, 0.49, 0.51, 0.74, 0.76, 0.999)] == [0, 0, 1, 1, 2, 2]
    # a low temperature concentrates the mass on the argmax
    assert draw(lp, 0.05, 0.99) == 0


def test_sampling_arguments_are_checked(tiny) -> None:
    model, tok = tiny
    eng = ScoringEngine(model, tok, progress=False)
    with pytest.raises(CalibenchError, match="temperature"):
        eng.sample(["a"], seeds=[0], n=1, temperature=0.0)
    with pytest.raises(CalibenchError, match="1 seeds for 2 prompts"):
        eng.sample(["a", "b"], seeds=[0], n=1)


def test_hidden_states_at_the_last_token_do_not_depend_on_the_batch(tiny) -> None:
    import torch

    model, tok = tiny
    a = ScoringEngine(model, tok, batch_size=1, progress=False).hidden_states(PROMPTS, layer=1)
    b = ScoringEngine(model, tok, batch_size=4, progress=False).hidden_states(PROMPTS, layer=1)
    assert a.shape == (4, 32)
    np.testing.assert_allclose(a, b, atol=1e-5)
    ids = ScoringEngine(model, tok, progress=False).encode(PROMPTS[1])
    with torch.no_grad():
        ref = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, -1].double().numpy()
    np.testing.assert_allclose(a[1], ref, atol=1e-5)
    with pytest.raises(CalibenchError, match="out of range"):
        ScoringEngine(model, tok, progress=False).hidden_states(PROMPTS, layer=7)
