"""Readers: hub names fail fast without network, mistyped paths never reach the hub, bad files."""

from __future__ import annotations

import json
import socket
import time

import pytest

from training import readers
from training.data import TaskDataConfig, load_task
from training.errors import TrainingError
from training.readers import hub_reachable, read_rows


@pytest.fixture
def no_network(monkeypatch):
    """The offline env vars UNSET and every TCP connection failing: a machine without network."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "FTCTL_HUB_CHECK", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    calls = []

    def refuse(address, timeout=None, *a, **k):
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    def no_hub(*a, **k):  # reaching datasets at all would mean the probe was skipped
        raise AssertionError("datasets.load_dataset called without network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("datasets.load_dataset", no_hub)
    return calls


def test_hub_name_without_network_fails_fast_naming_it_and_the_fix(no_network):
    t0 = time.perf_counter()
    with pytest.raises(TrainingError) as err:
        read_rows("someuser/somedata")
    assert time.perf_counter() - t0 < 5  # datasets would retry DNS for 15-45 s
    msg = str(err.value)
    assert "'someuser/somedata'" in msg and "cannot be reached" in msg
    assert "Fix: pass a local" in msg and "network" in msg
    assert no_network and no_network[0][0] == ("huggingface.co", 443)
    assert no_network[0][1] <= readers.HUB_PROBE_SECONDS


def test_probe_target_follows_endpoint_and_proxy(no_network, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert not hub_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    assert not hub_reachable()
    assert [a for a, _ in no_network] == [("hf-mirror.example", 8443), ("proxy.local", 3128)]


def test_a_hanging_dns_lookup_is_abandoned_within_the_budget(no_network, monkeypatch):
    def hang(address, timeout=None, *a, **k):  # getaddrinfo ignores the socket timeout
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    t0 = time.perf_counter()
    assert hub_reachable(timeout=0.5) is False
    assert time.perf_counter() - t0 < 2


def test_reachable_hub_goes_to_datasets_and_the_check_can_be_skipped(no_network, monkeypatch):
    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Conn())
    from datasets import Dataset

    monkeypatch.setattr("datasets.load_dataset", lambda name: Dataset.from_list([{"text": name}]))
    rows = read_rows("someuser/somedata")
    assert rows[""][0][1] == {"text": "someuser/somedata"}
    assert rows[""][0][0] == "someuser/somedata: rows row 0"
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError))
    monkeypatch.setenv("FTCTL_HUB_CHECK", "0")  # e.g. a proxy the probe does not know about
    assert read_rows("someuser/somedata")[""][0][1]["text"] == "someuser/somedata"


def test_offline_env_fails_without_probing(no_network, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TrainingError, match=r"hub is offline.*Fix"):
        load_task("glue")
    assert no_network == []


@pytest.mark.parametrize(
    "source", ["data/tsak", "./tsak", "../tsak", "data/task.jsonl", "task.csv", "a/b/c", "my data"]
)
def test_mistyped_paths_are_no_such_file_not_hub_lookups(no_network, tmp_path, monkeypatch, source):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match=r"no such file or directory.*Fix: check the path"):
        read_rows(source)
    assert no_network == []  # decided locally, no connection attempted


def test_owner_name_whose_owner_is_not_a_local_dir_is_a_hub_name(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match=r"cannot be reached"):
        read_rows("data/tsak")  # no ./data here: it may well be the hub user "data"


def test_non_utf8_csv_names_the_line(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(b"text\nfine\ncaf\xe9 au lait\n")
    with pytest.raises(TrainingError, match=r"latin.csv: line 3 is not valid UTF-8.*iconv"):
        load_task(p)


def test_save_to_disk_directory_with_missing_fields(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {
            "train": Dataset.from_list([{"question": "a", "answer": "b"}] * 3),
            "test": Dataset.from_list([{"question": "c", "answer": "d"}]),
        }
    ).save_to_disk(tmp_path / "hf")
    with pytest.raises(TrainingError, match=r"hf: test row 0: cannot tell the format.*Fix"):
        load_task(tmp_path / "hf")
    with pytest.raises(TrainingError, match=r"hf: test row 0: missing field 'response'.*Fix"):
        load_task(tmp_path / "hf", TaskDataConfig(format="instruction", prompt_field="question"))
    t = load_task(tmp_path / "hf", TaskDataConfig(prompt_field="question", response_field="answer"))
    assert (len(t.train), len(t.test)) == (3, 1)
    assert t.train[0].origin == f"{tmp_path / 'hf'}: train row 0"


def test_json_split_object_and_rows_carry_labels(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"train": [{"text": "a b"}], "test": [{"text": "c d"}]}))
    assert read_rows(p) == {
        "train": [(f"{p}: train row 0", {"text": "a b"})],
        "test": [(f"{p}: test row 0", {"text": "c d"})],
    }
