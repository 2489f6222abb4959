r"""DiffPIR: plug-and-play restoration with a diffusion denoiser.

From :math:`t` to :math:`s`, with :math:`\bar\sigma_t = \sigma_t / \alpha_t` the noise level of
:math:`x_t / \alpha_t`:

1. :math:`x_0 = \hat x(x_t)`;
2. data proximal step :math:`\hat x_0 = \arg\min_x \lVert y - A x \rVert^2 + \rho_t \lVert x
   - x_0 \rVert^2` with :math:`\rho_t = \lambda \sigma_n^2 / \bar\sigma_t^2` (the paper's data
   subproblem, as the authors' code computes it), in closed form in the SVD's spectral space
   (:math:`\bar x = (s \bar y + \rho \bar x_0) / (s^2 + \rho)`, unobserved coordinates keep
   :math:`\bar x_0`) or by conjugate gradients on :math:`(A^\top A + \rho I) x = A^\top y +
   \rho x_0`;
3. :math:`x_s = \alpha_s \hat x_0 + \sigma_s (\sqrt{1 - \zeta}\, \hat\epsilon + \sqrt{\zeta} z)`,
   :math:`\hat\epsilon = (x_t - \alpha_t \hat x_0) / \sigma_t`.

**Step sizes across budgets.** The paper's :math:`\zeta` is a share of fresh noise *per step*,
so what a run keeps of :math:`\hat\epsilon` depends on the step count: the factor
:math:`\sqrt{1 - \zeta}` multiplies once per step, :math:`(1 - \zeta)^{N/2}` over
:math:`N` steps. With ``kappa`` in place of ``zeta`` the share follows the step's ratio of
noise levels :math:`q = \bar\sigma_s / \bar\sigma_t = \alpha_t \sigma_s / (\alpha_s
\sigma_t) < 1`,

.. math:: \sqrt{1 - \zeta_{t \to s}} = q^{\kappa}, \qquad \zeta_{t \to s} = 1 - q^{2\kappa},

so the factors telescope: from :math:`t` to :math:`s` over any grid the run keeps
:math:`(\bar\sigma_s / \bar\sigma_t)^\kappa` of :math:`\hat\epsilon`, and one
:math:`\kappa` is one process at every budget. :math:`\kappa = 0` is deterministic
(DDIM), :math:`\kappa = 1` renews what an ancestral step renews (DDIM's :math:`\eta = 1`,
:math:`\zeta = 1 - q^2`), and large :math:`\kappa` approaches :math:`\zeta = 1` (fresh noise
only, the paper's inpainting setting); the values the paper tunes, :math:`\zeta` 0.25 to 0.9
at 100 steps, match :math:`\kappa` of about 1 to 37 on the shipped priors' cosine schedule
(less near either end of the run, where :math:`q` is further from 1). DDIM's
:math:`\eta` alone would not do: it reaches only the ancestral share (:math:`\kappa \le 1`),
far less fresh noise than DiffPIR wants (tuned on digits at 100 steps, the paper's
:math:`\zeta` chose 0.6 to 0.9 and :math:`\kappa` chose 100, the top of its grid; see
``docs/methods/diffpir.md``). This is our parameterisation, not the paper's.
:math:`\rho_t` needs none: it depends on the noise level, not on the step.

**The units of** :math:`\lambda`. The authors' code (``main_ddpir_*.py``) measures the
measurement noise :math:`\sigma_n` on images in [0, 1] and :math:`\bar\sigma_t =
\sqrt{1 - \bar\alpha_t} / \sqrt{\bar\alpha_t}` on the model's images in [-1, 1]; its proximal
step (``data_solution``, the closed form of the argmin above) has the same minimiser in
either range. Our images lie in [-1, 1], where the noise level is :math:`\sigma_y = 2
\sigma_n`, so :math:`\rho_t = \lambda \sigma_y^2 / (4 \bar\sigma_t^2)` and our
:math:`\lambda` is the paper's and the official code's. deepinv's ``DiffPIR`` with
``lambda_`` :math:`= \lambda_d` calls ``prox`` of :math:`\frac12 \lVert A x - y \rVert^2` with
``gamma`` :math:`= 1 / 2 \rho_t`, i.e. the argmin above with weight :math:`2 \lambda_d
\sigma_n^2 / \bar\sigma_t^2`: deepinv's :math:`\lambda_d` is our :math:`\lambda = 2 \lambda_d`
(its default 7 is our 14).

Defaults :math:`\lambda = 7`, :math:`\zeta = 0.3`: the values of the authors' deblurring
script ``main_ddpir_deblur.py`` (their other scripts: :math:`\zeta = 0.25` with
:math:`\lambda` swept from 2 to 12 for super-resolution, :math:`\zeta = 1` and :math:`\lambda =
1` for noiseless inpainting).
At :math:`\sigma_y = 0` the proximal step is the exact projection onto
:math:`\{A x = y\}` (deepinv's DiffPIR returns NaN there). 1 NFE, no VJP per step.

References:
    | Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al., 2023)
    | https://arxiv.org/abs/2305.08995
"""

