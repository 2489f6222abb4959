"""The floor-plan inference app on tiny settings (an untrained 16x16 U-Net saved by the test):
files, costs counted per method, best-of-N's choice, the critic learning from simulated
pairs, and bad configs refused before anything is written."""

import csv

import pytest
import torch

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import guided
import operators

from experiments.inverse import floorplan
from experiments.shared.floorplans import path_agreement, trajectory_features
from priors.weights import build, save

STEPS = 3


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    torch.manual_seed(0)
    network = {"in_channels": 1, "channels": [8, 8], "blocks": 1, "attention": [False, False]}
    config = {"network": network, "schedule": {"name": "cosine"}, "shape": [1, 16, 16]}
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save(build("denoiser", config), path, "denoiser", config)
    return str(path)


def _cfg(prior, *overrides):
    with initialize_config_module(
        version_base=None, config_module="experiments.configs.floorplan"
    ):
        return compose(
            "floorplan",
            overrides=[
                f"prior={prior}", "size=16", "plans=2", "samples=2", "trajectories=3",
                "min_distance=6", f"unguided.steps={STEPS}", f"surrogate.steps={STEPS}",
                "surrogate.critic.pool=32", "surrogate.critic.batch=16",
                "surrogate.critic.steps=5", f"zeroth_order.steps={STEPS}",
                "zeroth_order.queries=2", f"enkg.steps={STEPS}", "enkg.interval=[0,1]",
                f"best_of_n.steps={STEPS}", "best_of_n.n=3", "figure_plans=2", *overrides,
            ],
        )  # fmt: skip


@pytest.mark.filterwarnings("ignore::guided.DivergenceWarning")  # an untrained prior
def test_floorplan_app_writes_scores_costs_and_figure(tmp_path, tiny_prior):
    metrics = floorplan.run(_cfg(tiny_prior), tmp_path)
    s = metrics["summary"]
    assert set(s) == set(floorplan.METHODS)
    p = 3  # trajectories
    assert s["unguided"]["nfe"] == STEPS and s["unguided"]["planner_calls"] == 0
    assert s["surrogate"]["nfe"] == STEPS and s["surrogate"]["vjp"] == STEPS
    assert s["surrogate"]["planner_calls"] == 0  # sampling never plans
    assert s["surrogate"]["training_planner_calls"] == 32 * p
    assert s["surrogate"]["training_nfe"] == 32 * 2  # two denoised views per pool plan
    assert s["zeroth_order"]["vjp"] == STEPS
    assert s["zeroth_order"]["planner_calls"] == STEPS * (2 * 2 + 1) * p  # 2q + 1 per step
    # EnKG, every step guided: N per step + N ODE evaluations per update; N operator calls
    assert s["enkg"]["nfe"] == STEPS * 4 * 2 and s["enkg"]["planner_calls"] == STEPS * 4 * p
    assert s["best_of_n"]["nfe"] == 3 * STEPS and s["best_of_n"]["planner_calls"] == 3 * p
    for method in floorplan.METHODS:
        assert 0 <= s[method]["wall_iou"] <= 1 and 0 <= s[method]["path_iou"] <= 1
        assert s[method]["wall_share"] >= 0
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * len(floorplan.METHODS)
    assert (tmp_path / "floorplans.png").stat().st_size > 0
    assert "planner calls" in (tmp_path / "table.md").read_text()


