r"""
A projection: a hard constraint after every step
================================================

A :class:`guided.Projection` corrects the state after each step of any sampler. RePaint's
replacement copies the noised measurement into the observed part of :math:`x_s`; the same
idea holds for any linear measurement with orthonormal rows. Here the measurement is an
image's mean intensity :math:`m = \bar x` (a known total amount of ink), and after each
step the state's mean is replaced by that of :math:`\alpha_s x + \sigma_s \epsilon`, the
clean image noised to time :math:`s`:

.. math:: x_s \leftarrow x_s - \bar x_s + \alpha_s m + \sigma_s \bar\epsilon, \qquad
    \bar\epsilon \sim \mathcal{N}(0, 1 / n).

At :math:`s = 0` the constraint holds exactly, whatever the sampler; in between, the noise
keeps the state's statistics those of the noised data.
"""

import matplotlib.pyplot as plt
import torch

import guided
import priors


class KnownMean(guided.Projection):
    """Replaces each image's mean by the noised known mean ``m`` (shape ``(B,)``)."""

    def __init__(self, m: torch.Tensor) -> None:
        self.m = m

    def __call__(
        self,
        x_s: torch.Tensor,
        s: torch.Tensor,
        schedule: priors.Schedule,
        generator: priors.GeneratorLike = None,
    ) -> torch.Tensor:
        alpha_s, sigma_s = (float(c) for c in schedule(s))
        n = x_s[0].numel()
        eps = priors.randn((x_s.shape[0],), generator, dtype=x_s.dtype) / n**0.5
        target = alpha_s * self.m.to(x_s.dtype) + sigma_s * eps
        current = x_s.flatten(1).mean(1)
        return x_s + (target - current).view(-1, *[1] * (x_s.ndim - 1))


prior = priors.load("digits")
g = torch.Generator().manual_seed(0)
x_T = guided.initial_noise(prior.schedule, (8, *prior.shape), g)
ts = guided.time_grid(30)
label = torch.full((8,), 8)
free = guided.DDPM()(prior, x_T, ts, generator=g, label=label)

# %%
# Ask for eights with less ink and with more ink than the prior draws (background is -1):
rows = {"prior": free}
for name, shift in (("less ink", -0.15), ("more ink", 0.15)):
    m = free.flatten(1).mean(1) + shift
    x = guided.DDPM()(prior, x_T, ts, projection=KnownMean(m), generator=g, label=label)
    torch.testing.assert_close(x.flatten(1).mean(1), m.to(x.dtype), atol=1e-5, rtol=0)
    rows[name] = x
fig, axes = plt.subplots(len(rows), 8, figsize=(8, 3.2))
for row, (name, x) in zip(axes, rows.items(), strict=True):
    for ax, image in zip(row, x.clamp(-1, 1), strict=True):
        ax.imshow(image[0], cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    row[0].set_title(name, fontsize=8, loc="left")
fig.tight_layout()
