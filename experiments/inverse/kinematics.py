r"""Pose of a planar arm from a few position sensors (InPose-style decomposed posterior).

    python -m experiments.inverse.kinematics
    python -m experiments.inverse.kinematics train.steps=6000 poses=50

A prior over the joint angles of a planar chain is trained in the run (``train.steps`` Adam
steps of :meth:`priors.MLPDenoiser.loss`, a minute on 2 CPU cores) on poses generated
in-project: a mixture of ``postures`` Gaussian clusters in angle space (seeded), the
kind of structure a motion library has. Held-out poses are measured by position sensors at
chosen joints (:class:`operators.PlanarKinematics` with one point each, noise
:math:`\sigma_y`), and the posterior

.. math:: p(x \mid y_{1..K}) \propto p(x) \prod_k p(y_k \mid x)

is sampled with one DPS likelihood term per sensor, each with its own weight (``zeta``
times the joint's entry of ``weights``), through
:class:`guided.GuidedDenoiser`, for every sensor set in ``sensor_sets`` (e.g. the end
effector; plus the elbow; plus the shoulder). Scores against the truth, per sensor set and
for the unguided prior: the end-point error, the mean joint-position error and the RMS
joint-angle error (radians), averaged over poses and samples. Writes ``metrics.json``,
``table.md``, ``arms.png`` (posterior samples drawn as arms over the truth) and the prior's
weights (``prior.pt``).
"""

from __future__ import annotations

import logging
import time

from pathlib import Path
from typing import Any

import hydra
import matplotlib
import torch

from omegaconf import DictConfig
from torch import Tensor

import guided
import operators
import priors

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from experiments.shared.report import progress, serve
from experiments.shared.runs import launch, write_metrics

log = logging.getLogger(__name__)


