"""End to end through the CLI on the tiny world with a real SQLite tracking store:
init → statistics for 3 tasks → release new-task → registry, artifacts, idempotency, errors.

One workspace per module: the steps build on each other like a user's session would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app

STATS_TASKS = ["translate_fra", "wn_noun_food", "py_io"]
NEW_TASK = "translate_deu"
runner = CliRunner()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ws")


def ftctl(ws: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.stdout, result.stderr


def ok_json(ws: Path, *args: str) -> object:
    code, out, err = ftctl(ws, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def tracker(ws: Path):
    from service.settings import load_settings
    from service.tracking.store import Tracker

    return Tracker(load_settings(overrides={"workspace": ws}, env={}))


def matrix_rows(ws: Path) -> int:
    from service.tracking.store import TAG

    return len(tracker(ws).find_runs({TAG + "kind": "stats", TAG + "role": "job"}))


def test_init_registers_base_as_champion(ws: Path) -> None:
    r = ok_json(ws, "init", "--world", "tiny")
    assert r["version"] == 1 and r["world"] == "tiny" and r["upstream_examples"] == 210
    versions = ok_json(ws, "release", "list")
    assert [v["version"] for v in versions] == [1]
    assert "champion" in versions[0]["aliases"]
    assert ok_json(ws, "init", "--world", "tiny")["reused"] is True


def test_stats_collect_grows_the_matrix(ws: Path) -> None:
    results = ok_json(ws, "stats", "collect", *STATS_TASKS, "--workers", "2")
    assert [r["task"] for r in results] == STATS_TASKS
    assert all(r["task_loss_after"] < r["task_loss_before"] for r in results)
    assert matrix_rows(ws) == 3
    again = ok_json(ws, "stats", "collect", STATS_TASKS[0])
    assert again[0]["reused"] is True and matrix_rows(ws) == 3


def test_analyze_reports_r2_by_rank(ws: Path) -> None:
    r = ok_json(ws, "forgetting", "analyze")
    assert r["rows"] == 3 and r["columns"] == 210
    r2 = r["report"]["svd_r2"]
    assert r2["3"] == pytest.approx(1.0, abs=1e-6)  # 3 rows: rank 3 fits exactly
    assert 0 < r2["1"] <= r2["2"] <= r2["3"]
    null = r["null_r2"]  # beside it, the same ranks on column-permuted copies
    assert null["1"]["r2"] == pytest.approx(r2["1"], abs=1e-5) and null["3"]["null_mean"] == pytest.approx(1.0)
    assert null["1"]["excess"] == pytest.approx(r2["1"] - null["1"]["null_mean"])


def test_evaluate_predict_and_recommend(ws: Path) -> None:
    r = ok_json(ws, "forgetting", "evaluate", "--method", "additive", "--method", "mf",
                "--seeds", "2", "--k", "20", "--split", "loo")
    res = r["report"]["results"]
    assert set(res) == {"additive", "mf"} and r["rows"] == 3
    assert all(0 <= m["metrics"]["rmse_x100"]["mean"] < 100 for m in res.values())
    p = ok_json(ws, "forgetting", "predict", "translate_fra", "--method", "additive", "--top", "5", "--k", "20")
    assert len(p["top"]) == 5 and p["known_rows"] == 2 and "versus_measured" in p
    preds = [t["predicted"] for t in p["top"]]
    assert preds == sorted(preds, reverse=True)
    rec = ok_json(ws, "replay", "recommend", "translate_fra", "--method", "additive", "--budget", "4")
    assert len(rec["replay"]) == 4 and len({x["example_id"] for x in rec["replay"]}) == 4
    from service.pipeline.inputs import load_upstream
    from service.settings import load_settings

    up = load_upstream(load_settings(overrides={"workspace": ws}, env={}))
    held = {i for i, h in zip(up.ids, up.heldout, strict=True) if h}
    assert not held & {x["example_id"] for x in rec["replay"]}


def test_fits_are_cached_and_the_scheduled_refit_warms_the_cache(ws: Path) -> None:
    from types import SimpleNamespace

    import numpy as np

    from service.dist.beat import refit
    from service.pipeline.completion import completer
    from service.pipeline.inputs import load_upstream
    from service.settings import load_settings

    s = load_settings(overrides={"workspace": ws}, env={})
    cache = s.cache_dir / "completers"
    before = set(cache.glob("*.pkl")) if cache.exists() else set()
    # The beat task's body; it reads the worker's settings from its app.
    out = refit(SimpleNamespace(app=SimpleNamespace(ftctl_settings=s)))
    assert out["rows"] == 3 and out["method"] == "mf"
    [new] = set(cache.glob("*.pkl")) - before
    up = load_upstream(s)
    a = completer(s, tracker(ws), up, "mf", 1)  # a new task: all rows known
    assert a.method == "mf" and a.fallback is None
    assert set(cache.glob("*.pkl")) - before == {new}  # served from the cache
    cols = np.arange(0, 200, 7)
    b = completer(s, tracker(ws), up, "mf", 1, task_name="translate_fra")  # its row left out
    assert len(set(cache.glob("*.pkl")) - before) == 2
    assert not np.allclose(a.model.fold_in(cols, np.full(cols.size, 0.1)),
                           b.model.fold_in(cols, np.full(cols.size, 0.1)))


def test_release_new_task_registers_and_gates(ws: Path) -> None:
    r = ok_json(ws, "release", "new-task", NEW_TASK, "--method", "mf", "--measure-all", "--k", "20", "--job-id", "rel-deu-1")
    assert r["version"] == 2 and r["method"] in ("mf", "additive")
    assert r["task_loss_after"] < r["task_loss_before"]
    assert r["replayed"] >= 1 and r["budget"] == r["replayed"]
    if r["method"] == "mf":  # the matrix check: the probes cross-validated against additive
        chk = r["matrix_check"]
        assert chk["rmse_x100"] > 0 and chk["baseline_rmse_x100"] > 0
        assert chk["stale"] == (chk["rmse_x100"] >= chk["baseline_rmse_x100"])
        assert tracker(ws).get_run(r["run_id"]).data.tags["ftctl.matrix_check"] in ("ok", "stale")
    versions = {v["version"]: v for v in ok_json(ws, "release", "list")}
    assert "candidate" in versions[2]["aliases"]
    assert ("champion" in versions[2]["aliases"]) == r["gate"]["passed"]
    assert versions[2]["tags"]["ftctl.parent_version"] == "1"

    t = tracker(ws)
    run = t.get_run(r["run_id"])
    assert run.info.status == "FINISHED"
    row = t.load_row(r["run_id"])
    assert len(row) == 210 and row["example_id"].is_unique
    assert set(row.columns) >= {"example_id", "source", "nll_before", "nll_after", "delta", "replayed", "heldout"}
    assert row["replayed"].sum() >= 1 and not (row["replayed"] & row["heldout"]).any()
    children = t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{r['run_id']}'")
    # Online mode: warm-up (random replay, then the probes) → predict → replay-train → measure.
    assert {c.info.run_name for c in children} == {"warm-up", "predict", "replay-train", "measure"}
    assert all(c.info.status == "FINISHED" and c.data.tags["ftctl.stage"] == c.info.run_name
               for c in children)
    # The views (figures, top-forgotten table with text) are on the release run itself.
    names = {a.path for a in t.client.list_artifacts(r["run_id"], "figures")}
    assert names == {"figures/forgetting_hist.png", "figures/forgetting_by_source.png",
                     "figures/heldout_vs_controls.png", "figures/model_line.png"}
    table = json.loads(Path(t.client.download_artifacts(r["run_id"], "forgetting/top_forgotten.json")).read_text())
    top = pd.DataFrame(table["data"], columns=table["columns"])
    assert len(top) == 50 and top["delta"].is_monotonic_decreasing and top["text"].str.len().gt(0).all()
    train = next(c for c in children if c.info.run_name == "replay-train")
    warm = next(c for c in children if c.info.run_name == "warm-up")
    steps = [m.step for m in t.client.get_metric_history(train.info.run_id, "train/loss")]
    warm_steps = [m.step for m in t.client.get_metric_history(warm.info.run_id, "train/loss")]
    assert steps and warm_steps and max(warm_steps) < max(steps)  # Lightning's MLFlowLogger
    probes = json.loads(Path(t.client.download_artifacts(warm.info.run_id, "replay/probes.json")).read_text())
    assert len(probes["probe_ids"]) == 20 and 1 <= probes["at_step"] < max(steps)
    predict = next(c for c in children if c.info.run_name == "predict")
    plan = json.loads(Path(t.client.download_artifacts(predict.info.run_id, "replay/plan.json")).read_text())
    if r["method"] != "random":  # online: random replay in the warm-up, then the predicted plan
        assert plan["warmup_replay_ids"] and len(plan["replay_ids"]) == r["budget"]
        replayed = set(row.loc[row["replayed"], "example_id"])
        assert replayed <= set(plan["replay_ids"]) | set(plan["warmup_replay_ids"])
        assert replayed & set(plan["replay_ids"])  # the predicted plan was trained on
    tags = run.data.tags
    assert tags["ftctl.task"] == NEW_TASK and tags["ftctl.base_version"] == "1"
    assert tags["ftctl.job_id"] == "rel-deu-1" and tags["ftctl.row"] == "full"  # --measure-all
    assert {i.dataset.name for i in run.inputs.dataset_inputs} >= {"upstream", NEW_TASK}


def test_rerun_of_the_same_job_is_reused(ws: Path) -> None:
    r = ok_json(ws, "release", "new-task", NEW_TASK, "--method", "mf", "--measure-all", "--k", "20", "--job-id", "rel-deu-1")
    assert r["reused"] is True and r["version"] == 2
    assert [v["version"] for v in ok_json(ws, "release", "list")] == [1, 2]


def test_oracle_and_offline_reuse_the_statistics_fine_tune(ws: Path) -> None:
    # translate_fra has a statistics row on version 1 with the default recipe and seed 0: the
    # oracle and the offline mode need exactly that plain fine-tune, so they reuse it.
    from service.release.request import ReleaseRequest, release_new_task
    from service.settings import load_settings
    from service.tracking.store import TAG

    s = load_settings(overrides={"workspace": ws}, env={})
    t = tracker(ws)
    stats_run = t.find_runs({TAG + "kind": "stats", TAG + "task": "translate_fra"})[-1].info.run_id
    for method, mode in (("oracle", "online"), ("additive", "offline")):
        r = release_new_task(s, ReleaseRequest(task="translate_fra", method=method, mode=mode,
                                               parent_version=1, register=False))
        assert f"plain fine-tune reused from run {stats_run}" in r["note"], r["note"]
        run = t.get_run(r["run_id"])
        assert run.data.tags[TAG + "plain_run"] == stats_run
        kids = t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{r['run_id']}'")
        assert "plain-finetune" not in {c.info.run_name for c in kids}
        assert r["replayed"] >= 1 and r["version"] is None
    other_seed = release_new_task(s, ReleaseRequest(task="translate_fra", method="oracle", seed=7,
                                                    parent_version=1, register=False))
    assert "reused" not in other_seed["note"]  # another seed trains another model: fine-tune it
    kids = t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{other_seed['run_id']}'")
    plain = next(c for c in kids if c.info.run_name == "plain-finetune")
    assert t.client.get_metric_history(plain.info.run_id, "train/loss")


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_no_strategy_replays_more_than_its_budget(ws: Path, mode: str) -> None:
    """The budget is a number of distinct upstream examples and a share of training slots, the
    same for every strategy: online, the warm-up replays a proportional part of it uniformly and
    those examples stay in the plan; the rest is the method's (for random, uniform) choice."""
    from forgetting.replay import warmup_budget
    from service.release.request import ReleaseRequest, release_new_task
    from service.settings import load_settings

    s = load_settings(overrides={"workspace": ws, "replay_ratio": 0.25}, env={})
    t = tracker(ws)
    for method in ("mf", "additive", "random", "oracle", "none"):
        r = release_new_task(s, ReleaseRequest(task="wn_noun_food", method=method, mode=mode,
                                               parent_version=1, register=False))
        if method == "none":
            assert r["replayed"] == r["budget"] == r["replay_slots"] == 0
            continue
        assert 1 <= r["replayed"] <= r["budget"], (method, mode, r)
        assert 0 < r["replay_slot_share"] <= 0.25 / 1.25 + 1e-9 and r["gate"]["replay"]["budget"] == r["budget"]
        kids = {c.info.run_name: c for c in
                t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{r['run_id']}'")}
        plan = json.loads(Path(t.client.download_artifacts(kids["predict"].info.run_id,
                                                           "replay/plan.json")).read_text())
        assert len(plan["replay_ids"]) == len(set(plan["replay_ids"])) == r["budget"], (method, mode)
        warm = plan["warmup_replay_ids"]
        if mode == "online" and method != "oracle":  # a warm-up, then the method's plan
            assert "warm-up" in kids and len(warm) == warmup_budget(r["budget"], s.warmup_fraction)
            assert set(warm) <= set(plan["replay_ids"])  # its examples count toward the budget
        else:
            assert "warm-up" not in kids and warm is None


def test_promote_and_rollback_move_the_champion(ws: Path) -> None:
    assert ok_json(ws, "release", "promote", "2")["champion"] == 2
    assert ok_json(ws, "release", "rollback")["champion"] == 1
    assert ok_json(ws, "release", "promote", "2")["champion"] == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["release", "new-task", "no_such_task"], "unknown task"),
        (["stats", "collect", "wn_nounfood"], "unknown task"),
        (["release", "promote", "99"], "no version 99"),
        (["init", "--world", "tiny", "--model-line", "other", "--model", "/nonexistent/model"], "not a Hugging Face model directory"),
        (["--tracking-uri", "http://127.0.0.1:9", "release", "list"], "cannot be reached"),
        (["stats", "collect", "translate_fra", "--steps", "-3"], "steps must be >= 0"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_the_matrix_alone(ws: Path, args: list[str], needle: str) -> None:
    before = matrix_rows(ws)
    code, out, err = ftctl(ws, *args)
    assert code == 1, (out, err)
    assert needle in err and "Traceback" not in err
    assert matrix_rows(ws) == before


def all_runs(ws: Path) -> int:
    return len(tracker(ws).find_runs({}, status=None))


def test_bad_task_data_and_options_are_refused_before_any_run(ws: Path, tmp_path: Path) -> None:
    # A one-row task (or one huge line) has no test split to measure; nan/inf options have no
    # meaning. Each is a clear error, exit 1 — and no run, no version, no matrix row.
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "' + "a long line " * 50_000 + '"}\n')
    few = tmp_path / "few.jsonl"
    few.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(5)))
    runs, versions = all_runs(ws), len(ok_json(ws, "release", "list"))
    for args, needle in (
            (["release", "new-task", str(one)], "one.jsonl"),
            (["stats", "collect", str(few)], "needs at least 8 to train on and 2 to measure"),
            (["release", "new-task", str(few)], "Fix: add examples"),
            (["release", "new-task", NEW_TASK, "--temperature", "nan"], "temperature must be a finite"),
            (["release", "new-task", NEW_TASK, "--temperature", "inf"], "temperature must be a finite"),
            (["release", "new-task", NEW_TASK, "--replay-ratio", "nan"], "replay_ratio must be a finite")):
        code, out, err = ftctl(ws, *args)
        assert code == 1 and needle in err, (args, out, err)
        assert "Traceback" not in err and "Warning" not in err, err
    assert all_runs(ws) == runs and len(ok_json(ws, "release", "list")) == versions
    assert matrix_rows(ws) == 3


