r"""The photographs that ship inside scikit-image and scikit-learn, as the natural-image
prior's data, with a fixed split by photograph.

**Held out completely**: ``astronaut``, ``coffee`` (scikit-image) and ``china``
(scikit-learn). No crop of them is drawn for training or for tuning anything; the restoration
tables report on them. **Training**: every other photograph in :data:`TRAINING` (seventeen
images, among them a stereo pair, three textures and four micrographs); their sources and
licences, as the two libraries state them, are listed there and copied into the prior's card.

Photographs are used in grey levels: colour ones are reduced to their luma
:math:`Y = 0.299 R + 0.587 G + 0.114 B` (ITU-R BT.601, the :math:`Y` of JPEG's YCbCr), so
that a colour image can be restored by its luma and chroma, or channel by channel, with the
one grey-level prior. Values are mapped from [0, 1] to [-1, 1].

Augmentation suited to photographs: each training crop is drawn from one photograph (chosen
uniformly, so the large retina image does not dominate), at a random scale
:math:`s \in [s_{\min}, 1]` (a region of side ``crop / s`` area-averaged down to ``crop``: the
same structures at several sizes, and less noise and JPEG artefact than at full size), and
flipped left-right with probability 1/2. There are no vertical flips or rotations: skies are
above and shadows below in photographs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from torch import Tensor

__all__ = [
    "HELD_OUT",
    "TRAINING",
    "Photograph",
    "Photographs",
    "evenly_spaced",
    "grid_crops",
    "luma",
    "photograph",
]

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Photograph:
    """One photograph: its name, where it comes from, and its licence as stated there."""

    name: str
    source: str
    licence: str


TRAINING = (
    Photograph("camera", "scikit-image", "CC0 (Lav Varshney)"),
    Photograph("coins", "scikit-image", "no known copyright restrictions (Brooklyn Museum)"),
    Photograph("moon", "scikit-image", "not stated in scikit-image's docstring"),
    Photograph("page", "scikit-image", "not stated in scikit-image's docstring"),
    Photograph("text", "scikit-image", "public domain (Wikipedia, Corner.png)"),
    Photograph("clock", "scikit-image", "public domain (Stefan van der Walt)"),
    Photograph("chelsea", "scikit-image", "CC0 (Stefan van der Walt)"),
    Photograph("rocket", "scikit-image", "public domain (SpaceX)"),
    Photograph("hubble_deep_field", "scikit-image", "public domain (NASA)"),
    Photograph("immunohistochemistry", "scikit-image", "no known copyright restrictions (CMMI)"),
    Photograph("retina", "scikit-image", "CC0 1.0 (Mikael Häggström, Wikimedia)"),
    Photograph("cell", "scikit-image", "CC0"),
    Photograph("motorcycle_left", "scikit-image", "Middlebury 2014 stereo benchmark (not stated)"),
    Photograph(
        "motorcycle_right", "scikit-image", "Middlebury 2014 stereo benchmark (not stated)"
    ),
    Photograph("brick", "scikit-image", "CC0 (CC0Textures)"),
    Photograph("grass", "scikit-image", "CC0 (DeviantArt, linolafett)"),
    Photograph("gravel", "scikit-image", "CC0 (CC0Textures)"),
    Photograph("flower", "scikit-learn", "CC BY 2.0 (vultilion, Flickr)"),
)

HELD_OUT = (
    Photograph("astronaut", "scikit-image", "public domain (NASA)"),
    Photograph("coffee", "scikit-image", "CC0 (Rachel Michetti)"),
    Photograph("china", "scikit-learn", "CC BY 2.0 (danielbuechele, Flickr)"),
)

SPLITS = {"train": TRAINING, "test": HELD_OUT}


def luma(rgb: Tensor) -> Tensor:
    """The BT.601 luma of images :math:`(\\dots, 3, H, W)`, keeping the channel axis."""
    if rgb.shape[-3] != 3:
        raise ValueError(f"rgb must have 3 channels on axis -3, got shape {tuple(rgb.shape)}")
    weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * weights).sum(-3, keepdim=True)


def grid_crops(image: Tensor, side: int, stride: int | None = None) -> Tensor:
    """The crops of side ``side`` of ``image`` :math:`(C, H, W)` on a grid of step
    ``stride`` (one crop by default), row by row, :math:`(N, C, side, side)`."""
    stride = stride or side
    h, w = image.shape[-2:]
    return torch.stack(
        [
            image[:, i : i + side, j : j + side]
            for i in range(0, h - side + 1, stride)
            for j in range(0, w - side + 1, stride)
        ]
    )


def spaced_indices(n: int, count: int, name: str, where: str = "") -> Tensor:
    """The indices of ``count`` of ``n`` rows evenly spaced from the first to the last;
    ``count`` (the setting ``name``) must lie in [1, n]."""
    if not 1 <= count <= n:
        raise ValueError(f"{name} must lie in [1, {n}]{where}, got {count}")
    return torch.linspace(0, n - 1, count).round().long()


def evenly_spaced(x: Tensor, count: int, name: str, where: str = "") -> Tensor:
    """``count`` rows of ``x`` evenly spaced from the first to the last
    (:func:`spaced_indices`)."""
    return x[spaced_indices(len(x), count, name, where)]


@cache
def _raw(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


def photograph(name: str, colour: bool = False) -> Tensor:
    """A shipped photograph in [0, 1], :math:`(C, H, W)` float32: its luma (``C = 1``), or
    with ``colour`` its RGB channels (``C = 3``; grey photographs are refused)."""
    known = {p.name for p in TRAINING + HELD_OUT}
    if name not in known:
        raise ValueError(f"photograph must be one of {sorted(known)}, got {name!r}")
    image = torch.from_numpy(np.array(_raw(name))).float() / 255.0  # a copy: cached
    if image.ndim == 2:
        if colour:
            raise ValueError(f"photograph {name!r} has no colour")
        return image[None]
    image = image[..., :3].permute(2, 0, 1)
    return image if colour else luma(image)


class Photographs:
    """Grey-level crops of the shipped photographs in [-1, 1], one split.

    Arguments:
        split: ``train`` (the photographs of :data:`TRAINING`, random crops) or ``test``
            (the held-out ones, a fixed grid of crops).
        crop: The crop side.
        min_scale: The smallest scale :math:`s_{\\min}` of the training crops.
    """

    num_classes = 0

    def __init__(self, split: str = "train", crop: int = 64, min_scale: float = 0.5) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if crop < 2:
            raise ValueError(f"crop must be at least 2, got {crop}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        self.split, self.crop, self.min_scale = split, crop, float(min_scale)
        self.names = [p.name for p in SPLITS[split]]
        self.images = [photograph(name) * 2 - 1 for name in self.names]
        small = [
            n for n, im in zip(self.names, self.images, strict=True) if min(im.shape[-2:]) < crop
        ]
        if small:
            raise ValueError(f"crop {crop} is larger than the photographs {small}")
        self.shape = (1, crop, crop)

    def provenance(self) -> str:
        """A markdown table of the training and held-out photographs, their sources and
        licences (for a weight file's card)."""
        lines = ["| photograph | split | source | licence (as the source states it) |"]
        lines.append("|---|---|---|---|")
        for split, photographs in (("train", TRAINING), ("held out", HELD_OUT)):
            lines += [f"| {p.name} | {split} | {p.source} | {p.licence} |" for p in photographs]
        return "\n".join(lines) + "\n"

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random crops (photograph, scale, position, flip) and zero labels."""
        crops = []
        for _ in range(n):
            image = self.images[int(torch.randint(len(self.images), (), generator=generator))]
            h, w = image.shape[-2:]
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            side = round(self.crop / (self.min_scale + u * (1 - self.min_scale)))
            side = min(side, h, w)
            i = int(torch.randint(h - side + 1, (), generator=generator))
            j = int(torch.randint(w - side + 1, (), generator=generator))
            crop = image[:, i : i + side, j : j + side]
            if side != self.crop:
                crop = torch.nn.functional.interpolate(
                    crop[None], size=(self.crop, self.crop), mode="area"
                )[0]
            if bool(torch.rand((), generator=generator) < 0.5):
                crop = crop.flip(-1)
            crops.append(crop)
        return torch.stack(crops), torch.zeros(n, dtype=torch.long)

    def fit_set(self, generator: torch.Generator, n: int = 4000) -> Tensor:
        """The images baselines are fitted on: ``n`` random training-style crops."""
        return self.sample(n, generator)[0]

    def evaluation(self, stride: int | None = None) -> tuple[Tensor, Tensor]:
        """A fixed grid of crops of every photograph of the split at full scale (stride = one
        crop by default), and zero labels."""
        x = torch.cat([grid_crops(image, self.crop, stride) for image in self.images])
        return x, torch.zeros(len(x), dtype=torch.long)
