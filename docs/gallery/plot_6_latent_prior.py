r"""
A latent prior: an autoencoder, a prior on its latents, pixel measurements
==========================================================================

A :class:`priors.LatentPrior` pairs a :class:`priors.Autoencoder` with a denoiser of its
latents. Here both are fitted in a second on scikit-learn's 8x8 digits: the autoencoder is
PCA to 16 latents (:math:`D(z) = W z + \mu`, :math:`E(x) = W^\top (x - \mu)`), and the latent
prior a 10-component Gaussian mixture fitted to the training digits' latents, whose denoiser
is exact (:class:`priors.GaussianMixture`). Held-out digits are measured in pixel space
(their left halves hidden, :math:`\sigma_y = 0.05`) and restored by the latent methods, which
measure :math:`A(D(z))` on the latents (:class:`guided.Decoded`); the cost counts decoder
and encoder passes beside the network's.
"""

import matplotlib.pyplot as plt
import torch

from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture as FitMixture

import guided
import operators
import priors


class PCAAutoencoder(priors.Autoencoder):
    """PCA as an autoencoder of flat images: D(z) = W z + mu, E(x) = W^T (x - mu)."""

    def __init__(self, pca: PCA) -> None:
        components = torch.tensor(pca.components_, dtype=torch.float64)  # (k, d)
        super().__init__((components.shape[1],), (components.shape[0],))
        self.register_buffer("w", components.T)
        self.register_buffer("mu", torch.tensor(pca.mean_, dtype=torch.float64))

    def apply_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) @ self.w

    def apply_decoder(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.w.T + self.mu


digits = load_digits().data / 8 - 1  # (1797, 64) in [-1, 1]
train, held_out = digits[:1500], digits[1500:]
pca = PCA(16, random_state=0).fit(train)
fit = FitMixture(10, random_state=0).fit(pca.transform(train))
latent = priors.GaussianMixture(
    torch.tensor(fit.weights_), torch.tensor(fit.means_), torch.tensor(fit.covariances_),
    priors.CosineSchedule(),
)  # fmt: skip
prior = priors.LatentPrior(PCAAutoencoder(pca), latent)

# %%
# The encode-decode ceiling: PCA to 16 latents keeps most of a held-out digit.
truth = torch.tensor(held_out[:4], dtype=torch.float64)
ceiling = prior.decode(prior.encode(truth))


def psnr(x: torch.Tensor) -> float:
    mse = (x.clamp(-1, 1) - truth).pow(2).mean(1)
    return float((10 * torch.log10(4 / mse)).mean())


print(f"encode-decode PSNR: {psnr(ceiling):.2f} dB")

# %%
# Measure the digits' right halves and restore with the latent methods (100 steps; DAPS 50
# annealing steps on its own grid). The latent prior is a Gaussian mixture and the decoder
# linear, so the exact posterior is known; its mean (the least-squares estimate given the
# measurement, under this prior) is printed and drawn beside them.
mask = torch.zeros(8, 8, dtype=torch.float64)
mask[:, 4:] = 1
op = operators.Inpainting(mask.flatten())
g = torch.Generator().manual_seed(0)
y = op(truth + 0.05 * torch.randn(truth.shape, generator=g, dtype=torch.float64))
z_T = guided.initial_noise(prior.schedule, (4, 16), g, dtype=torch.float64)
ts = guided.time_grid(100)
annealing = guided.time_grid(50, "karras", schedule=prior.schedule, sigma_min=0.1)
results = {}
for name, method, grid in (
    ("latent DPS", guided.LatentDPS(op, y, 0.05, 10.0), ts),
    ("PSLD", guided.PSLD(op, y, 0.05, 10.0, gamma=1.0), ts),
    ("ReSample", guided.ReSample(op, y, 0.05, every=5, lr=0.05), ts),
    ("latent DAPS", guided.LatentDAPS(op, y, 0.05, step_size=1e-4, langevin_steps=20), annealing),
):
    cost = priors.Cost()
    z = method(prior, z_T, grid, generator=torch.Generator().manual_seed(1), cost=cost)
    results[name] = prior.decode(z)
    print(
        f"{name}: PSNR {psnr(results[name]):.2f} dB, per sample {cost.nfe:.0f} NFE, "
        f"{cost.vjp:.0f} VJP, {cost.decoder:.0f} decoder passes and {cost.decoder_vjp:.0f} "
        f"VJPs, {cost.encoder:.0f} encoder passes"
    )

observed = mask.flatten() > 0
a = torch.diag(mask.flatten())[observed] @ prior.autoencoder.w  # A W on the observed pixels
offset = prior.autoencoder.mu[observed]
exact = [latent.posterior(a, y[i, observed] - offset, 0.05) for i in range(4)]
mean = prior.decode(torch.stack([p.weights @ p.means for p in exact]))
print(f"exact posterior mean: PSNR {psnr(mean):.2f} dB")

# %%
# Truth, measurement, the encode-decode ceiling, the restorations and the exact posterior
# mean:
rows = {"truth": truth, "measured": op.pinv(y), "ceiling": ceiling, **results, "exact mean": mean}
fig, axes = plt.subplots(len(rows), 4, figsize=(4, len(rows)))
for i, (name, images) in enumerate(rows.items()):
    for j in range(4):
        axes[i, j].imshow(images[j].reshape(8, 8).numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[i, j].set_axis_off()
    axes[i, 0].set_title(name, fontsize=7, loc="left")
fig.tight_layout()
