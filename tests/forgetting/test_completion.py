"""Every completion method against one shared contract, then per-method known answers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from forgetting.completion import METHODS, Completer, make_completer
from forgetting.errors import ForgettingError
from forgetting.synthetic import Planted, planted_matrix

N_EMB = 8


def _embeddings(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, N_EMB)).astype(np.float32)


def _offsets(c: Completer) -> np.ndarray:
    """μ + b_example of a fitted method (the prediction for a task nothing is known about)."""
    if hasattr(c, "bias"):
        return c.bias.mu + c.bias.item_bias
    return c.mu + c.item_bias  # MF keeps its own (ALS-refined) biases


class CompleterContract:
    """Shared checks (implicit's test-mixin style); subclasses set `method` and `kwargs`.

    The flags say which exact property a method promises: `level_preserving` — an unpenalised
    task level, so the prediction's mean over the probes equals the probes' mean;
    `constant_on_unseen` — never-measured, unprobed examples all get one value;
    `offset_on_no_probes` — with no probe the prediction is μ + b_example;
    `exact_at_single_probe` — one probe is reproduced exactly; `uses_other_tasks` — with one
    known row it beats the additive baseline on a shifted copy of that row.
    """

    method: ClassVar[str]
    kwargs: ClassVar[dict[str, Any]] = {}
    level_preserving: ClassVar[bool] = True
    constant_on_unseen: ClassVar[bool] = True
    offset_on_no_probes: ClassVar[bool] = True
    exact_at_single_probe: ClassVar[bool] = True
    uses_other_tasks: ClassVar[bool] = True

    @staticmethod
    def task_emb() -> np.ndarray:
        return _embeddings(1, seed=5)[0]

    def make(self, n: int) -> Completer:
        kw = dict(self.kwargs)
        if self.method == "semantic":
            kw["example_embeddings"] = _embeddings(n)
        return make_completer(self.method, **kw)

    def fold(self, c: Completer, cols: Any, vals: Any) -> np.ndarray:
        emb = self.task_emb() if self.method == "semantic" else None
        return c.fold_in(cols, vals, task_embedding=emb)

    def test_fit_and_fold_in_shape(self, small_z: np.ndarray) -> None:
        c = self.make(small_z.shape[1])
        assert c.fit(small_z[:-1]) is c
        cols = np.arange(0, 300, 10)
        pred = self.fold(c, cols, small_z[-1, cols])
        assert pred.shape == (300,) and pred.dtype == np.float32 and np.isfinite(pred).all()

    def test_deterministic(self, small_z: np.ndarray) -> None:
        cols = np.arange(5, 300, 7)
        a = self.fold(self.make(300).fit(small_z[:-1]), cols, small_z[-1, cols])
        b = self.fold(self.make(300).fit(small_z[:-1]), cols, small_z[-1, cols])
        np.testing.assert_array_equal(a, b)

    def test_all_nan_columns_and_missing_entries(self, small_z: np.ndarray) -> None:
        z = small_z[:-1].copy()
        z[:, :20] = np.nan  # nobody measured these examples
        z[np.random.default_rng(0).random(z.shape) < 0.2] = np.nan
        c = self.make(300).fit(z)
        cols = np.arange(0, 300, 9)  # some probes fall in never-measured columns
        pred = self.fold(c, cols, small_z[-1, cols])
        assert np.isfinite(pred).all()
        unseen = np.setdiff1d(np.arange(20), cols)  # never measured, not probed either
        if self.constant_on_unseen:  # nothing tells these examples apart: one shared value
            assert np.ptp(pred[unseen]) < 1e-6, pred[unseen]
            assert np.ptp(pred[20:]) > 1e-3  # ...while measured examples are told apart
        if (
            self.method == "additive"
        ):  # exactly μ + b_task: the example bias of nobody's column is 0
            b = c.bias
            level = b.mu + np.mean(small_z[-1, cols] - b.mu - b.item_bias[cols])
            np.testing.assert_allclose(pred[unseen], level, rtol=1e-5)
            np.testing.assert_array_equal(b.item_bias[:20], 0.0)
        if self.method == "semantic":  # no example bias there: exactly a + s·cos(t, e_j)
            cos = c.emb @ (self.task_emb() / np.linalg.norm(self.task_emb()))
            fit = np.polyval(np.polyfit(cos[unseen], pred[unseen], 1), cos[unseen])
            np.testing.assert_allclose(pred[unseen], fit, atol=1e-6)

    def test_constant_rows(self, small_z: np.ndarray) -> None:
        z = small_z[:-1].copy()
        z[0] = 0.2
        z[1] = 0.0
        c = self.make(300).fit(z)
        cols = np.arange(30)
        pred = self.fold(c, cols, np.full(30, 0.3))
        assert np.isfinite(pred).all()
        if self.level_preserving:  # an unpenalised task level: the probes' mean is reproduced
            assert pred[cols].mean() == pytest.approx(0.3, abs=1e-5)
        if (
            self.method == "additive"
        ):  # the probe level plus the example biases, centred on the probes
            bi = c.bias.item_bias
            np.testing.assert_allclose(pred, 0.3 + bi - bi[cols].mean(), atol=1e-6)

    def test_constant_matrix_predicts_the_probe_level(self) -> None:
        c = self.make(300).fit(np.full((7, 300), 0.2, np.float32))
        pred = self.fold(c, np.arange(0, 300, 10), np.full(30, 0.3))
        np.testing.assert_allclose(pred, 0.3, atol=1e-5)  # nothing to learn but the level

    def test_many_or_no_probes(self, small_z: np.ndarray) -> None:
        c = self.make(300).fit(small_z[:-1])
        every = np.arange(300)  # more probes than known rows, factors or neighbours
        full = self.fold(c, every, small_z[-1])
        assert np.isfinite(full).all()
        if self.level_preserving:
            assert full.mean() == pytest.approx(float(small_z[-1].mean()), abs=1e-5)
        one = self.fold(c, np.array([7]), small_z[-1, 7:8])
        assert np.isfinite(one).all()
        if self.exact_at_single_probe:  # one probe: the task level alone absorbs it
            assert one[7] == pytest.approx(float(small_z[-1, 7]), abs=1e-5)
        if self.method != "semantic":
            none = self.fold(c, np.arange(0), np.zeros(0))
            assert np.isfinite(none).all()
            if self.offset_on_no_probes:  # nothing measured: μ + b_example, task level 0
                np.testing.assert_allclose(none, _offsets(c), atol=1e-6)

    def test_single_known_row(self, small_z: np.ndarray) -> None:
        # M = 1: every method fits; the new task is the known one shifted, plus noise.
        c = self.make(300)
        assert c.min_rows == 1
        c.fit(small_z[:1])
        rng = np.random.default_rng(0)
        new = small_z[0] + 0.1 + 0.01 * rng.standard_normal(300).astype(np.float32)
        cols = np.arange(0, 300, 10)
        pred = self.fold(c, cols, new[cols])
        assert np.isfinite(pred).all()
        if self.level_preserving:
            assert pred[cols].mean() == pytest.approx(float(new[cols].mean()), abs=1e-5)
        add = make_completer("additive").fit(small_z[:1]).fold_in(cols, new[cols])
        rmse = float(np.sqrt(np.mean((pred - new) ** 2)))
        if self.uses_other_tasks:  # the one known row's shape is worth more than its shrunk biases
            assert rmse < 0.8 * float(np.sqrt(np.mean((add - new) ** 2))), rmse

    def test_rejects_bad_probe_input(self, small_z: np.ndarray) -> None:
        c = self.make(300).fit(small_z[:-1])
        with pytest.raises(ForgettingError, match="NaN or inf"):
            self.fold(c, [0, 1], [0.1, np.nan])
        with pytest.raises(ForgettingError, match="NaN or inf"):
            self.fold(c, [0, 1], [0.1, np.inf])
        with pytest.raises(ForgettingError, match="repeat"):
            self.fold(c, [3, 3], [0.1, 0.2])
        with pytest.raises(ForgettingError, match="lie in"):
            self.fold(c, [300], [0.1])
        with pytest.raises(ForgettingError, match="one value per"):
            self.fold(c, [1, 2], [0.1])

    def test_rejects_inf_in_fit_and_unfitted_use(self, small_z: np.ndarray) -> None:
        z = small_z.copy()
        z[0, 0] = np.inf
        with pytest.raises(ForgettingError, match="inf"):
            self.make(300).fit(z)
        with pytest.raises(ForgettingError, match="not fitted"):
            self.fold(self.make(300), [0], [0.1])

    def test_predict_rows_matches_fold_in(self, small_z: np.ndarray) -> None:
        c = self.make(300).fit(small_z[:-2])
        embs = np.stack([_embeddings(1, seed=5)[0]] * 2) if self.method == "semantic" else None
        partial = np.full((2, 300), np.nan)
        cols = [np.arange(0, 300, 11), np.arange(3, 300, 13)]
        for b in range(2):
            partial[b, cols[b]] = small_z[-2 + b, cols[b]]
        batch = c.predict_rows(partial, task_embeddings=embs)
        for b in range(2):
            np.testing.assert_allclose(batch[b], self.fold(c, cols[b], partial[b, cols[b]]))


class TestAdditive(CompleterContract):
    method = "additive"
    uses_other_tasks = False


class TestKNN(CompleterContract):
    method = "knn"
    level_preserving = False  # neighbours' residuals move the level (MSD similarity on raw values)


class TestKNNPearson(CompleterContract):
    method = "knn_pearson"
    level_preserving = False


class TestMF(CompleterContract):
    method = "mf"


class TestALS(CompleterContract):
    method = "als"
    kwargs: ClassVar[dict[str, Any]] = {"factors": 4, "iterations": 5}


class TestALSRecalculate(CompleterContract):
    method = "als"
    kwargs: ClassVar[dict[str, Any]] = {"factors": 4, "iterations": 5, "fold": "recalculate"}


class TestSemantic(CompleterContract):
    method = "semantic"
    constant_on_unseen = False  # a + s·cos(t, e_j): checked separately
    uses_other_tasks = False


class TestRefit(CompleterContract):
    method = "refit"
    kwargs: ClassVar[dict[str, Any]] = {"base": "mf", "base_kwargs": {"iters": 3}}
    level_preserving = False  # a joint refit: the new row's level is shared with the others
    offset_on_no_probes = False
    exact_at_single_probe = False


class TestRandom(CompleterContract):
    method = "random"
    constant_on_unseen = False
    offset_on_no_probes = False
    uses_other_tasks = False


def test_random_reference_ranks_at_chance_and_keeps_the_probes(planted: Planted) -> None:
    from forgetting.metrics import spearman_rows

    c = make_completer("random").fit(planted.z[:32])
    cols = np.random.default_rng(1).choice(planted.z.shape[1], 30, replace=False)
    rows = np.stack([c.fold_in(cols, planted.z[i, cols]) for i in range(32, 40)])
    np.testing.assert_array_equal(rows[:, cols], planted.z[32:40][:, cols].astype(np.float32))
    score = np.ones(rows.shape, bool)
    score[:, cols] = False
    assert abs(spearman_rows(planted.z[32:40], rows, score)) < 0.05  # chance level
    mf = make_completer("mf").fit(planted.z[:32])
    pred = np.stack([mf.fold_in(cols, planted.z[i, cols]) for i in range(32, 40)])
    assert spearman_rows(planted.z[32:40], pred, score) > 0.5


def test_methods_listed_and_factory_errors() -> None:
    assert set(METHODS) == {"additive", "knn", "knn_pearson", "mf", "als", "semantic"}
    with pytest.raises(ForgettingError, match="unknown completion method"):
        make_completer("svd++")
    with pytest.raises(ForgettingError, match="no option"):
        make_completer("mf", rnk=3)
    assert make_completer("mf", rank=3).config.rank == 3


def _heldout_rmse(c: Completer, p: Planted, test: np.ndarray, k: int = 30) -> float:
    rng = np.random.default_rng(0)
    errs = []
    for i in test:
        cols = rng.choice(p.z.shape[1], k, replace=False)
        pred = c.fold_in(cols, p.z[i, cols])
        mask = np.ones(p.z.shape[1], bool)
        mask[cols] = False
        errs.append(np.mean((pred[mask] - p.z[i, mask]) ** 2))
    return float(np.sqrt(np.mean(errs)))


@pytest.mark.parametrize("method", ["knn_pearson", "mf", "als", "refit"])
def test_beats_additive_on_planted(planted: Planted, method: str) -> None:
    known, test = np.arange(32), np.arange(32, 40)
    kw: dict[str, Any] = {"factors": 8, "iterations": 10} if method == "als" else {}
    base = _heldout_rmse(make_completer("additive").fit(planted.z[known]), planted, test)
    ours = _heldout_rmse(make_completer(method, **kw).fit(planted.z[known]), planted, test)
    assert ours < 0.8 * base, (method, ours, base)


def test_mf_fold_in_recovers_a_planted_row(planted: Planted) -> None:
    # Noise-free rank-3 matrix with biases: 30 exact probes pin down 1 bias + 3 factors.
    z = planted.signal_rows(np.arange(40))
    c = make_completer("mf", rank=3, fold_lambda=1e-3, reg=1e-4, reg_item=0.0).fit(z[:39])
    cols = np.random.default_rng(3).choice(2000, 30, replace=False)
    pred = c.fold_in(cols, z[39, cols])
    assert np.sqrt(np.mean((pred - z[39]) ** 2)) < 0.02 * z[39].std()


def test_implicit_orientation_tasks_by_examples(small_z: np.ndarray) -> None:
    graded = make_completer(
        "als", factors=4, iterations=3, levels=(0.5, 0.1), keep_preferences=True
    ).fit(small_z)
    assert graded.model.user_factors.shape == (small_z.shape[0] * 2, 4)
    assert graded.model.item_factors.shape == (small_z.shape[1], 4)
    assert graded.user_items.shape == (small_z.shape[0] * 2, small_z.shape[1])
    binary = make_completer("als", factors=4, iterations=3, mapping="binary").fit(small_z)
    assert binary.model.user_factors.shape == (small_z.shape[0], 4)
    with pytest.raises(ForgettingError, match="mapping"):
        make_completer("als", mapping="stars").fit(small_z)


def test_graded_levels_like_the_top_fraction(small_z: np.ndarray) -> None:
    c = make_completer(
        "als", factors=2, iterations=1, levels=(0.5, 0.1), keep_preferences=True
    ).fit(small_z)
    liked = (c.user_items > 0).sum(axis=1).A.ravel().reshape(-1, 2)
    np.testing.assert_allclose(liked[:, 0], 150, atol=1)
    np.testing.assert_allclose(liked[:, 1], 30, atol=1)


def test_als_alpha_scales_confidences_exactly_once(small_z: np.ndarray) -> None:
    from forgetting.completion.als import _row_zscores

    c = make_completer(
        "als", factors=2, iterations=1, levels=(0.5,), alpha=4.0, keep_preferences=True
    ).fit(small_z)
    zs = _row_zscores(small_z - c.bias.baseline())
    liked = c.user_items.toarray() > 0
    np.testing.assert_allclose(
        c.user_items.toarray()[liked], 1 + 4.0 * np.maximum(zs[liked], 0), rtol=1e-5
    )
    assert c.model.alpha == 1.0  # implicit must not multiply by alpha a second time


def _arrays(obj: Any, seen: set[int] | None = None, depth: int = 0) -> list[Any]:
    """Every numpy array and scipy sparse matrix reachable from obj's attributes, recursively."""
    import scipy.sparse as sp

    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray) or sp.issparse(obj):
        return [obj]
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    else:
        return []
    return [a for ch in children for a in _arrays(ch, seen, depth + 1)]


