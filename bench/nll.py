"""Benchmark of the per-example NLL evaluator (training.nll.measure_nll) and of training speed.

Usage::

    python -m bench.nll --json                  # CPU, 2 threads, N = 2,000 and 20,000
    python -m bench.nll --device cuda --json    # the same on a GPU (bf16 autocast)
    python -m bench.nll --quick                 # N = 500 / 2,000: a smoke run

All figures are measured in the same run, on the same model and the same examples:

* evaluator examples/s vs two naive loops: one example at a time (the model's own loss), and
  batches padded to the full context in data order (no length sorting);
* the largest difference between the evaluator's values and the one-at-a-time loss;
* the evaluator's peak memory above what was in use before the call, at N = n and N = n_big
  (host: the process's peak RSS, reset through /proc/self/clear_refs; GPU: torch's peak
  allocation). It must not grow with N: the evaluator streams;
* training tokens/s of `finetune()` (steps after the first 5);
* `goals`: the issue's targets as computed booleans: the evaluator >= 3x each naive loop
  (`SPEED_GOAL`), and its peak memory flat in N (the N = n_big peak within `MEMORY_TOLERANCE`
  (10%) of the N = n peak, plus `MEMORY_SLACK_MIB` so that allocator noise on a peak of a few
  MiB does not decide it), and `all_met`.

Model: a LLaMA built from a config (hidden 128, 4 layers, 4 heads, vocab 2048), randomly
initialised — throughput does not depend on the weights. Text: paragraphs of the Python standard
library's source files (real text present on every machine with Python), or seeded synthetic
word salad when none are found; a byte-level BPE with 2,048 tokens is trained on it on the fly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sysconfig
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPEED_GOAL = 3.0  # evaluator examples/s over each naive loop's
MEMORY_TOLERANCE = 0.10  # peak at N = n_big may exceed the peak at N = n by this fraction ...
MEMORY_SLACK_MIB = 2.0  # ... plus this much (RSS / allocator granularity)

MODEL = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 2048,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}


def paragraphs(limit: int) -> tuple[list[str], str]:
    """Up to `limit` distinct paragraphs of >= 40 characters, and where they came from."""
    out: list[str] = []
    seen: set[str] = set()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for para in text.split("\n\n"):
            para = para.strip()
            if len(para) >= 40 and para not in seen:
                seen.add(para)
                out.append(para)
                if len(out) >= limit:
                    return out, f"python stdlib source ({root})"
    if len(out) >= limit // 2:
        return out, f"python stdlib source ({root})"
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    synth = [" ".join(rng.choices(words, k=rng.randint(8, 120))) for _ in range(limit)]
    return synth, "synthetic word salad (seeded)"


def make_tokenizer(texts: list[str]) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts[:5000],
        vocab_size=MODEL["vocab_size"],
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def naive_one_at_a_time(model: Any, tok: Any, examples: list[Any], max_length: int) -> list[float]:
    import torch

    from training.data import encode

    out = []
    with torch.no_grad():
        for e in examples:
            ids, labels = encode(tok, e, max_length=max_length)
            dev = next(model.parameters()).device
            loss = model(
                input_ids=torch.tensor([ids], device=dev), labels=torch.tensor([labels], device=dev)
            ).loss
            out.append(float(loss))
    return out


def naive_fixed_padding(
    model: Any, tok: Any, examples: list[Any], max_length: int, batch_size: int
) -> list[float]:
    """Batches in data order, every row padded to max_length (what a static collator does)."""
    import torch

    from training.data import encode, pad_id
    from training.nll import batch_nll

    dev = next(model.parameters()).device
    out: list[float] = []
    with torch.no_grad():
        for b0 in range(0, len(examples), batch_size):
            enc = [encode(tok, e, max_length=max_length) for e in examples[b0 : b0 + batch_size]]
            ids = torch.full((len(enc), max_length), pad_id(tok), dtype=torch.long)
            lab = torch.full((len(enc), max_length), -100, dtype=torch.long)
            att = torch.zeros((len(enc), max_length), dtype=torch.long)
            for r, (x, y) in enumerate(enc):
                ids[r, : len(x)], lab[r, : len(y)], att[r, : len(x)] = (
                    torch.tensor(x),
                    torch.tensor(y),
                    1,
                )
            s, c = batch_nll(model, ids.to(dev), att.to(dev), lab.to(dev))
            out.extend((s / c.clamp(min=1)).tolist())
    return out


def peak_memory(
    model: Any, tok: Any, examples: list[Any], args: argparse.Namespace
) -> dict[str, float]:
    import torch

    from training.nll import measure_nll

    gc.collect()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
        before = rss_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    measure_nll(
        model,
        tok,
        examples,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
    )
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = rss_kib("VmHWM") * 1024
    dt = time.perf_counter() - t0
    return {
        "n": len(examples),
        "peak_above_start_mib": (peak - before) / 2**20,
        "examples_per_s": len(examples) / dt,
    }


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's targets, computed from its own figures."""
    small, big = (m["peak_above_start_mib"] for m in result["evaluator_peak_memory"])
    limit = max(small, 0.0) * (1 + MEMORY_TOLERANCE) + MEMORY_SLACK_MIB
    speed = {
        f"evaluator_ge_{SPEED_GOAL:g}x_{name}": bool(result[f"speedup_vs_{name}"] >= SPEED_GOAL)
        for name in ("one_at_a_time", "fixed_padding")
    }
    sizes = [m.get("n") for m in result["evaluator_peak_memory"]]
    out: dict[str, Any] = {
        "sizes_as_in_issue": sizes == [2000, 20000],  # --quick checks 500 vs 2,000 only
        **speed,
        "peak_memory_big_over_small": big / small if small > 0 else None,
        "peak_memory_limit_mib": limit,
        "peak_memory_flat_in_n": bool(big <= limit),
    }
    out["all_met"] = all(speed.values()) and out["peak_memory_flat_in_n"]
    return out


