"""Task data: loading every file kind, splits, validation errors, tokenisation and masks."""

from __future__ import annotations

import json
import time

import pytest

from training.data import (
    IGNORE,
    Example,
    TaskDataConfig,
    content_id,
    encode,
    load_task,
    split_by_hash,
    task_digest,
)
from training.errors import TrainingError

ROWS = [
    {"prompt": f"question: what is {i} plus 1?", "response": f" answer: {i + 1}."}
    for i in range(20)
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_example_ids_are_content_hashes():
    a, b = Example.make("p", "r", "x"), Example.make("p", "r", "y")
    assert a.id == b.id == content_id("p", "r")
    assert Example.text("t").is_text and Example.text("t").id != Example.make("t", "t").id


def test_jsonl_split_by_fraction_is_seeded_and_order_independent(tmp_path):
    t1 = load_task(
        write_jsonl(tmp_path / "a.jsonl", ROWS), TaskDataConfig(test_fraction=0.2, seed=3)
    )
    t2 = load_task(
        write_jsonl(tmp_path / "b.jsonl", ROWS[::-1]), TaskDataConfig(test_fraction=0.2, seed=3)
    )
    assert len(t1.test) == 4 and len(t1.train) == 16
    assert {e.id for e in t1.test} == {e.id for e in t2.test}
    assert t1.digest == t2.digest and t1.name == "a" and t1.train[0].source == "a"
    t3 = load_task(tmp_path / "a.jsonl", TaskDataConfig(test_fraction=0.2, seed=4))
    assert {e.id for e in t3.test} != {e.id for e in t1.test}
    assert not t1.train[0].is_text  # format auto-detected as instruction


def test_task_digest_is_the_same_from_files_or_examples(tmp_path):
    (tmp_path / "t").mkdir()
    write_jsonl(tmp_path / "t" / "train.jsonl", ROWS[:15])
    write_jsonl(tmp_path / "t" / "test.jsonl", ROWS[15:])
    train = [Example.make(r["prompt"], r["response"], "elsewhere") for r in ROWS[:15]]
    test = [Example.make(r["prompt"], r["response"]) for r in ROWS[15:]]
    assert load_task(tmp_path / "t").digest == task_digest(train, test)
    assert task_digest(train[::-1], test[::-1]) == task_digest(train, test)  # sets, not orders
    # Moving an example from train to test is another task (its test loss means something else).
    assert task_digest(train[1:], [train[0], *test]) != task_digest(train, test)


def test_split_keeps_duplicates_on_one_side():
    ex = [Example.make("p", str(i)) for i in range(10)] * 2
    train, test = split_by_hash(ex, 0.3, seed=0)
    assert not {e.id for e in train} & {e.id for e in test}


def test_directory_with_split_files_and_csv_parquet_json(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "task"
    d.mkdir()
    write_jsonl(d / "train.jsonl", ROWS[:15])
    write_jsonl(d / "test.jsonl", ROWS[15:])
    t = load_task(d)
    assert (len(t.train), len(t.test)) == (15, 5)

    csv = tmp_path / "t.csv"
    csv.write_text('text\nthe cat sat\n"the dog, ""quoted"""\n', encoding="utf-8")
    t = load_task(csv, TaskDataConfig(test_fraction=0))
    assert [e.response for e in t.train] == ["the cat sat", 'the dog, "quoted"'] and t.train[
        0
    ].is_text

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "t.parquet")
    assert len(load_task(tmp_path / "t.parquet", TaskDataConfig(test_fraction=0)).train) == 20

    (tmp_path / "s.json").write_text(json.dumps({"train": ROWS[:12], "test": ROWS[12:]}))
    t = load_task(tmp_path / "s.json")
    assert (len(t.train), len(t.test)) == (12, 8)


def test_save_to_disk_directory(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"train": Dataset.from_list(ROWS[:10]), "test": Dataset.from_list(ROWS[10:])}
    ).save_to_disk(tmp_path / "hf")
    t = load_task(tmp_path / "hf")
    assert (len(t.train), len(t.test)) == (10, 10)


def test_custom_field_names(tmp_path):
    rows = [{"q": r["prompt"], "a": r["response"]} for r in ROWS]
    t = load_task(
        write_jsonl(tmp_path / "c.jsonl", rows),
        TaskDataConfig(prompt_field="q", response_field="a"),
    )
    assert t.train[0].prompt.startswith("question")


