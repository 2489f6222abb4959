r"""Classifier-free guidance and its multi-condition forms, as denoiser wrappers.

With a network trained with condition dropout, the guided prediction extrapolates from the
unconditional towards the conditional one,

.. math::
    \tilde x(x_t, c) = \hat x(x_t, \varnothing)
    + w \,(\hat x(x_t, c) - \hat x(x_t, \varnothing)),

which is the same combination of noise predictions (they are affine in :math:`\hat x` with
coefficients independent of the condition). ``scale`` :math:`w` follows diffusers'
convention: :math:`w = 1` is the plain conditional prediction, :math:`w = 0` the
unconditional one; the paper's :math:`w_{\text{paper}}` is :math:`w - 1`. All passes run as
one batched call of the wrapped denoiser (:math:`n` passes count :math:`n` network
evaluations per row).

Every form here is an affine combination :math:`\tilde x = \sum_j c_j \hat x(x_t, C_j)`
with :math:`\sum_j c_j = 1` of predictions under condition sets :math:`C_j`:

- :class:`ClassifierFree` (Ho & Salimans): :math:`C = (c, \varnothing)`, with two options
  applied to the fully conditioned prediction :math:`\hat x(x_t, c)`:

  - *rescale* :math:`\phi` (Lin et al., §3.4): in noise space, :math:`\epsilon_r =
    \tilde\epsilon \operatorname{std}(\epsilon_c) / \operatorname{std}(\tilde\epsilon)`
    per sample, then :math:`\phi \epsilon_r + (1 - \phi) \tilde\epsilon`, which undoes the
    over-exposure of large scales;
  - *interval* :math:`(\sigma_{lo}, \sigma_{hi}]` (Kynkäänniemi et al.): guidance only
    where the noise level :math:`\sigma_t / \alpha_t` lies in the interval, the
    conditional prediction alone elsewhere (one pass there).

- :class:`ComposableFree` (Liu et al.): :math:`\hat x(\varnothing) + \sum_i w_i (\hat
  x(c_i) - \hat x(\varnothing))` over fixed conditions :math:`c_i`; a negative
  :math:`w_i` negates its condition ("a 3 and not an 8").
- :class:`DualClassifierFree` (Brooks et al., InstructPix2Pix): two conditions with their
  own scales, :math:`\hat x(\varnothing, \varnothing) + s_1 (\hat x(c_1, \varnothing) -
  \hat x(\varnothing, \varnothing)) + s_2 (\hat x(c_1, c_2) - \hat x(c_1, \varnothing))`.

A condition is dropped by its *null* value: the label :math:`-1` for our class-conditional
priors (the default), or one given per keyword.

References:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022) https://arxiv.org/abs/2207.12598
    | Compositional Visual Generation with Composable Diffusion Models (Liu et al., 2022)
    | https://arxiv.org/abs/2206.01714
    | InstructPix2Pix: Learning to Follow Image Editing Instructions (Brooks et al., 2023)
    | https://arxiv.org/abs/2211.09800
    | Common Diffusion Noise Schedules and Sample Steps are Flawed (Lin et al., 2024)
    | https://arxiv.org/abs/2305.08891
    | Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in
    | Diffusion Models (Kynkäänniemi et al., 2024) https://arxiv.org/abs/2404.07724
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torch import Tensor

import checks

from priors import Denoiser, Wrapper
from priors.conditions import per_row
from priors.tweedie import append_dims, eps_from_x0, x0_from_eps

__all__ = ["ClassifierFree", "ComposableFree", "DualClassifierFree"]

#: The null value of our class-conditional priors' ``label``.
NULL_LABEL: Mapping[str, Any] = {"label": -1}


def _rows(value: Any, b: int, name: str, device: torch.device) -> Tensor:
    """A condition as a tensor with ``b`` rows (a scalar or one row is repeated)."""
    value = torch.as_tensor(value, device=device)
    if value.ndim == 0:
        return value.expand(b)
    if value.shape[0] == 1 and b != 1:
        return value.expand(b, *value.shape[1:])
    if value.shape[0] != b:
        raise ValueError(f"condition {name!r} has {value.shape[0]} rows, x_t has {b}")
    return value


def evaluate(
    prior: Denoiser,
    x_t: Tensor,
    t: Tensor,
    conditions: Sequence[Mapping[str, Any]],
    **common: Any,
) -> list[Tensor]:
    r"""The predictions :math:`\hat x(x_t, C_j)` for each condition set, in one batched call.

    Each set maps keywords to values (a scalar or one per row); every set must name the
    same keywords. ``common`` keywords are the same in every pass: a tensor with one row per
    row of ``x_t`` (a policy's state, say) is repeated with the batch, anything else goes
    unchanged."""
    b, n = x_t.shape[0], len(conditions)
    keys = set(conditions[0])
    if any(set(c) != keys for c in conditions):
        raise ValueError("every condition set must name the same keywords")
    t = t.expand(b) if t.ndim == 0 else t
    if n == 1:
        rows = {k: _rows(v, b, k, x_t.device) for k, v in conditions[0].items()}
        return [prior(x_t, t, **rows, **common)]
    batched = {
        k: torch.cat([_rows(c[k], b, k, x_t.device) for c in conditions]) for k in sorted(keys)
    }
    common = per_row(common, b, lambda v: torch.cat([v] * n))
    out = prior(torch.cat([x_t] * n), torch.cat([t] * n), **batched, **common)
    return list(out.split(b))


def _null(null: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, Any]:
    null = dict(NULL_LABEL if null is None else null)
    missing = [k for k in keys if k not in null]
    if missing:
        raise ValueError(f"no null value for the condition(s) {missing}; pass null={{...}}")
    return null


def _dropped(value: Any, null_value: Any, b: int, name: str, device: torch.device) -> Tensor:
    """The null value shaped like the condition ``value`` (rows of ``b``)."""
    value = _rows(value, b, name, device)
    null_value = torch.as_tensor(null_value, device=device, dtype=value.dtype)
    return (
        null_value.expand_as(value) if null_value.ndim == 0 else _rows(null_value, b, name, device)
    )


def requested(
    cond: Mapping[str, Any], key: str, b: int, device: torch.device
) -> tuple[Tensor, dict[str, Any]]:
    """The condition ``key`` of ``cond`` with ``b`` rows and the other keywords; refuses a
    missing condition and, for labels, a row without a class."""
    if cond.get(key) is None:
        raise ValueError(f"classifier-free guidance needs {key}= (the condition is missing)")
    rest = dict(cond)
    c = _rows(rest.pop(key), b, key, device)
    if key == "label" and bool((c < 0).any()):
        raise ValueError("classifier-free guidance needs a class for every row (label >= 0)")
    return c, rest


def both_passes(
    prior: Denoiser,
    x_t: Tensor,
    t: Tensor,
    key: str,
    c: Tensor,
    null: Any,
    cond: Mapping[str, Any],
) -> tuple[Tensor, Tensor]:
    r"""The conditional and unconditional predictions :math:`(\hat x_c, \hat x_\varnothing)` in
    one batched call (the condition ``key`` dropped to ``null`` for the second)."""
    dropped = _dropped(c, null, x_t.shape[0], key, x_t.device)
    conditional, unconditional = evaluate(prior, x_t, t, [{key: c}, {key: dropped}], **cond)
    return conditional, unconditional


class ClassifierFree(Wrapper):
    r"""Classifier-free guidance of a conditional prior.

    Arguments:
        prior: A conditional denoiser, e.g. a shipped class-conditional prior (``label``).
        scale: The guidance scale :math:`w` (1: conditional, 0: unconditional).
        rescale: :math:`\phi \in [0, 1]`, the CFG-rescale mix (0: off; Lin et al. suggest
            0.7).
        interval: :math:`(\sigma_{lo}, \sigma_{hi})`: guide only where
            :math:`\sigma_{lo} < \sigma_t / \alpha_t \le \sigma_{hi}` (``None``: always).
        key: The condition keyword (``label`` for our priors).
        null: The dropped value of ``key`` (default: label :math:`-1`).
    """

    def __init__(
        self,
        prior: Denoiser,
        scale: float,
        rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
        key: str = "label",
        null: Mapping[str, Any] | None = None,
    ) -> None:
        if key == "label" and not getattr(prior, "num_classes", 0):
            raise ValueError("classifier-free guidance on labels needs a class-conditional prior")
        super().__init__(prior)
        self.scale = checks.number(scale, "scale")
        self.rescale = checks.number(rescale, "rescale", low=0, high=1)
        if interval is not None:
            interval = checks.interval(interval, "interval", low=0, infinite=True)
        self.interval = interval
        self.key = key
        self.null = _null(null, [key])[key]

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        b = x_t.shape[0]
        c, cond = requested(cond, self.key, b, x_t.device)
        on = self._guided_rows(t, b, x_t.device)
        if self.scale == 1 or not bool(on.any()):  # the plain conditional prediction
            return self.prior(x_t, t, **{self.key: c}, **cond)
        conditional, unconditional = both_passes(self.prior, x_t, t, self.key, c, self.null, cond)
        guided = self.combine(x_t, t, conditional, unconditional)
        if self.rescale > 0:
            guided = self._rescaled(x_t, t, guided, conditional)
        return torch.where(append_dims(on, x_t.ndim), guided, conditional)

    def combine(
        self, x_t: Tensor, t: Tensor, conditional: Tensor, unconditional: Tensor
    ) -> Tensor:
        r"""The guided prediction from the two passes at ``(x_t, t)``: :math:`\hat x_\varnothing
        + w (\hat x_c - \hat x_\varnothing)` (guiders that reshape the update override this)."""
        return unconditional + self.scale * (conditional - unconditional)

    def _guided_rows(self, t: Tensor, b: int, device: torch.device) -> Tensor:
        """Which rows are guided: all, or those whose noise level lies in the interval."""
        if self.interval is None:
            return torch.ones(b, dtype=torch.bool, device=device)
        alpha_t, sigma_t = self.schedule(t)
        level = (sigma_t / alpha_t).reshape(-1).to(device).expand(b)
        lo, hi = self.interval
        return (level > lo) & (level <= hi)

    def _rescaled(self, x_t: Tensor, t: Tensor, guided: Tensor, conditional: Tensor) -> Tensor:
        alpha_t, sigma_t = self.schedule(t)
        alpha_t, sigma_t = alpha_t.to(x_t.dtype), sigma_t.to(x_t.dtype)
        eps_cfg = eps_from_x0(x_t, guided, alpha_t, sigma_t)
        eps_c = eps_from_x0(x_t, conditional, alpha_t, sigma_t)
        dims = tuple(range(1, x_t.ndim))
        ratio = eps_c.std(dim=dims, keepdim=True) / eps_cfg.std(dim=dims, keepdim=True).clamp(
            min=torch.finfo(x_t.dtype).tiny
        )
        eps = self.rescale * eps_cfg * ratio + (1 - self.rescale) * eps_cfg
        rescaled = x0_from_eps(x_t, eps, alpha_t, sigma_t)
        # at pure noise (alpha_t = 0) both noise estimates are x_t / sigma_t: nothing to rescale
        return torch.where(append_dims(alpha_t == 0, x_t.ndim), guided, rescaled)


class ComposableFree(Wrapper):
    r"""Composable diffusion: :math:`\hat x(\varnothing) + \sum_i w_i (\hat x(c_i) - \hat
    x(\varnothing))` with fixed conditions (:math:`n + 1` evaluations per row).

    Arguments:
        prior: A conditional denoiser.
        conditions: One mapping per component, e.g. ``[{"label": 3}, {"label": 8}]``.
        scales: :math:`w_i`, one per condition; negative to negate.
        null: The dropped value of each keyword (default: label :math:`-1`).
    """

    def __init__(
        self,
        prior: Denoiser,
        conditions: Sequence[Mapping[str, Any]],
        scales: Sequence[float],
        null: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(prior)
        conditions = [dict(c) for c in conditions]
        if not conditions or len(conditions) != len(scales):
            raise ValueError(
                f"give one scale per condition (at least one): {len(conditions)} conditions, "
                f"{len(scales)} scales"
            )
        keys = sorted(conditions[0])
        if not keys or any(sorted(c) != keys for c in conditions):
            raise ValueError("every condition must name the same (non-empty) keywords")
        if "label" in keys:
            classes = getattr(prior, "num_classes", 0)
            for c in conditions:
                label = torch.as_tensor(c["label"])
                if not classes or bool((label < 0).any()) or bool((label >= classes).any()):
                    raise ValueError(
                        f"label {label.tolist()} is not a class of the prior "
                        f"(num_classes = {classes})"
                    )
        self.conditions = conditions
        self.scales = [checks.number(w, "scales") for w in scales]
        self.null = {k: v for k, v in _null(null, keys).items() if k in keys}

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        clash = set(cond) & set(self.null)
        if clash:
            raise ValueError(f"the conditions {sorted(clash)} are fixed at construction")
        b = x_t.shape[0]
        dropped = {
            k: _dropped(self.conditions[0][k], v, b, k, x_t.device) for k, v in self.null.items()
        }
        unconditional, *each = evaluate(self.prior, x_t, t, [dropped, *self.conditions], **cond)
        out = unconditional.clone()
        for w, x_c in zip(self.scales, each, strict=True):
            out = out + w * (x_c - unconditional)
        return out


class DualClassifierFree(Wrapper):
    r"""Two conditions with their own scales (InstructPix2Pix): 3 evaluations per row.

    .. math:: \hat x(\varnothing, \varnothing)
        + s_1 (\hat x(c_1, \varnothing) - \hat x(\varnothing, \varnothing))
        + s_2 (\hat x(c_1, c_2) - \hat x(c_1, \varnothing))

    Arguments:
        prior: A denoiser taking both keywords.
        first, second: The keywords of :math:`c_1` (InstructPix2Pix: the input image) and
            :math:`c_2` (the instruction).
        first_scale, second_scale: :math:`s_1, s_2`.
        null: The dropped value of each keyword.
    """

    def __init__(
        self,
        prior: Denoiser,
        first: str,
        second: str,
        first_scale: float,
        second_scale: float,
        null: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(prior)
        if first == second:
            raise ValueError("the two conditions must be different keywords")
        self.keys = (first, second)
        self.scales = (
            checks.number(first_scale, "first_scale"),
            checks.number(second_scale, "second_scale"),
        )
        null = _null(null, self.keys)
        self.null = {k: null[k] for k in self.keys}

    def forward(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        first, second = self.keys
        missing = [k for k in self.keys if cond.get(k) is None]
        if missing:
            raise ValueError(f"DualClassifierFree needs {missing} (the condition is missing)")
        b = x_t.shape[0]
        c1 = _rows(cond.pop(first), b, first, x_t.device)
        c2 = _rows(cond.pop(second), b, second, x_t.device)
        n1 = _dropped(c1, self.null[first], b, first, x_t.device)
        n2 = _dropped(c2, self.null[second], b, second, x_t.device)
        none, only_first, both = evaluate(
            self.prior,
            x_t,
            t,
            [{first: n1, second: n2}, {first: c1, second: n2}, {first: c1, second: c2}],
            **cond,
        )
        s1, s2 = self.scales
        return none + s1 * (only_first - none) + s2 * (both - only_first)
