"""The UI link ftctl prints: the line's experiment opened on its training runs (MLflow 3's
global GenAI switch would otherwise open it on traces), and no link for a line that does not
exist — looked up without creating it."""

from __future__ import annotations

from pathlib import Path


def test_the_link_opens_the_experiment_on_training_runs() -> None:
    from service.tracking.runs import experiment_link

    assert experiment_link("http://h:5000/", "7") == "http://h:5000/#/experiments/7?workflowType=machine_learning"


def test_no_link_and_no_experiment_for_a_line_that_does_not_exist(tmp_path: Path) -> None:
    from service.settings import load_settings
    from service.tracking.runs import line_link
    from service.tracking.store import EXPERIMENT_KIND, MODEL_DEVELOPMENT, Tracker

    s = load_settings(overrides={"workspace": tmp_path / "ws", "model_line": "nope"}, env={})
    assert line_link(s, "http://h:1") is None
    t = Tracker(s)  # now the line exists, tagged with its kind
    assert t.client.get_experiment(t.experiment_id).tags[EXPERIMENT_KIND] == MODEL_DEVELOPMENT
    assert line_link(s, "http://h:1") == f"http://h:1/#/experiments/{t.experiment_id}?workflowType=machine_learning"
