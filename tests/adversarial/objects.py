"""Small objects the adversarial tables build their cases from."""

import torch

import operators
import priors

F64 = torch.float64


def gaussian_prior(d: int = 4) -> priors.GaussianMixture:
    """A standard Gaussian prior on R^d (exact denoiser)."""
    return priors.GaussianMixture(
        torch.ones(1, dtype=F64), torch.zeros(1, d, dtype=F64), torch.eye(d, dtype=F64)[None],
        priors.LinearSchedule(),
    )  # fmt: skip


def mask() -> operators.Inpainting:
    """Inpainting on R^4, coordinate 1 hidden (an SVD operator)."""
    return operators.Inpainting(torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64))


def measurement() -> torch.Tensor:
    return torch.tensor([[0.5, 0.0, -0.2, 0.1]], dtype=F64)


def image_op() -> operators.CircularBlur:
    return operators.CircularBlur(operators.gaussian_kernel(1.0, size=3), (1, 8, 8))
