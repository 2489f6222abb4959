r"""ArrayDPS: posterior sampling of sources through unknown transfer functions re-estimated at
every step (Xu et al., ICML 2025).

:math:`K` sources :math:`x = (x_1, \ldots, x_K)` under a prior of independent sources (for
example :class:`priors.PerChannel` on a single-source prior) are heard by :math:`M`
microphones through a mixing operator :math:`A_G` whose filters :math:`G` are unknown
(:class:`operators.ConvolutiveTransfer`). At every network evaluation, with the denoised
sources :math:`\hat x = E[x \mid x_t]`:

1. the filters are set to the operator's own estimate from :math:`\hat x` and the mixture
   :math:`y` (an M-step, :class:`~guided.FitMStep` by default:
   :meth:`~operators.ConvolutiveTransfer.fit`, forward convolutive prediction of each source
   alone against the mixture, as ArrayDPS does; ``FitMStep(joint=True)`` fits all jointly);
2. the reconstruction direction :math:`u = -\nabla_{x_t} \tfrac12 \lVert y - A_G \hat x
   \rVert^2 = J^\top A_G^\top (y - A_G \hat x)` (the filters held fixed; :math:`J` the
   network's Jacobian) is normalised to a fixed size per row,

.. math:: g = \frac{\xi}{\sigma_t}\, \frac{u}{\operatorname{rms}(u)},

so that the guidance moves :math:`\hat x` by :math:`\frac{\sigma_t^2}{\alpha_t} g`, of RMS
:math:`\xi \bar\sigma_t` (:math:`\bar\sigma_t = \sigma_t / \alpha_t`), whatever the
mixture's scale. In the variance-exploding coordinates of the authors' EDM sampler
(:math:`x / \alpha_t`, noise level :math:`\bar\sigma_t`) this is their step
``xi / (normguide * t_i)`` with ``normguide`` the gradient's norm over :math:`\sqrt T`.

**Departures from the authors' code** (``src/sampler_spatial_v1_reverb_iva_8kHz.py`` of
``ArrayDPS/ArrayDPS``):

- They take ``normguide`` as the norm of all :math:`K` sources' gradient over
  :math:`\sqrt{T}`; we take the RMS over the row's :math:`K T` values, so their ``xi`` is
  ours times :math:`\sqrt K` (their separation command's ``--xi 2.0`` with two sources is
  :math:`\xi = 1.41` here).
- Their loss adds ``ref_loss_weight`` (0.3) times the reference microphone's error of the
  plain sum of the sources early in the run, and they clip the gradients optionally; we use
  the reconstruction loss alone.
- Their separation command starts from IVA's estimate rescaled to an RMS of 0.057 (their
  ``warm_initialization_sigma``, their data's scale) plus noise at :math:`\sigma_{max} =
  0.8`, keeps IVA's filters for the first 100 of 400 steps, and reruns a separation several
  times ("trials", stopped early by the SDR against the true sources). The term is
  sampler-agnostic: where to start is the caller's (the separation app,
  ``experiments.inverse.separate``, starts from AuxIVA's estimate noised to a level of the
  data's scale, with the filters first fitted to that estimate, and draws once). Their
  sampler is EDM's stochastic Heun; this is a guidance term, so it runs with every sampler
  of :mod:`guided`.

Like :class:`~guided.ExpectationMaximization` the term holds state (the operator's
filters, set in place) and pools the rows of the batch in the filters' estimate: the rows
are samples of one measurement, and a call's filters are fitted to all of them.

References:
    | ArrayDPS: Unsupervised Blind Speech Separation with a Diffusion Prior (Xu, Fan, Wang,
    | Jiang & Roy Choudhury, ICML 2025) https://arxiv.org/abs/2505.05657
"""

from __future__ import annotations

import torch

from torch import Tensor

import checks

from guided.guidance import Guidance, check_differentiable, check_measurement
from guided.m_step import FitMStep, MStep, flat
from operators import UnknownOperator
from priors import Schedule, record
from priors.tweedie import append_dims

__all__ = ["ArrayDPS"]


class ArrayDPS(Guidance):
    r"""The ArrayDPS term (see the module).

    Arguments:
        op: The mixing operator (an :class:`operators.UnknownOperator`; ArrayDPS's is
            :class:`operators.ConvolutiveTransfer`), holding the initial unknowns; every call
            sets them in place.
        y: One mixture :math:`(M, T)` or :math:`(1, M, T)`.
        xi: :math:`\xi > 0`, the step in units of the noise level.
        m_step: How the filters are estimated from the denoised sources at every call
            (default ``guided.FitMStep()``: FCP per source, ridge 0.002, floor 0.001; e.g.
            ``FitMStep(joint=True)``). The term takes no noise level, so the M-step is
            called with :math:`\sigma_y = 1` (``FitMStep`` does not use it; for
            ``LeastSquaresMStep`` or ``GradientMStep`` it sets the data's weight against
            their ridge and penalty).
        estimate: Re-estimate the unknowns at every call (True); False keeps the operator
            as given (known filters: the oracle of a blind method, keyword only).

    Attributes:
        fits: The number of filter estimates made so far.
    """

    def __init__(
        self,
        op: UnknownOperator,
        y: Tensor,
        xi: float = 1.4,
        m_step: MStep | None = None,
        *,
        estimate: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(op, UnknownOperator):
            raise TypeError(
                f"op must be an operators.UnknownOperator (ArrayDPS re-estimates its unknowns, "
                f"e.g. operators.ConvolutiveTransfer's filters), got {type(op).__name__}"
            )
        check_differentiable(op, "ArrayDPS")
        y = check_measurement(op, y, None)
        if y.shape[0] != 1:
            raise ValueError(
                f"ArrayDPS separates one mixture; y has {y.shape[0]} rows (one term per mixture)"
            )
        self.op, self.y = op, y
        self.xi = checks.number(xi, "xi", low=0, open_low=True)
        if m_step is not None and not isinstance(m_step, MStep):
            raise TypeError(f"m_step must be a guided.MStep, got {type(m_step).__name__}")
        self.m_step = FitMStep() if m_step is None else m_step
        self.estimate = checks.flag(estimate, "estimate")
        if self.estimate:
            self.m_step.check(op)
        self.fits = 0

    def forward(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        rows = x_t.shape[0]
        y = self.y.to(x_hat.dtype).expand(rows, *self.y.shape[1:])
        if self.estimate:
            self.m_step(self.op, x_hat.detach(), self.y, 1.0)
            self.fits += 1
            if not bool(torch.isfinite(flat(self.op)).all()):
                raise FloatingPointError(
                    f"the unknowns' estimate is not finite at t = {float(t.flatten()[0]):.4g}"
                )
        out, pullback = self.op.linearize(x_hat.detach())
        direction = pullback(y - out)  # -grad of the loss in x_hat
        (u,) = torch.autograd.grad(x_hat, x_t, direction)
        record(vjp_rows=rows)
        rms = u.flatten(1).square().mean(1).sqrt().clamp_min(1e-30)
        _, sigma_t = schedule(t)
        sigma_t = sigma_t.to(u.dtype).expand(rows)
        return u * append_dims(self.xi / (rms * sigma_t.clamp_min(1e-30)), u.ndim)
