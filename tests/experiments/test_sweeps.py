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


@pytest.mark.slow  # over 5 s: the default suite stays under 10 minutes
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
    assert "| job | steps | samples | sliced_wasserstein |" in (sweep / "sweep.md").read_text()
    assert (sweep / "sweep.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no run has 'nope'"):
        gather.plot(rows, "nope", "steps", None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not exist"):
        gather.collect(tmp_path / "missing")


def _run(folder, overrides, metrics):
    import json

    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_a_restore_sweep_is_gathered_per_task_and_method(tmp_path):
    """unnest=tasks: one row per run, task and method, with the run's swept values."""
    sweep = tmp_path / "sweep"
    scores = {"pinv": {"psnr": 20.0, "settings": {}}, "ddrm": {"psnr": 25.0, "nfe": 50}}
    _run(
        sweep / "0",
        ["tasks=[sr4]", "sigma_y=0.01", "run=[ddrm]"],
        {"prior": "natural", "tasks": {"sr4": scores}},
    )
    _run(
        sweep / "1", ["tasks=[box]", "sigma_y=0.05"], {"tasks": {"box": {"ddrm": {"psnr": 30.0}}}}
    )
    rows, swept, unfinished = gather.collect(sweep, "tasks")
    assert swept == ["tasks", "sigma_y", "run"] and not unfinished
    assert rows[0]["job"] == "0" and rows[0]["run"] == "[ddrm]"  # the app's key run= kept
    assert [(r["group"], r["entry"], r["psnr"], r["sigma_y"]) for r in rows] == [
        ("sr4", "pinv", 20.0, 0.01), ("sr4", "ddrm", 25.0, 0.01), ("box", "ddrm", 30.0, 0.05),
    ]  # fmt: skip
    assert rows[1]["nfe"] == 50 and rows[0]["prior"] == "natural"
    with initialize_config_module(version_base=None, config_module="experiments.configs.gather"):
        cfg = compose("gather", overrides=["unnest=tasks", "columns=[psnr]"])
        bad = compose("gather", overrides=["unnest=tasks", "columns=[lpips]"])
    gather.write(rows, swept, unfinished, cfg, sweep)
    table = (sweep / "sweep.md").read_text()
    assert "| job | tasks | sigma_y | run | group | entry | psnr |" in table
    assert "| 1 | [box] | 0.05 |  | box | ddrm | 30 |" in table
    with pytest.raises(ValueError, match=r"columns \['lpips'\] are in no run"):
        gather.write(rows, swept, unfinished, bad, sweep)
    with pytest.raises(ValueError, match="no {group: {entry: scores}} under 'runs'"):
        gather.collect(sweep, "runs")


def test_gather_writes_into_the_sweep_and_nowhere_else(tmp_path):
    """The app end to end, run from another folder: its files land in the sweep folder."""
    sweep, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    _run(sweep / "0", ["tasks=[box]"], {"tasks": {"box": {"ddrm": {"psnr": 30.0}}}})
    elsewhere.mkdir()
    command = [sys.executable, "-m", "experiments.benchmarks.gather", f"sweep={sweep}",
               "unnest=tasks", "columns=[psnr]"]  # fmt: skip
    done = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(elsewhere.iterdir()) == []
    written = sorted(p.name for p in sweep.iterdir())
    assert written == ["0", "metrics.json", "sweep.csv", "sweep.md"]
    assert '"rows": 1' in (sweep / "metrics.json").read_text()


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
