"""finetune(): one fine-tuning (or pre-training) job, with optional replay and online probe.

Usage::

    from training.finetune import finetune, ReplaySpec, ProbeSpec
    result = finetune(model, tok, task.train, FinetuneConfig(lr=3e-4, steps=int(200 * (1 + r))),
                      replay=ReplaySpec(pool=ups.as_pool(), schedule=random_pairs, ratio=r,
                                        exclude_ids=heldout_ids),
                      probe=ProbeSpec(probes, base_nll, on_probe=plan_replay),
                      logger=MLFlowLogger(...),            # or None: no logging
                      progress=lambda step, total, m: print(step, total, m["loss"]))
    result.model, result.replayed_ids, result.history, result.probe_after

Pre-training the world's base model is the same call with plain-text examples and
`schedule="cosine"`. The model is trained in place (full fine-tuning) or wrapped in a LoRA
adapter first when `config.lora` is set; `result.model` is the trained model either way.
Deterministic under `config.seed` on CPU (same data order, replay order and initial LoRA weights).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from training.checkpoint import (
    Checkpointing,
    CheckpointSpec,
    restore,
    resume_point,
    stream_signature,
)
from training.config import FinetuneConfig
from training.data import Example, TaskDataConfig, encode, pad_id
from training.errors import TrainingError
from training.nll import evaluate_loss
from training.probe import OnlineProbe, ProbeSpec

log = logging.getLogger("ftctl.training")
__all__ = ["CheckpointSpec", "FinetuneResult", "ProbeSpec", "ReplaySpec", "evaluate_loss", "finetune"]

StepProgress = Callable[[int, int, dict[str, float]], None]  # (step, total, last history entry)


@dataclass
class ReplaySpec:
    """Upstream replay: draw from `pool` following `schedule`, one per 1/ratio task examples.

    `switches` are later schedules, each from a stream position on: what the online probe
    decided after the warm-up, given up front when a job resumes after that point.
    """

    pool: Mapping[str, Example]
    schedule: list[tuple[str, float]]
    ratio: float = 1 / 32
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    switches: Sequence[tuple[int, Sequence[tuple[str, float]]]] = ()


@dataclass
class FinetuneResult:
    """What a job produced: the trained model and what it consumed.

    `model` is in eval mode, on the CPU (Lightning's teardown moves it there); `history` holds
    one entry per optimizer step: step, loss (mean over its micro-batches), lr, tokens, replay.
    """

    model: Any
    replayed_ids: list[str]
    steps: int
    history: list[dict[str, float]]
    probe_after: np.ndarray | None = None
    probe_step: int | None = None
    resumed_from: int = 0  # optimizer steps a checkpoint had already done (0: trained from scratch)


class _Progress(L.Callback):
    """Calls the CLI's progress function once per optimizer step (rank 0 only)."""

    def __init__(self, fn: StepProgress, total: int):
        self.fn, self.total, self.last = fn, total, -1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        h = pl_module.history
        if trainer.is_global_zero and h and h[-1]["step"] != self.last:
            self.last = int(h[-1]["step"])
            self.fn(self.last, self.total, dict(h[-1]))


@contextlib.contextmanager
def _quiet_threads(n: int | None) -> Iterator[None]:
    """Set torch's thread count for the job; silence Lightning's banner lines and tips."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # A loader of positions needs no workers; the pytree notice is Lightning-internal.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            # Mid-epoch resumption is exact here: the loader restarts at the saved position.
            warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before.*")
            yield
    finally:
        torch.set_num_threads(old)
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _strategy(config: FinetuneConfig, model: Any) -> Any:
    """'fsdp' wraps each decoder layer (the model's `_no_split_modules`), not the model as one."""
    if config.strategy != "fsdp":
        return config.strategy
    from lightning.pytorch.strategies import FSDPStrategy

    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = {type(m) for m in model.modules() if type(m).__name__ in names}
    return FSDPStrategy(auto_wrap_policy=layers or None, use_orig_params=True)


def finetune(
    model: Any,
    tokenizer: Any,
    train: Sequence[Example],
    config: FinetuneConfig,
    *,
    replay: ReplaySpec | None = None,
    probe: ProbeSpec | None = None,
    logger: Any = None,
    callbacks: Sequence[Any] = (),
    progress: StepProgress | None = None,
    data: TaskDataConfig | None = None,
    checkpoint: CheckpointSpec | None = None,
) -> FinetuneResult:
    """Train `model` on `train` (+ replay) for `config.steps` optimizer steps.

    Parameters
    ----------
    model, tokenizer : a causal LM (transformers, or a peft model to continue) and its tokenizer.
    train : the task's training examples (instruction or plain text).
    config : optimiser, schedule, precision, strategy, LoRA...
    replay : upstream replay; None trains on the task alone.
    probe : the online variant: measure probes after `at_fraction` of the steps and switch the
        replay schedule to what `probe.on_probe` returns. Needs `replay` (the warm-up schedule).
    logger : a Lightning logger (the service passes an MLFlowLogger); None logs nothing.
    callbacks : extra Lightning callbacks.
    progress : progress(step, total_steps, history entry) after each optimizer step.
    data : how task examples are tokenised (truncation rule, chat template, EOS; the shorter of
        its and config's max_length); replay examples follow its chat template and EOS rule,
        always left-truncated.
    checkpoint : resumable training (see CheckpointSpec); None keeps no checkpoint.
    """
    from training.mixture import ReplayMixture
    from training.model import apply_lora, context_length
    from training.module import CausalLMModule

    if not train:
        raise TrainingError("no training examples. Fix: pass a non-empty train set.")
    if probe is not None and replay is None:
        raise TrainingError(
            "the online probe switches the replay schedule, but no replay was given. Fix: pass "
            "replay=ReplaySpec(...) with the warm-up (random) schedule."
        )
    L.seed_everything(config.seed, workers=True, verbose=False)
    if config.lora is not None and not hasattr(model, "peft_config"):
        model = apply_lora(model, config.lora)  # seeded above: same adapter init every run
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # LoRA: frozen embeddings would cut the graph
    model.train()

    # Never past the model's positions (a recipe's max_length may exceed a small model's context).
    max_length = min(config.max_length, context_length(model) or config.max_length)

    def enc_replay(e: Example) -> tuple[list[int], list[int]]:
        # Upstream examples are encoded as they are measured: the task's chat-template and EOS
        # rule, always left-truncated (an over-long upstream record is the line's, not an error).
        return encode(tokenizer, e, max_length=max_length,
                      chat_template=data.chat_template if data else True,
                      add_eos=data.add_eos if data else True)

    mixture = ReplayMixture(
        train,
        data.encoder(tokenizer, max_length) if data else enc_replay,
        encode_replay=enc_replay,
        pad_id=pad_id(tokenizer),
        seed=config.seed,
        ratio=replay.ratio if replay else 0.0,
        pool=replay.pool if replay else None,
        schedule=replay.schedule if replay else (),
        exclude_ids=replay.exclude_ids if replay else frozenset(),
    )
    for at_position, schedule in replay.switches if replay else ():
        mixture.switch(list(schedule), at_position=int(at_position))
    module = CausalLMModule(model, config, mixture)
    cbs = list(callbacks)
    probe_cb = None
    if probe is not None:
        probe_cb = OnlineProbe(
            probe,
            mixture,
            tokenizer,
            total_steps=config.steps,
            examples_per_step=config.examples_per_step,
            max_length=max_length,
        )
        cbs.append(probe_cb)
    if progress is not None:
        cbs.append(_Progress(progress, config.steps))
    done, resume_from = 0, None
    if checkpoint is not None:
        os.makedirs(checkpoint.dir, exist_ok=True)
        signature = stream_signature(
            config.to_dict(), [e.id for e in train], replay.ratio if replay else 0.0,
            list(replay.schedule) if replay else [], list(replay.switches) if replay else [],
            config.examples_per_step * config.devices)
        done, resume_from = resume_point(checkpoint, signature)
        if resume_from:
            log.info("resuming %s at step %d of %d", resume_from, done, config.steps)
        cbs.append(Checkpointing(checkpoint, mixture, config.steps, signature))
    with _quiet_threads(config.num_threads):
        trainer = _trainer(config, model, cbs, logger)
        if logger is not None:
            logger.log_hyperparams(config.to_dict())
        # Enough positions for every step on every rank; the loader is never exhausted early.
        # A resumed job's loader starts where the checkpoint's stream stopped (positions are
        # resolved by the mixture, so the continuation sees exactly the examples it would have).
        # It keeps the full epoch length: Lightning resumes its batch counter mid-epoch and
        # would otherwise end the epoch early and restart the loader from its first position.
        per_step = config.examples_per_step * trainer.world_size
        total = config.steps * per_step
        start = done * per_step
        loader = DataLoader(range(start, start + total), batch_size=config.batch_size, shuffle=False)
        target = min(config.steps, checkpoint.stop_at or config.steps) if checkpoint else config.steps
        if done < target:
            trainer.fit(module, loader, ckpt_path=resume_from)
        elif resume_from:  # the checkpoint already got this far (a redelivery): restore, train nothing
            _restore_finished(module, mixture, resume_from)
    replayed = _gather(list(mixture.consumed))
    model = module.model
    model.eval()
    return FinetuneResult(
        model=model,
        replayed_ids=replayed,
        steps=max(int(trainer.global_step), done),
        history=list(module.history),
        probe_after=probe_cb.nll_after if probe_cb else None,
        probe_step=probe_cb.at_step if probe_cb else None,
        resumed_from=done,
    )


def _restore_finished(module: Any, mixture: Any, path: str) -> None:
    """Load a finished checkpoint's weights and ftctl state without training (redelivery)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    module.load_state_dict(ckpt["state_dict"])
    restore(mixture, module, ckpt)


def _trainer(config: FinetuneConfig, model: Any, callbacks: list[Any], logger: Any) -> L.Trainer:
    return L.Trainer(
        max_steps=config.steps,
        accelerator=config.resolved_accelerator(),
        devices=config.devices,
        strategy=_strategy(config, model),
        precision=config.resolved_precision(),
        accumulate_grad_batches=config.grad_accum,
        gradient_clip_val=config.clip or None,
        logger=logger if logger is not None else False,
        log_every_n_steps=config.log_every,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def _gather(ids: list[str]) -> list[str]:
    """The replayed ids of all ranks (each rank saw its own shard of the stream)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, ids)
    return [i for p in parts for i in p]
