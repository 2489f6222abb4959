r"""A user's images in and restored images out, as files.

:func:`read_images` reads a PNG, JPEG or TIFF file, or every such file of a folder (sorted
by name), as images in :math:`[-1, 1]` of shape :math:`(N, C, H, W)` (``C`` = 1 for
grayscale, 3 for colour; an alpha channel is dropped; 8- and 16-bit files are scaled by
their range). All images of a folder must share one size and one number of channels.
:func:`write_png` writes images back (8-bit, values clipped to :math:`[-1, 1]`), through the
package's atomic writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torch import Tensor

from priors.files import atomic_write

__all__ = ["SUFFIXES", "image_files", "read_images", "write_png"]

#: The image files :func:`read_images` reads.
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _read(path: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale
                array, top = np.asarray(image, dtype=np.float64), 65535.0
            else:
                gray = image.mode in ("1", "L", "LA")
                array = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.float64)
                top = 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image {path} is not a readable image file: {error}") from error
    x = torch.from_numpy(array / top * 2 - 1)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def image_files(source: str | Path) -> list[Path]:
    """The image files ``source`` names: the file itself, or a folder's image files sorted
    by name."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise ValueError(f"image folder {path} holds no {'/'.join(SUFFIXES)} file")
        return files
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"image {path} is not one of {', '.join(SUFFIXES)}")
        return [path]
    raise FileNotFoundError(f"image {path} is neither a file nor a folder")


def read_images(source: str | Path) -> Tensor:
    """The images of a file or a folder (see the module), float64 :math:`(N, C, H, W)`."""
    path = Path(source)
    files = image_files(path)
    images = [_read(f) for f in files]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(
            f"the images of {path} differ in size or channels ({sorted(shapes)}): give one "
            "file, or a folder of images of one size"
        )
    return torch.stack(images)


def write_png(path: str | Path, image: Tensor) -> Path:
    """Writes one image :math:`(C, H, W)` in :math:`[-1, 1]` (C = 1 or 3) as an 8-bit PNG."""
    from PIL import Image

    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (1 or 3, H, W), got {tuple(image.shape)}")
    array = ((image.detach().double().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