def training_speed(
    model: Any, tok: Any, examples: list[Any], args: argparse.Namespace
) -> dict[str, float]:
    from training.config import FinetuneConfig
    from training.finetune import finetune

    marks: list[tuple[float, int]] = []
    cfg = FinetuneConfig(
        lr=1e-3,
        steps=args.train_steps,
        batch_size=16,
        warmup_steps=2,
        max_length=args.max_length,
        accelerator="gpu" if args.device == "cuda" else "cpu",
    )
    finetune(
        model,
        tok,
        examples,
        cfg,
        progress=lambda s, n, m: marks.append((time.perf_counter(), int(m["tokens"]))),
    )
    skip = 5  # start-up and the first steps are not steady state
    toks = sum(t for _, t in marks[skip + 1 :])
    dt = marks[-1][0] - marks[skip][0]
    raw = raw_training_loop(model, tok, examples, args, skip)
    return {
        "raw_torch_loop_tokens_per_s": raw,
        "tokens_per_s": toks / dt,
        "steps_per_s": (len(marks) - skip - 1) / dt,
        "precision": cfg.resolved_precision(),
        "batch_size": 16,
    }


def raw_training_loop(model: Any, tok: Any, examples: list[Any], args: argparse.Namespace,
                      skip: int) -> float:
    """Baseline for training speed: plain torch AdamW steps on the same batches, no Lightning,
    on a copy of the same model (full fine-tuning)."""
    import copy

    import torch

    from training.data import encode, pad_batch

    dev = "cuda" if args.device == "cuda" else "cpu"
    model = copy.deepcopy(model).to(dev)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    enc = [encode(tok, e, max_length=args.max_length) for e in examples]
    toks, t0 = 0, 0.0
    for s in range(args.train_steps):
        if s == skip + 1:
            if dev == "cuda":
                torch.cuda.synchronize()
            toks, t0 = 0, time.perf_counter()
        batch = [enc[(s * 16 + i) % len(enc)] for i in range(16)]
        ids, att, lab = (t.to(dev) for t in pad_batch(batch, tok.eos_token_id))
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        toks += int(att.sum())
    if dev == "cuda":
        torch.cuda.synchronize()
    return toks / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--n", type=int, default=2000, help="examples for the throughput comparison")
    p.add_argument("--n-big", type=int, default=20000, help="second N for the memory check")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="N = 500 and 2,000, 15 training steps")
    p.add_argument("--model", help="a save_pretrained directory to measure (with its tokenizer) "
                   "instead of the built 128-wide LLaMA, e.g. SmolLM2-135M")
    args = p.parse_args()
    if args.quick:
        args.n, args.n_big, args.train_steps = 500, 2000, 15

    import numpy as np
    import torch

    from training.data import Example, encode
    from training.model import build_model
    from training.nll import measure_nll

    torch.set_num_threads(args.threads)
    texts, text_source = paragraphs(args.n_big)
    if args.model:
        from training.model import load_model

        model, tok = load_model(args.model)
    else:
        tok = make_tokenizer(texts)
        model = build_model(
            {**MODEL, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}, seed=0
        )
    examples = [Example.text(t, "bench") for t in texts]
    while len(examples) < args.n_big:  # too few paragraphs: reuse them under distinct ids
        examples.append(
            Example.text(f"{texts[len(examples) % len(texts)]} #{len(examples)}", "bench")
        )
    small = examples[: args.n]
    lengths = [len(encode(tok, e, max_length=args.max_length)[0]) for e in small]
    model.to(args.device)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 naive loops stay exact references

    def timed(fn: Any) -> tuple[Any, float]:
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    opts = {"batch_size": args.batch_size, "max_length": args.max_length, "device": args.device}
    measure_nll(model, tok, small[:64], **opts)  # warm-up
    fast, t_fast = timed(lambda: measure_nll(model, tok, small, **opts))
    fast32 = fast
    if args.device == "cuda":  # the bf16 values differ from fp32 by design; compare fp32 too
        fast32 = measure_nll(model, tok, small, bf16=False, **opts)
    one, t_one = timed(lambda: naive_one_at_a_time(model, tok, small, args.max_length))
    fixed, t_fixed = timed(
        lambda: naive_fixed_padding(model, tok, small, args.max_length, args.batch_size)
    )
    mem = [peak_memory(model, tok, examples[:n], args) for n in (args.n, args.n_big)]
    train = training_speed(model, tok, small, args)

    result = {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu x {args.threads} threads",
        "torch": torch.__version__,
        "text": text_source,
        "model": {**({"dir": args.model} if args.model else MODEL),
                  "params": sum(p.numel() for p in model.parameters())},
        "n": args.n,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "tokens_per_example": {
            "mean": float(np.mean(lengths)),
            "min": min(lengths),
            "max": max(lengths),
        },
        "evaluator_examples_per_s": args.n / t_fast,
        "naive_one_at_a_time_examples_per_s": args.n / t_one,
        "naive_fixed_padding_examples_per_s": args.n / t_fixed,
        "speedup_vs_one_at_a_time": t_one / t_fast,
        "speedup_vs_fixed_padding": t_fixed / t_fast,
        "max_abs_diff_fp32_vs_one_at_a_time": float(
            np.max(np.abs(np.asarray(fast32) - np.asarray(one)))
        ),
        "max_abs_diff_vs_one_at_a_time": float(np.max(np.abs(np.asarray(fast) - np.asarray(one)))),
        "max_abs_diff_fixed_padding_vs_one_at_a_time": float(
            np.max(np.abs(np.asarray(fixed) - np.asarray(one)))
        ),
        "evaluator_peak_memory": mem,
        "training": train,
    }
    result["goals"] = goals(result)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"device {result['device']}, {args.n} examples, {result['tokens_per_example']['mean']:.0f} tokens/example"
    )
    for k in (
        "evaluator_examples_per_s",
        "naive_one_at_a_time_examples_per_s",
        "naive_fixed_padding_examples_per_s",
        "speedup_vs_one_at_a_time",
        "speedup_vs_fixed_padding",
        "max_abs_diff_fp32_vs_one_at_a_time",
    ):
        print(f"{k:40s} {result[k]:.6g}")
    for m in mem:
        print(
            f"evaluator peak memory at N={m['n']:>6}: {m['peak_above_start_mib']:.1f} MiB above start "
            f"({m['examples_per_s']:.0f} ex/s)"
        )
    print("goals: " + ", ".join(f"{k}={v}" for k, v in result["goals"].items()))
    print(
        f"training: raw torch loop {train['raw_torch_loop_tokens_per_s']:.0f} tokens/s; "
        f"finetune() {train['tokens_per_s']:.0f} tokens/s, {train['steps_per_s']:.2f} steps/s ({train['precision']})"
    )


if __name__ == "__main__":
    main()
