"""Image sets: the images and labels of one split, held in memory or decoded from files on demand.

Both kinds answer the same questions (``len``, ``labels``, ``take``, ``prepare``), so the scenario and
the training loop never need to know whether a split is a tensor or a folder of JPEGs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from cil.data.cache import DecodeCache, chunk_key
from cil.data.errors import DataError


class ImageSet:
    """Images with integer labels; ``take`` returns uint8 ``[n, C, H, W]`` images for given indices."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, indices: torch.Tensor) -> None:
        """Get ready to ``take`` these indices soon (file-backed sets decode them); nothing by default."""


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
    """Image files, decoded once per node into the decoded-image cache (:mod:`cil.data.cache`).

    Each file is read as RGB, its shorter side resized to ``image_size`` and the centre square cut out,
    so every image comes back as ``[3, image_size, image_size]``. The images of one class form one
    cached chunk: ``take`` decodes the chunks it needs that are not cached yet (in threads: PIL releases
    the GIL) and then copies the rows out of the memory-mapped chunks; ``prepare`` only decodes, which
    is what a background prefetch of the next task calls.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, image_size: int,
                 cache: DecodeCache | None = None) -> None:
        if len(paths) != labels.numel():
            raise DataError(f"{len(paths)} paths but {labels.numel()} labels")
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.image_size = int(image_size)
        self.cache = cache or DecodeCache()
        # chunk = class: the position of each image in its class's chunk (file order within the class)
        lab = self.labels.numpy()
        order = np.argsort(lab, kind="stable")
        classes, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
        row = np.empty(len(lab), dtype=np.int64)
        row[order] = np.arange(len(lab)) - np.repeat(starts, counts)
        self._row = torch.from_numpy(row)
        self._members = {int(c): order[b:b + n].tolist() for c, b, n in zip(classes, starts, counts, strict=True)}
        self._keys: dict[int, str] = {}
        self._arrays: dict[int, np.ndarray] = {}
        self._guard = threading.Lock()  # take (training thread) and prepare (prefetch thread) share these

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        s = self.image_size
        out = torch.empty((idx.numel(), 3, s, s), dtype=torch.uint8)
        if idx.numel() == 0:
            return out
        chunk, row = self.labels[idx].numpy(), self._row[idx].numpy()
        arrays = self._chunks(np.unique(chunk).tolist())
        dest = out.numpy()  # numpy's row gather is several times faster than a torch index_put here
        for c, arr in arrays.items():
            pos = np.flatnonzero(chunk == c)
            dest[pos] = arr[row[pos]]
        return out

    def prepare(self, indices: torch.Tensor) -> None:
        """Make sure the chunks holding ``indices`` are decoded (in the cache), reading nothing."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        if idx.numel():
            self._chunks(self.labels[idx].unique().tolist())

    def _chunks(self, classes: list[int]) -> dict[int, np.ndarray]:
        with self._guard:
            missing = [c for c in classes if c not in self._arrays]
            for c in missing:
                if c not in self._keys:
                    self._keys[c] = chunk_key([self.paths[i] for i in self._members[c]], self.image_size)
        if missing:
            wanted = {self._keys[c]: ([self.paths[i] for i in self._members[c]], self.image_size) for c in missing}
            arrays = self.cache.chunks(wanted)
            with self._guard:
                for c in missing:
                    self._arrays[c] = arrays[self._keys[c]]
        with self._guard:
            return {c: self._arrays[c] for c in classes}


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
