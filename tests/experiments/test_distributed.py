"""Sampling across processes: shards cover the rows once, and two gloo processes under
torchrun give the single-process restorations."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import guided
import priors

from experiments.inverse import distributed
from tests.conftest import well_separated_mixture


def test_shards_cover_every_row_once_in_order():
    for rows in (1, 7, 8):
        for world in (1, 2, 3):
            covered = [
                i for r in range(world) for i in range(rows)[distributed.shard(rows, r, world)]
            ]
            assert covered == list(range(rows))
            sizes = [len(range(rows)[distributed.shard(rows, r, world)]) for r in range(world)]
            assert max(sizes) - min(sizes) <= 1


def test_outside_a_process_group_it_is_the_plain_sampler():
    prior = well_separated_mixture(2, priors.LinearSchedule())
    x_T = guided.initial_noise(prior.schedule, (5, 2), torch.Generator()).double()
    ts = guided.time_grid(6)
    gens = [torch.Generator().manual_seed(i) for i in range(5)]
    ours = distributed.sample(guided.DDPM(), prior, x_T, ts, gens)
    gens = [torch.Generator().manual_seed(i) for i in range(5)]
    assert torch.equal(ours, guided.DDPM()(prior, x_T, ts, generator=gens))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
def test_two_gloo_processes_under_torchrun_match_one(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["-m", "experiments.inverse.distributed", "steps=4", "images=5", "hydra.run.dir=."]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, *args, f"out_dir={one}"], check=True, cwd=tmp_path, env=env,
        capture_output=True,
    )  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port())]  # fmt: skip
    done = subprocess.run(
        [*launcher, *args, f"out_dir={two}"], check=False, cwd=tmp_path, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["rows_per_process"] == [3, 2]
    torch.testing.assert_close(
        torch.load(two / "restored.pt"), torch.load(one / "restored.pt"), rtol=0, atol=1e-4
    )  # the network's float32 products differ in the last bits with the batch size
