"""Per-example NLL: the measurement behind every entry of the forgetting matrix.

Usage::

    from training.nll import measure_nll, evaluate_loss
    before = measure_nll(base_model, tok, upstream.examples, batch_size=32)   # (N,) float64
    delta = measure_nll(model, tok, upstream.examples) - before  # a row of Z (> 0 = forgotten)
    with lora_model.disable_adapter():                 # LoRA: "before" is the same model
        before = measure_nll(lora_model, tok, upstream.examples)
    loss = evaluate_loss(model, tok, task.test)        # mean NLL: the task's test loss

NLL_j is the mean per-token negative log-likelihood over example j's target tokens (the response
+ EOS for instruction data; every token but the first for plain text: `training.data.encode`).
An example with no target token left (e.g. its response was truncated away) gets NaN, as in the
reference study.

Why it is fast and flat in memory: examples are processed in chunks of `CHUNK` (tokenised into
int32 arrays, sorted by length, cut into batches padded only to the longest in the batch, with a
token budget of `batch_size` x the chunk's longest example, so short examples go many at a
time), under `inference_mode`, with bf16 autocast on a GPU (used by default when there is one:
`resolve_device`); the cross-entropy is taken in slices of the flattened logits so the float32
log-softmax never exists for a whole batch; and only two scalars per example (the NLL sum and
the target count) outlive a batch. Memory is model + one batch, whatever N is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from training.data import IGNORE, Example, encode, pad_batch, pad_id
from training.model import context_length

# Part of every cached NLL's key (training.cache.NllCache): bump it whenever a change to
# measure_nll changes the numbers it returns (tokenisation, masking, precision, reduction), so
# values measured by the old code are never served as if the new code had measured them.
EVALUATOR_VERSION = 1

CHUNK = 4096  # examples tokenised and length-sorted at a time (bounds the host memory)
CE_SLICE_TOKENS = 8192  # rows of the flattened logits per cross-entropy call

Progress = Callable[[int, int], None]  # (examples done, total)


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def resolve_device(model_device: Any, requested: str | None = "auto", bf16: bool = True) -> Any:
    """(device to measure on, whether to autocast to bf16) for a model on `model_device`.

    requested "auto": a GPU when torch sees one (a model on the CPU is measured there and put
    back), else where the model is; None: where the model is; anything else: that device.
    bf16 autocast only on a CUDA device that supports it, and only when `bf16`; the CPU always
    measures in the model's own precision (fp32 for `load_model`), so CPU values never change.
    A pure function of torch.cuda's answers, so it is testable without a GPU.
    """
    import torch

    dev = torch.device(model_device)
    if requested == "auto":
        if dev.type == "cpu" and torch.cuda.is_available():
            dev = torch.device("cuda")
    elif requested is not None:
        dev = torch.device(requested)
    autocast = bool(bf16 and dev.type == "cuda" and torch.cuda.is_bf16_supported())
    return dev, autocast


def _movable(model: Any) -> bool:
    """A model whose weights all sit on one device (not dispatched by accelerate's device_map)."""
    placed = getattr(model, "hf_device_map", None)
    return not placed or len(set(placed.values())) <= 1


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches: longest first, at most batch_size x longest tokens each.

    The first batch (the `batch_size` longest examples) sets the token budget; later batches of
    shorter examples hold more of them within the same budget, so memory peaks at the first
    batch (a too-large batch fails at once, not after an hour) and short examples do not pay
    per-call overhead `batch_size` at a time.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not order:
        return []
    budget = batch_size * max(1, lengths[order[0]])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]  # rows are padded to the first (longest)
        if cur and (len(cur) + 1) * width > budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def batch_nll(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> tuple[Any, Any]:
    """Per-row (sum of target-token NLL, number of target tokens) for one padded batch."""
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1]  # position t predicts token t + 1
    targets = labels[:, 1:]
    b, t, v = logits.shape
    flat_logits, flat_targets = logits.reshape(b * t, v), targets.reshape(b * t)
    losses = torch.empty(b * t, dtype=torch.float32, device=logits.device)
    for s in range(0, b * t, CE_SLICE_TOKENS):
        losses[s : s + CE_SLICE_TOKENS] = F.cross_entropy(
            flat_logits[s : s + CE_SLICE_TOKENS].float(),
            flat_targets[s : s + CE_SLICE_TOKENS],
            ignore_index=IGNORE,
            reduction="none",
        )
    valid = targets != IGNORE
    return losses.view(b, t).double().sum(1), valid.sum(1)


