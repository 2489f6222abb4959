"""Scores of the apps: PSNR and SSIM through deepinv's metrics on :math:`[0, 1]` images (ours
live in :math:`[-1, 1]`), LPIPS from a backbone file the user has, the RMS of a measurement
residual, and the SI-SDR of separated sources (torchmetrics', after the best permutation).

FID is not offered: it needs Inception weights that cannot be fetched here, and on the few
images a restoration run scores its estimate is dominated by its small-sample bias."""

from __future__ import annotations

import math

from pathlib import Path

import torch

from torch import Tensor

import operators

__all__ = [
    "LPIPS", "non_finite", "paired", "psnr", "residual", "scores", "si_sdr", "ssim", "to01",
]  # fmt: skip


def to01(x: Tensor) -> Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: Tensor, truth: Tensor) -> Tensor:
    """Per-image PSNR (dB) on [0, 1] images (deepinv)."""
    import deepinv

    return deepinv.metric.PSNR()(to01(x), to01(truth))


def ssim(x: Tensor, truth: Tensor) -> Tensor:
    """Per-image SSIM on [0, 1] images (deepinv)."""
    import deepinv

    return deepinv.metric.SSIM()(to01(x), to01(truth))


def scores(x: Tensor, truth: Tensor) -> tuple[float, float]:
    """Mean PSNR and SSIM of restorations ``x`` (clamped to the data range [-1, 1])."""
    x, truth = x.double().clamp(-1, 1), truth.double()
    return float(psnr(x, truth).mean()), float(ssim(x, truth).mean())


def non_finite(x: Tensor) -> str | None:
    """Why restorations ``x`` cannot be scored: a message when any value is NaN or infinite
    (a run that diverged without raising), else None. Clamping would hide it: +inf clamps to
    the data range and scores as a bright pixel."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = int(bad.flatten(1).any(1).sum())
        return f"non-finite output in {rows} of {x.shape[0]} rows"
    return None


def paired(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean of the per-image differences ``a - b`` (two scores of the same images) and the
    half-width of its 95% interval, 1.96 standard errors (NaN for a single image)."""
    d = (a - b).double()
    half = 1.96 * float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return float(d.mean()), half


def residual(op: operators.Operator, x: Tensor, y: Tensor) -> Tensor:
    """Per-row RMS of ``A x - y`` over the measured entries."""
    r = (op(x.double()) - y.double()).flatten(1)
    if isinstance(op, operators.Inpainting):
        r = r[:, op.mask.expand(op.out_shape).flatten() > 0]
    return r.pow(2).mean(1).sqrt()


class LPIPS:
    """LPIPS with AlexNet features (Zhang et al., "The unreasonable effectiveness of deep
    features as a perceptual metric", CVPR 2018), lower is closer; per image, on our
    :math:`[-1, 1]` images (grey ones repeated to three channels).

    The metric's linear layers ship inside torchmetrics (``lpips_models/alex.pth``, which
    deepinv's ``LPIPS`` also uses); its AlexNet backbone is torchvision's ImageNet weights,
    which torchvision would download. Here they are read from ``backbone``, a file the user
    already has (torchvision's ``alexnet-owt-7be5be79.pth``, a state dict read with
    ``weights_only=True``), so nothing is fetched. Its keys, shapes and values are checked
    before use.
    """

    def __init__(self, backbone: str | Path) -> None:
        from torchmetrics.functional.image.lpips import _LPIPS
        from torchvision.models import alexnet

        from priors.adapters import read_state
        from priors.weights import load_state_strict

        path = Path(backbone)
        if not path.is_file():
            raise FileNotFoundError(
                f"lpips: no backbone file {path} (torchvision's AlexNet state dict, "
                "alexnet-owt-7be5be79.pth)"
            )
        state = read_state(path)
        reference = alexnet(weights=None)
        load_state_strict(reference, state, path)
        self.network = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
        for part in self.network.net.children():  # slices of AlexNet's features, by index
            for index, layer in part.named_children():
                layer.load_state_dict(reference.features[int(index)].state_dict())
        self.network.requires_grad_(False)

    def __call__(self, x: Tensor, truth: Tensor) -> Tensor:
        """Per-image LPIPS between ``x`` and ``truth`` :math:`(B, C, H, W)`, C = 1 or 3."""
        if x.shape != truth.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"lpips takes two (B, 1 or 3, H, W) batches of one shape, got "
                f"{tuple(x.shape)} and {tuple(truth.shape)}"
            )
        if min(x.shape[-2:]) < 31:
            raise ValueError(
                f"lpips needs images of at least 31x31 (AlexNet's strides and pooling), got "
                f"{tuple(x.shape[-2:])}"
            )
        a, b = (v.float().clamp(-1, 1).expand(-1, 3, -1, -1) for v in (x, truth))
        with torch.no_grad():
            return self.network(a, b).flatten()


def si_sdr(estimates: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    r"""The scale-invariant signal-to-distortion ratio (dB; Le Roux et al., ICASSP 2019,
    zero-mean, through torchmetrics) of each estimated source :math:`(B, K, T)` against its
    target, the sources of each row put in the order that maximises their mean: the scores
    :math:`(B, K)` and the order (row ``order[b, k]`` of the estimates is matched to target
    :math:`k`). A mixture given as every source's estimate (the same signal :math:`K` times)
    scores the baseline of an SI-SDR improvement."""
    from torchmetrics.functional.audio import (
        permutation_invariant_training,
        pit_permutate,
        scale_invariant_signal_distortion_ratio,
    )

    if estimates.ndim != 3 or estimates.shape != targets.shape:
        raise ValueError(
            f"estimates and targets must both be (B, K, T), got {tuple(estimates.shape)} and "
            f"{tuple(targets.shape)}"
        )
    for name, value in (("estimates", estimates), ("targets", targets)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} has NaN or infinite values")
    estimates, targets = estimates.double(), targets.double()
    _, order = permutation_invariant_training(
        estimates, targets, scale_invariant_signal_distortion_ratio, zero_mean=True
    )
    ordered = pit_permutate(estimates, order)
    return scale_invariant_signal_distortion_ratio(ordered, targets, zero_mean=True), order
