r"""Gaussian mixtures: an analytic prior with exact denoiser, sampler, density and posterior.

For :math:`p(x) = \sum_k w_k \mathcal{N}(x \mid m_k, C_k)` and
:math:`x_t = \alpha_t x + \sigma_t \epsilon`, the noisy marginal is the mixture
:math:`p_t(x_t) = \sum_k w_k \mathcal{N}(x_t \mid \alpha_t m_k, \Sigma_k)` with
:math:`\Sigma_k = \alpha_t^2 C_k + \sigma_t^2 I`, and the posterior mean is exact:

.. math:: E[x \mid x_t] = \sum_k r_k(x_t) \left(m_k + \alpha_t C_k \Sigma_k^{-1}
    (x_t - \alpha_t m_k)\right), \qquad r_k \propto w_k \mathcal{N}(x_t \mid \alpha_t m_k,
    \Sigma_k).

Each :math:`C_k = Q_k \operatorname{diag}(\lambda_k) Q_k^\top` is diagonalised once, so
:math:`\Sigma_k` is diagonal in the basis :math:`Q_k` at every :math:`t`.

Under a linear measurement :math:`y = A x + \sigma_y n` each component stays Gaussian
(Kalman update) and is re-weighted by its evidence:

.. math:: S_k = A C_k A^\top + \sigma_y^2 I, \quad K_k = C_k A^\top S_k^{-1}, \quad
    m_k' = m_k + K_k (y - A m_k), \quad C_k' = C_k - K_k A C_k, \quad
    w_k' \propto w_k \mathcal{N}(y \mid A m_k, S_k).

References:
    | Monte Carlo guided Diffusion for Bayesian linear inverse problems
    | (Cardoso et al., 2024) https://arxiv.org/abs/2308.07983
"""

from __future__ import annotations

import math

from collections.abc import Callable

import torch

from torch import Tensor

import checks

from priors.denoiser import Denoiser
from priors.random import GeneratorLike, randn
from priors.schedules import Schedule
from priors.tweedie import append_dims, flow_from_x0

__all__ = ["GaussianMixture"]

_F64 = torch.float64


