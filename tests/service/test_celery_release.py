"""A tiny release end to end through the broker: real fine-tuning on real worker processes.

The release's stage chain (cpu begin → gpu warm-up → cpu predict → gpu replay-train → cpu finish)
on real gpu and cpu workers; then a release whose gpu worker is SIGKILLed in the middle of
fine-tuning resumes from its checkpoint on a new worker and finishes exactly once; then beat +
inbox turn a dropped task into a release without manual action.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.workers import Cluster, cluster, require_redis, wait_for

pytestmark = pytest.mark.integration

BUILD = """
import sys
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast
from training.model import build_model, save_model
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, vocab_size=300,
                        min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False)
tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>")
cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": True,
       "vocab_size": len(tok), "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
save_model(build_model(cfg, seed=0), tok, sys.argv[1])
"""


def init_line(c: Cluster) -> None:
    """`ftctl init --world tiny --model DIR` with a 2-layer model built from a config."""
    model = c.tmp / "model"
    subprocess.run([sys.executable, "-c", BUILD, str(model)], env=c.env(), check=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "cli.app", "init", "--world", "tiny", "--model",
                           str(model)], env=c.env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def tracker(c: Cluster) -> Any:
    from service.tracking.store import Tracker

    return Tracker(c.settings())


def releases_of(c: Cluster, result: dict[str, Any]) -> list[Any]:
    """The release runs of a job: the MLflow job id the worker derived (as in-process would)."""
    return _runs_of(c, result["job_id"])


def _runs_of(c: Cluster, job_id: str) -> list[Any]:
    from service.tracking.store import TAG

    return tracker(c).find_runs({TAG + "job_id": job_id}, status=None)


def children(c: Cluster, run_id: str) -> list[Any]:
    return tracker(c).find_runs({"mlflow.parentRunId": run_id}, status=None)


def versions_for(c: Cluster, task: str) -> list[Any]:
    from service.tracking.registry import Registry

    return [v for v in Registry(tracker(c)).versions() if v.tags.get("ftctl.task") == task]


def test_auto_ratio_with_self_generated_replay_on_the_workers(tmp_path: Path) -> None:
    """`--replay-ratio auto --remote` with `--replay-source self`: each attempt is a release on the
    workers (the parent samples its replay on the gpu queue), followed to its result, nested under
    the auto-ratio run. (Climbing the ladder on a failed gate is tested in-process in
    test_release_cli.py: here the tiny model's own samples even lower held-out NLL.)"""
    from cli.worker import remote_release_runner
    from service.release.auto import release_auto
    from service.release.request import ReleaseRequest

    require_redis()
    with cluster(tmp_path, FTCTL_STEPS="4", FTCTL_K="5") as c:
        init_line(c)
        c.worker("gpu", name="gpu-a")
        c.worker("cpu")
        s = c.settings().replace(gate_require_task_gain=False, self_replay_tokens=16,
                                 replay_ratio=0.25)  # 4 steps of 8: replay slots only at r = 1/4
        auto = release_auto(s, ReleaseRequest(task="bible_history", method="random", steps=4,
                                              replay_source="self", register=False),
                            cap=1 / 4, run_one=remote_release_runner(as_json=True, app=c.app()))
        [attempt] = auto["auto"]["attempts"]
        assert attempt["ratio"] == 1 / 4 and attempt["gate_passed"], auto["gate"]
        t = tracker(c)
        assert t.get_run(attempt["run_id"]).data.tags["mlflow.parentRunId"] == auto["auto"]["run_id"]
        assert auto["method"] == "self" and 1 <= auto["replayed"] <= auto["budget"]
        ran = set(re.findall(r"Task (ftctl\.\w+)\[.*\] succeeded", c.log("gpu-a")))
        assert "ftctl.release_warmup" in ran  # where the parent sampled its replay
        kids = {r.info.run_name for r in children(c, auto["run_id"])}
        assert "generate" in kids and "warm-up" not in kids


def test_tiny_release_through_the_broker(tmp_path: Path) -> None:
    from service.release.request import ReleaseRequest

    require_redis()
    with cluster(tmp_path, FTCTL_STEPS="4", FTCTL_K="5") as c:
        init_line(c)
        gpu = c.worker("gpu", name="gpu-a")
        c.worker("cpu")
        jobs = c.jobs()

        # 0. a statistics job on the gpu queue: one known row, so additive can complete a row.
        stats = jobs.submit_stats("translate_fra")
        assert jobs.wait(stats["job_id"], timeout=600)["task"] == "translate_fra"

        # 0b. a sharded statistics job: fine-tune on gpu, 3 measurement shards, merge on cpu —
        # the same MLflow job as an in-process one, so `collect_stats` reuses it.
        sharded = jobs.submit_stats("py_io", shards=3)
        res = jobs.wait(sharded["job_id"], timeout=600)
        assert res["task"] == "py_io" and res["shards"] == 3
        from service.pipeline.inputs import load_or_measure_nll, load_upstream
        from service.pipeline.stats import collect_stats
        from service.tracking.lineage import model_key
        from service.tracking.registry import Registry

        s = c.settings()
        t = tracker(c)
        row = t.load_row(res["run_id"])
        up = load_upstream(s)
        assert row["example_id"].tolist() == up.ids and row["delta"].notna().all()
        champion = Registry(t).champion()
        base = load_or_measure_nll(s, model_key(champion), up, Registry(t).local_dir(champion))
        assert abs(row["nll_before"].to_numpy() - base).max() < 1e-4  # the slices line up
        assert t.get_run(res["run_id"]).data.tags["ftctl.sharded"] == "true"
        assert collect_stats(s, ["py_io"])[0]["reused"] is True

        # 1. the stage chain on both queues, progress followed like `--wait`.
        job = jobs.submit_release(ReleaseRequest(task="bible_gospels", method="additive", steps=4))
        twice = jobs.submit_release(ReleaseRequest(task="bible_gospels", method="additive", steps=4))
        assert twice["job_id"] == job["job_id"] and not twice["submitted"]  # one execution
        lines: list[str] = []
        result = jobs.wait(job["job_id"], progress=lines.append, timeout=600)
        assert result["version"] == 2 and result["task"] == "bible_gospels"
        assert result["method"] == "additive" and "fell back" not in (result["note"] or "")
        # Followed through its stages (the poll samples them) to the finish stage's message.
        assert len(lines) >= 3 and "registered version 2 @candidate" in lines[-1], lines
        wait_for(lambda: jobs.store.get(job["job_id"]).get("summary"), 60, "the cpu finish stage")
        [run] = releases_of(c, result)
        assert run.info.status == "FINISHED"
        stages = {r.info.run_name: r.info.status for r in children(c, run.info.run_id)}
        assert stages == {"warm-up": "FINISHED", "predict": "FINISHED", "replay-train": "FINISHED",
                          "measure": "FINISHED"}
        # The same release in-process is the same job: its recorded result, not a second fine-tune.
        from service.release.request import release_new_task

        again = release_new_task(c.settings(), ReleaseRequest(task="bible_gospels", method="additive",
                                                              steps=4, parent_version=1))
        assert again["reused"] is True and again["run_id"] == run.info.run_id
        ran = {q: set(re.findall(r"Task (ftctl\.\w+)\[.*\] succeeded", c.log(w)))
               for q, w in (("gpu", "gpu-a"), ("cpu", "cpu"))}
        assert ran["gpu"] >= {"ftctl.release_warmup", "ftctl.release_train", "ftctl.stats_train",
                              "ftctl.stats_shard"}
        assert ran["cpu"] >= {"ftctl.release_begin", "ftctl.release_predict", "ftctl.release_finish",
                              "ftctl.stats_merge"}
        assert not ran["gpu"] & {"ftctl.release_predict", "ftctl.stats_merge"}

        # 2. SIGKILL in the middle of fine-tuning; a new worker resumes it from its checkpoint
        # and the job finishes exactly once: one release run, one version, one row.
        job = jobs.submit_release(ReleaseRequest(task="bible_history", method="random", steps=60))
        t = tracker(c)

        def training() -> Any:
            runs = t.find_runs({"ftctl.stage": "replay-train"}, status="RUNNING")
            return runs and len(t.client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 15

        wait_for(training, 300, "fine-tuning to pass its first checkpoint", poll=0.2)
        c.stop(gpu, signal.SIGKILL)
        c.worker("gpu", name="gpu-b")
        result = jobs.wait(job["job_id"], timeout=900)
        assert len(versions_for(c, "bible_history")) == 1
        [run] = releases_of(c, result)
        assert run.info.status == "FINISHED"
        trains = [r for r in children(c, run.info.run_id) if r.info.run_name == "replay-train"]
        assert sorted(r.info.status for r in trains) == ["FAILED", "FINISHED"]
        dead = next(r for r in trains if r.info.status == "FAILED")
        assert "interrupted" in dead.data.tags["ftctl.failure"]
        done = next(r for r in trains if r.info.status == "FINISHED")
        first = min(m.step for m in t.client.get_metric_history(done.info.run_id, "train/loss"))
        assert first > 1, "the new worker trained from step 0 instead of resuming the checkpoint"
        assert len(t.load_row(run.info.run_id)) > 0

        # 3. beat + inbox: a dropped task becomes a release from the current @champion.
        c.start("scheduler", name="beat", ready="beat: Starting", FTCTL_SCHEDULE_INBOX="1")
        inbox = c.workspace / "inbox"
        inbox.mkdir(exist_ok=True)
        (inbox / "law.task.json").write_text('{"task": "bible_law", "method": "random"}')
        wait_for(lambda: (inbox / "done" / "law.task.json").exists(), 900, "the inbox release")
        assert len(versions_for(c, "bible_law")) == 1
