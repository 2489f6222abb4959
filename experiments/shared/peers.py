r"""Peer implementations run on our priors and operators, for side-by-side figures.

deepinv's own loops run on one of our denoisers through
:class:`priors.adapters.DeepinvDenoiser` and on our operator through
:func:`operators.as_deepinv`; images and measurements are converted between our
:math:`[-1, 1]` range and deepinv's :math:`[0, 1]` at the boundary only:

- :class:`DeepinvDPS`: ``deepinv.sampling.DPS`` (its variance-preserving SDE and DDPM
  solver);
- :class:`DeepinvPiGDM`: the same loop with ``PiGDMDataFidelity``;
- :class:`DeepinvDDRM`: ``deepinv.sampling.DDRM`` (SVD operators) on our grid's noise levels;
- :class:`DeepinvDiffPIR`: ``deepinv.sampling.DiffPIR`` (its own DDPM noise levels).

Each takes ``len(ts) - 1`` network evaluations per row, like ours on the same grid; the
network evaluations are counted by our denoiser itself, the VJPs the peer takes are added.

References:
    | DeepInverse: a Python package for solving imaging inverse problems with deep learning
    | https://deepinv.github.io
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor

import checks
import guided
import operators
import priors

from priors import GeneratorLike
from priors.adapters import DeepinvDenoiser

__all__ = ["DeepinvDDRM", "DeepinvDPS", "DeepinvDiffPIR", "DeepinvPiGDM"]


class _Peer:
    r"""A deepinv loop as a method of our apps (see the module).

    deepinv draws its noise from torch's global generator; a call forks it and seeds it from
    ``generator`` (the first one when one per row is given), so runs are reproducible and
    leave the caller's global state alone.

    Arguments:
        op: Our operator.
        y: Our measurement, :math:`(B, *out\_shape)` or one for all rows.
        sigma_y: Our noise level.
    """

    #: VJPs through the network per step and row.
    vjps: int = 0

    def __init__(self, op: operators.Operator, y: Tensor, sigma_y: float) -> None:
        if not op.differentiable:
            raise operators.UnsupportedOperator(
                f"{type(self).__name__} needs a differentiable operator"
            )
        self.op, self.sigma_y = op, float(sigma_y)
        self.y = y if y.ndim > len(op.out_shape) else y[None]
        self.physics = operators.as_deepinv(op, sigma_y, dtype=torch.float32)

    def solve(self, denoiser: DeepinvDenoiser, y01: Tensor, steps: int, seed: int) -> Tensor:
        """deepinv's reconstruction in [0, 1] from the measurement in deepinv's units."""
        raise NotImplementedError

    def __call__(
        self,
        denoiser: priors.Denoiser,
        x_T: Tensor,
        ts: Tensor,
        *,
        generator: GeneratorLike = None,
        cost: priors.Cost | None = None,
    ) -> Tensor:
        rows = x_T.shape[0]
        first = generator[0] if isinstance(generator, list | tuple) else generator
        seed = int(torch.randint(2**62, (), generator=first))
        y01 = operators.measurement_to_deepinv(self.op, self.y.float()).expand(
            rows, *self.op.out_shape
        )
        steps = int(torch.as_tensor(ts).numel()) - 1
        with torch.random.fork_rng(), priors.measure(cost or priors.Cost(), batch=rows):
            torch.manual_seed(seed)
            x01 = self.solve(DeepinvDenoiser(denoiser), y01.contiguous(), steps, seed)
            priors.record(vjp_rows=rows * steps * self.vjps)
        return (2 * x01 - 1).to(x_T.dtype)


class DeepinvDPS(_Peer):
    r"""``deepinv.sampling.DPS``: ``len(ts) - 1`` network evaluations of its DDPM solver,
    one backward pass each.

    Arguments:
        op: Our operator.
        y: Our measurement.
        sigma_y: Our noise level.
        weight: deepinv's data-fidelity weight (1 = the paper's :math:`\zeta = 1`).
    """

    vjps = 1

    def __init__(
        self, op: operators.Operator, y: Tensor, sigma_y: float, weight: float = 1.0
    ) -> None:
        super().__init__(op, y, sigma_y)
        self.weight = weight

    def sampler(self, denoiser: DeepinvDenoiser, steps: int, seed: int) -> Any:
        import deepinv

        return deepinv.sampling.DPS(  # its last time step evaluates no network: steps + 1
            denoiser, num_steps=steps + 1, weight=self.weight, dtype=torch.float32,
            rng=torch.Generator().manual_seed(seed),
        )  # fmt: skip

    def solve(self, denoiser: DeepinvDenoiser, y01: Tensor, steps: int, seed: int) -> Tensor:
        return self.sampler(denoiser, steps, seed)(y01, self.physics)


class DeepinvPiGDM(DeepinvDPS):
    r"""deepinv's posterior-SDE loop of :class:`DeepinvDPS` with ``PiGDMDataFidelity``
    (its default conjugate-gradient solve, one backward pass per step), ``weight`` its
    :math:`\lambda` (deepinv keeps the weight in the data-fidelity object, so the loop's own
    ``weight`` would not reach it); unlike deepinv's DPS it clamps no estimate. It is our
    :class:`guided.PiGDM` with ``variance=4`` and the same weight under DDPM on the
    ``linear_beta`` grid where deepinv's 3 conjugate-gradient iterations solve the system
    (inpainting, SR; tested given the same noise)."""

    def sampler(self, denoiser: DeepinvDenoiser, steps: int, seed: int) -> Any:
        import deepinv

        loop = super().sampler(denoiser, steps, seed)
        loop.data_fidelity = deepinv.sampling.PiGDMDataFidelity(
            denoiser=denoiser, weight=self.weight
        )
        return loop


class DeepinvDDRM(_Peer):
    r"""``deepinv.sampling.DDRM`` (its defaults :math:`\eta = 0.85`, :math:`\eta_b = 1`),
    called at the variance-exploding noise levels :math:`\sigma_t / (2 \alpha_t)` of our
    grid's first ``len(ts) - 1`` times (deepinv's units).

    deepinv 0.5 draws each step's noise with standard deviation :math:`\bar\sigma_s /
    \sqrt 2` while telling its denoiser the level is :math:`\bar\sigma_s`
    (``deepinv/sampling/diffusion.py``, the ``/ np.sqrt(2.0)`` of both draws), a departure
    from Kawar et al.'s eq. 8 that our :class:`guided.DDRM` follows: its samples are less
    noisy than the paper's at the same :math:`\eta`.
    """

    def __init__(
        self,
        op: operators.Operator,
        y: Tensor,
        sigma_y: float,
        eta: float = 0.85,
        etab: float = 1.0,
    ) -> None:
        if not isinstance(op, operators.SVDOperator):
            raise operators.UnsupportedOperator("DDRM needs an SVD operator")
        super().__init__(op, y, sigma_y)
        self.eta = checks.number(eta, "eta", low=0, high=1)
        self.etab = checks.number(etab, "etab", low=0, high=1)

    def solve(self, denoiser: DeepinvDenoiser, y01: Tensor, steps: int, seed: int) -> Tensor:
        import deepinv

        ts = guided.time_grid(steps)[:-1]
        alpha_t, sigma_t = denoiser.schedule(ts)
        sigmas = (sigma_t / alpha_t / 2).tolist()
        loop = deepinv.sampling.DDRM(denoiser, sigmas=sigmas, eta=self.eta, etab=self.etab)
        return loop(y01, self.physics)


class DeepinvDiffPIR(_Peer):
    r"""``deepinv.sampling.DiffPIR`` with an :math:`\ell_2` data fidelity (its own linear-beta
    noise levels), ``len(ts) - 1`` iterations.

    Arguments:
        op: Our linear operator.
        y: Our measurement.
        sigma_y: Our noise level (deepinv's is half of it, on images in [0, 1]).
        lambda_: deepinv's :math:`\lambda_d` (default 7), which is :math:`\lambda = 2
            \lambda_d` of the paper and of :class:`guided.DiffPIR` (see its module).
        zeta: :math:`\zeta` (deepinv's default 0.1).
    """

    def __init__(
        self,
        op: operators.Operator,
        y: Tensor,
        sigma_y: float,
        lambda_: float = 7.0,
        zeta: float = 0.1,
    ) -> None:
        if not isinstance(op, operators.LinearOperator):
            raise operators.UnsupportedOperator("DiffPIR needs a linear operator")
        super().__init__(op, y, sigma_y)
        self.lambda_ = checks.number(lambda_, "lambda_", low=0, open_low=True)
        self.zeta = checks.number(zeta, "zeta", low=0, high=1)

    def solve(self, denoiser: DeepinvDenoiser, y01: Tensor, steps: int, seed: int) -> Tensor:
        import deepinv

        loop = deepinv.sampling.DiffPIR(
            denoiser, deepinv.optim.data_fidelity.L2(), sigma=max(self.sigma_y / 2, 1e-3),
            max_iter=steps, lambda_=self.lambda_, zeta=self.zeta,
        )  # fmt: skip
        return loop(y01, self.physics)