def test_a_job_id_names_one_set_of_inputs(ws: Path) -> None:
    base = ["release", "new-task", "--method", "none", "--no-promote", "--steps", "2",
            "--job-id", "mine-1"]
    first = ok_json(ws, *base[:2], "wn_noun_food", *base[2:])
    assert ok_json(ws, *base[:2], "wn_noun_food", *base[2:])["run_id"] == first["run_id"]  # reused
    code, _, err = ftctl(ws, *base[:2], "py_io", *base[2:])
    assert code == 1 and "job id 'mine-1' already names release:wn_noun_food" in err, err
    assert "give another --job-id" in err


def test_corrupt_task_file_fails_clearly(ws: Path, tmp_path: Path) -> None:
    bad = tmp_path / "task.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{not json\n')
    code, _, err = ftctl(ws, "release", "new-task", str(bad))
    assert code == 1 and "task.jsonl" in err
    assert matrix_rows(ws) == 3


def test_upstream_digest_mismatch_is_refused(ws: Path) -> None:
    # The line was initialised on the tiny world; another world's upstream set is another digest.
    for args in (["stats", "collect", "translate_fra"], ["release", "new-task", "translate_fra"]):
        result = runner.invoke(app, ["--workspace", str(ws), *args], env={"FTCTL_WORLD": "default"})
        assert result.exit_code == 1 and "measured on upstream set" in result.stderr
        assert "--model-line" in result.stderr and "Traceback" not in result.stderr
    assert matrix_rows(ws) == 3


