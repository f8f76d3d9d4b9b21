"""training: fine-tuning with replay and per-example forgetting measurement.

torch / Lightning / transformers / peft / datasets live here (no mlflow, no celery: those are
service/'s). The modules, one concept each:

    errors.py    TrainingError, the one user-facing error
    data.py      Example, task data loading and validation, tokenisation with loss masks
    readers.py   rows from JSONL / JSON / CSV / parquet files, directories, `datasets`
    upstream.py  UpstreamSet: the examples whose forgetting is measured (stable ids, digest)
    model.py     load / build / save causal LMs, LoRA wrapping
    config.py    FinetuneConfig, LoraSettings (what a job runs; logged as MLflow parameters)
    module.py    the LightningModule (AdamW, warm-up + linear/cosine decay)
    mixture.py   the replay mixture: task stream + interleaved replay, switchable mid-run
    nll.py       the streaming per-example NLL evaluator (EVALUATOR_VERSION keys its caches)
    cache.py     NllCache: a base model's per-example NLLs, measured once
    probe.py     the online probe callback (measure k probes, switch the replay schedule)
    finetune.py  finetune(): the whole job, returns FinetuneResult
    world/       the embedded demo world (corpora, tasks, base model) built on the above

Heavy imports (torch, lightning, peft) happen inside these modules, so `import training` is free.
"""
