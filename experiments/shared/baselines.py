r"""Classical restorations on the same measurements as the diffusion methods, so that a table
shows what the prior buys. Every baseline maps ``(op, y, sigma_y)`` in our units (images in
[-1, 1]) to a restoration of shape :math:`(B, *\text{in\_shape})`:

- ``pinv``: the pseudo-inverse :math:`A^+ y` (any linear operator);
- ``interpolate``: the classical fill for each task: bicubic upsampling of the low-resolution
  image for super-resolution (:class:`operators.AveragePoolSR`), piecewise-linear
  interpolation of the missing pixels for inpainting (scipy's ``griddata`` over the observed
  pixels, nearest neighbour outside their convex hull); no other operator has one;
- ``tv``: total-variation regularised least squares,
  :math:`\arg\min_x \tfrac12 \lVert A x - y \rVert^2 + \lambda \mathrm{TV}(x)` on [0, 1]
  images, by deepinv's proximal gradient descent (``PGD``) with its ``TVPrior`` (isotropic
  TV, its proximal operator solved by deepinv's inner Chambolle-Pock loop) and step
  :math:`1 / \lVert A \rVert^2`, started from the classical fill (``interpolate``) where
  there is one (from :math:`A^\top y`, deepinv's default, a hole fills too slowly to
  converge in the iterations given), else from :math:`A^\top y`;
- ``pnp_bm3d``: plug-and-play half-quadratic splitting with BM3D as the denoiser (deepinv's
  ``BM3D``, which calls the ``bm3d`` package) on DPIR's schedule (Zhang et al., 2021, as
  deepinv's ``get_DPIR_params`` writes it: denoiser levels log-spaced from 49/255 down to the
  noise level over 8 iterations, data step :math:`(\sigma_k / \max(0.01, \sigma))^2 /
  0.23`), the step multiplied by ``scale`` (1 is DPIR's); the data step is deepinv's
  :math:`\ell_2` proximal operator. Departure: it starts from the classical fill
  (``interpolate``) where there is one, not from :math:`A^\top y`: BM3D cannot fill a hole
  of zeros at 49/255 (on random inpainting deepinv's ``DPIR`` with BM3D, started from
  :math:`A^\top y`, stays below the pseudo-inverse); without one (deblurring) it starts
  from :math:`A^\top y`, as deepinv does. No iterative baseline starts from the
  pseudo-inverse (:func:`experiments.shared.fills.initial`: it amplifies the noise);
- ``patch_gmm``: the EPLL-style patch prior of :mod:`experiments.shared.patch_gmm`;
- ``pnp_prior``: not classical: ``pnp_bm3d``'s loop, schedule, start and tuned step with the
  diffusion prior's one-step denoiser (:func:`priors.denoise`, its posterior mean at the
  denoiser level) in place of BM3D, one network evaluation per iteration. The two rows
  differ only in the denoiser, so they separate what the prior is worth as a denoiser from
  what a sampler makes of it. A point estimate (as PnP-BM3D), not a posterior sample; the
  restore app gives it the prior it runs the methods with (:data:`NEEDS_PRIOR`).

Regularisation weights are inputs: :mod:`experiments.benchmarks.tune_baselines` chooses them
on training photographs and writes them into ``configs/catalogue/baselines.yaml``.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from typing import Any

import torch

from torch import Tensor

import checks
import operators
import priors

from experiments.shared.catalogue import nearest_level
from experiments.shared.fills import initial, interpolate, interpolates, pinv
from experiments.shared.patch_gmm import epll
from priors.adapters import DeepinvDenoiser

__all__ = [
    "BASELINES",
    "NEEDS_PRIOR",
    "applies",
    "pnp_bm3d",
    "pnp_hqs",
    "pnp_prior",
    "run_baseline",
    "settings_for",
    "tv",
]


def tv(
    op: operators.Operator, y: Tensor, sigma_y: float, lam: float, iterations: int = 100
) -> Tensor:
    """TV-regularised least squares by deepinv's PGD (see the module)."""
    from deepinv.optim import PGD, TVPrior
    from deepinv.optim.data_fidelity import L2

    if not isinstance(op, operators.LinearOperator):
        raise operators.UnsupportedOperator("TV by PGD needs a linear operator")
    lam = checks.number(lam, "lam", low=0, open_low=True)
    physics = operators.as_deepinv(op, sigma_y, dtype=torch.float32)
    y01 = operators.measurement_to_deepinv(op, y).float()
    norm = float(physics.compute_sqnorm(torch.rand(1, *op.in_shape), tol=1e-4, verbose=False))
    model = PGD(
        data_fidelity=L2(),
        prior=TVPrior(n_it_max=20),
        stepsize=1.0 / norm,
        lambda_reg=lam,
        max_iter=iterations,
        early_stop=False,
    )
    x0 = (initial(op, y, sigma_y).float() + 1) / 2
    with torch.no_grad():
        x01 = torch.cat(
            [model(row[None], physics, init=x[None]) for row, x in zip(y01, x0, strict=True)]
        )
    return (2 * x01 - 1).to(y.dtype).clamp(-1, 1)