def test_failed_job_leaves_a_failed_run_with_the_reason(ws: Path) -> None:
    # Break the champion's weights on disk: the statistics job starts, fails inside the
    # fine-tune, and must end as a FAILED run with the reason — and no row in the matrix.
    from service.tracking.registry import Registry
    from service.tracking.store import TAG

    assert ok_json(ws, "release", "rollback", "1")["champion"] == 1  # its upstream NLL is cached
    t = tracker(ws)
    registry = Registry(t)
    model_dir = registry.local_dir(registry.champion())
    for f in model_dir.glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    code, _, err = ftctl(ws, "stats", "collect", "wn_verb_motion")
    assert code == 1 and "wn_verb_motion" in err
    failed = t.find_runs({TAG + "kind": "stats", TAG + "task": "wn_verb_motion"}, status="FAILED")
    assert len(failed) == 1 and failed[0].data.tags[TAG + "failure"]
    assert matrix_rows(ws) == 3
    versions = len(ok_json(ws, "release", "list"))
    code, _, err = ftctl(ws, "release", "new-task", "wn_verb_motion", "--method", "random")
    assert code == 1 and "Traceback" not in err
    [rel] = t.find_runs({TAG + "kind": "release", TAG + "task": "wn_verb_motion"}, status="FAILED")
    assert rel.data.tags[TAG + "failure"]  # the reason, on the release run
    stages = t.find_runs({"mlflow.parentRunId": rel.info.run_id}, status=None)
    assert stages and all(r.info.status == "FAILED" for r in stages if r.info.run_name == "replay-train")
    assert len(ok_json(ws, "release", "list")) == versions and matrix_rows(ws) == 3


