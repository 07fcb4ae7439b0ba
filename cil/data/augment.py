"""Batch augmentation and normalisation as tensor operations, on whatever device the batch lives on.

FACIL pads the PIL image with black (0) before ``ToTensor``/``Normalize``; the equivalent here is to
augment the uint8 (un-normalised) batch, whose padding value 0 is that same black, and normalise
afterwards: ``normalize(augment(x_uint8, spec, gen), mean, std)``. For an already normalised batch
pass ``fill = -mean/std`` per channel to get the same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cil.data.dataset import AugmentSpec


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32 on x's device (x: uint8 ``[N, C, H, W]``)."""
    # as_tensor: statistics already on x's device (as the trainer keeps them) are used without a copy,
    # so normalising a batch costs no host-to-device transfer.
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.to(torch.float32).mul_(1.0 / 255.0).sub_(m).div_(s)


def augment(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator,
            fill: float | Sequence[float] = 0) -> torch.Tensor:
    """Random pad-and-crop and horizontal flip of every image of ``x`` ``[N, C, H, W]``, in one gather.

    With ``spec.pad = p``: each image is padded by p on every side with ``fill`` and a window of the
    original size is cut at a random offset in 0..2p (rows and columns drawn independently). With
    ``spec.flip``: each image is mirrored left-right with probability 0.5. Random numbers come from
    ``generator``, which must live on x's device (torch draws on the generator's device); the draws
    are, in order: row offsets, column offsets, flips, so the output is a function of the generator
    state. The result is a new contiguous tensor of x's dtype; x itself when the spec does nothing.
    """
    if not spec.active or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    p = int(spec.pad)
    rows = torch.arange(h, device=dev).expand(n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    src = x
    if p > 0:
        src = _pad(x, p, fill)
        rows = rows + torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
        cols = cols + torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=generator)
    if spec.flip:
        flip = torch.rand((n, 1), device=dev, generator=generator) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
    # one gather over the flattened (padded) image: output pixel (i, j) of sample k reads
    # source pixel (rows[k, i], cols[k, j]); the same positions for every channel
    flat = (rows[:, :, None] * src.shape[-1] + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return src.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)


def _pad(x: torch.Tensor, p: int, fill: float | Sequence[float]) -> torch.Tensor:
    if isinstance(fill, int | float):
        return F.pad(x, (p, p, p, p), value=fill)
    n, c, h, w = x.shape
    value = torch.tensor(list(fill), dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    out = value.repeat(n, 1, h + 2 * p, w + 2 * p)
    out[:, :, p:p + h, p:p + w] = x
    return out
