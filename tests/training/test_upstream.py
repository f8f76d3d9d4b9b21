"""UpstreamSet: stable ids, order-independent digest, JSONL(.gz) round trip, refusals."""

from __future__ import annotations

import json

import pytest

from training.data import Example
from training.errors import TrainingError
from training.upstream import UpstreamSet

TEXTS = [f"verse {i}: in the beginning" for i in range(10)]


def test_ids_digest_and_lookup():
    a = UpstreamSet.from_texts(TEXTS, source="kjv")
    b = UpstreamSet.from_texts(TEXTS[::-1] + TEXTS[:3] + ["  "], source="kjv")  # dupes, blank
    assert len(a) == len(b) == 10 and a.digest == b.digest and a.ids != b.ids
    assert a.by_id([a.ids[3], a.ids[0]]) == [a.examples[3], a.examples[0]]
    assert a.sources == ["kjv"] * 10 and a.ids[2] in a
    c = a + UpstreamSet([Example.make("q?", "a.", "tulu")])
    assert len(c) == 11 and c.digest != a.digest
    with pytest.raises(TrainingError, match=r"unknown example id .nope.*one upstream digest"):
        a.by_id(["nope"])
    with pytest.raises(TrainingError, match=r"duplicate id"):
        UpstreamSet([a.examples[0], a.examples[0]])


@pytest.mark.parametrize("name", ["up.jsonl", "up.jsonl.gz"])
def test_save_load_round_trip(tmp_path, name):
    ups = UpstreamSet.from_texts(TEXTS, "kjv") + UpstreamSet([Example.make("q?", "a.", "tulu")])
    back = UpstreamSet.load(ups.save(tmp_path / "sub" / name))
    assert back.examples == ups.examples and back.digest == ups.digest


def test_load_computes_missing_ids_and_refuses_edited_ones(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_text(json.dumps({"text": "hello", "source": "s"}) + "\n")
    assert UpstreamSet.load(p).examples == [Example.text("hello", "s")]
    p.write_text(json.dumps({"id": Example.text("hello").id, "text": "hello!"}) + "\n")
    with pytest.raises(TrainingError, match=r"line 1: stored id .* the text was edited"):
        UpstreamSet.load(p)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"body": "x"}\n', r"line 1: needs 'text'"),
        ("", r"empty"),
        ('{"text": "ok"}\n{oops\n', r"line 2: invalid JSON"),
    ],
)
def test_load_errors(tmp_path, content, match):
    p = tmp_path / "u.jsonl"
    p.write_text(content)
    with pytest.raises(TrainingError, match=match):
        UpstreamSet.load(p)
    with pytest.raises(TrainingError, match=r"no such upstream file"):
        UpstreamSet.load(tmp_path / "missing.jsonl")
