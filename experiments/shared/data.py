r"""The offline data sets of the shipped priors, with fixed train / held-out splits.

- :class:`Digits`: scikit-learn's ``load_digits`` (1797 images of 8x8 pixels, 17 grey
  levels, 10 classes). 20% of each class is held out (a fixed permutation per class).
  Images are upsampled to 16x16 (bilinear) and mapped to [-1, 1]: the U-Net needs three
  resolution levels (16, 8, 4) to have attention "at low resolution", and operators such as
  4x super-resolution or a 4x4 box need more than 8 pixels a side. Upsampling adds no
  information: the data's intrinsic dimension stays 64.
- :class:`Textures`: scikit-image's ``brick``, ``grass`` and ``gravel`` (512x512 grey), at
  half resolution (256x256, area average) so a crop sees several texture elements; the
  bottom quarter of each image is held out. Training draws random crops (with horizontal
  flips); the held-out set is a fixed grid of crops.

Both draw with an explicit generator and expose ``sample(n, generator) -> (x, label)``,
``evaluation() -> (x, label)`` (the whole split, or the crop grid), ``fit_set(generator)``
(the images baselines such as the Wiener filter are fitted on), ``shape`` and
``num_classes``. The natural-image prior's photographs are in
:mod:`experiments.shared.photographs`.
"""

from __future__ import annotations

import math

from functools import partial

import numpy as np
import torch

from torch import Tensor

import checks

from experiments.shared.photographs import Photographs, evenly_spaced, spaced_indices

__all__ = ["TEXTURES", "Digits", "Textures", "held_out", "tuning"]

TEXTURES = ("brick", "grass", "gravel")
SPLITS = ("train", "test")
TUNING_SPLITS = ("train", "validation")  #: the splits :func:`tuning` draws from


def _check_split(split: str, accepted: tuple[str, ...] = SPLITS) -> str:
    if split not in accepted:
        raise ValueError(f"split must be one of {accepted}, got {split!r}")
    return split


