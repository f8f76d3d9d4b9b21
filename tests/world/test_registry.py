"""The committed world data: integrity, task shapes, no test leakage, tokenizer, API errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from training.world import WORLDS, WorldError, load_world
from training.world.builder import DATA_DIR, SOURCES, ascii_fold, files_digest
from training.world.registry import _pool, _task_rows, llama_params


def test_committed_data_matches_its_manifest_digest() -> None:
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    assert files_digest(DATA_DIR) == manifest["digest"]
    assert load_world("default").data_digest == manifest["digest"]


def test_loading_is_deterministic_and_balanced() -> None:
    _pool.cache_clear()
    _task_rows.cache_clear()
    a = load_world("default")
    _pool.cache_clear()  # the second load re-reads and re-parses the files
    _task_rows.cache_clear()
    b = load_world("default")
    assert a.upstream is not b.upstream
    assert a.upstream.digest == b.upstream.digest
    assert a.upstream.ids == b.upstream.ids
    assert {n: [e.id for e in t.train + t.test] for n, t in a.tasks.items()} == {
        n: [e.id for e in t.train + t.test] for n, t in b.tasks.items()
    }
    counts = Counter(a.upstream.sources)
    assert set(counts) == set(SOURCES) and len(SOURCES) >= 6
    assert set(counts.values()) == {WORLDS["default"].per_source}
    assert len(a.pretrain_examples()) >= 3000


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_every_task_loads_with_train_and_test(name: str) -> None:
    w = load_world(name)
    assert len(w.tasks) >= 40
    for t in w.tasks.values():
        assert t.train and t.test, t.name
        assert t.family and t.description
        train_ids = {e.id for e in t.train}
        assert len(train_ids) == len(t.train), f"{t.name}: duplicate train examples"
        assert not train_ids & {e.id for e in t.test}, f"{t.name}: train/test overlap"
        assert all(e.prompt.endswith("\n") and e.response.strip() for e in t.train + t.test)


def test_embedded_task_digest_is_the_file_task_rule(tmp_path) -> None:
    from training.data import load_task, task_digest

    task = next(iter(load_world("tiny").tasks.values()))
    assert task.digest == task_digest(task.train, task.test)
    # The same examples written out as task files: `load_task` gives the same digest.
    d = tmp_path / "task"
    d.mkdir()
    for split, examples in (("train", task.train), ("test", task.test)):
        rows = [json.dumps({"prompt": e.prompt, "response": e.response}) for e in examples]
        (d / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert load_task(d).digest == task.digest


def test_default_task_sizes() -> None:
    w = load_world("default")
    assert {len(t.test) for t in w.tasks.values()} == {60}
    assert sum(len(t.train) >= 300 for t in w.tasks.values()) >= 40
    assert len({t.family for t in w.tasks.values()}) >= 6


def test_task_test_examples_do_not_occur_in_the_upstream_pool() -> None:
    """Entries used by tasks were removed from the upstream text before chunking.

    A few collisions remain possible where a different entry repeats the same words (a
    WordNet lemma inside a longer lemma, a Jargon cross-reference), hence the 5% tolerance.
    (20 test examples per task: the substring search is the cost.)
    """
    blob = "\n".join(r["text"] for r in _pool(str(DATA_DIR)))
    w = load_world("default")
    for t in w.tasks.values():
        if t.family in ("bible", "fortune") or t.name.startswith("austen_complete"):
            probes = [e.prompt.strip().split(": ", 1)[1] + " " + e.response for e in t.test[:20]]
        elif t.family == "hacker-lexicon":
            probes = [e.response.rstrip(".") for e in t.test[:20]]
        elif t.family == "wordnet":  # the word as a lemma of an upstream "lemma, ... (pos):" line
            words = [e.prompt.strip().split(": ", 1)[1] for e in t.test[:20]]
            probes = [[f"{a}{w}{b}" for a in ("\n", ", ") for b in (" (", ", ")] for w in words]
        else:
            continue
        leaked = sum(
            any(ascii_fold(q) in blob for q in (p if isinstance(p, list) else [p])) for p in probes
        )
        assert leaked <= max(1, 0.05 * len(probes)), f"{t.name}: {leaked} test examples in the upstream pool"


def test_tokenizer_is_a_2048_byte_level_bpe_with_eos_and_pad() -> None:
    from training.world.tokenizer import load_hf_tokenizer

    w = load_world("tiny")
    assert w.tokenizer_dir is not None
    tok = load_hf_tokenizer(w.tokenizer_dir)
    assert len(tok) == 2048
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    text = "Translate to Swedish: alarmed\nförfärlig"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_upstream_chunks_are_about_128_tokens() -> None:
    from training.world.tokenizer import load_hf_tokenizer

    w = load_world("tiny")
    tok = load_hf_tokenizer(w.tokenizer_dir)
    lengths = [len(tok(e.response)["input_ids"]) for e in w.upstream.examples]
    assert min(lengths) >= 120 and max(lengths) <= 136


def test_smollm2_world_has_an_instruction_upstream_disjoint_from_default() -> None:
    s, d = load_world("smollm2"), load_world("default")
    assert s.tokenizer_dir is None and s.base_model_spec.kind == "smollm2"
    assert all(e.prompt.startswith("Continue this ") and e.response for e in s.upstream)
    assert set(Counter(s.upstream.sources)) == set(SOURCES)
    default_text = {e.response for e in d.upstream}
    assert not any(e.prompt.split("\n", 1)[1] in t for e in s.upstream for t in default_text)


def test_smollm2_study_world_is_the_smollm2_world_at_study_size() -> None:
    small, big = load_world("smollm2"), load_world("smollm2-study")
    assert len(big.upstream.examples) == 1001 and Counter(big.upstream.sources) == {s: 143 for s in SOURCES}
    assert big.base_model_spec == small.base_model_spec  # one converted model serves both
    assert {e.id for e in small.upstream} <= {e.id for e in big.upstream}  # the same pool order
    assert big.tasks.keys() == small.tasks.keys()


def test_unknown_world_names_the_fix() -> None:
    with pytest.raises(WorldError, match="one of"):
        load_world("nope")


def test_missing_data_names_the_fix(tmp_path) -> None:
    with pytest.raises(WorldError, match="ftctl world build"):
        load_world("tiny", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_parameter_count_matches_the_built_model(name: str) -> None:
    from training.model import build_model

    arch = dict(WORLDS[name].base.arch)
    n = sum(p.numel() for p in build_model(arch, seed=0).parameters())
    assert llama_params(arch) == n
    assert {"default": 1_115_264, "tiny": 86_176}[name] == n
    assert ("1.1M" if name == "default" else "86k") in WORLDS[name].description


def test_base_specs_are_unchanged() -> None:
    """The cache keys of the default/study and tiny bases (a changed spec retrains the base)."""
    assert WORLDS["default"].base.key() == WORLDS["study"].base.key() == "609f7b3ea226"
    assert WORLDS["tiny"].base.key() == "5937560a7b1e"
