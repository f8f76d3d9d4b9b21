"""Reproduce the study end to end with ftctl's own pipeline: `python -m bench.science`.

Usage::

    python -m bench.science --quick                  # tiny world, a few tasks, one seed (< 3 min)
    python -m bench.science                          # the study world: 52 tasks x 3,150 examples
    python -m bench.science --stages replay,report   # resume: finished jobs are reused
    python -m bench.science --publish                # also copy the results to docs/results/

Stages (each calls the product's pipeline functions, so every job is an MLflow run of the model
line `ftctl-study` in the workspace and finished jobs are reused on a rerun):

1. matrix     statistics jobs: every task fine-tuned from release 0, every upstream example measured
2. lowrank    R² of rank 1..10, additive, multiplicative, task-only and example-only fits; heatmap
3. prediction leave-tasks-out completion with k probes, seeds 0..9, every method; k sweep; random
              vs leverage probes; leave-one-family-out (the study's out-of-domain split)
4. replay     releases of unseen tasks x seeds x strategies x budgets (online and offline modes),
              scored on the held-out, never-replayed upstream examples; paired tests vs random
5. cost       wall time of 30 probes + fold-in vs measuring the whole upstream set

Outputs: `<out>/results.json`, `<out>/results.md` (the tables) and PNG figures. `--publish` copies
them to docs/results/, so that every figure the docs quote is one this command produced (the
README's headline sentences are copied from there by hand, with their date).
"""