@pytest.mark.parametrize("method", ["additive", "mf", "als"])
def test_factor_models_keep_no_dense_matrix(method: str) -> None:
    # Fold-in must need only example factors/biases: nothing of the known matrix's shape is
    # kept anywhere inside the fitted object (implicit's model included), in either orientation.
    # 11 x 300 so that no factor/level count equals M by accident (ALS: 8 factors, 3 levels).
    z = planted_matrix(11, 300, rank=2, noise=0.01, seed=4).z
    c = make_completer(method).fit(z)
    arrays = _arrays(c)
    shapes = [a.shape for a in arrays]
    assert any(a.shape[0] == 300 for a in arrays), shapes  # the example biases/factors are found
    assert (11, 300) not in shapes and (300, 11) not in shapes, shapes
    assert all(a.size < z.size for a in arrays), shapes
    assert getattr(c, "user_items", None) is None


def test_dense_matrix_walk_finds_nested_copies() -> None:
    # The walker above must see through nesting, or the test above could not fail.
    class Holder:
        def __init__(self) -> None:
            self.inner = {"cache": [np.zeros((11, 300))]}

    assert [a.shape for a in _arrays(Holder())] == [(11, 300)]


def test_semantic_needs_embeddings(small_z: np.ndarray) -> None:
    with pytest.raises(ForgettingError, match="example embeddings"):
        make_completer("semantic").fit(small_z)
    c = make_completer("semantic", example_embeddings=_embeddings(300)).fit(small_z)
    with pytest.raises(ForgettingError, match="task's embedding"):
        c.fold_in([0, 1], [0.1, 0.2])


