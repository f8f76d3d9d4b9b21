"""Probe cost: what knowing a new task's forgetting costs with 30 probes vs the whole upstream set.

Both measurements run on the same model (the line's champion; the NLL evaluator's cost does not
depend on the weights) in this process, each repeated and the median taken. The fold-in time is
the completion method's, fitted once on the matrix (fitting is amortised over every new task).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.settings import Settings


def _median_seconds(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def probe_cost(settings: Settings, seeds: Sequence[int], method: str = "mf") -> dict[str, Any]:
    from forgetting.completion import make_completer
    from forgetting.probes import choose_probes
    from service.pipeline.inputs import load_upstream
    from service.tracking.matrix import assemble
    from service.tracking.registry import Registry
    from service.tracking.store import Tracker
    from training.model import load_model
    from training.nll import measure_nll

    tracker = Tracker(settings)
    upstream = load_upstream(settings)
    model, tok = load_model(Registry(tracker).local_dir(Registry(tracker).champion()))
    z = assemble(tracker, upstream).matrix.values
    completer = make_completer(method).fit(z)
    probes = choose_probes(upstream.n, settings.k, seed=int(seeds[0]), exclude=upstream.heldout)
    probe_examples = [upstream.examples[i] for i in probes]
    measure_nll(model, tok, probe_examples)  # warm-up (first-call allocations)
    probe_s = _median_seconds(lambda: measure_nll(model, tok, probe_examples), 5)
    row = z[0]
    fold_s = _median_seconds(lambda: completer.fold_in(probes, row[probes]), 20)
    full_s = _median_seconds(lambda: measure_nll(model, tok, upstream.examples), 2)
    return {"method": method, "k": len(probes), "n": upstream.n,
            "probe_measure_seconds": probe_s, "fold_in_seconds": fold_s,
            "full_measure_seconds": full_s,
            "probe_share_of_full": (probe_s + fold_s) / full_s}
