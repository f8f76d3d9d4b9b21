"""A model line with nothing from a world, end to end through the CLI: the user's own model (a
tiny Llama saved with save_pretrained, its tokenizer trained here on the test's own text), their
upstream set (a directory: plain-text JSONL and instruction JSONL) and their task catalogue (three
files and a tasks.toml). init → tasks list → line show → stats collect --all → forgetting analyze
→ release new-task FILE → release list; then every validation error, with nothing registered.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()
WORDS = [
    "river", "stone", "light", "garden", "window", "morning", "letter", "music", "winter",
    "harbour", "market", "bridge", "forest", "engine", "paper", "silver", "doctor", "teacher",
    "island", "station",
]
VERBS = ["carries", "finds", "opens", "builds", "watches", "follows", "lifts", "paints", "counts"]


def sentence(rng: random.Random) -> str:
    return " ".join(f"the {rng.choice(WORDS)} {rng.choice(VERBS)} the {rng.choice(WORDS)}"
                    for _ in range(rng.randint(2, 4))) + "."


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's files: model/, upstream/ (text + instruction), tasks/ (3 tasks + tasks.toml)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from training.model import build_model, save_model

    root = tmp_path_factory.mktemp("user")
    rng = random.Random(0)
    write_jsonl(root / "upstream" / "stories.jsonl", [{"text": sentence(rng)} for _ in range(90)])
    write_jsonl(root / "upstream" / "qa.jsonl",
                [{"prompt": f"what does the {w}?", "response": sentence(rng), "source": "qa-pairs"}
                 for w in WORDS for _ in range(2)])
    for name, kind in (("echo", "text"), ("answer", "instruction"), ("count", "instruction")):
        rows = ([{"text": sentence(rng)} for _ in range(40)] if kind == "text" else
                [{"prompt": f"{name}: {rng.choice(WORDS)}", "response": sentence(rng)} for _ in range(40)])
        write_jsonl(root / "tasks" / f"{name}.jsonl", rows)
    (root / "tasks" / "tasks.toml").write_text(
        '[echo]\nfamily = "text"\ndescription = "continue a sentence"\n'
        '[answer]\nfamily = "qa"\n[count]\nfamily = "qa"\n')
    write_jsonl(root / "new_task.jsonl", [{"prompt": f"say {w}", "response": sentence(rng)}
                                          for w in WORDS for _ in range(2)])
    corpus = [sentence(random.Random(i)) for i in range(400)] + [f"what does the {w}?" for w in WORDS]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "tie_word_embeddings": True, "vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    save_model(build_model(cfg, seed=0), tok, root / "model")
    return root


def ftctl(ws: Path, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--workspace", str(ws), *args], env={"FTCTL_STEPS": "4"})
    return r.exit_code, r.stdout, r.stderr


def ok(ws: Path, *args: str) -> object:
    code, out, err = ftctl(ws, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_a_line_of_the_users_own_model_data_and_tasks(user: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    init = ok(ws, "init", "--model", str(user / "model"), "--upstream", str(user / "upstream"),
              "--tasks", str(user / "tasks"), "--model-line", "mine")
    assert init["version"] == 1 and init["upstream_examples"] == 90 + 2 * len(WORDS)
    assert str(user / "upstream") in init["upstream"]
    tasks = {t["name"]: t for t in ok(ws, "tasks", "list")}
    assert set(tasks) == {"echo", "answer", "count"} and tasks["echo"]["family"] == "text"
    line = ok(ws, "line", "show")
    assert line["upstream"]["sources"] == {"stories": 90, "qa-pairs": 2 * len(WORDS)}
    assert line["tasks"]["count"] == 3 and line["champion"] == 1
    assert line["encoding"] == "max_length=1024 chat_template=auto" == init["encoding"]
    rows = ok(ws, "stats", "collect", "--all")
    assert sorted(r["task"] for r in rows) == ["answer", "count", "echo"]
    assert all("error" not in r for r in rows)
    assert ok(ws, "forgetting", "analyze")["rows"] == 3
    release = ok(ws, "release", "new-task", str(user / "new_task.jsonl"), "--method", "additive")
    assert release["version"] == 2 and release["task"] == "new_task"
    [v2] = [v for v in ok(ws, "release", "list") if v["version"] == 2]
    assert v2["tags"]["ftctl.digest"] == line["upstream"]["digest"]  # lineage names the user's set
    # A second init with other upstream data refuses (the digest check), naming the fix.
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"text": f"other example number {i}"} for i in range(150)])
    code, _, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream", str(other),
                         "--model-line", "mine")
    assert code == 1 and "--model-line" in err
    # ... and so does one that would encode examples differently (rows would not compare).
    code, _, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream",
                         str(user / "upstream"), "--model-line", "mine", "--chat-template", "none")
    assert code == 1 and "chat_template=auto" in err and "--model-line" in err


def test_long_records_are_counted_or_refused(user: Path, tmp_path: Path) -> None:
    rng = random.Random(1)
    upstream = write_jsonl(tmp_path / "up.jsonl", [{"text": sentence(rng)} for _ in range(110)]
                           + [{"text": " ".join(sentence(rng) for _ in range(6))} for _ in range(12)])
    from training.model import load_tokenizer
    from training.upstream import UpstreamSet, over_long

    tok = load_tokenizer(user / "model")
    ups = UpstreamSet.load(upstream)
    expected = len(over_long(ups.examples, tok, 48))
    assert 12 <= expected < len(ups)  # the six-sentence records, and maybe a few long sentences
    code, _, err = ftctl(tmp_path / "ws1", "init", "--model", str(user / "model"), "--upstream",
                         str(upstream), "--max-length", "48", "--long-records", "refuse")
    assert code == 1 and f"{expected} of {len(ups)} upstream records are longer than 48" in err
    assert "--long-records truncate" in err
    init = ok(tmp_path / "ws2", "init", "--model", str(user / "model"), "--upstream", str(upstream),
              "--max-length", "48")
    assert init["truncated_records"] == expected and init["encoding"].startswith("max_length=48 ")
    assert "max_length = 48" in (tmp_path / "ws2" / "ftctl.toml").read_text()  # recorded


def bad_upstreams(root: Path) -> list[tuple[Path, str]]:
    few = write_jsonl(root / "few.jsonl", [{"text": f"example {i}"} for i in range(50)])
    dup = write_jsonl(root / "dup.jsonl", [{"text": f"example {i % 60}"} for i in range(150)])
    empty = write_jsonl(root / "empty.jsonl", [{"text": f"ex {i}"} for i in range(120)] + [{"text": "  "}])
    mixed = write_jsonl(root / "mixed.jsonl", [{"text": f"ex {i}"} for i in range(120)]
                        + [{"prompt": "q", "response": "a"}])
    latin = root / "latin1.jsonl"
    latin.write_bytes("".join(f'{{"text": "caf\u00e9 {i}"}}\n' for i in range(120)).encode("latin-1"))
    return [(few, "50 distinct upstream examples"), (dup, "90 duplicates dropped"),
            (empty, "empty"), (mixed, "text"), (latin, "UTF-8")]


def test_every_validation_error_names_the_fix_and_registers_nothing(user: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for path, needle in bad_upstreams(tmp_path):
        code, _out, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream", str(path))
        assert code == 1 and needle in err and "Traceback" not in err, (path.name, err)
    code, _, err = ftctl(ws, "init", "--upstream", str(user / "upstream"))
    assert code == 1 and "needs your base model too" in err
    bad_tasks = tmp_path / "bad_tasks"
    write_jsonl(bad_tasks / "a.jsonl", [{"text": "x"}])
    (bad_tasks / "tasks.toml").write_text("[b]\nfamily = 'x'\n")
    code, _, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream",
                         str(user / "upstream"), "--tasks", str(bad_tasks))
    assert code == 1 and "name no task file" in err
    code, _, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream",
                         str(user / "upstream"), "--tasks", str(tmp_path / "nowhere"))
    assert code == 1 and "no such task directory" in err
    code, _, err = ftctl(ws, "init", "--model", str(tmp_path / "no-model"), "--upstream",
                         str(user / "upstream"))
    assert code == 1 and "not a Hugging Face model directory" in err
    # A hub name with no network fails fast with the fix (HF_HUB_OFFLINE: whatever this machine's
    # network, nothing is fetched).
    import os
    import time

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        t0 = time.monotonic()
        code, _, err = ftctl(ws, "init", "--model", "HuggingFaceTB/SmolLM2-135M", "--upstream",
                             str(user / "upstream"))
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    assert code == 1 and "--local-dir" in err and time.monotonic() - t0 < 30, err
    assert not (ws / "models" / "hub" / "HuggingFaceTB--SmolLM2-135M").exists()
    code, _, err = ftctl(ws, "init", "--model", str(user / "model"), "--upstream",
                         str(user / "upstream"), "--chat-template", "maybe")
    assert code == 1 and "chat_template must be auto or none" in err
    # Nothing was registered and no model line was left behind.
    from service.settings import load_settings
    from service.tracking.store import Tracker

    tracker = Tracker(load_settings(overrides={"workspace": ws}, env={}))
    assert tracker.client.search_registered_models() == []
    assert not (ws / "ftctl.toml").exists()
