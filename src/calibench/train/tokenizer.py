"""The lab tokenizer: byte-level BPE that keeps chosen strings (entity values, " A".." D", " True",
" False") as ONE token each.

Why: a 512-token BPE splits " Kraidou Labs" or " True" into pieces, so first-token accuracy is not
answer accuracy, ``choice`` falls back to bare letters and P(True) reads a 4-token string the corpus
never shows. Two changes to the usual GPT-2 scheme make a whole string one token:

- pre-tokenisation: one ``Split`` regex whose first alternatives are the whole strings (longest first,
  not followed by a letter, digit or underscore) and whose rest is GPT-2's own pattern, then
  ``ByteLevel`` without its regex, so a whole string (even with an inner space) is one "word";
- merges: after BPE training, each whole string that still encodes to several pieces gets merges
  appended (lowest priority) that join its pieces left to right, so it becomes one token.

Everything else is tokenised exactly as before (the GPT-2 pattern covers every character), and
training is deterministic, so the same corpus and strings give the same tokenizer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from calibench.errors import CalibenchError

SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SAFE = re.compile(r"^ ?[\w .'-]+$")


def split_pattern(whole: Sequence[str]) -> str:
    """The pre-tokenizer regex: whole strings first (longest first), then GPT-2's pattern."""
    for w in whole:
        if not _SAFE.match(w) or not w.strip():
            raise CalibenchError(f"cannot keep {w!r} as one token: only letters, digits, spaces, . ' - are allowed")
    alts = "|".join(re.escape(w).replace("\\ ", " ") for w in sorted(set(whole), key=lambda w: (-len(w), w)))
    return f"(?:{alts})(?![\\p{{L}}\\p{{N}}_])|{GPT2_PATTERN}"


def train_lab_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, whole: Sequence[str] = ()):
    """Train the byte-level BPE on ``texts`` and make every string of ``whole`` a single token.

    ``vocab_size`` is the number of learned BPE tokens; joining adds the tokens the whole strings need
    (about 250 on the default world: 766 in all). Shrinking the BPE to keep the total at 512 was
    tried and is worse: 258 of the tokens are the byte alphabet, so a 300-token BPE leaves every
    string in many pieces and the total grows again (695).
    """
    from transformers import PreTrainedTokenizerFast

    tok = _join_whole(_bpe(list(texts), vocab_size, whole), whole)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def _bpe(texts: list[str], vocab_size: int, whole: Sequence[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_pattern(whole)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _join_whole(tok, whole: Sequence[str]):
    """Append merges so each whole string encodes to one token (rebuilding after each string, since an
    earlier string's merges can change a later string's pieces)."""
    from tokenizers import Tokenizer

    for w in sorted(set(whole), key=lambda w: (len(w), w)):
        pieces = tok.encode(w, add_special_tokens=False).tokens
        if len(pieces) <= 1:
            continue
        data = json.loads(tok.to_str())
        vocab, merges = data["model"]["vocab"], data["model"]["merges"]
        as_pairs = bool(merges) and isinstance(merges[0], list)
        cur = pieces[0]
        for piece in pieces[1:]:
            joined = cur + piece
            if joined not in vocab:
                taken = [t["id"] for t in data.get("added_tokens", [])]
                vocab[joined] = max([*vocab.values(), *taken]) + 1
            merges.append([cur, piece] if as_pairs else f"{cur} {piece}")
            cur = joined
        tok = Tokenizer.from_str(json.dumps(data))
        if len(tok.encode(w, add_special_tokens=False).ids) != 1:
            raise CalibenchError(f"could not make {w!r} one token (pieces {pieces})")
    return tok
