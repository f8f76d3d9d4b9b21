"""The per-example NLL evaluator against the model's own one-example-at-a-time loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import IGNORE, Example, encode, pad_batch
from training.nll import (
    batch_nll,
    evaluate_loss,
    measure_nll,
    plan_batches,
    resolve_device,
)

from .conftest import make_tokenizer, tiny_model

EXAMPLES = [
    Example.text("the cat sat on the mat."),
    Example.make("question: what is two plus two?", " answer: four."),
    Example.text("in the beginning was the word, and the word was the quick brown fox " * 2),
    Example.make("q", " a"),
    Example.text("def f(x): return x + 1"),
    Example.make("the lazy dog jumps over the quick brown fox and then", " sat."),
    Example.text("z"),
]


def reference_nll(model, tok, example, max_length=256):
    """The model's own loss (transformers' shifted cross-entropy), one example, no padding."""
    ids, labels = encode(tok, example, max_length=max_length)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    return float(out.loss)


def test_matches_one_at_a_time_loss_whatever_the_batching():
    tok = make_tokenizer()
    model = tiny_model(tok, seed=3)
    ref = np.array([reference_nll(model, tok, e) for e in EXAMPLES])
    for batch_size in (1, 3, 8):
        np.testing.assert_allclose(
            measure_nll(model, tok, EXAMPLES, batch_size=batch_size), ref, atol=1e-5, rtol=0
        )
    perm = np.random.default_rng(0).permutation(len(EXAMPLES))
    shuffled = measure_nll(model, tok, [EXAMPLES[i] for i in perm], batch_size=2)
    np.testing.assert_allclose(shuffled, ref[perm], atol=1e-5, rtol=0)
    tok.padding_side = "left"  # the tokenizer's setting is never used: batches are padded here
    np.testing.assert_array_equal(
        measure_nll(model, tok, EXAMPLES, batch_size=3),
        measure_nll(model, make_tokenizer(), EXAMPLES, batch_size=3),
    )


def left_pad(items, pad):
    """A hand-built LEFT-padded batch: (input_ids, attention_mask, labels)."""
    width = max(len(x) for x, _ in items)
    ids = torch.full((len(items), width), pad)
    att = torch.zeros((len(items), width), dtype=torch.long)
    lab = torch.full((len(items), width), IGNORE)
    for r, (x, y) in enumerate(items):
        ids[r, width - len(x) :], lab[r, width - len(y) :], att[r, width - len(x) :] = (
            torch.tensor(x),
            torch.tensor(y),
            1,
        )
    return ids, att, lab


def test_batch_nll_honours_the_mask_on_either_padding_side(tok, model):
    items = [encode(tok, e, max_length=256) for e in EXAMPLES]
    ref = np.array([reference_nll(model, tok, e) for e in EXAMPLES])
    counts = [sum(y != IGNORE for y in lab[1:]) for _, lab in items]
    right = pad_batch(items, tok.pad_token_id)
    assert (right[1].sum(1) == torch.tensor([len(x) for x, _ in items])).all()
    assert (right[2][right[1] == 0] == IGNORE).all() and (right[1][:, 0] == 1).all()
    for ids, att, lab in (right, left_pad(items, tok.pad_token_id)):
        with torch.inference_mode():
            sums, n = batch_nll(model, ids, att, lab)
        assert n.tolist() == counts  # padding carries no target on either side
        # LLaMA's rotary attention is relative, so left padding's shifted positions change
        # nothing either: the helper is exact wherever the padding is.
        np.testing.assert_allclose((sums / n).numpy(), ref, atol=1e-5, rtol=0)


def test_device_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_device(cpu, "auto") == (cpu, False)  # no GPU: CPU, in the model's precision
    assert resolve_device(cpu, None) == (cpu, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(cpu, "auto") == (torch.device("cuda"), True)  # GPU: there, bf16
    assert resolve_device(cpu, "auto", bf16=False) == (torch.device("cuda"), False)
    assert resolve_device(cpu, None) == (cpu, False)  # None: where the model is
    assert resolve_device(cpu, "cpu") == (cpu, False)  # CPU never autocasts
    assert resolve_device(torch.device("cuda:1"), "auto") == (torch.device("cuda:1"), True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_device(cpu, "auto") == (torch.device("cuda"), False)  # e.g. a V100: fp32


def test_auto_device_on_a_cpu_machine_is_the_old_behaviour(tok, model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    moved = []
    orig_to = type(model).to
    monkeypatch.setattr(
        type(model), "to", lambda self, *a, **k: moved.append(a) or orig_to(self, *a, **k)
    )
    auto = measure_nll(model, tok, EXAMPLES)
    assert moved == []  # nothing moved, no autocast
    np.testing.assert_array_equal(auto, measure_nll(model, tok, EXAMPLES, device=None, bf16=False))


def test_prompt_tokens_do_not_count(tok, model):
    a = Example.make("question: what is two plus two?", " answer: four.")
    b = Example.make("the quick brown fox jumps over", " answer: four.")
    # Same response, different prompts: NLLs differ only through conditioning, and the
    # count of target tokens (response + EOS) is the same for both.
    _ids_a, lab_a = encode(tok, a)
    _ids_b, lab_b = encode(tok, b)
    assert (
        sum(x != -100 for x in lab_a)
        == sum(x != -100 for x in lab_b)
        == len(tok(" answer: four.")["input_ids"]) + 1
    )
    # Built from the tokenizer alone, not from encode's labels: the sequence is the prompt's
    # own tokens, then the response's and EOS; the targets are exactly the positions after
    # the prompt's token length.
    prompt = tok(a.prompt)["input_ids"]
    ids = prompt + tok(a.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    want = -np.mean([float(logp[t - 1, ids[t]]) for t in range(len(prompt), len(ids))])
    assert measure_nll(model, tok, [a])[0] == pytest.approx(want, abs=1e-5)
    everything = -np.mean([float(logp[t - 1, ids[t]]) for t in range(1, len(ids))])
    assert abs(want - everything) > 1e-3  # the test can tell masked from unmasked


def test_plain_text_first_token_excluded(tok, tok_bos, model):
    e = Example.text("the cat sat")
    ids = tok(e.response)["input_ids"] + [tok.eos_token_id]  # from the tokenizer, not encode
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    want = -np.mean([float(logp[t - 1, ids[t]]) for t in range(1, len(ids))])
    assert measure_nll(model, tok, [e])[0] == pytest.approx(want, abs=1e-5)
    # With BOS: [BOS, t0, t1, ...]; t0 is excluded too, targets are t1.. and EOS.
    ids = [tok_bos.bos_token_id, *ids]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    want = -np.mean([float(logp[t - 1, ids[t]]) for t in range(2, len(ids))])
    assert measure_nll(model, tok_bos, [e])[0] == pytest.approx(want, abs=1e-5)


def test_nan_without_targets_progress_and_mode_restored(tok, model):
    # max_length 3 keeps only the tail of the response; a 1-token window has no target at all.
    vals = measure_nll(model, tok, EXAMPLES[:2], max_length=1)
    assert np.isnan(vals).all()
    calls = []
    model.train()
    measure_nll(model, tok, EXAMPLES, batch_size=3, progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (7, 7) and all(n == 7 for _, n in calls) and model.training
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})
    assert measure_nll(model, tok, []).shape == (0,)
    assert evaluate_loss(model, tok, EXAMPLES) == pytest.approx(
        float(np.mean(measure_nll(model, tok, EXAMPLES)))
    )


def test_batches_share_the_longest_batch_token_budget():
    lengths = [5, 100, 7, 100, 30, 31, 2, 2, 2, 2, 2, 2]
    batches = plan_batches(lengths, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert batches[0] == [1, 3]  # the two longest set the budget: 2 x 100 tokens
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 200
    assert [len(b) for b in batches] == [2, 6, 4]  # 31 + 30 + 7 + 5 + 2 + 2 share one
    assert plan_batches([], 4) == []


def test_lora_before_is_the_base_with_the_adapter_disabled(tok, model):
    from training.config import LoraSettings
    from training.model import apply_lora

    base = measure_nll(model, tok, EXAMPLES)
    peft_model = apply_lora(model, LoraSettings(r=4, dropout=0.0))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    with peft_model.disable_adapter():
        before = measure_nll(peft_model, tok, EXAMPLES)
    after = measure_nll(peft_model, tok, EXAMPLES)
    np.testing.assert_allclose(before, base, atol=1e-6)
    assert not np.allclose(after, base)


def test_chunk_boundaries_do_not_change_values(tok, model, monkeypatch):
    import training.nll as nll

    whole = measure_nll(model, tok, EXAMPLES, batch_size=2)
    monkeypatch.setattr(nll, "CHUNK", 3)  # 7 examples: chunks of 3, 3, 1
    calls = []
    chunked = measure_nll(model, tok, EXAMPLES, batch_size=2, progress=lambda d, n: calls.append(d))
    np.testing.assert_allclose(chunked, whole, atol=1e-6, rtol=0)
    ref = np.array([reference_nll(model, tok, e) for e in EXAMPLES])
    np.testing.assert_allclose(chunked, ref, atol=1e-5, rtol=0)
    assert calls[-1] == 7


def test_max_length_never_passes_the_models_context(tok):
    """A line's max_length (1024) above a model's positions (16) measures the last 16 tokens,
    instead of indexing position embeddings that do not exist."""
    short = tiny_model(tok, max_position_embeddings=16)
    long_text = [Example.text("the quick brown fox jumps over the lazy dog. " * 4)]
    assert len(encode(tok, long_text[0], max_length=10**6)[0]) > 16
    at_context = measure_nll(short, tok, long_text, max_length=16)
    assert np.isfinite(at_context).all()
    np.testing.assert_allclose(measure_nll(short, tok, long_text, max_length=1024), at_context)
    np.testing.assert_allclose(measure_nll(short, tok, long_text), at_context)


def test_over_long_counts_what_would_be_truncated(tok):
    from training.upstream import over_long

    examples = [Example.text("the cat sat."), Example.text("the quick brown fox " * 20)]
    lengths = [len(encode(tok, e, max_length=10**6)[0]) for e in examples]
    assert over_long(examples, tok, max(lengths)) == []
    assert over_long(examples, tok, min(lengths)) == [examples[1].id]
