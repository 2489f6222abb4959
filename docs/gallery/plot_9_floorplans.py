r"""
Floor plans from trajectories: guidance through a non-differentiable path planner
=================================================================================

A walker crosses an unknown floor plan four times; each walk is the shortest path an A*
planner finds between a start and a goal (:class:`operators.PathPlanner`). The planner has
no derivative, so DPS cannot run on it. This example infers the plan from the four
observed paths with the shipped floor-plan prior in two derivative-free ways: best-of-N
(draw plans from the prior, re-plan the walks on each, keep the plan whose paths fit best)
and ensemble Kalman guidance (:class:`guided.EnKG`), and scores each plan by its wall IoU
against the truth (inside the outer wall) and by how many walks it reproduces. CoGuide's
learned surrogate likelihood, which needs a critic trained on thousands of simulated walks,
runs in the app (``python -m experiments.inverse.floorplan``).
"""

import matplotlib.pyplot as plt
import torch

import guided
import operators
import priors

from experiments.shared.floorplans import (
    FloorPlans,
    draw_pairs,
    path_agreement,
    paths_image,
    wall_iou,
)

torch.set_num_threads(2)
plan = FloorPlans("test", evaluation_size=1).evaluation()[0]  # (1, 1, 32, 32): walls 1
pairs = draw_pairs(plan[0], 4, torch.Generator().manual_seed(0), min_distance=12)
op = operators.PathPlanner(plan.shape[1:], pairs)
y = op(plan)[0]  # (4, 32, 32): the observed paths
try:
    guided.DPSSampler(op, y[None], 1.0)
except operators.NotDifferentiableError as error:
    print(f"DPS refused: {error}")

# %%
# Best of 8: eight plans from the prior (12 DDIM steps each), the four walks re-planned on
# each (8 x 4 planner calls), the plan whose re-planned walks agree best with the observed
# ones kept (the mean IoU of each walk's cells). 96 network evaluations.
prior = priors.load("floorplans")
g = torch.Generator().manual_seed(1)
candidates = guided.DDIM()(
    prior, guided.initial_noise(prior.schedule, (8, 1, 32, 32), g), guided.time_grid(12)
)
agreement, _ = path_agreement(op(candidates), y.expand(8, -1, -1, -1))
best = candidates[agreement.argmax()][None]

# %%
# EnKG: 4 particles per sample, 16 DDIM steps, ensemble Kalman updates at t <= 0.5 (the
# planner runs on each particle's clean estimate; nothing is differentiated). 96 network
# evaluations.
enkg = guided.EnKG(op, y[None], particles=4, scale=1.0, updates=1, ode_steps=1,
                   interval=(0.0, 0.5))  # fmt: skip
x_enkg = enkg(
    prior, guided.initial_noise(prior.schedule, (1, 1, 32, 32), g), guided.time_grid(16),
    generator=g,
)  # fmt: skip

results = {"best of 8": best.clamp(-1, 1), "EnKG": x_enkg.clamp(-1, 1)}
inner = plan[..., 1:-1, 1:-1]  # the walls inside the outer wall, which every plan has
for name, x in results.items():
    iou, exact = path_agreement(op(x), y[None])
    print(
        f"{name}: inner-wall IoU {float(wall_iou(x[..., 1:-1, 1:-1], inner)):.3f}, "
        f"path IoU {float(iou):.3f}, "
        f"{round(4 * float(exact))} of 4 walks reproduced"
    )


# %%
# The true plan with the observed walks, and each inferred plan with the walks re-planned
# on it (walls dark; one colour per start-goal pair).
panels = [("truth + observed walks", paths_image(plan[0], y))]
panels += [(name, paths_image(x[0], op(x)[0])) for name, x in results.items()]
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
for ax, (title, image) in zip(axes, panels, strict=True):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