def test_best_of_n_keeps_the_candidate_whose_paths_agree_best(tiny_prior):
    cfg = _cfg(tiny_prior, "samples=3", "best_of_n.n=4")
    prior = floorplan.priors.from_path(tiny_prior)
    truth = floorplan.held_out(cfg)[:1]
    pairs, observed = floorplan.simulate(truth, 3, 6, 0)
    op = operators.PathPlanner(truth[0].shape, pairs[0])
    x, cost = floorplan.infer(cfg, "best_of_n", prior, op, observed[0], 11, None)
    g = torch.Generator().manual_seed(11)  # the same draws: the samples' noise, then 12 candidates
    guided.initial_noise(prior.schedule, (3, *prior.shape), g)
    candidates_T = guided.initial_noise(prior.schedule, (12, *prior.shape), g)
    candidates = guided.DDIM()(prior, candidates_T, guided.time_grid(STEPS))
    agreement = path_agreement(op(candidates), observed[0].expand(12, -1, -1, -1))[0]
    agreement = agreement.view(3, 4)
    chosen = candidates.view(3, 4, *prior.shape)[torch.arange(3), agreement.argmax(1)]
    torch.testing.assert_close(x, chosen)
    assert agreement.min(1).values.lt(agreement.max(1).values).any()  # a choice was made
    assert cost.nfe == 4 * STEPS


def test_the_critic_learns_which_paths_belong_to_which_plan(tiny_prior):
    cfg = _cfg(
        tiny_prior, "surrogate.critic.pool=256", "surrogate.critic.batch=32",
        "surrogate.critic.steps=80", "surrogate.critic.views=0",
    )  # fmt: skip
    prior = floorplan.priors.from_path(tiny_prior)
    critic, stats = floorplan.train_critic(cfg, prior)
    assert stats["final_loss"] < 0.5 * stats["chance_loss"]
    truth = floorplan.held_out(OmegaConf.merge(cfg, {"plans": 16}))  # held-out plans, unseen
    _, observed = floorplan.simulate(truth, 3, 6, 99)
    logits = critic.logits(truth, trajectory_features(observed))
    accuracy = (logits.argmax(0) == torch.arange(16)).float().mean()
    assert accuracy >= 3 / 16  # chance: 1 / 16


def test_a_saved_critic_is_reused_for_the_same_settings_only(tmp_path, tiny_prior):
    runs = [tmp_path / name for name in ("first", "second", "third")]
    for folder in runs:
        folder.mkdir()
    only = ("methods=[surrogate]", "figure_plans=0")
    trained = floorplan.run(_cfg(tiny_prior, *only), runs[0])["summary"]["surrogate"]
    file = f"surrogate.critic.file={runs[0] / 'critic.safetensors'}"
    reused = floorplan.run(_cfg(tiny_prior, *only, file), runs[1])["summary"]["surrogate"]
    for key in ("wall_iou", "path_iou", "vjp", "training_planner_calls", "training_nfe"):
        assert reused[key] == trained[key]  # the same critic, the same samples and costs
    assert not (runs[1] / "critic.safetensors").exists()
    with pytest.raises(ValueError, match="was trained for"):
        floorplan.run(_cfg(tiny_prior, *only, file, "trajectories=2"), runs[2])
    assert not list(runs[2].iterdir())


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("methods=[nope]", "methods must be some of"),
        ("methods=[]", "methods must be some of"),
        ("plans=0", "plans must be an integer >= 1"),
        ("samples=1.5", "samples must be an integer"),
        ("surrogate.scale=inf", "surrogate.scale must be a finite number"),
        ("zeroth_order.zeta=nan", "zeroth_order.zeta"),
        ("zeroth_order.smoothing=-1", "zeroth_order.smoothing"),
        ("enkg.particles=1", "enkg.particles must be an integer >= 2"),
        ("surrogate.critic.batch=64", "surrogate.critic.batch must be in"),
        ("surrogate.critic.view_t=2", "surrogate.critic.view_t"),
        ("min_distance=40", "min_distance must be in"),
        ("first=-1", "first must be >= 0"),
        ("figure_plans=3", "figure_plans must be in"),
        ("size=32", "prior must be a floor-plan prior on"),
        ("surrogate.critic.file=/nowhere/critic.safetensors", "surrogate.critic.file must be"),
    ],
)
def test_floorplan_app_bad_configs(tmp_path, tiny_prior, override, match):
    with pytest.raises(ValueError, match=match):
        floorplan.run(_cfg(tiny_prior, override), tmp_path)
    assert not list(tmp_path.iterdir())
