r"""
Restore a photograph
====================

The shipped natural-image prior (grey levels, trained on the photographs inside
scikit-image and scikit-learn; ``astronaut`` was held out) is fully convolutional:
:class:`priors.Tiled` runs it on an image of any size, in one pass or in blended tiles. Here
a 128x128 crop of the astronaut is measured by 4x super-resolution (each low-resolution
pixel the mean of a 4x4 block, noise :math:`\sigma_y = 0.01`) and restored by DDRM in 50
steps, beside bicubic upsampling of the same measurement. The prior is small (54 minutes of
training on two CPU cores) and still weaker than BM3D as a denoiser (see
:doc:`../benchmarks`); the sample shows it: sharper than bicubic, with invented texture.
"""

import matplotlib.pyplot as plt
import torch

from skimage import data

import guided
import operators
import priors

prior = priors.Tiled(priors.load("natural"))  # any size; images in [-1, 1]
rgb = torch.from_numpy(data.astronaut()[20:148, 160:288]).double() / 255
x = (rgb @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64))[None, None] * 2 - 1
op = operators.AveragePoolSR(x.shape[1:], 4)
g = torch.Generator().manual_seed(0)
y = operators.GaussianNoise(0.01)(op(x), g)
x_T = guided.initial_noise(prior.schedule, (1, *x.shape[1:]), g)
restored = guided.DDRM(op, y, sigma_y=0.01)(prior, x_T, guided.time_grid(50), generator=g)

# %%
# The truth, the measurement, bicubic upsampling and DDRM's sample.

bicubic = torch.nn.functional.interpolate(y, scale_factor=4, mode="bicubic").clamp(-1, 1)
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
titles = ("truth", "measurement (32x32)", "bicubic", "DDRM")
for ax, image, title in zip(axes, (x, y, bicubic, restored), titles, strict=True):
    ax.imshow(image[0, 0].clamp(-1, 1), cmap="gray", vmin=-1, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