def poses(n: int, postures: int, spread: float, seed: int, dim: int, draw: int) -> Tensor:
    """``n`` poses :math:`(n, dim)` in prior units from the seeded mixture: posture centres
    from ``seed``, the draws from ``draw`` (train and test use different draws)."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.6 * (2 * torch.rand(postures, dim, generator=g) - 1)
    h = torch.Generator().manual_seed(draw)
    which = torch.randint(0, postures, (n,), generator=h)
    return (centres[which] + spread * torch.randn(n, dim, generator=h)).clamp(-1, 1)


def _check(cfg: DictConfig) -> list[list[int]]:
    n = len(cfg.lengths)
    sets = [list(map(int, s)) for s in cfg.sensor_sets]
    if n < 2 or not sets or any(not s or not all(1 <= p <= n for p in s) for s in sets):
        raise ValueError(f"sensor_sets must be non-empty lists of joints in 1..{n}, got {sets}")
    if int(cfg.train.steps) < 1 or int(cfg.poses) < 1 or int(cfg.samples) < 1:
        raise ValueError("train.steps, poses and samples must be >= 1")
    if not float(cfg.sigma_y) > 0 or not float(cfg.zeta) > 0:
        raise ValueError("sigma_y and zeta must be > 0")
    if len(cfg.weights) != n or not all(float(w) >= 0 for w in cfg.weights):
        raise ValueError(
            f"weights must be {n} non-negative numbers (one per joint), got {list(cfg.weights)}"
        )
    return sets


def train_prior(cfg: DictConfig, data: Tensor) -> tuple[priors.MLPDenoiser, list[float]]:
    torch.manual_seed(int(cfg.seed))  # the network's initialisation only
    node = cfg.train
    prior = priors.MLPDenoiser(
        priors.MLP(data.shape[1], width=int(node.width), blocks=int(node.blocks)),
        priors.CosineSchedule(),
    )
    optimiser = torch.optim.Adam(prior.parameters(), lr=float(node.lr))
    g = torch.Generator().manual_seed(int(cfg.seed) + 1)
    losses = []
    log.info("training the joint-angle prior: %d steps", node.steps)
    with progress(int(node.steps), "prior training") as bar:
        for _ in range(int(node.steps)):
            batch = data[torch.randint(0, len(data), (int(node.batch),), generator=g)]
            optimiser.zero_grad()
            loss = prior.loss(batch, g)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.update()
    prior.requires_grad_(False).eval()
    return prior, losses


def scores(arm: operators.PlanarKinematics, x: Tensor, truth: Tensor) -> dict[str, float]:
    """End-point and joint-position errors (lengths) and the RMS angle error (radians)."""
    joints, true_joints = arm.joints(x.double()), arm.joints(truth.double())
    distance = (joints - true_joints).norm(dim=-1)  # (B, n + 1)
    return {
        "end_point_error": float(distance[:, -1].mean()),
        "joint_error": float(distance[:, 1:].mean()),
        "angle_error_rad": float(
            (arm.angle_scale * (x.double() - truth.double())).square().mean(1).sqrt().mean()
        ),
    }


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(int(cfg.threads))
    sets = _check(cfg)
    lengths, dim = [float(v) for v in cfg.lengths], len(cfg.lengths)
    arm = operators.PlanarKinematics(lengths)
    mixture = (int(cfg.postures), float(cfg.spread), int(cfg.seed), dim)
    data = poses(int(cfg.train.size), *mixture, draw=int(cfg.seed) + 10)
    start = time.perf_counter()
    prior, losses = train_prior(cfg, data)
    train_s = time.perf_counter() - start
    n, k = int(cfg.poses), int(cfg.samples)
    truth = poses(n, *mixture, draw=int(cfg.seed) + 20).repeat_interleave(k, 0)
    g = torch.Generator().manual_seed(int(cfg.seed) + 30)
    x_T = guided.initial_noise(prior.schedule, truth.shape, g)
    ts = guided.time_grid(int(cfg.steps))
    results: dict[str, dict[str, float]] = {}
    drawn: dict[str, Tensor] = {}
    unguided = guided.DDPM()(prior, x_T, ts, generator=torch.Generator().manual_seed(1))
    results["unguided"] = scores(arm, unguided, truth) | {"sensors": 0}
    drawn["unguided"] = unguided
    for points in sets:
        terms = []
        for p in points:
            sensor = operators.PlanarKinematics(lengths, points=[p])
            y = operators.GaussianNoise(float(cfg.sigma_y))(sensor(truth), g)
            weight = float(cfg.weights[p - 1])
            terms.append(guided.DPS(sensor, y, float(cfg.sigma_y), float(cfg.zeta), weight))
        cost = priors.Cost()
        x = guided.DDPM()(
            guided.GuidedDenoiser(prior, *terms),
            x_T,
            ts,
            generator=torch.Generator().manual_seed(1),
            cost=cost,
        )
        name = "sensors " + "+".join(map(str, points))
        log.info("%s sampled", name)
        results[name] = scores(arm, x, truth) | {
            "sensors": len(points), "nfe": cost.nfe, "vjp": cost.vjp,
        }  # fmt: skip
        drawn[name] = x
    torch.save(prior.state_dict(), out_dir / "prior.pt")
    write(results, cfg, out_dir)
    figure(arm, truth, drawn, k, out_dir / "arms.png")
    metrics = {
        "results": results,
        "train": {"final_loss": sum(losses[-100:]) / min(100, len(losses)), "wall_s": train_s},
    }
    write_metrics(metrics, out_dir)  # last: the run's finished mark
    return metrics


def write(results: dict[str, dict[str, float]], cfg: DictConfig, out: Path) -> None:
    lines = [
        (
            f"Planar arm, lengths {list(cfg.lengths)}, {cfg.poses} held-out poses x "
            f"{cfg.samples} samples, DDPM {cfg.steps} steps, sigma_y {cfg.sigma_y}, "
            f"one DPS term per sensor (zeta {cfg.zeta} x weights {list(cfg.weights)})"
        ),
        "",
        "| sensors | end-point error | joint error | angle error (rad) |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['end_point_error']:.3f} | {r['joint_error']:.3f} | "
            f"{r['angle_error_rad']:.3f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def figure(
    arm: operators.PlanarKinematics, truth: Tensor, drawn: dict[str, Tensor], k: int, path: Path
) -> None:
    """Columns: the prior and each sensor set; rows: held-out poses; samples in colour over
    the true arm in black, sensors' joints marked."""
    rows = min(3, len(truth) // k)
    names = list(drawn)
    fig, axes = plt.subplots(rows, len(names), figsize=(2.4 * len(names), 2.4 * rows))
    axes = axes.reshape(rows, len(names)) if hasattr(axes, "reshape") else [[axes]]
    reach = float(arm.lengths.sum())
    for i in range(rows):
        true_joints = arm.joints(truth[i * k : i * k + 1].double())[0]
        for j, name in enumerate(names):
            ax = axes[i][j]
            for sample in arm.joints(drawn[name][i * k : (i + 1) * k].double()):
                ax.plot(*sample.T.numpy(), "-o", color="C0", alpha=0.4, ms=2)
            ax.plot(*true_joints.T.numpy(), "-o", color="k", lw=2, ms=3)
            if name.startswith("sensors"):
                marked = [int(p) for p in name.split()[1].split("+")]
                ax.plot(*true_joints[marked].T.numpy(), "s", color="C3", ms=6)
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs/kinematics", config_name="kinematics")
def main(cfg: DictConfig) -> None:
    serve(cfg, run, log)


if __name__ == "__main__":
    launch(main)