from __future__ import annotations

import math

from torch import Tensor

import checks

from guided.ddim import ancestral_share
from guided.guidance import check_measurement, check_structure
from guided.sampler import Run, Sampler, SamplerState, Step
from operators import LinearOperator
from priors import randn
from priors.tweedie import eps_from_x0

__all__ = ["DiffPIR"]


class DiffPIR(Sampler):
    r"""DiffPIR sampler (see the module). It steps from pure noise (:math:`\alpha_t = 0`,
    :math:`t = 1` on a :class:`~priors.RectifiedSchedule`), where :math:`\rho_t = 0` and
    the fresh share is 1.

    Arguments:
        op: A linear operator (closed form when it is an SVD operator).
        y: The measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: The Gaussian noise level (0 allowed).
        lambda_: :math:`\lambda`, the paper's weight of the prior in the proximal step
            (deepinv's ``lambda_`` times 2; see the module).
        zeta: :math:`\zeta \in [0, 1]`, the share of fresh noise per step (the paper's);
            None with ``kappa``.
        iterations: Conjugate-gradient iterations for operators without an SVD.
        kappa: :math:`\kappa \ge 0`: the share of fresh noise is :math:`1 - q^{2\kappa}`
            for the step's ratio of noise levels :math:`q` (see the module), which carries
            across step counts; give it with ``zeta=None`` (keyword only).
    """

    pure_noise = True  # rho_t and the noise estimate are written without dividing by alpha_t

    def __init__(
        self,
        op: LinearOperator,
        y: Tensor,
        sigma_y: float,
        lambda_: float = 7.0,
        zeta: float | None = 0.3,
        iterations: int = 50,
        *,
        kappa: float | None = None,
    ) -> None:
        check_structure(op, LinearOperator, "DiffPIR", "proximal step", "use guided.DPS")
        self.y = check_measurement(op, y, sigma_y)
        self.op, self.sigma_y = op, float(sigma_y)
        self.lambda_ = checks.number(lambda_, "lambda_", low=0, open_low=True)
        if (zeta is None) == (kappa is None):
            raise ValueError(
                f"give exactly one of zeta (the paper's share of fresh noise per step) and "
                f"kappa (a share that carries across step counts), got zeta={zeta!r}, "
                f"kappa={kappa!r}"
            )
        self.zeta = None if zeta is None else checks.number(zeta, "zeta", low=0, high=1)
        self.kappa = None if kappa is None else checks.number(kappa, "kappa", low=0)
        self.iterations = checks.integer(iterations, "iterations", low=1)

    def rho(self, alpha_t: float, sigma_t: float) -> float:
        r""":math:`\rho_t = \lambda \sigma_n^2 / \bar\sigma_t^2`, :math:`\sigma_n = \sigma_y / 2`
        (the paper's units, see the module), :math:`\bar\sigma_t = \sigma_t / \alpha_t`;
        written as :math:`\lambda \sigma_n^2 \alpha_t^2 / \sigma_t^2`, so that at pure noise
        (:math:`\alpha_t = 0`) it is its limit 0: the proximal step is then least squares on
        the observed coordinates, the prior's estimate elsewhere."""
        return self.lambda_ * (self.sigma_y / 2) ** 2 * (alpha_t / sigma_t) ** 2

    def proximal(self, x0: Tensor, rho: float) -> Tensor:
        r""":math:`\arg\min_x \lVert y - A x \rVert^2 + \rho \lVert x - x_0 \rVert^2`
        (:meth:`~operators.LinearOperator.ridge`, ``iterations`` conjugate-gradient steps
        unless the operator has an SVD)."""
        return self.op.ridge(self.y.to(x0.dtype), x0, rho, iterations=self.iterations)

    def step(self, run: Run, x_t: Tensor, step: Step, state: SamplerState) -> Tensor:
        alpha_t, sigma_t, alpha_s, sigma_s = step.coefficients
        x0 = run.denoise(x_t, step.t)
        x0 = self.proximal(x0, self.rho(alpha_t, sigma_t))
        if sigma_s == 0:
            return x0
        zeta = self.fresh_share(alpha_t, sigma_t, alpha_s, sigma_s)
        eps = eps_from_x0(x_t, x0, alpha_t, sigma_t)
        z = randn(x_t.shape, run.generator, dtype=x_t.dtype, device=x_t.device)
        return alpha_s * x0 + sigma_s * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * z)

    def fresh_share(self, alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> float:
        r"""The step's share of fresh noise: :math:`\zeta`, or :math:`1 - q^{2\kappa}` with
        :math:`q = \alpha_t \sigma_s / (\alpha_s \sigma_t)` (see the module)."""
        if self.kappa is None:
            assert self.zeta is not None  # one of the two, checked at construction
            return self.zeta
        kept = 1.0 - ancestral_share(alpha_t, sigma_t, alpha_s, sigma_s)  # q^2
        return 1.0 - kept**self.kappa
