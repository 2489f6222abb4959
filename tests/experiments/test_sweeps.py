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

from experiments.benchmarks import gather
from experiments.shared import runs


def _sweep(directory, cwd):
    command = [
        sys.executable, "-m", "experiments.benchmarks.sample", "-m", "hydra/launcher=joblib",
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
    assert "finished earlier with this configuration: skipped" in out
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
    calls = []

    def run(cfg, out):
        calls.append(out)
        runs.write_metrics({"a": 1}, out)
        return {"a": 1}

    cfg = OmegaConf.create({"steps": 3, "resume": True})
    assert runs.resumable(run, cfg, tmp_path) == {"a": 1} and calls == [tmp_path]
    assert runs.finished(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "run_config.json"]
    mode = (tmp_path / "metrics.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask(), oct(mode)  # readable like any file the user writes
    assert runs.resumable(run, cfg, tmp_path) == {"a": 1} and len(calls) == 1  # skipped
    other = OmegaConf.create({"steps": 4, "resume": True})
    with pytest.raises(ValueError, match=r"another configuration \(differences: steps: 3 -> 4"):
        runs.resumable(run, other, tmp_path)
    assert len(calls) == 1
    runs.resumable(run, OmegaConf.create({"steps": 4, "resume": False}), tmp_path)
    assert len(calls) == 2
    assert runs.resumable(run, other, tmp_path) == {"a": 1} and len(calls) == 2  # now it is 4


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
