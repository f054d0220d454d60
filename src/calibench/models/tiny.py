"""Tiny GPT-NeoX (Pythia architecture) models saved as ordinary HF folders.

Tests, benchmarks and the lifecycle lab need real models without network access; this builds one
from a byte-level BPE tokenizer trained on the given texts and a freshly initialised GPT-NeoX.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer (GPT-NeoX style) and wrap it as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def neox_config(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, context: int = 256):
    """A GPT-NeoX config with Pythia's choices (rotary 25%, parallel residual, untied embeddings)."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=context,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    context: int = 256,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny GPT-NeoX plus its tokenizer to ``out_dir`` (safetensors)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = neox_config(len(tokenizer), hidden=hidden, layers=layers, heads=heads, context=context)
    model = GPTNeoXForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