class GaussianMixture(Denoiser):
    r"""A Gaussian mixture prior in :math:`D` dimensions with its exact denoiser.

    Data have shape :math:`(B, D)`. All maths runs in float64; outputs are cast back to the
    input's dtype.

    Arguments:
        weights: Mixture weights :math:`w`, with shape :math:`(K,)`, non-negative (they
            are normalised).
        means: Component means :math:`m`, with shape :math:`(K, D)`.
        covs: Component covariances :math:`C`, with shape :math:`(K, D, D)`, symmetric
            positive semi-definite.
        schedule: The noise schedule of the diffusion this prior denoises for.

    References:
        | Denoising Diffusion Probabilistic Models (Ho et al., 2020)
        | https://arxiv.org/abs/2006.11239
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor, schedule: Schedule) -> None:
        super().__init__(schedule)
        for name, value in (("weights", weights), ("means", means), ("covs", covs)):
            if torch.as_tensor(value).is_complex():
                raise TypeError(f"{name} must be real, got a complex tensor")
        weights = torch.as_tensor(weights, dtype=_F64)
        means = torch.as_tensor(means, dtype=_F64)
        covs = torch.as_tensor(covs, dtype=_F64)
        if weights.ndim != 1 or weights.numel() < 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(weights.shape)}")
        k = weights.numel()
        if means.ndim != 2 or means.shape[0] != k:
            raise ValueError(f"means must have shape (K={k}, D), got {tuple(means.shape)}")
        d = means.shape[1]
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {tuple(covs.shape)}")
        for name, value in (("weights", weights), ("means", means), ("covs", covs)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} must be finite")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        scale = covs.abs().amax().clamp(min=1.0)
        if float((covs - covs.mT).abs().amax()) > 1e-8 * float(scale):
            raise ValueError("covs must be symmetric")
        #: Diagonal covariances skip the eigenbasis rotations (O(KD) instead of O(KD^2)).
        self.diagonal = bool((covs == torch.diag_embed(covs.diagonal(dim1=-2, dim2=-1))).all())
        if self.diagonal:
            lam = covs.diagonal(dim1=-2, dim2=-1).clone()
            q = torch.eye(d, dtype=_F64).expand(k, d, d)
        else:
            lam, q = torch.linalg.eigh((covs + covs.mT) / 2)
        if float(lam.min()) < -1e-8 * float(scale):
            raise ValueError(
                f"covs must be positive semi-definite (smallest eigenvalue {float(lam.min())})"
            )
        #: Isotropic components (c_k I) take a matrix-product path with no (B, K, D) tensors.
        self.isotropic = self.diagonal and bool((lam == lam[:, :1]).all())
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)
        self.register_buffer("eigvals", lam.clamp(min=0))
        self.register_buffer("eigvecs", q)

    @property
    def shape(self) -> tuple[int]:
        """The shape :math:`(D,)` of one sample."""
        return (self.means.shape[1],)

    def _check_points(self, x: Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.shape[0]:
            raise ValueError(f"{name} must have shape (B, {self.shape[0]}), got {tuple(x.shape)}")

    def _float64(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Weights, means, covariances, eigenvalues and eigenvectors in float64."""
        return tuple(
            b.to(_F64) for b in (self.weights, self.means, self.covs, self.eigvals, self.eigvecs)
        )

    def _components(
        self, x: Tensor, alpha: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Log-likelihoods :math:`\log w_k \mathcal{N}(x \mid \alpha m_k, \Sigma_k)`, the
        whitened residuals in each eigenbasis and the eigenvalues of :math:`\Sigma_k`, with
        shapes :math:`(B, K)`, :math:`(B, K, D)`, :math:`(B, K, D)`."""
        w, m, _, lam, q = self._float64()
        a = append_dims(alpha, 3)
        z = x[:, None, :] - a * m[None]
        if not self.diagonal:
            z = torch.einsum("bkd,kde->bke", z, q)
        v = a**2 * lam[None] + append_dims(sigma, 3) ** 2
        log_n = -0.5 * (z**2 / v + torch.log(2 * math.pi * v)).sum(-1)
        return w.log()[None] + log_n, z, v

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        r"""Exact :math:`E[x \mid x_t]` for ``x_t`` of shape :math:`(B, D)`."""
        self._check_points(x_t, "x_t")
        alpha_t, sigma_t = self.schedule(t)
        # one time for all rows stays (1,): the (B, K) work then broadcasts over rows
        shape = (1,) if alpha_t.numel() == 1 else x_t.shape[:1]
        alpha_t, sigma_t = alpha_t.reshape(-1).expand(shape), sigma_t.reshape(-1).expand(shape)
        clean = sigma_t == 0
        sigma_safe = torch.where(clean, torch.ones_like(sigma_t), sigma_t)
        # the clean rows' x_t / alpha_t, with a safe divisor elsewhere (alpha_t = 0 at pure
        # noise would put an infinity into the gradient of the branch not taken)
        alpha_safe = append_dims(torch.where(clean, alpha_t, torch.ones_like(alpha_t)), 2)
        x = x_t.to(_F64)
        if self.isotropic:
            x_hat = self._isotropic_mean(x, alpha_t, sigma_safe)
            x_hat = torch.where(append_dims(clean, 2), x / alpha_safe, x_hat)
            return x_hat.to(x_t.dtype)
        log_p, z, v = self._components(x, alpha_t, sigma_safe)
        _, m, _, lam, q = self._float64()
        r = torch.softmax(log_p, dim=-1)
        shift = append_dims(alpha_t, 3) * lam[None] / v * z
        means = m[None] + (shift if self.diagonal else torch.einsum("bke,kde->bkd", shift, q))
        x_hat = torch.einsum("bk,bkd->bd", r, means)
        x_hat = torch.where(append_dims(clean, 2), x / alpha_safe, x_hat)
        return x_hat.to(x_t.dtype)

    def velocity(self, x_t: Tensor, t: float | Tensor) -> Tensor:
        r"""The exact flow-matching velocity :math:`E[\dot\alpha_t x + \dot\sigma_t \epsilon
        \mid x_t]` of the noisy marginal (:func:`priors.tweedie.flow_from_x0` of the exact
        posterior mean), for ``x_t`` of shape :math:`(B, D)`: the field a perfectly trained
        flow-matching network predicts. Wrapped in a :class:`priors.FlowDenoiser`, it is this
        prior reached through the velocity parametrisation. Not counted as a network
        evaluation (the wrapper counts its calls)."""
        alpha_t, sigma_t = self.schedule(t)
        d_alpha, d_sigma = self.schedule.derivatives(t)
        x_hat = self.forward(x_t, torch.as_tensor(t, dtype=_F64))
        return flow_from_x0(x_t, x_hat, alpha_t, sigma_t, d_alpha, d_sigma)

    def _isotropic_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        r""":math:`E[x \mid x_t]` for components :math:`c_k I`, from inner products:
        :math:`\lVert x - \alpha m_k \rVert^2 = \lVert x \rVert^2 - 2 \alpha \langle x, m_k
        \rangle + \alpha^2 \lVert m_k \rVert^2` and
        :math:`\hat x = \sum_k r_k (m_k + \alpha c_k / v_k (x - \alpha m_k))`."""
        w, m, _, lam, _ = self._float64()
        a, c, d = alpha[:, None], lam[None, :, 0], x.shape[1]
        v = a**2 * c + sigma[:, None] ** 2  # (B, K)
        sq = (x * x).sum(1, keepdim=True) - 2 * a * (x @ m.T) + a**2 * (m * m).sum(1)[None]
        log_p = w.log()[None] - 0.5 * (sq.clamp_min(0) / v + d * torch.log(2 * math.pi * v))
        r = torch.softmax(log_p, dim=-1)
        gain = a * c / v
        return (r * gain).sum(1, keepdim=True) * x + (r * (1 - a * gain)) @ m

    def _marginal(self, x: Tensor, t: float | Tensor | None) -> Tensor:
        """Per-component log-likelihoods of ``x`` under the data (``t=None``) or under
        :math:`p_t`, with shape :math:`(B, K)`."""
        self._check_points(x, "x")
        if t is None:
            alpha, sigma = torch.ones((), dtype=_F64), torch.zeros((), dtype=_F64)
        else:
            alpha, sigma = self.schedule(t)
        alpha, sigma = alpha.expand(x.shape[:1]), sigma.expand(x.shape[:1])
        log_p, _, _ = self._components(x.to(_F64), alpha.to(x.device), sigma.to(x.device))
        return log_p

    def log_prob(self, x: Tensor, t: float | Tensor | None = None) -> Tensor:
        r"""Log-density of the data (``t=None``) or of the noisy marginal :math:`p_t`, for
        ``x`` of shape :math:`(B, D)`; returns shape :math:`(B,)` in float64."""
        return torch.logsumexp(self._marginal(x, t), dim=-1)

    def responsibilities(self, x: Tensor, t: float | Tensor | None = None) -> Tensor:
        r"""Posterior component probabilities :math:`p(k \mid x)` (or :math:`p(k \mid x_t)`),
        with shape :math:`(B, K)` in float64."""
        return torch.softmax(self._marginal(x, t), dim=-1)

    def sample(self, n: int, generator: GeneratorLike = None) -> Tensor:
        r"""Exact samples, with shape :math:`(n, D)` in float64."""
        n = checks.integer(n, "n", low=1)
        g = generator if generator is None or isinstance(generator, torch.Generator) else None
        if g is None and generator is not None:
            raise ValueError("sample takes a single torch.Generator")
        w, m, _, lam, q = self._float64()
        k = torch.multinomial(w.cpu(), n, replacement=True, generator=g).to(m.device)
        z = randn((n, self.shape[0]), g, dtype=_F64, device=m.device)
        if self.diagonal:
            return m[k] + z * lam[k].sqrt()
        x = torch.empty_like(z)
        for j in torch.unique(k).tolist():  # per component: no (n, D, D) gather
            rows = k == j
            x[rows] = m[j] + (z[rows] * lam[j].sqrt()) @ q[j].T
        return x

    def posterior(
        self, op: Tensor | Callable[[Tensor], Tensor], y: Tensor, sigma_y: float
    ) -> GaussianMixture:
        r"""The exact posterior :math:`p(x \mid y)` for :math:`y = A x + \sigma_y n`.

        Arguments:
            op: The linear operator :math:`A`: a matrix of shape :math:`(d_y, D)` or a
                linear map from :math:`(B, D)` to :math:`(B, d_y)` (e.g. an
                ``operators.LinearOperator``); its matrix is read off the unit vectors.
            y: The observation, with shape :math:`(d_y,)`.
            sigma_y: The noise standard deviation, >= 0.

        Returns:
            The posterior mixture, with the same schedule.
        """
        w, m, c, _, _ = self._float64()
        a = _as_matrix(op, self.shape[0], m.device)
        y = torch.as_tensor(y)
        if y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y must be real, got {y.dtype}")
        y = y.to(m.device, _F64)
        if y.shape != a.shape[:1]:
            raise ValueError(f"y must have shape ({a.shape[0]},), got {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y must be finite")
        sigma_y = checks.number(sigma_y, "sigma_y", low=0)
        ac = torch.einsum("yd,kde->kye", a, c)  # A C_k, (K, d_y, D)
        s = ac @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=_F64, device=a.device)
        chol, info = torch.linalg.cholesky_ex(s)
        if bool((info != 0).any()):
            raise ValueError(
                "A C_k A^T + sigma_y^2 I is singular for some component: "
                "use sigma_y > 0 or an operator whose rows the prior covers"
            )
        residual = y[None] - m @ a.T  # (K, d_y)
        white = torch.linalg.solve_triangular(chol, residual[..., None], upper=False)[..., 0]
        log_evidence = (
            -0.5 * (white**2).sum(-1)
            - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
            - 0.5 * a.shape[0] * math.log(2 * math.pi)
        )
        gain = torch.cholesky_solve(ac, chol).mT  # K_k = C_k A^T S_k^{-1}, (K, D, d_y)
        means = m + (gain @ residual[..., None])[..., 0]
        covs = c - gain @ ac
        weights = torch.softmax(w.log() + log_evidence, dim=0)
        return GaussianMixture(weights, means, (covs + covs.mT) / 2, self.schedule)


def _as_matrix(op: Tensor | Callable[[Tensor], Tensor], d: int, device: torch.device) -> Tensor:
    """The dense matrix of a linear operator on :math:`\\mathbb{R}^d`, checked for linearity."""
    if isinstance(op, Tensor):
        a = op.to(device=device, dtype=_F64)
        if a.ndim != 2 or a.shape[1] != d:
            raise ValueError(
                f"the operator matrix must have shape (d_y, {d}), got {tuple(a.shape)}"
            )
        return a
    if not callable(op):
        raise TypeError(f"op must be a matrix or a linear operator, got {type(op).__name__}")
    eye = torch.eye(d, dtype=_F64, device=device)
    with torch.no_grad():
        a = op(eye)
        if a.ndim != 2 or a.shape[0] != d:
            raise ValueError(
                f"op must map (B, {d}) to (B, d_y), got output shape {tuple(a.shape)}"
            )
        a = a.to(_F64).T
        probe = torch.linspace(-1, 1, 2 * d, dtype=_F64, device=device).reshape(2, d)
        image = op(probe).to(_F64)
    if float((image - probe @ a.T).abs().max()) > 1e-6 * (1 + float(a.abs().max())):
        raise ValueError("op is not linear: posterior needs a linear operator")
    return a
