"""Batch augmentation and normalisation as tensor operations, on whatever device the batch lives on.

Two crops: a translation-only window of the padded image (one gather), and FACIL's
``RandomResizedCrop`` (per-sample boxes drawn as torchvision draws them, all resampled by one
``grid_sample``). Neither loops over samples in Python.

FACIL pads the PIL image with black (0) before ``ToTensor``/``Normalize``; the equivalent here is to
augment the uint8 (un-normalised) batch, whose padding value 0 is that same black, and normalise
afterwards: ``normalize(augment(x_uint8, spec, gen), mean, std)``. For an already normalised batch
pass ``fill = -mean/std`` per channel to get the same result.
"""

from __future__ import annotations

import math
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
    """Random crop and horizontal flip of every image of ``x`` ``[N, C, H, W]``, as ``spec`` says.

    The image is first padded by ``spec.pad`` on every side with ``fill``. ``spec.crop == "shift"``:
    a window of the original size is cut at a random offset in 0..2*pad (rows and columns drawn
    independently). ``"resized"``: see :func:`resized_crop`. With ``spec.flip`` each image is mirrored
    left-right with probability 0.5. Random numbers come from ``generator``, which must live on x's
    device (torch draws on the generator's device), so the output is a function of the generator state.
    The result is a new tensor of x's dtype (uint8 results are rounded, as PIL's are); x itself when the
    spec does nothing.
    """
    if not spec.active or x.shape[0] == 0:
        return x
    if spec.crop == "resized":
        return resized_crop(x, spec, generator, fill)
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


_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its fallback


def random_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` boxes ``[top, left, h, w]`` (int64 ``[n, 4]``) drawn as torchvision's
    ``RandomResizedCrop.get_params`` draws one, for all samples at once.

    Per sample, up to 10 attempts: area = ``height * width * U(scale)``, aspect = ``exp(U(log ratio))``,
    ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))``; the first attempt that fits
    the image wins, with a uniform integer offset. When none fits, the centred box of the whole image
    with its aspect clamped to ``ratio``. Draw order: areas, aspects, then offsets (rows, columns).
    """
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    u_area = torch.rand((n, _ATTEMPTS), device=device, generator=generator)
    u_aspect = torch.rand((n, _ATTEMPTS), device=device, generator=generator)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = torch.exp(lo + (hi - lo) * u_aspect)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # index of the first box that fits
    found = fits.any(dim=1)
    fw, fh = _fallback_size(height, width, ratio)
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
    u_off = torch.rand((n, 2), device=device, generator=generator)
    top = torch.where(found, torch.floor(u_off[:, 0] * (height - h + 1)), float((height - fh) // 2))
    left = torch.where(found, torch.floor(u_off[:, 1] * (width - w + 1)), float((width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1).to(torch.int64)


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the whole image, cut to the nearest aspect inside ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return width, int(round(width / ratio[0]))
    if in_ratio > ratio[1]:
        return int(round(height * ratio[1])), height
    return width, height


def resized_crop(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator,
                 fill: float | Sequence[float] = 0) -> torch.Tensor:
    """FACIL's ``Pad(spec.pad)`` + ``RandomResizedCrop(original size)`` (+ flip) on a whole batch.

    Boxes come from :func:`random_boxes` over the padded image; each is resampled bilinearly to the
    original size (pixel centres aligned and edges clamped to the box, as PIL's crop-then-resize does)
    by one ``grid_sample`` over a per-sample grid, the flip folded into the same grid (its draw comes
    after the boxes'). Unlike PIL, a box larger than the output is not low-pass filtered first (at
    most 40 -> 32 pixels for CIFAR).
    """
    n, c, h, w = x.shape
    dev = x.device
    src = _pad(x, int(spec.pad), fill)
    sh, sw = src.shape[-2:]
    box = random_boxes(n, sh, sw, spec.scale, spec.ratio, generator, dev).to(torch.float32)
    top, left, bh, bw = (v[:, None] for v in box.unbind(1))
    # Source position (pixel centres) of each output row/column: the box stretched over the output,
    # clamped to the box's own edge pixels as PIL's crop-then-resize does.
    ys = (top + (torch.arange(h, device=dev) + 0.5) * (bh / h) - 0.5).clamp_(min=top).minimum(top + bh - 1)
    xs = (left + (torch.arange(w, device=dev) + 0.5) * (bw / w) - 0.5).clamp_(min=left).minimum(left + bw - 1)
    if spec.flip:
        flip = torch.rand((n, 1), device=dev, generator=generator) < 0.5
        xs = torch.where(flip, xs.flip(1), xs)
    grid = torch.stack([(2 * xs / (sw - 1) - 1)[:, None, :].expand(n, h, w),
                        (2 * ys / (sh - 1) - 1)[:, :, None].expand(n, h, w)], dim=-1)
    out = F.grid_sample(src.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=True)
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)


def _pad(x: torch.Tensor, p: int, fill: float | Sequence[float]) -> torch.Tensor:
    if p == 0:
        return x
    if isinstance(fill, int | float):
        return F.pad(x, (p, p, p, p), value=fill)
    n, c, h, w = x.shape
    value = torch.tensor(list(fill), dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    out = value.repeat(n, 1, h + 2 * p, w + 2 * p)
    out[:, :, p:p + h, p:p + w] = x
    return out
