r"""Classifier guidance.

A noise-conditional classifier :math:`p_\phi(c \mid x_t, t)` trained on noisy inputs gives the
likelihood score of a class directly,

.. math:: g = s \, \nabla_{x_t} \log p_\phi(c \mid x_t, t),

so that by Tweedie's formula the guided denoiser samples :math:`p_t(x_t) p_\phi(c \mid
x_t)^s` (Dhariwal & Nichol, Alg. 1 and 2: the mean shift :math:`s \Sigma \nabla \log
p_\phi` of the ancestral step is the same correction). Scales above 1 sharpen the class
distribution. As a :class:`~guided.guidance.Guidance` term it works with every sampler and
adds to measurement terms (inpaint a digit towards a class).

The gradient is taken through the classifier only, not through the prior's network, so the
term costs one classifier forward and backward per call and no VJP of the prior (the
:class:`~priors.Cost` counts the prior's network only). The classifier must have been
trained on the prior's noise schedule; this is checked at every call.

References:
    | Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)
    | https://arxiv.org/abs/2105.05233
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from torch import Tensor, nn

import checks

from guided.guidance import Guidance
from priors import Schedule

__all__ = ["ClassifierGuidance"]


def check_classifier(classifier: nn.Module) -> int:
    """Validates a noise-conditional classifier; returns its number of classes."""
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    num_classes = getattr(classifier, "num_classes", None)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError("the classifier must state num_classes (>= 2)")
    if getattr(classifier, "schedule", None) is None:
        raise ValueError(
            "guidance needs a noise-conditional classifier p(c | x_t, t); this one classifies "
            "clean images (load it with priors.load_classifier(name, noisy=True))"
        )
    return num_classes


def check_classes(classes: Tensor | int | list[int], num_classes: int, name: str) -> Tensor:
    """Validates class indices: an int, a list or a long tensor with entries in
    :math:`[0, K)`; returns a long tensor (0-dim for one class for all rows)."""
    if isinstance(classes, bool | float):
        raise TypeError(f"{name} must hold integer classes, got {classes!r}")
    classes = torch.as_tensor(classes)
    if classes.dtype.is_floating_point or classes.dtype == torch.bool or classes.is_complex():
        raise TypeError(f"{name} must hold integer classes, got {classes.dtype}")
    if classes.ndim > 1 or classes.numel() == 0:
        raise ValueError(f"{name} must be one class or a 1-D tensor, got {tuple(classes.shape)}")
    if bool((classes < 0).any()) or bool((classes >= num_classes).any()):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) (the classifier's classes), got "
            f"{classes.tolist()}"
        )
    return classes.long()


def check_schedule(
    classifier: nn.Module, t: Tensor, schedule: Schedule, what: str = "classifier"
) -> None:
    """Raises when a noise-aware network's schedule (a classifier's, a critic's: ``what``)
    and the prior's disagree at ``t``."""
    if classifier.schedule is schedule:  # trained on the prior's own schedule object
        return
    ours, theirs = schedule(t), classifier.schedule(t)
    for a, b in zip(ours, theirs, strict=True):
        if not torch.allclose(a.double().cpu(), b.double().cpu(), rtol=1e-4, atol=1e-6):
            raise ValueError(
                f"the {what} was trained on {type(classifier.schedule).__name__}, which "
                f"disagrees with the prior's {type(schedule).__name__} at t = "
                f"{float(t.flatten()[0]):.4g}"
            )


def log_prob_gradient(
    classifier: nn.Module,
    x_t: Tensor,
    t: Tensor,
    schedule: Schedule,
    log_prob: Callable[[Tensor], Tensor],
) -> Tensor:
    r""":math:`\nabla_{x_t} \ell(\text{logits}(x_t, t))` per row, for ``log_prob`` mapping
    logits :math:`(B, K)` to per-row values :math:`(B,)`; the classifier's image shape must
    match ``x_t``'s."""
    in_channels = getattr(getattr(classifier, "encoder", None), "in_channels", None)
    if in_channels is not None and (x_t.ndim != 4 or x_t.shape[1] != in_channels):
        raise ValueError(
            f"the classifier takes images (B, {in_channels}, H, W); the prior gives "
            f"{tuple(x_t.shape)}"
        )
    check_schedule(classifier, t, schedule)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        values = log_prob(classifier(x, t).double())
        (g,) = torch.autograd.grad(values.sum(), x)
    return g.to(x_t.dtype)


class ClassifierGuidance(Guidance):
    r"""Classifier guidance towards class ``label``.

    Arguments:
        classifier: A noise-conditional classifier (``num_classes``, ``schedule``), e.g.
            ``priors.load_classifier("digits", noisy=True)``; logits :math:`(B, K)`.
        label: The requested class: an int for all rows or a long tensor :math:`(B,)`.
        scale: The guidance scale :math:`s` (0: no guidance; 1: the Bayes posterior).
    """

    uses_vjp: ClassVar[bool] = False

    def __init__(self, classifier: nn.Module, label: Tensor | int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_classifier(classifier)
        self.classifier = classifier
        self.label = check_classes(label, self.num_classes, "label")
        self.scale = checks.number(scale, "scale")

    def forward(self, x_t: Tensor, t: Tensor, x_hat: Tensor, schedule: Schedule) -> Tensor:
        b = x_t.shape[0]
        label = self.label.to(x_t.device)
        if label.ndim == 1 and label.shape[0] != b:
            raise ValueError(f"label has {label.shape[0]} rows, x_t has {b}")
        label = label.expand(b)
        rows = torch.arange(b, device=x_t.device)

        def log_prob(logits: Tensor) -> Tensor:
            return torch.log_softmax(logits, dim=-1)[rows, label]

        return self.scale * log_prob_gradient(self.classifier, x_t, t, schedule, log_prob)
