"""Sweeps: a joblib multirun, resumed after a kill without redoing finished runs, gathered
into one table and plot; the SLURM launcher config composes; metrics are written
atomically."""

import csv
import os
import subprocess
import sys

import pytest

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from experiments import gather, runs


def _sweep(directory, cwd):
    command = [
        sys.executable, "-m", "experiments.sample", "-m", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "steps=3,4", "samples=50", f"hydra.sweep.dir={directory}",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_killed_sweep_resumes_and_is_gathered(tmp_path):
    sweep = tmp_path / "sweep"
    _sweep(sweep, tmp_path)
    first, second = sweep / "0" / "metrics.json", sweep / "1" / "metrics.json"
    kept = first.stat().st_mtime_ns
    second.unlink()  # the second job was killed before it finished
    rows, swept, unfinished = gather.collect(sweep)
    assert unfinished == ["1"] and len(rows) == 1 and swept == ["steps", "samples"]
    out = _sweep(sweep, tmp_path)
    assert "finished earlier: skipped" in out
    assert first.stat().st_mtime_ns == kept and second.is_file()
    rows, swept, unfinished = gather.collect(sweep)
    assert [r["steps"] for r in rows] == [3.0, 4.0] and not unfinished
    assert all(r["nfe_per_sample"] == r["steps"] for r in rows)
    with initialize_config_module(version_base=None, config_module="experiments.configs.gather"):
        cfg = compose("gather", overrides=["metric=sliced_wasserstein", "x=steps"])
    gather.write(rows, swept, unfinished, cfg, sweep)
    with (sweep / "sweep.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "| run | steps | samples | sliced_wasserstein |" in (sweep / "sweep.md").read_text()
    assert (sweep / "sweep.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no run has 'nope'"):
        gather.plot(rows, "nope", "steps", None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not exist"):
        gather.collect(tmp_path / "missing")


def test_the_slurm_launcher_config_composes():
    with initialize_config_module(version_base=None, config_module="experiments.configs.restore"):
        cfg = compose("restore", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.cpus_per_task == 2 and launcher.array_parallelism == 64


def test_metrics_are_written_atomically_and_mark_the_run_finished(tmp_path):
    assert not runs.finished(tmp_path)
    runs.write_metrics({"a": 1}, tmp_path)
    assert runs.finished(tmp_path) and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    calls = []

    def run(cfg, out):
        calls.append(out)
        return {}

    assert runs.resumable(run, OmegaConf.create({"resume": True}), tmp_path) == {"a": 1}
    assert not calls
    runs.resumable(run, OmegaConf.create({"resume": False}), tmp_path)
    assert calls == [tmp_path]
