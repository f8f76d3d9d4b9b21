"""Self-generated replay: sequences the model samples itself, replayed instead of stored data.

Usage::

    from training.generate import generate_replay
    examples = generate_replay(model, tok, 32, max_new_tokens=128, seed=0)   # [Example(source="self")]

For users who do not have (all of) the upstream data: before a fine-tune, the current model
samples `n` sequences from its own distribution (ancestral sampling at temperature 1 from the
BOS token, or EOS when the tokenizer has no BOS: the start of a document), and those sequences are
replayed like stored examples (Marek et al., 2026, report that such samples replace stored
replay). Seeded: the same model, n, length and seed give the same sequences. Empty and duplicate
samples are drawn again (at most `n` extra draws), so the caller gets `n` distinct examples unless
the model keeps producing nothing.
"""

from __future__ import annotations

from typing import Any

from training.data import Example
from training.errors import TrainingError

SOURCE = "self"


def _start_token(tokenizer: Any) -> int:
    for name in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise TrainingError("the tokenizer has neither a BOS nor an EOS token to start sampling "
                        "from. Fix: replay stored upstream data (--replay-source upstream).")


def generate_replay(model: Any, tokenizer: Any, n: int, *, max_new_tokens: int = 128,
                    temperature: float = 1.0, seed: int = 0, batch_size: int = 16,
                    device: str | None = None) -> list[Example]:
    """`n` distinct plain-text examples sampled from `model` (see the module docstring)."""
    import torch

    if n <= 0:
        return []
    if max_new_tokens < 1 or not temperature > 0:
        raise TrainingError(f"generation needs max_new_tokens >= 1 and temperature > 0, got "
                            f"{max_new_tokens} and {temperature}.")
    dev = torch.device(device) if device else next(model.parameters()).device
    start = _start_token(tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = start if pad is None else int(pad)
    was_training = model.training
    model.eval()
    out: dict[str, Example] = {}
    draws = 0
    eos = getattr(tokenizer, "eos_token_id", None)
    devices = [dev] if dev.type == "cuda" else []
    try:
        # transformers' sampler draws from torch's global RNG: seed a forked copy of it, so that
        # the caller's RNG state is untouched and the same seed gives the same sequences.
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            while len(out) < n and draws < 2 * n:
                b = min(batch_size, n - len(out))
                ids = torch.full((b, 1), start, dtype=torch.long, device=dev)
                seqs = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                      max_new_tokens=max_new_tokens, pad_token_id=pad,
                                      eos_token_id=eos)
                draws += b
                for row in seqs[:, 1:].cpu().tolist():
                    # Up to the first end of document: what follows belongs to another one.
                    if eos is not None and eos in row:
                        row = row[: row.index(eos)]
                    text = tokenizer.decode(row, skip_special_tokens=True)
                    if text.strip():
                        e = Example.text(text.strip(), SOURCE)
                        out.setdefault(e.id, e)
    finally:
        model.train(was_training)
    return list(out.values())[:n]