def test_knn_k_larger_than_known_rows(small_z: np.ndarray) -> None:
    c = make_completer("knn_pearson", k=100).fit(small_z[:-1])
    cols = np.arange(0, 300, 5)
    assert np.isfinite(c.fold_in(cols, small_z[-1, cols])).all()


def test_mf_with_one_known_row_is_that_row_at_the_probes_level(small_z: np.ndarray) -> None:
    # M = 1: the example biases absorb the row, no factor is identifiable (rank 0), and the
    # fold-in shifts the known row to the new task's level.
    c = make_completer("mf").fit(small_z[:1])
    assert c.rank_ == 0 and c.item_factors.shape == (300, 0)
    np.testing.assert_allclose(c.fold_in([], []), small_z[0], atol=1e-6)
    cols = np.arange(0, 300, 7)
    np.testing.assert_allclose(
        c.fold_in(cols, small_z[0, cols] + 0.25), small_z[0] + 0.25, atol=1e-5
    )
    z = small_z[:1].copy()
    z[0, :10] = np.nan  # unmeasured in the one known row: predicted at the task's level
    pred = make_completer("mf").fit(z).fold_in(cols, small_z[0, cols])
    assert np.ptp(pred[1:7]) < 1e-6
    assert make_completer("mf").fit(small_z[:2]).rank_ == 2  # M >= 2 unchanged: min(rank, M, N)