def measure_nll(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: Progress | None = None,
    chat_template: bool = True,
    add_eos: bool = True,
    bf16: bool = True,
    device: str | None = "auto",
) -> np.ndarray:
    """Mean per-token NLL of each example's target tokens, aligned with `examples`.

    Parameters
    ----------
    model : a causal LM (transformers or peft); its training mode is restored afterwards.
    tokenizer : its tokenizer (padding side is irrelevant: batches are padded here, on the right).
    examples : what to measure.
    batch_size : examples per forward pass for the longest examples; shorter ones share the
        same token budget (batch_size x longest length), so more of them go per pass.
    max_length : left-truncate longer examples to this many tokens (default and upper bound:
        the model's `max_position_embeddings`; 1024 when it does not say).
    progress : called as progress(done, total) after each batch.
    chat_template : apply the tokenizer's chat template to instruction prompts (as in training).
    add_eos : the EOS after the response / text is a target token (as in training).
    bf16 : autocast to bf16 on a bf16-capable GPU (no effect on CPU).
    device : "auto" (default): on a GPU when there is one, else on the CPU; a model on the
        CPU (Lightning hands a trained model back there) is moved to the GPU for the call and
        moved back after it, so the caller sees no side effect. None: where the model is
        (inside a training job, whose strategy placed it). "cpu" / "cuda[:n]": move the model
        there and leave it there.

    Returns
    -------
    np.ndarray (len(examples),) float64; NaN for an example without target tokens.
    """
    import torch

    n = len(examples)
    out = np.full(n, np.nan, dtype=np.float64)
    if n == 0:
        return out
    context = context_length(model)
    # Never past the model's positions: a longer window would index embeddings that do not exist.
    max_length = min(max_length or context or 1024, context or max_length or 1024)
    home = _device(model)
    dev, autocast = resolve_device(home, device, bf16)
    if dev != home and device == "auto" and not _movable(model):
        dev, autocast = resolve_device(home, None, bf16)  # dispatched over devices: leave it
    if dev != home:
        model.to(dev)
    pad = pad_id(tokenizer)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    done = 0
    try:
        with torch.inference_mode(), amp:
            chunk: list[tuple[np.ndarray, np.ndarray]] = []
            for c0 in range(0, n, CHUNK):
                chunk.clear()  # the previous chunk goes before the next is encoded, not after
                for e in examples[c0 : c0 + CHUNK]:
                    x, y = encode(
                        tokenizer,
                        e,
                        max_length=max_length,
                        chat_template=chat_template,
                        add_eos=add_eos,
                    )
                    # int32 arrays: ~4x less host memory than lists of Python ints, same values
                    chunk.append((np.asarray(x, np.int32), np.asarray(y, np.int32)))
                for rows in plan_batches([len(x) for x, _ in chunk], batch_size):
                    ids, att, lab = pad_batch([chunk[i] for i in rows], pad)
                    sums, counts = batch_nll(model, ids.to(dev), att.to(dev), lab.to(dev))
                    sums, counts = sums.cpu().numpy(), counts.cpu().numpy()
                    with np.errstate(invalid="ignore", divide="ignore"):
                        vals = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
                    out[[c0 + i for i in rows]] = vals
                    done += len(rows)
                    if progress is not None:
                        progress(done, n)
    finally:
        model.train(was_training)
        if device == "auto" and dev != home:
            model.to(home)  # "auto" borrowed the GPU; the caller's model stays where it was
    return out


def evaluate_loss(model: Any, tokenizer: Any, examples: Sequence[Example], **kw: Any) -> float:
    """Mean over examples of the per-example NLL (NaN examples skipped): the task test loss."""
    vals = measure_nll(model, tokenizer, examples, **kw)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
