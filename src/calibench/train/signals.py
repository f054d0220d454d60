"""Did preference tuning do anything? Held-out signals of the reward model, RL and DPO.

A study that compares an RL model with the SFT model it started from only tests "RLHF does not
hurt calibration" if RL changed the model. These functions measure, on held-out preference pairs
(``calibench.train.formats.split_preferences``: no held-out pair asks about a fact a training pair
asks about):

* reward model: pairwise accuracy (score(chosen) > score(rejected)) with a bootstrap CI;
* RL: the manipulation check (``MANIPULATION``, below), fixed before any lifecycle run;
* DPO: the implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))`` of chosen minus rejected:
  its mean (the margin) and how often it is positive (the accuracy).

Each stage writes the result to ``OUT/training_signal.json`` and returns it in its summary; the
study adapter (``calibench.study.lab``) puts it in the train unit's manifest, and a failed RL check
makes that model's claim cells "not testable: RL did not change the model".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SIGNAL_FILE = "training_signal.json"
NOT_CHANGED = "RL did not change the model"


@dataclass(frozen=True)
class ManipulationRule:
    """The RL manipulation check. Both parts must hold:

    * reward gain: on held-out prompts, ``samples`` completions per prompt from the starting and the
      final policy (same sampling as training: temperature 1, ``max_completion_length`` tokens), each
      scored by the reward model; the per-prompt mean reward of the final policy minus the start's,
      averaged over prompts. Its ``level`` percentile bootstrap CI over prompts (``resamples``
      draws, seeded) must lie above 0.
    * KL: the Monte Carlo estimate of KL(final || start), the mean over the final policy's samples
      of ``sum_t log pi_final - log pi_start`` (nats per completion), must be at least ``kl_min``.
      0.5 nats per completion is a likelihood ratio of e^0.5 = 1.65 on a typical own sample (before
      issue 10, 8-step runs logged at most 0.04 nats per token and changed 2-5% of predictions).
    """

    kl_min: float = 0.5
    level: float = 0.95
    resamples: int = 1000
    prompts: int = 48
    samples: int = 4


MANIPULATION = ManipulationRule()


def bootstrap_mean_ci(values: np.ndarray, *, level: float = 0.95, resamples: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean (seeded)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def reward_scores(model, tokenizer, texts: list[str], *, device: str = "cpu", batch: int = 32) -> list[float]:
    """Scalar rewards of full texts (prompt + response) under a sequence-classification model.

    TRL's ``RewardTrainer`` appends the EOS token to every (non-conversational) response, so the
    model learns to score at the EOS; scoring without it reads the score at a position it was never
    trained on. Every text therefore gets the EOS here (unless it ends with one), padded on the right.
    """
    import torch

    eos = tokenizer.eos_token or ""
    texts = [t if t.endswith(eos) else t + eos for t in texts]
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], return_tensors="pt", padding=True, padding_side="right",
                            add_special_tokens=False).to(device)
            out += model(**enc).logits[:, 0].float().tolist()
    return out


def reward_function(model, tokenizer, *, device: str = "cpu"):
    """The reward model as a TRL reward function ``f(prompts, completions) -> rewards``: the texts are
    scored as ``reward_scores`` scores them (with the EOS the model was trained to score at). TRL's own
    handling of a model passed as reward function scores prompt + completion without the EOS."""

    def reward_model(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return reward_scores(model, tokenizer, [p + c for p, c in zip(prompts, completions, strict=True)],
                             device=device)

    return reward_model


def reward_accuracy(model, tokenizer, rows: list[dict[str, str]], *, device: str = "cpu",
                    seed: int = 0) -> dict[str, Any]:
    """Pairwise accuracy of a reward model on ``rows`` (ties count half) with a 95% bootstrap CI."""
    if not rows:
        return {"n": 0, "accuracy": None, "low": None, "high": None}
    chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows], device=device)
    rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows], device=device)
    diff = np.asarray(chosen) - np.asarray(rejected)
    wins = (diff > 0) + 0.5 * (diff == 0)
    low, high = bootstrap_mean_ci(wins, seed=seed)
    return {"n": len(rows), "accuracy": float(wins.mean()), "low": low, "high": high,
            "mean_margin": float(diff.mean()), **_by_kind(rows, wins)}


def _by_kind(rows: list[dict[str, str]], wins: np.ndarray) -> dict[str, Any]:
    """Accuracy per pair ``kind`` (world pairs say how the rejected response is wrong); {} without kinds."""
    kinds = np.array([r.get("kind") or "" for r in rows])
    by = {k: float(wins[kinds == k].mean()) for k in sorted(set(kinds) - {""})}
    return {"by_kind": by} if by else {}


def completion_logps(model, tokenizer, prompts: list[str], completions: list[str], *, device: str = "cpu",
                     batch: int = 32) -> np.ndarray:
    """Sum of log-probabilities of each completion's tokens after its prompt (prompt and completion
    tokenized separately, as TRL's DPO trainer does)."""
    import torch

    from calibench.train.callbacks import right_padded

    out: list[float] = []
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            seqs, starts = [], []
            for p, c in zip(prompts[i:i + batch], completions[i:i + batch], strict=True):
                p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
                c_ids = tokenizer(c, add_special_tokens=False)["input_ids"]
                seqs.append(p_ids + c_ids)
                starts.append(len(p_ids))
            ids, mask = right_padded(seqs, pad)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
            for j, s in enumerate(seqs):
                out.append(float(logp[j, starts[j] - 1:len(s) - 1].sum()))
    return np.asarray(out)