class Digits:
    """scikit-learn's digits at ``size`` x ``size`` in [-1, 1], one split.

    Arguments:
        split: ``train`` (80% of each class) or ``test`` (the other 20%).
        size: The side after bilinear upsampling (8 keeps the original).
    """

    num_classes = 10

    def __init__(self, split: str = "train", size: int = 16) -> None:
        from sklearn.datasets import load_digits

        _check_split(split)
        if size < 8 or size % 8:
            raise ValueError(f"size must be a multiple of 8, got {size}")
        data = load_digits()
        images = torch.from_numpy(data.images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
        labels = torch.from_numpy(data.target).long()
        rng = np.random.default_rng(0)
        held = np.zeros(len(labels), dtype=bool)
        for c in range(self.num_classes):
            members = np.flatnonzero(data.target == c)
            chosen = rng.permutation(members)[: math.ceil(0.2 * len(members))]
            held[chosen] = True
        keep = torch.from_numpy(held if split == "test" else ~held)
        images = images[keep]
        if size != 8:
            images = torch.nn.functional.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False
            )
        self.x = (images * 2 - 1).clamp(-1, 1)
        self.label = labels[keep]
        self.shape = (1, size, size)

    def __len__(self) -> int:
        return len(self.label)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` images drawn with replacement, and their labels."""
        index = torch.randint(len(self), (n,), generator=generator)
        return self.x[index], self.label[index]

    def evaluation(self) -> tuple[Tensor, Tensor]:
        """The whole split."""
        return self.x, self.label

    def fit_set(self, generator: torch.Generator) -> Tensor:
        """The images baselines are fitted on: the whole split."""
        return self.x


class Textures:
    """Crops of scikit-image's brick, grass and gravel textures in [-1, 1].

    Arguments:
        split: ``train`` (top three quarters of each image) or ``test`` (bottom quarter).
        crop: The crop side.
        scale: The images' downscaling factor before cropping (1/2 by default).
    """

    num_classes = len(TEXTURES)

    def __init__(self, split: str = "train", crop: int = 32, scale: float = 0.5) -> None:
        from skimage import data

        _check_split(split)
        images = []
        for name in TEXTURES:
            image = torch.from_numpy(getattr(data, name)().astype(np.float32) / 255.0)
            size = round(image.shape[0] * scale)
            image = torch.nn.functional.interpolate(
                image[None, None], size=(size, size), mode="area"
            )
            rows = image.shape[-2]
            cut = rows - rows // 4
            region = image[..., :cut, :] if split == "train" else image[..., cut:, :]
            images.append(region[0] * 2 - 1)
        if min(min(im.shape[-2:]) for im in images) < crop:
            raise ValueError(f"crop {crop} is larger than the {split} region")
        self.images = images
        self.crop = crop
        self.split = split
        self.shape = (1, crop, crop)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random crops (random class, position and horizontal flip)."""
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        crops = []
        for label in labels.tolist():
            image = self.images[label]
            h, w = image.shape[-2:]
            i = int(torch.randint(h - self.crop + 1, (), generator=generator))
            j = int(torch.randint(w - self.crop + 1, (), generator=generator))
            crop = image[:, i : i + self.crop, j : j + self.crop]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop = crop.flip(-1)
            crops.append(crop)
        return torch.stack(crops), labels

    def fit_set(self, generator: torch.Generator, n: int = 20000) -> Tensor:
        """The images baselines are fitted on: ``n`` random crops."""
        return self.sample(n, generator)[0]

    def evaluation(self, stride: int | None = None) -> tuple[Tensor, Tensor]:
        """A fixed grid of crops of every class (stride = half a crop by default)."""
        stride = stride or self.crop // 2
        crops, labels = [], []
        for label, image in enumerate(self.images):
            h, w = image.shape[-2:]
            for i in range(0, h - self.crop + 1, stride):
                for j in range(0, w - self.crop + 1, stride):
                    crops.append(image[:, i : i + self.crop, j : j + self.crop])
                    labels.append(label)
        return torch.stack(crops), torch.tensor(labels)


#: The held-out data of each shipped prior (``natural``: 128x128 crops of the held-out
#: photographs, :mod:`experiments.shared.photographs`).
DATA = {
    "digits": Digits,
    "textures": Textures,
    "natural": partial(Photographs, crop=128),
    "natural-flow": partial(Photographs, crop=128),  # the flow-matching twin: the same data
    "natural-latent": partial(Photographs, crop=128),  # the latent prior: the same data
}


def held_out(name: str, images: int) -> Tensor:
    """``images`` held-out images of the prior's data, evenly spaced over the split."""
    if name not in DATA:
        raise ValueError(f"prior must be one of {sorted(DATA)} (shipped), got {name!r}")
    return evenly_spaced(DATA[name]("test").evaluation()[0], images, "images").double()


def tuning(name: str, images: int, split: str = "train", scored: int = 16) -> Tensor:
    """``images`` images that settings are tuned on (:mod:`experiments.benchmarks.tune_methods`),
    never the held-out ones that are scored, evenly spaced (for the textures and photographs,
    over the split's grid of crops):

    - ``split="train"``: over the prior's training split. The prior was fitted to these
      images, so they flatter the methods, some more than others: on digits SR x4 at 25 and
      100 steps, deepinv's DPS scores 1.18 dB more on 12 of them than on 12 validation
      images, our tapered DPS 0.68 dB more (``docs/benchmarks.md``).
    - ``split="validation"``: over the held-out split less the ``scored`` images that
      :func:`held_out` gives the bench and the restore app at ``images=scored`` (other counts
      pick other images, which may overlap these)."""
    if name not in DATA:
        raise ValueError(f"prior must be one of {sorted(DATA)} (shipped), got {name!r}")
    if _check_split(split, TUNING_SPLITS) == "train":
        return evenly_spaced(DATA[name]("train").evaluation()[0], images, "images").double()
    x = DATA[name]("test").evaluation()[0]
    rest = torch.ones(len(x), dtype=torch.bool)
    scored = checks.integer(scored, "scored")
    rest[spaced_indices(len(x), scored, "scored")] = False  # the images of held_out(name, scored)
    where = f" ({int(rest.sum())} held-out images are not scored at scored={scored})"
    return evenly_spaced(x[rest], images, "images", where).double()