def test_json_errors_and_missing_model_files(ws: Path) -> None:
    code, out, err = ftctl(ws, "release", "new-task", "no_such_task", "--json")
    assert code == 1 and "unknown task" in json.loads(out)["error"]  # one document, errors too
    from service.tracking.registry import Registry

    registry = Registry(tracker(ws))
    source = Path(registry.champion().source.removeprefix("file://"))
    moved = source.with_name("moved-away")
    source.rename(moved)
    try:
        code, _, err = ftctl(ws, "stats", "collect", "wn_verb_change")
        assert code == 1 and "cannot be read" in err and "rollback" in err and "Traceback" not in err
    finally:
        moved.rename(source)
    assert matrix_rows(ws) == 3


def test_a_job_running_in_another_process_is_not_run_twice(ws: Path) -> None:
    import multiprocessing as mp

    from service.settings import load_settings
    from service.tracking.jobs import job_lock

    s = load_settings(overrides={"workspace": ws}, env={})
    ready, release = mp.get_context("spawn").Event(), mp.get_context("spawn").Event()
    holder = mp.get_context("spawn").Process(target=_hold_lock, args=(str(ws), "job-x", ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        from service.errors import ServiceError

        with pytest.raises(ServiceError, match="job-x is already running in another process"), \
                job_lock(s, "job-x"):
            pass
    finally:
        release.set()
        holder.join(30)
    with job_lock(s, "job-x"):  # free again once the other process let go
        pass


def _hold_lock(ws: str, job_id: str, ready: object, release: object) -> None:
    from service.settings import load_settings
    from service.tracking.jobs import job_lock

    with job_lock(load_settings(overrides={"workspace": Path(ws)}, env={}), job_id):
        ready.set()  # type: ignore[attr-defined]
        release.wait(60)  # type: ignore[attr-defined]


def test_self_generated_replay_and_the_mix_stay_within_the_budget(ws: Path) -> None:
    from service.release.request import ReleaseRequest, release_new_task
    from service.settings import load_settings

    s = load_settings(overrides={"workspace": ws, "replay_ratio": 0.25, "self_replay_tokens": 24}, env={})
    t = tracker(ws)
    plans = {}
    # From version 2: version 1's weights were broken on purpose by the failed-job test above.
    for source, method in (("self", "mf"), ("mix", "random")):
        r = release_new_task(s, ReleaseRequest(task="wn_noun_food", method=method, register=False,
                                               replay_source=source, parent_version=2))
        assert 1 <= r["replayed"] <= r["budget"] and math.isfinite(r["heldout_forgetting"])
        kids = {c.info.run_name: c for c in
                t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{r['run_id']}'")}
        gen = json.loads(Path(t.client.download_artifacts(kids["generate"].info.run_id,
                                                          "replay/self_generated.json")).read_text())
        plan = json.loads(Path(t.client.download_artifacts(kids["predict"].info.run_id,
                                                           "replay/plan.json")).read_text())
        own = {e["id"] for e in gen["examples"]}
        assert set(plan["self_replay_ids"]) == own and len(plan["replay_ids"]) == r["budget"]
        plans[source] = (r, own, plan, set(kids))
    r, own, plan, stages = plans["self"]
    assert r["method"] == "self" and set(plan["replay_ids"]) == own  # nothing stored replayed
    assert "warm-up" not in stages and len(own) == r["budget"]  # no probes to measure
    r, own, plan, _ = plans["mix"]
    upstream_part = set(plan["replay_ids"]) - own
    assert len(own) == r["budget"] // 2 and len(upstream_part) == r["budget"] - len(own)
    # Seeded: the same request samples the same sequences (the job is reused, so ask for a new one).
    again = release_new_task(s, ReleaseRequest(task="wn_noun_food", method="random", register=False,
                                               replay_source="mix", measure_all=True, parent_version=2))
    kids = {c.info.run_name: c for c in
            t.client.search_runs([t.experiment_id], f"tags.mlflow.parentRunId = '{again['run_id']}'")}
    gen = json.loads(Path(t.client.download_artifacts(kids["generate"].info.run_id,
                                                      "replay/self_generated.json")).read_text())
    assert {e["id"] for e in gen["examples"]} == own