def sample_completions(model, tokenizer, prompts: list[str], *, samples: int, max_new_tokens: int,
                       seed: int, device: str = "cpu") -> list[list[str]]:
    """``samples`` completions per prompt at temperature 1 (seeded), decoded without special tokens."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = []
    tokenizer.padding_side = "left"
    with torch.no_grad():
        for p in prompts:
            enc = tokenizer([p] * samples, return_tensors="pt", add_special_tokens=False).to(device)
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def manipulation_check(start, final, tokenizer, reward_model, reward_tokenizer, prompts: list[str], *,
                       max_new_tokens: int, seed: int = 0, device: str = "cpu",
                       rule: ManipulationRule = MANIPULATION) -> dict[str, Any]:
    """The RL manipulation check (``ManipulationRule``) on held-out ``prompts``; ``passed`` says if RL
    changed the model, ``not_testable`` is the reason to give its claim cells when it did not."""
    prompts = list(dict.fromkeys(prompts))[: rule.prompts]
    per_prompt: dict[str, np.ndarray] = {}
    texts: dict[str, list[list[str]]] = {}
    for name, model in (("start", start), ("final", final)):
        model.eval()
        comps = sample_completions(model, tokenizer, prompts, samples=rule.samples,
                                   max_new_tokens=max_new_tokens, seed=seed, device=device)
        flat = [p + c for p, cs in zip(prompts, comps, strict=True) for c in cs]
        scores = np.asarray(reward_scores(reward_model, reward_tokenizer, flat, device=device))
        per_prompt[name] = scores.reshape(len(prompts), rule.samples).mean(axis=1)
        texts[name] = comps
    gain = per_prompt["final"] - per_prompt["start"]
    fp = [p for p, cs in zip(prompts, texts["final"], strict=True) for _ in cs]
    fc = [c for cs in texts["final"] for c in cs]
    kl = completion_logps(final, tokenizer, fp, fc, device=device) - completion_logps(start, tokenizer, fp, fc,
                                                                                      device=device)
    n_tokens = sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in fc)
    changed = float(np.mean([a != b for a, b in zip(_greedy(start, tokenizer, prompts, max_new_tokens, device),
                                                     _greedy(final, tokenizer, prompts, max_new_tokens, device),
                                                     strict=True)]))
    return {"prompts": len(prompts), "reward_start": float(per_prompt["start"].mean()),
            "reward_final": float(per_prompt["final"].mean()), "kl_per_token": float(kl.sum() / max(1, n_tokens)),
            "greedy_changed": changed, **manipulation_verdict(gain, kl, rule, seed=seed)}


def manipulation_verdict(gain: np.ndarray, kl: np.ndarray, rule: ManipulationRule = MANIPULATION, *,
                         seed: int = 0) -> dict[str, Any]:
    """The rule applied to per-prompt reward gains and per-sample KL estimates (nats per completion)."""
    gain, kl = np.asarray(gain, dtype=float), np.asarray(kl, dtype=float)
    low, high = bootstrap_mean_ci(gain, level=rule.level, resamples=rule.resamples, seed=seed)
    reward_ok = bool(np.isfinite(low) and low > 0)
    kl_ok = bool(kl.size and float(kl.mean()) >= rule.kl_min)
    why = []
    if not reward_ok:
        why.append(f"reward gain {gain.mean():+.3f}, {rule.level:.0%} CI [{low:+.3f}, {high:+.3f}] not above 0")
    if not kl_ok:
        why.append(f"KL {kl.mean():.3f} nats per completion < {rule.kl_min}")
    return {"rule": asdict(rule), "reward_gain": float(gain.mean()), "reward_gain_low": low,
            "reward_gain_high": high, "kl": float(kl.mean()) if kl.size else float("nan"),
            "passed": reward_ok and kl_ok, "not_testable": f"{NOT_CHANGED} ({'; '.join(why)})" if why else None}


def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, device: str) -> list[str]:
    import torch

    tokenizer.padding_side = "left"
    with torch.no_grad():
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def dpo_signal(model, ref_model, tokenizer, rows: list[dict[str, str]], *, beta: float, device: str = "cpu",
               seed: int = 0) -> dict[str, Any]:
    """DPO's implicit reward on ``rows``: margin = mean of beta * (chosen log-ratio - rejected log-ratio),
    accuracy = share of pairs with a positive margin (ties half), each with a 95% bootstrap CI."""
    if not rows:
        return {"n": 0, "accuracy": None, "margin": None}
    p = [r["prompt"] for r in rows]

    def ratio(key: str) -> np.ndarray:
        c = [r[key] for r in rows]
        return (completion_logps(model, tokenizer, p, c, device=device)
                - completion_logps(ref_model, tokenizer, p, c, device=device))

    margin = beta * (ratio("chosen") - ratio("rejected"))
    wins = (margin > 0) + 0.5 * (margin == 0)
    a_low, a_high = bootstrap_mean_ci(wins, seed=seed)
    m_low, m_high = bootstrap_mean_ci(margin, seed=seed)
    return {"n": len(rows), "accuracy": float(wins.mean()), "accuracy_low": a_low, "accuracy_high": a_high,
            "margin": float(margin.mean()), "margin_low": m_low, "margin_high": m_high, **_by_kind(rows, wins)}
