"""CausalLMModule's AdamW groups: by name, the same unsharded and under FSDP-style flat shards."""

from __future__ import annotations

import torch
from torch import nn

from training.config import FinetuneConfig
from training.module import CausalLMModule, clean_name, decay_groups, no_decay_rules

from .conftest import tiny_model


def groups_by_dim(model, weight_decay):
    """The split as it was: decay for p.dim() >= 2, none for biases and norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def ids(groups):
    return [({id(p) for p in g["params"]}, g["weight_decay"]) for g in groups]


def optimizer_groups(module):
    return module.configure_optimizers()["optimizer"].param_groups


def test_same_groups_as_the_dim_rule_on_a_tiny_llama(tok):
    model = tiny_model(tok)
    module = CausalLMModule(model, FinetuneConfig(weight_decay=0.1))
    got = optimizer_groups(module)
    assert ids(got) == ids(groups_by_dim(model, 0.1))
    no_decay = {
        n for n, p in model.named_parameters() if id(p) in {id(q) for q in got[1]["params"]}
    }
    assert no_decay and all("norm" in n for n in no_decay)  # LLaMA: RMSNorm gains only
    assert "model.embed_tokens.weight" not in no_decay


def test_flattened_shards_keep_the_unsharded_split(tok):
    model = tiny_model(tok)
    module = CausalLMModule(model, FinetuneConfig(weight_decay=0.1))
    want = {n for n, p in model.named_parameters() if p.dim() < 2}
    # What FSDP does: every parameter becomes a 1-D (possibly empty) shard, and decoder layers
    # get wrapped, which inserts a segment into the names.
    layers = model.model.layers
    for i, layer in enumerate(layers):
        wrapper = nn.Module()
        wrapper._fsdp_wrapped_module = layer
        layers[i] = wrapper
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.reshape(-1)[: max(1, p.numel() // 2)]
    assert all(p.dim() == 1 for p in model.parameters())
    got = optimizer_groups(module)
    names = {id(p): clean_name(n) for n, p in model.named_parameters()}
    assert {names[id(p)] for p in got[1]["params"]} == want and got[1]["weight_decay"] == 0.0
    assert len(got[0]["params"]) == sum(1 for _ in model.parameters()) - len(want)
    assert [n for n, _ in model.named_parameters()][2].startswith("model.layers.0._fsdp_wrapped")


def test_names_decide_for_parameters_seen_only_when_wrapped():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.ln_1 = nn.LayerNorm(4)
            self.post_norm = nn.LayerNorm(4)

    outer = nn.Module()
    outer._fsdp_wrapped_module = Block()
    with torch.no_grad():
        for p in outer.parameters():
            p.data = p.data.reshape(-1)
    rules = no_decay_rules(outer.named_parameters())
    assert {n for n, skip in rules.items() if not skip} == {"proj.weight"}
    groups = decay_groups(outer.named_parameters(), 0.1, {})
    assert [len(g["params"]) for g in groups] == [1, 5]
    assert clean_name("module._orig_mod.a._fsdp_wrapped_module.b") == "a.b"


def test_frozen_parameters_are_left_out(tok):
    from training.config import LoraSettings
    from training.model import apply_lora

    model = apply_lora(tiny_model(tok), LoraSettings(r=2))
    got = optimizer_groups(CausalLMModule(model, FinetuneConfig(weight_decay=0.1)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert ids(got) == ids([g for g in groups_by_dim(model, 0.1) if g["params"]])
    assert sum(len(g["params"]) for g in got) == len(trainable)