@pytest.mark.parametrize(
    ("content", "config", "match"),
    [
        (
            '{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n',
            TaskDataConfig(format="instruction"),
            r"line 2: missing field 'response'.*Fix",
        ),
        ('{"prompt": "a", "response": "  "}\n', TaskDataConfig(), r"line 1: empty 'response'.*Fix"),
        (
            '{"prompt": "a", "response": "b"}\n{"prompt": "", "response": "c"}\n',
            TaskDataConfig(),
            r"line 2: empty 'prompt' in instruction data.*Fix:.*format='text'",
        ),
        (
            '{"q": " ", "a": "c"}\n',
            TaskDataConfig(format="instruction", prompt_field="q", response_field="a"),
            r"line 1: empty 'q' in instruction data",
        ),
        ('{"prompt": "a", "response": 3}\n', TaskDataConfig(), r"line 1: field 'response' is int"),
        (
            '{"prompt": "a", "response": "b"}\nnot json\n',
            TaskDataConfig(),
            r"line 2 is not valid JSON",
        ),
        ('{"question": "a"}\n', TaskDataConfig(), r"cannot tell the format.*prompt_field"),
        ("\n\n", TaskDataConfig(), r"empty.*Fix"),
    ],
)
def test_bad_rows_name_file_row_and_fix(tmp_path, content, config, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(TrainingError, match=match) as err:
        load_task(p, config)
    assert "bad.jsonl" in str(err.value)


def test_non_utf8_names_the_line(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(TrainingError, match=r"latin.jsonl: line 2 is not valid UTF-8.*iconv"):
        load_task(p)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(TrainingError, match=r"no such file"):
        load_task(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TrainingError, match=r"unsupported file type"):
        load_task(tmp_path / "x.txt")


def test_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match=r"hub is offline.*Fix"):
        load_task("glue")
    assert time.perf_counter() - t0 < 5  # a hub lookup would retry DNS for ~45 s


# -- tokenisation -----------------------------------------------------------------------------


def test_instruction_masks_prompt_and_targets_response_and_eos(tok):
    e = Example.make("question: what is two plus two?", " answer: four.")
    ids, labels = encode(tok, e)
    n_prompt = len(tok(e.prompt)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == e.response


def test_plain_text_excludes_only_first_token(tok):
    text = "the cat sat on the mat."
    ids, labels = encode(tok, Example.text(text))
    assert ids == tok(text)["input_ids"] + [tok.eos_token_id]  # no BOS, EOS appended
    assert labels == [IGNORE, *ids[1:]]


def test_plain_text_with_bos_excludes_bos_and_the_first_text_token(tok, tok_bos):
    text = "the cat sat on the mat."
    ids, labels = encode(tok_bos, Example.text(text))
    assert ids[0] == tok_bos.bos_token_id and ids[1:] == encode(tok, Example.text(text))[0]
    assert labels == [IGNORE, IGNORE, *ids[2:]]
    # The same target tokens as without BOS: NLLs comparable across tokenizer families.
    assert labels[1:] == encode(tok, Example.text(text))[1]
    ids, labels = encode(tok_bos, Example.text(text), max_length=5)  # BOS truncated away
    assert ids == encode(tok_bos, Example.text(text))[0][-5:] and labels == [IGNORE, *ids[1:]]
    # Instruction data is unaffected: the prompt (with its BOS) is masked anyway.
    ids, labels = encode(tok_bos, Example.make("question: what is two plus two?", " four."))
    n_prompt = len(tok_bos("question: what is two plus two?")["input_ids"])
    assert ids[0] == tok_bos.bos_token_id and labels == [IGNORE] * n_prompt + ids[n_prompt:]


def old_encode(tok, e, max_length):
    """The encoder as it was before the BOS rule, frozen here: no-BOS output must not change."""
    eos = tok.eos_token_id
    if e.is_text:
        ids = tok(e.response)["input_ids"] + [eos]
        labels = list(ids)
    else:
        p = tok(e.prompt)["input_ids"]
        r = tok(e.response, add_special_tokens=False)["input_ids"] + [eos]
        ids, labels = p + r, [IGNORE] * len(p) + r
    ids, labels = ids[-max_length:], labels[-max_length:]
    labels[0] = IGNORE
    return ids, labels


@pytest.mark.parametrize("max_length", [2, 5, 12, 1024])
def test_no_bos_encoding_is_unchanged(tok, max_length):
    from training.world.tokenizer import EOS

    examples = [
        Example.text("the cat sat on the mat."),
        Example.text(f"{EOS}the quick brown fox"),  # starts with a special token literally
        Example.text("z"),
        Example.make("question: what is two plus two?", " answer: four."),
        Example.make("q", " a"),
    ]
    for e in examples:
        assert encode(tok, e, max_length=max_length) == old_encode(tok, e, max_length)


def test_left_truncation_keeps_the_end_and_error_mode(tok):
    e = Example.make("the quick brown fox jumps over the lazy dog " * 3, " answer: four.")
    full_ids, full_labels = encode(tok, e, max_length=1000)
    ids, labels = encode(tok, e, max_length=12)
    assert ids == full_ids[-12:] and labels[1:] == full_labels[-11:] and labels[0] == IGNORE
    with pytest.raises(TrainingError, match=r"tokens > max_length 12.*truncation='left'"):
        encode(tok, e, max_length=12, truncation="error")


def test_chat_template_applied_when_present(tok):
    import copy

    chat = copy.deepcopy(tok)
    chat.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    e = Example.make("what is two plus two?", " four.")
    ids, labels = encode(chat, e)
    prompt_part = chat.decode([i for i, lab in zip(ids, labels, strict=True) if lab == IGNORE])
    assert prompt_part.startswith("<|bos|>user: what is two plus two?") and prompt_part.endswith(
        "assistant:"
    )
    assert encode(chat, e, chat_template=False) == encode(tok, e)


def test_check_lengths_names_the_row(tmp_path, tok):
    rows = [*ROWS[:3], {"prompt": "the quick brown fox " * 20, "response": " four."}]
    p = write_jsonl(tmp_path / "long.jsonl", rows)
    assert load_task(p, TaskDataConfig(max_length=32, test_fraction=0)).check_lengths(tok) == 1
    strict = load_task(p, TaskDataConfig(max_length=32, truncation="error", test_fraction=0))
    with pytest.raises(TrainingError, match=r"long.jsonl: line 4: \d+ tokens > max_length 32.*Fix"):
        strict.check_lengths(tok)
    enc = strict.config.encoder(tok)  # what finetune(data=config) encodes the task with
    assert len(enc(strict.train[0])[0]) <= 32
    with pytest.raises(
        TrainingError,
        match=r"long.jsonl: line 4: \d+ tokens > max_length 32.*Fix: raise max_length",
    ):
        enc(strict.train[-1])


def test_long_rows_fail_at_load_when_the_tokenizer_is_given(tmp_path, tok):
    rows = [*ROWS[:3], {"prompt": "the quick brown fox " * 20, "response": " four."}]
    p = write_jsonl(tmp_path / "long.jsonl", rows)
    cfg = TaskDataConfig(max_length=32, truncation="error", test_fraction=0)
    with pytest.raises(
        TrainingError, match=r"long.jsonl: line 4: \d+ tokens > max_length 32.*truncation='left'"
    ):
        load_task(p, cfg, tokenizer=tok)
    lenient = load_task(p, TaskDataConfig(max_length=32, test_fraction=0), tokenizer=tok)
    ids, labels = lenient.config.encoder(tok)(lenient.train[-1])
    assert len(ids) == 32 and ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
    # An example not read from a file still says which one it is.
    with pytest.raises(TrainingError, match=r"example [0-9a-f]{16} \(no source\): \d+ tokens"):
        encode(
            tok, Example.make("the quick brown fox " * 20, " x"), max_length=8, truncation="error"
        )


def test_origin_is_not_part_of_identity(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg = TaskDataConfig(test_fraction=0)
    a = load_task(write_jsonl(tmp_path / "a" / "t.jsonl", ROWS), cfg)
    b = load_task(write_jsonl(tmp_path / "b" / "t.jsonl", ROWS[::-1]), cfg)
    ea = a.train[0]
    eb = next(e for e in b.train if e.id == ea.id)
    assert ea.origin == f"{tmp_path / 'a' / 't.jsonl'}: line 1"
    assert eb.origin == f"{tmp_path / 'b' / 't.jsonl'}: line 20"
    assert ea == eb and hash(ea) == hash(eb) and ea.id == content_id(ea.prompt, ea.response)
    assert repr(ea) == repr(Example.make(ea.prompt, ea.response, ea.source))
    assert a.origins[ea.id] == ea.origin
