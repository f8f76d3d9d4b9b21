"""forgetting: the science core of ftctl (numpy, scipy, implicit, threadpoolctl only).

Usage::

    from forgetting.matrix import ForgettingMatrix, RowMeta
    from forgetting.completion import make_completer
    c = make_completer("mf", rank=5).fit(Z_known)        # (M, N) float32, NaN = unobserved
    row = c.fold_in(probe_cols, probe_values)             # (N,) predicted forgetting of a new task
    from forgetting.replay import sample_replay
    plan = sample_replay(row, budget=32, temperature=0.1, exclude=heldout)

Modules: methods (the registry of method names: completions, evaluation references, release
controls; dependency-free), matrix (storage), lowrank (R² analysis), completion (predictors),
probes (which k examples to measure), replay (what to replay), metrics, evaluate
(leave-tasks-out harness).
"""
