import json
import os
import subprocess
import sys

from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_module

from evaluation import random_directions, sliced_wasserstein
from experiments.benchmarks.sample import run


def _compose(overrides):
    with initialize_config_module(config_module="experiments.configs", version_base=None):
        return compose(config_name="sample", overrides=overrides)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver", "heun"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "edm"])
def test_every_sampler_and_schedule_config_runs(tmp_path, sampler, schedule):
    cfg = _compose([f"sampler={sampler}", f"schedule={schedule}", "steps=40", "samples=500"])
    metrics = run(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    # Heun: 2 evaluations per step, 1 for a last step to sigma = 0 (all but EDM end there)
    heun_nfe = 80 if schedule == "edm" else 79
    assert saved["nfe_per_sample"] == (heun_nfe if sampler == "heun" else 40)
    assert abs(sum(saved["mode_weights"]) - 1) < 1e-9
    assert 0 < saved["sliced_wasserstein"] < 1.0


def test_bad_config_values_raise(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        run(_compose(["steps=0"]), tmp_path)
    with pytest.raises(ValueError, match="kind"):
        run(_compose(["grid=log"]), tmp_path)
    with pytest.raises(ValueError, match="eta"):
        run(_compose(["sampler=ddim", "sampler.eta=2.0"]), tmp_path)
    with pytest.raises(ValueError, match="samples"):
        run(_compose(["samples=1"]), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_main_job_from_the_command_line(tmp_path):
    """The README's main job, as a user runs it (with a smaller run folder and sample count)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.benchmarks.sample",
            f"hydra.run.dir={tmp_path}",
            "samples=1000",
        ],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["sampler"] == "DPMSolver" and metrics["nfe_per_sample"] == 25
    assert (tmp_path / "samples.png").exists()
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_sliced_wasserstein_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64)
    d = random_directions(3, 50, g)
    assert sliced_wasserstein(x, x, d) == 0
    shifted = sliced_wasserstein(x + torch.tensor([2.0, 0, 0], dtype=torch.float64), x, d)
    # a shift by v moves every slice by |<theta, v>|
    assert shifted == pytest.approx(
        float((d @ torch.tensor([2.0, 0, 0], dtype=torch.float64)).abs().mean())
    )
    with pytest.raises(ValueError, match="as many points"):
        sliced_wasserstein(x, x[:10], d)
    with pytest.raises(ValueError, match="NaN"):
        sliced_wasserstein(x * float("nan"), x, d)
