"""Fixtures for training/: a tiny byte-level BPE tokenizer and tiny LLaMA models, all offline.

Sizes are chosen for speed on 2 shared CPU cores: hidden 32, 2 layers, vocab ~300.
"""

from __future__ import annotations

import pytest
import torch

WORDS = (
    "the quick brown fox jumps over the lazy dog. in the beginning was the word. "
    "question: what is two plus two? answer: four. the cat sat on the mat. "
    "def f(x): return x + 1. a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9"
)
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


def make_tokenizer(bos: bool = False):
    """A byte-level BPE (vocab ~300) with <|endoftext|> as EOS and pad; optional BOS prepending."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [WORDS] * 20,
        vocab_size=300,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|bos|>"],
        show_progress=False,
    )
    if bos:
        bpe.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", special_tokens=[("<|bos|>", bpe.token_to_id("<|bos|>"))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token="<|bos|>",
    )
    return tok


@pytest.fixture(scope="session")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tok_bos():
    return make_tokenizer(bos=True)


def tiny_model(tok, seed: int = 0, **over):
    from training.model import build_model

    cfg = {
        **TINY,
        "vocab_size": len(tok),
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "pad_token_id": tok.pad_token_id,
        **over,
    }
    return build_model(cfg, seed=seed)


@pytest.fixture
def model(tok):
    torch.set_num_threads(1)
    return tiny_model(tok)
