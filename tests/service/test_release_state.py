"""The release state's JSON form (what the Celery stage tasks pass): a full round trip, the chain
fields included, and the refusals of a state from another version or with unknown fields."""

from __future__ import annotations

import json

import pytest

from service.errors import ServiceError
from service.release.chain import EarlierTask, Retention
from service.release.state import STATE_VERSION, Finished, Outcome, ReleaseState, decode


def state() -> ReleaseState:
    s = ReleaseState(job_id="j", run_id="r", task_ref="py_io", task_name="py_io", task_digest="d",
                     method="mf", mode="online", seed=0, steps=10, parent_version=3, model_dir="/m",
                     model_key="run-x", train_key="t", digest="u", measure_all=False, register=True,
                     promote=True, save_dir="/s", ckpt_dir="/c", started=1.5, base_version=1,
                     base_key="run-b", earlier=[EarlierTask(2, "bible_law", "run2", 1.25)])
    s.outcome = Outcome(metrics={"heldout_forgetting_mean": 0.1}, task_loss_before=2.0,
                        task_loss_after=1.0, replayed=3, heldout_per_source={"a": 0.1},
                        heldout_vs_base=0.3, retention=[Retention(2, "bible_law", 1.25, 1.5)])
    return s


def test_the_state_survives_json_with_its_chain() -> None:
    s = state()
    back = decode(json.loads(json.dumps(s.to_json())), "train")
    assert back == s
    assert isinstance(back, ReleaseState) and back.outcome is not None
    assert back.earlier[0] == EarlierTask(2, "bible_law", "run2", 1.25)
    assert back.outcome.retention[0].increase == pytest.approx(0.25)


def test_a_finished_state_passes_its_result_through() -> None:
    f = decode({"state_version": STATE_VERSION, "job_id": "j", "result": {"version": 4}}, "finish")
    assert f == Finished(job_id="j", result={"version": 4})


def test_other_versions_and_unknown_fields_are_refused_with_the_fix() -> None:
    data = state().to_json()
    with pytest.raises(ServiceError, match="jobs retry"):
        decode({**data, "state_version": STATE_VERSION + 1}, "train")
    with pytest.raises(ServiceError, match="unknown fields \\['surprise'\\]"):
        decode({**data, "surprise": 1}, "train")
