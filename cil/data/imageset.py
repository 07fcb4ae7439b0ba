"""Image sets: the images and labels of one split, held in memory or decoded from files on demand.

Both kinds answer the same three questions (``len``, ``labels``, ``take``), so the scenario and the
training loop never need to know whether a split is a tensor or a folder of JPEGs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from cil.data.errors import DataError


class ImageSet:
    """Images with integer labels; ``take`` returns uint8 ``[n, C, H, W]`` images for given indices."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TensorImageSet(ImageSet):
    """An image set held as one uint8 tensor ``[N, C, H, W]`` (small data sets: digits, CIFAR, MNIST...)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be a uint8 tensor [N, C, H, W], "
                            f"got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or labels.numel() != images.shape[0]:
            raise DataError(f"labels must be [N] with N = {images.shape[0]}, got {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]


class FileImageSet(ImageSet):
    """Image files decoded only when asked for: a full ImageNet split does not fit in memory as uint8.

    Each file is read as RGB, its shorter side resized to ``image_size`` and the centre square cut out,
    so every image comes back as ``[3, image_size, image_size]``. Decoding runs in a thread pool
    (PIL releases the GIL while decoding and resizing).
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, image_size: int,
                 workers: int | None = None) -> None:
        if len(paths) != labels.numel():
            raise DataError(f"{len(paths)} paths but {labels.numel()} labels")
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.image_size = int(image_size)
        self.workers = workers or min(8, os.cpu_count() or 1)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        s = self.image_size
        out = torch.empty((len(idx), 3, s, s), dtype=torch.uint8)

        def fill(k: int) -> None:
            out[k] = torch.from_numpy(decode_image(self.paths[idx[k]], s)).permute(2, 0, 1)

        if len(idx) <= 1 or self.workers <= 1:
            for k in range(len(idx)):
                fill(k)
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(fill, range(len(idx))))
        return out


def decode_image(path: str, size: int) -> np.ndarray:
    """Read ``path`` as RGB, shorter side resized to ``size``, centre-cropped: uint8 ``[size, size, 3]``."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 2^k, still >= size
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path!r}: {e}") from e


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` images to ``size`` x ``size`` (bilinear, antialiased), in chunks.

    Used when a caller overrides the native size of an in-memory data set (e.g. digits at 32x32).
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
