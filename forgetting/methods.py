"""The one registry of method names: what a release or an evaluation may be asked to use.

Usage::

    from forgetting.methods import RELEASE_METHODS, check_method, get_method, method_help
    check_method(settings.method)            # ForgettingError naming the valid choices
    get_method("semantic").needs_embeddings  # True
    f"choose {method_help()}"                # "mf, als, knn, ..., random, oracle or none"

Three kinds of entries:
- "completion": predicts a new task's forgetting row from its probes (forgetting.completion);
  usable by releases and evaluations;
- "reference": built by `make_completer` too, but evaluation-only (a floor or an upper bound
  for the benchmark, never what a release should replay by);
- "control": a release's replay without a prediction (uniform, oracle, none); no completer.

"random" is both a reference (a chance-level *prediction*, for the evaluation metrics) and a
control (uniform *replay*, for releases): two entries with one name; each list below holds one.

Dependency-free on purpose (no numpy, no completer import): the CLI imports it at start-up
for its help text, and `forgetting.completion` derives its name lists from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from forgetting.errors import ForgettingError

Kind = Literal["completion", "reference", "control"]


@dataclass(frozen=True)
class Method:
    """One method name and what it needs before it can run."""

    name: str
    kind: Kind
    # Fits on the known rows of the forgetting matrix: every completer's `min_rows` is >= 1
    # (a release with fewer known rows falls back); controls read no known rows.
    needs_known_rows: bool
    # Needs example embeddings (N, d) at fit and the task's embedding at fold-in.
    needs_embeddings: bool
    summary: str  # one line, shown in CLI help

    @property
    def is_completer(self) -> bool:
        """Built by `forgetting.completion.make_completer` (completions and references)."""
        return self.kind != "control"


# Releases' entries first, in the order users see them (the default, mf, first), then the
# evaluation references. Each list below is a filter of this tuple, so it keeps this order.
# fmt: off
REGISTRY: tuple[Method, ...] = (
    Method("mf", "completion", needs_known_rows=True, needs_embeddings=False,
           summary="biased matrix factorisation of the known rows; the probes fold a new task in"),
    Method("als", "completion", needs_known_rows=True, needs_embeddings=False,
           summary="implicit's ALS learns example factors from the known rows; probe fold-in"),
    Method("knn", "completion", needs_known_rows=True, needs_embeddings=False,
           summary="the k = 40 known tasks closest on the probes (mean squared difference)"),
    Method("knn_pearson", "completion", needs_known_rows=True, needs_embeddings=False,
           summary="the k = 10 known tasks most correlated on the probes (Pearson)"),
    Method("additive", "completion", needs_known_rows=True, needs_embeddings=False,
           summary="baseline: mean + task bias + example bias (ranks every task's examples alike)"),
    Method("semantic", "completion", needs_known_rows=True, needs_embeddings=True,
           summary="task-example embedding similarity plus the known rows' example bias"),
    Method("random", "control", needs_known_rows=False, needs_embeddings=False,
           summary="uniform replay: no prediction, every upstream example equally likely"),
    Method("oracle", "control", needs_known_rows=False, needs_embeddings=False,
           summary="replay by the true row of a plain fine-tune of the task (an upper bound)"),
    Method("none", "control", needs_known_rows=False, needs_embeddings=False,
           summary="no replay: a plain fine-tune"),
    Method("refit", "reference", needs_known_rows=True, needs_embeddings=False,
           summary="refit everything with the new row appended (the paper's leave-one-out; slow)"),
    Method("random", "reference", needs_known_rows=True, needs_embeddings=False,
           summary="chance-level prediction at the probes' level (the ranking metrics' floor)"),
    Method("semantic_only", "reference", needs_known_rows=True, needs_embeddings=True,
           summary="embedding similarity alone, without the example bias (the prior approach)"),
)
# fmt: on


def _names(*kinds: Kind) -> tuple[str, ...]:
    return tuple(m.name for m in REGISTRY if m.kind in kinds)


COMPLETION_METHODS: tuple[str, ...] = _names("completion")
CONTROLS: tuple[str, ...] = _names("control")
REFERENCE_METHODS: tuple[str, ...] = _names("reference")
RELEASE_METHODS: tuple[str, ...] = _names("completion", "control")

# The order evaluation tables list completion methods in (`ftctl forgetting evaluate`, bench/,
# docs/contracts.md): the additive baseline first, then the methods that learn more from the
# matrix. A permutation of COMPLETION_METHODS (tests/forgetting/test_methods.py checks it).
EVALUATION_ORDER: tuple[str, ...] = ("additive", "knn", "knn_pearson", "mf", "als", "semantic")


def get_method(name: str, kind: Kind | None = None) -> Method:
    """The entry for `name`, of `kind` when given (else its release role: "random" is a control).

    Raises ForgettingError for a name (or name and kind) the registry does not hold.
    """
    for m in REGISTRY:
        if m.name == name and kind in (None, m.kind):
            return m
    allowed = RELEASE_METHODS + REFERENCE_METHODS if kind is None else _names(kind)
    what = "method" if kind is None else f"{kind} method"
    raise ForgettingError(f"unknown {what} {name!r}; choose {method_help(allowed)}.")


def method_help(names: Sequence[str] = RELEASE_METHODS) -> str:
    """The names as an English list: "mf, als, knn, knn_pearson, ..., random, oracle or none"."""
    names = list(dict.fromkeys(names))  # "random" may come twice (control and reference)
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def check_method(name: str, allowed: Sequence[str] = RELEASE_METHODS) -> str:
    """`name` when it is one of `allowed`, else a ForgettingError that names the choices.

    A known method that is not allowed here (e.g. the evaluation-only "refit" for a release)
    gets an error saying what it is, so the user learns why it was refused.
    """
    if name in allowed:
        return name
    known = [m for m in REGISTRY if m.name == name]
    if not known:
        raise ForgettingError(f"unknown method {name!r}; choose {method_help(allowed)}.")
    roles = " and ".join(f"a {m.kind} method ({m.summary})" for m in known)
    raise ForgettingError(
        f"method {name!r} is {roles}, which is not accepted here; choose {method_help(allowed)}."
    )
