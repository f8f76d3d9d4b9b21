"""The world tokenizer: a byte-level BPE (vocab 2,048) trained on the upstream text.

Usage::

    tok = train_bpe(texts, vocab_size=2048)       # tokenizers.Tokenizer, ~2 s on 4 MB
    save_hf_tokenizer(tok, "data/tokenizer")      # PreTrainedTokenizerFast dir (eos = pad)
    hf = load_hf_tokenizer("data/tokenizer")

Byte-level, so any UTF-8 (task answers in Swedish or Portuguese) encodes without <unk>. A small
vocabulary keeps the softmax cheap: at this model size the vocabulary dominates CPU cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on `texts` (deterministic for the same texts in the same order)."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        show_progress=False,
    )
    return tok


def save_hf_tokenizer(tok: Any, out_dir: str | Path, max_length: int = 256) -> Path:
    """Wrap as a `PreTrainedTokenizerFast` with eos = pad = <|endoftext|> and save it."""
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw_path = out / "tokenizer.json"
    tok.save(str(raw_path))
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(raw_path),
        eos_token=EOS,
        pad_token=EOS,
        bos_token=EOS,
        unk_token=EOS,
        model_max_length=max_length,
    )
    hf.save_pretrained(str(out))
    return out


def load_hf_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
