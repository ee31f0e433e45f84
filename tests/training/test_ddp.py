"""Data-parallel training: 2 gloo processes with batch b follow the trajectory of 1 process with batch 2b."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from geognn.models import load_checkpoint
from geognn.training import fit
from geognn.training.runlog import read_log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fit(config)
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:the dataset's compositions determine only")
@pytest.mark.parametrize("forces", [False, True], ids=["energy", "energy+forces"])
def test_two_processes_match_one_with_double_batch(qm9_recipe, xtb_recipe, tmp_path, forces):
    recipe = xtb_recipe if forces else qm9_recipe
    changes = dict(optim={"max_epochs": 2, "lr": 0.003, "scheduler": "cosine", "warmup_steps": 2},
                   log={"log_every": 1, "checkpoint_every": 100})
    single = recipe(data={"batch_size": 4}, **changes)
    single.log.run_dir = str(tmp_path / "single")
    fit(single)
    double = recipe(data={"batch_size": 2}, **changes)
    double.log.run_dir = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(2, _free_port(), double), nprocs=2, join=True)

    rows = {name: [row for row in read_log(tmp_path / name)] for name in ("single", "ddp")}
    assert [row["step"] for row in rows["ddp"]] == [row["step"] for row in rows["single"]]
    for a, b in zip(rows["single"], rows["ddp"]):
        assert a["split"] == b["split"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]
    weights = {name: load_checkpoint(tmp_path / name / "last.pt")["training_state"]["model"] for name in rows}
    for key, value in weights["single"].items():
        assert torch.allclose(value, weights["ddp"][key], rtol=1e-6, atol=1e-9), key
    info = (tmp_path / "ddp" / "run.json").read_text()
    assert '"world_size": 2' in info
