"""Adversarial table: what a user types on an app's command line.

Every Hydra app runs :func:`experiments.shared.runs.prepare_run` first, which judges the composed
configuration against the app's own defaults. For each app: a key it does not have, a
fraction where an integer is meant, text where a number is meant and a single value where a
list is meant are refused before anything runs; an integral float is accepted. Two apps are
also run end to end to show the exit status and the message a user sees.
"""

import subprocess
import sys

from pathlib import Path

import pytest

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from experiments.shared.runs import check_against

APPS = {  # config module -> config name
    "ars": "ars", "attention": "attention", "bench": "bench", "blackbox": "blackbox",
    "blind": "blind", "conditional": "conditional", "distributed": "distributed",
    "evaluate": "evaluate_priors", "gather": "gather", "gmm_benchmark": "gmm_benchmark",
    "kinematics": "kinematics", "offline": "offline", "restore": "restore", "rl": "rl",
    "synthesize": "synthesize", "throughput": "throughput", "train": "train",
}  # fmt: skip


def _defaults(app: str) -> DictConfig:
    with initialize_config_module(version_base=None, config_module=f"experiments.configs.{app}"):
        return compose(APPS[app])


def _first(cfg: DictConfig, kind: type) -> str | None:
    """The first top-level key whose default is of ``kind`` (ints exclude bools)."""
    for key in cfg:
        value = cfg[key]
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return str(key)
        if kind is float and isinstance(value, float):
            return str(key)
        if kind is list and isinstance(value, ListConfig):
            return str(key)
    return None


def _with(cfg: DictConfig, key: str, value) -> DictConfig:
    changed = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(changed):
        changed[key] = value
    return changed


def _cases():
    for app in sorted(APPS):
        defaults = _defaults(app)
        yield f"refused: {app} +photo=photo.png", app, "photo", "photo.png", "unknown setting"
        if (key := _first(defaults, int)) is not None:
            yield f"refused: {app} {key}=2.7", app, key, 2.7, f"{key} must be an integer"
            yield f"correct: {app} {key}=2.0 is 2", app, key, 2.0, None
        if (key := _first(defaults, float)) is not None:
            yield f"refused: {app} {key}=abc", app, key, "abc", f"{key} must be a number"
        if (key := _first(defaults, list)) is not None:
            yield f"refused: {app} {key}=x (not a list)", app, key, "x", f"{key} must be a list"


CASES = list(_cases())


@pytest.mark.parametrize(("app", "key", "value", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_command_line_value_is_judged_against_the_apps_defaults(app, key, value, match):
    defaults = _defaults(app)
    cfg = _with(defaults, key, value)
    if match is None:
        check_against(cfg, defaults)
    else:
        with pytest.raises(ValueError, match=match):
            check_against(cfg, defaults)


def test_every_app_is_covered():
    assert len(CASES) >= 50
    for path in Path("experiments").glob("*.py"):
        text = path.read_text()
        if "@hydra.main" in text:
            assert "prepare_run(cfg)" in text, f"{path} does not run prepare_run first"


#: Each case starts Python and imports the restore app (about 7 s); two of the four run with the
#: slow checks so that the default suite stays under 10 minutes (their refusals are also checked
#: in process: a non-integer step count by
#: ``test_a_command_line_value_is_judged_against_the_apps_defaults``, a missing image by
#: ``test_bad_images_and_priors_are_refused_before_any_work`` in the restore app's tests).
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["+photo=/no/such/file.png"],
            "unknown setting(s) ['photo']",
            id="refused: restore +photo",
        ),
        pytest.param(
            ["image=/no/such/file.png"],
            "is neither a file nor a folder",
            id="refused: restore missing image",
            marks=_SLOW,
        ),
        pytest.param(
            ["steps=2.7"],
            "steps must be an integer (its default is 25), got 2.7",
            id="refused: restore steps=2.7",
            marks=_SLOW,
        ),
        pytest.param(
            ["+methods.dps.sampler.zetta=1", "tasks=[box]", "run=[dps]"],
            "unexpected keyword",
            id="refused: restore typo",
        ),
    ],
)
def test_the_user_sees_the_error_and_a_failing_exit_status(args, message, tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.inverse.restore",
        *args,
        f"hydra.run.dir={tmp_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
    assert not (tmp_path / "metrics.json").exists()


def test_an_unusable_run_folder_is_refused_before_hydra_starts(tmp_path, monkeypatch):
    from experiments.shared import runs

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert runs.unwritable(afile / "run") == f"{afile} is not a folder"
    assert runs.unwritable(tmp_path / "new" / "run") is None
    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)  # a read-only place
    assert runs.unwritable(tmp_path / "run") == f"{tmp_path} is not writable"
    with pytest.raises(SystemExit, match="cannot create the run folder .* is not writable"):
        runs.launch(lambda: pytest.fail("main ran"), [f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit, match="sweep"):
        runs.launch(lambda: None, ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}"])


@pytest.mark.slow  # over 4 s: the default suite stays under 10 minutes
def test_the_user_sees_one_line_for_a_folder_that_cannot_be(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    command = [sys.executable, "-m", "experiments.inverse.restore", f"hydra.run.dir={afile}/run"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"error: cannot create the run folder {afile}/run: {afile} is not a folder"
    )
