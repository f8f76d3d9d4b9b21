"""measure_nll_distributed: two gloo ranks on CPU give the single-process values, by id."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import Example

EX = [Example.text(f"the cat sat on the mat {'z' * i}") for i in range(7)]


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from tests.training.conftest import make_tokenizer, tiny_model
    from training.nll import measure_nll_distributed

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    tok = make_tokenizer()
    vals = measure_nll_distributed(tiny_model(tok, seed=5), tok, EX, batch_size=2)
    np.save(f"{out_dir}/rank{rank}.npy", vals)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path, tok):
    import socket

    import torch.multiprocessing as mp

    from training.nll import measure_nll, measure_nll_distributed

    from .conftest import tiny_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    want = measure_nll(tiny_model(tok, seed=5), tok, EX, batch_size=2)
    for r in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}.npy"), want, atol=1e-6)
    # Without a process group it is plain measure_nll.
    np.testing.assert_allclose(
        measure_nll_distributed(tiny_model(tok, seed=5), tok, EX), want, atol=1e-6
    )
