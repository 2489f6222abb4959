r"""An EPLL-style baseline: a Gaussian mixture on image patches, fitted by EM on the training
photographs, and restoration by half-quadratic splitting over all overlapping patches.

Zoran & Weiss ("From learning models of natural image patches to whole image restoration",
ICCV 2011) maximise the expected patch log-likelihood of the image by half-quadratic
splitting: with auxiliary patches :math:`z_i` and a penalty :math:`\beta` that grows over the
iterations,

.. math:: z_i \leftarrow \hat z(P_i x;\ \beta^{-1/2}), \qquad
    x \leftarrow \arg\min_x \frac{\lambda}{2 \sigma_y^2} \lVert A x - y \rVert^2
    + \frac{\beta}{2} \sum_i \lVert P_i x - z_i \rVert^2,

where :math:`P_i` extracts patch :math:`i` (every position, stride 1) and :math:`\hat z(p; s)`
denoises patch :math:`p` at noise level :math:`s`. The :math:`x`-step is the linear system
:math:`(\lambda s^2 / \sigma_y^2\, A^\top A + \operatorname{diag}(n)) x = \lambda s^2 /
\sigma_y^2\, A^\top y + \sum_i P_i^\top z_i` (:math:`n` counts the patches covering each
pixel, :math:`s = \beta^{-1/2}`), solved by conjugate gradients.

Departures from the paper, and why: the patch step is the exact posterior mean under the
whole mixture (:class:`priors.GaussianMixture`) rather than the Wiener filter of the single
most likely component (it is what our mixture computes exactly, and it is never worse in
mean squared error); the patch noise levels are a fixed geometric sequence from 0.3 down to
the measurement's noise level (6 steps), and the data weight :math:`\lambda` is tuned on
training photographs. The mixture is fitted by scikit-learn's EM on 8x8 patches of the
training photographs of :mod:`experiments.shared.photographs` at full scale (deepinv's EPLL
downloads the authors' mixture, which cannot be fetched here). Colour channels are restored
as separate grey images.
"""

from __future__ import annotations

import math

from functools import cache

import numpy as np
import torch

from torch import Tensor

import checks
import operators
import priors

from experiments.shared.fills import initial
from experiments.shared.photographs import Photographs
from priors.denoising import denoise

__all__ = ["epll", "fit_patch_gmm"]


@cache
def fit_patch_gmm(
    patch: int = 8, components: int = 16, samples: int = 20000, seed: int = 0
) -> priors.GaussianMixture:
    """A ``components``-component full-covariance mixture on ``patch`` x ``patch`` patches
    (values in [-1, 1]) of the training photographs, fitted by scikit-learn's EM (cached per
    process)."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    for name, value, low in (("patch", patch, 2), ("components", components, 1)):
        checks.integer(value, name, low=low)
    checks.integer(samples, "samples", low=components * patch * patch)
    g = torch.Generator().manual_seed(seed)
    x, _ = Photographs("train", crop=patch, min_scale=1.0).sample(samples, g)
    data = x.flatten(1).double().numpy()
    fit = SkGaussianMixture(
        components, covariance_type="full", reg_covar=1e-5, max_iter=200, random_state=seed
    ).fit(data)
    return priors.GaussianMixture(
        torch.from_numpy(fit.weights_),
        torch.from_numpy(fit.means_),
        torch.from_numpy(fit.covariances_),
        priors.CosineSchedule(),
    )


def _patch_means(gmm: priors.GaussianMixture, x: Tensor, patch: int, noise: float) -> Tensor:
    """:math:`\\sum_i P_i^\\top \\hat z(P_i x)` for grey images ``x`` :math:`(N, 1, H, W)`."""
    h, w = x.shape[-2:]
    columns = torch.nn.functional.unfold(x, patch)  # (N, p*p, L)
    rows = columns.transpose(1, 2).reshape(-1, patch * patch)
    denoised = torch.cat([denoise(gmm, chunk, noise) for chunk in rows.split(8192)])
    columns = denoised.view(x.shape[0], -1, patch * patch).transpose(1, 2)
    return torch.nn.functional.fold(columns, (h, w), patch)


def epll(
    op: operators.Operator,
    y: Tensor,
    sigma_y: float,
    lam: float = 1.0,
    levels: int = 6,
    cg_iterations: int = 40,
    gmm: priors.GaussianMixture | None = None,
) -> Tensor:
    """EPLL-style restoration of ``y = A x + sigma_y n`` (see the module)."""
    if not isinstance(op, operators.LinearOperator):
        raise operators.UnsupportedOperator("the patch GMM baseline needs a linear operator")
    lam = checks.number(lam, "lam", low=0, open_low=True)
    checks.integer(levels, "levels", low=1)
    gmm = fit_patch_gmm() if gmm is None else gmm
    patch = math.isqrt(gmm.means.shape[1])
    noise_y = max(float(sigma_y), 1e-3)
    c = op.in_shape[0]
    x = initial(op, y, sigma_y).double()
    aty = op.adjoint(y.double())
    ones = torch.ones(1, 1, *op.in_shape[1:], dtype=torch.float64)
    counts = torch.nn.functional.fold(
        torch.nn.functional.unfold(ones, patch), tuple(op.in_shape[1:]), patch
    ).expand(1, c, *op.in_shape[1:])
    for s in np.geomspace(0.3, max(noise_y, 0.01), levels):
        grey = x.reshape(-1, 1, *op.in_shape[1:])
        z = _patch_means(gmm, grey, patch, float(s)).view_as(x)
        weight = lam * float(s) ** 2 / noise_y**2

        def matvec(v: Tensor, weight: float = weight) -> Tensor:
            return weight * op.gram(v) + counts * v

        x = operators.cg(matvec, weight * aty + z, iterations=cg_iterations)
    return x.to(y.dtype).clamp(-1, 1)