def pnp_hqs(
    op: operators.Operator,
    y: Tensor,
    sigma_y: float,
    denoiser: Callable[[Tensor, float], Tensor],
    scale: float = 1.0,
    iterations: int = 8,
) -> Tensor:
    """Plug-and-play HQS on DPIR's schedule (see the module) with ``denoiser`` (images in
    [0, 1], noise level in those units), started from the classical fill
    (:func:`interpolate`) where there is one, else :math:`A^\top y`."""
    from deepinv.optim.data_fidelity import L2

    if not isinstance(op, operators.LinearOperator):
        raise operators.UnsupportedOperator("PnP by HQS needs a linear operator")
    scale = checks.number(scale, "scale", low=0, open_low=True)
    iterations = checks.integer(iterations, "iterations", low=1)
    physics = operators.as_deepinv(op, sigma_y, dtype=torch.float32)
    y01 = operators.measurement_to_deepinv(op, y).float()
    noise = max(sigma_y / 2, 1e-3)  # deepinv's units
    levels = torch.logspace(math.log10(49 / 255), math.log10(noise), iterations).tolist()
    z = (initial(op, y, sigma_y).float() + 1) / 2
    fidelity = L2()
    with torch.no_grad():
        for level in levels:
            # DPIR's step (its get_DPIR_params): gamma = (level / max(0.01, noise))^2 / 0.23
            gamma = scale * (level / max(0.01, noise)) ** 2 / 0.23
            z = denoiser(fidelity.prox(z, y01, physics, gamma=gamma), level)
    return (2 * z - 1).to(y.dtype).clamp(-1, 1)


def pnp_bm3d(
    op: operators.Operator, y: Tensor, sigma_y: float, scale: float = 1.0, iterations: int = 8
) -> Tensor:
    """Plug-and-play HQS with BM3D (deepinv's) on DPIR's schedule (see the module)."""
    from deepinv.models import BM3D

    bm3d = BM3D()

    def denoise01(x: Tensor, level: float) -> Tensor:
        return torch.cat([bm3d(row[None], level) for row in x])

    return pnp_hqs(op, y, sigma_y, denoise01, scale, iterations)


def pnp_prior(
    op: operators.Operator,
    y: Tensor,
    sigma_y: float,
    prior: priors.Denoiser,
    scale: float = 1.0,
    iterations: int = 8,
) -> Tensor:
    """``pnp_bm3d``'s loop with ``prior``'s one-step denoiser in place of BM3D (see the
    module), in the loop's [0, 1] units through :class:`priors.adapters.DeepinvDenoiser`."""
    if not isinstance(prior, priors.Denoiser):
        raise TypeError(f"prior must be a priors.Denoiser, got {type(prior).__name__}")
    in_01 = DeepinvDenoiser(prior)

    def denoise01(x: Tensor, level: float) -> Tensor:
        return in_01(x.to(y.dtype), level).float()

    return pnp_hqs(op, y, sigma_y, denoise01, scale, iterations)


Baseline = Callable[..., Tensor]

#: The baselines by name; each takes ``(op, y, sigma_y, **settings)``.
BASELINES: dict[str, Baseline] = {
    "pinv": pinv,
    "interpolate": interpolate,
    "tv": tv,
    "pnp_bm3d": pnp_bm3d,
    "patch_gmm": epll,
    "pnp_prior": pnp_prior,
}

#: The baselines that take the prior (``prior=``), and whose tuned settings they share.
NEEDS_PRIOR = {"pnp_prior": "pnp_bm3d"}


def applies(name: str, op: operators.Operator) -> bool:
    """Whether baseline ``name`` takes the operator."""
    if name == "interpolate":
        return interpolates(op)
    return isinstance(op, operators.LinearOperator)


def settings_for(
    catalogue: dict[str, Any], name: str, task: str, sigma_y: float
) -> dict[str, Any]:
    """Baseline ``name``'s tuned settings for ``task`` at the tuned noise level nearest to
    ``sigma_y`` (in log scale) from ``catalogue`` (``configs/catalogue/baselines.yaml``);
    ``{}`` for the baselines without settings (``pinv``, ``interpolate``). A baseline of
    :data:`NEEDS_PRIOR` takes the settings of the one it names (``pnp_prior``: ``pnp_bm3d``'s,
    so that the two differ only in the denoiser)."""
    if name in ("pinv", "interpolate"):
        return {}
    name = NEEDS_PRIOR.get(name, name)
    tuned = (catalogue.get(name) or {}).get(task)
    if not tuned:
        raise ValueError(
            f"baseline {name!r} has no tuned settings for task {task!r}: run "
            f"python -m experiments.benchmarks.tune_baselines 'tasks=[{task}]' install=true"
        )
    return dict(tuned[nearest_level(tuned, sigma_y)])


def run_baseline(
    name: str,
    op: operators.Operator,
    y: Tensor,
    sigma_y: float,
    settings: dict[str, Any],
    prior: priors.Denoiser | None = None,
) -> Tensor:
    """Baseline ``name`` with its settings, refusing unknown names; ``prior`` goes to the
    baselines of :data:`NEEDS_PRIOR` (which refuse to run without one)."""
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {sorted(BASELINES)}, got {name!r}")
    if name in NEEDS_PRIOR:
        if prior is None:
            raise ValueError(f"baseline {name!r} needs the prior: pass prior=")
        return BASELINES[name](op, y, sigma_y, prior, **settings)
    return BASELINES[name](op, y, sigma_y, **settings)
