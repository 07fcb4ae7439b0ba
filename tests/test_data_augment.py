"""On-device batch augmentation of cil.data: shifted crops, FACIL's resized crops, flips, determinism, normalisation."""

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from cil.data import AugmentSpec, augment, normalize
from cil.data.augment import random_boxes
from cil.data.dataset import training_augment


def _batch(n=16, c=3, s=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)


def test_shape_dtype_and_determinism():
    x = _batch()
    spec = AugmentSpec(pad=4, flip=True)
    a = augment(x, spec, torch.Generator().manual_seed(7))
    b = augment(x, spec, torch.Generator().manual_seed(7))
    c = augment(x, spec, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment(x, AugmentSpec(), torch.Generator()) is x


def test_crops_are_shifted_copies_of_the_zero_padded_image():
    x = _batch(n=32)
    p, s = 3, x.shape[-1]
    out = augment(x, AugmentSpec(pad=p), torch.Generator().manual_seed(0))
    padded = F.pad(x, (p, p, p, p))
    seen = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, dy:dy + s, dx:dx + s])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 5  # offsets differ between samples


def test_flip_mirrors_about_half():
    x = _batch(n=400, s=6)
    out = augment(x, AugmentSpec(flip=True), torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 140 < int(mirrored.sum()) < 260


def test_normalize_values_and_fill_for_normalised_batches():
    x = _batch()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    y = normalize(x, mean, std)
    assert y.dtype == torch.float32
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(y, ref, atol=1e-6)
    spec = AugmentSpec(pad=2, flip=True)
    fill = [-m / s for m, s in zip(mean, std, strict=True)]
    a = normalize(augment(x, spec, torch.Generator().manual_seed(3)), mean, std)
    b = augment(normalize(x, mean, std), spec, torch.Generator().manual_seed(3), fill=fill)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_its_own_generator():
    x = _batch(n=64, s=32).cuda()
    spec = AugmentSpec(pad=4, flip=True)
    a = augment(x, spec, torch.Generator(device="cuda").manual_seed(0))
    b = augment(x, spec, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)
    resized = AugmentSpec(pad=4, crop="resized", flip=True)
    c = augment(x, resized, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(c, augment(x, resized, torch.Generator(device="cuda").manual_seed(0)))
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(4):
        assert any(torch.equal(a[i], padded[i, :, dy:dy + 32, dx:dx + 32].flip(-1) if f else
                               padded[i, :, dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9) for f in (0, 1))


# ---------------------------------------------------------------- FACIL's RandomResizedCrop

FACIL_SCALE, FACIL_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _within_facils_bounds(boxes, side):
    """Each integer box must come from a real box inside FACIL's bounds, up to rounding w and h (±0.5)."""
    h, w = boxes[:, 2].double(), boxes[:, 3].double()
    area = side * side
    return (((w + 0.5) * (h + 0.5) >= FACIL_SCALE[0] * area) & ((w - 0.5) * (h - 0.5) <= FACIL_SCALE[1] * area)
            & ((w + 0.5) / (h - 0.5) >= FACIL_RATIO[0]) & ((w - 0.5) / (h + 0.5) <= FACIL_RATIO[1]))


def test_boxes_follow_facils_scale_and_aspect_bounds_and_distribution():
    side, n = 40, 20000  # CIFAR's 32x32 after Pad(4)
    boxes = random_boxes(n, side, side, FACIL_SCALE, FACIL_RATIO, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= side).all() and (left + w <= side).all())
    assert bool(_within_facils_bounds(boxes, side).all())
    # the same distribution as torchvision's sampler (what FACIL runs), compared by quantiles
    torch.manual_seed(0)
    img = torch.zeros(3, side, side)
    ref = torch.tensor([T.RandomResizedCrop.get_params(img, list(FACIL_SCALE), list(FACIL_RATIO))
                        for _ in range(n)])
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    for stat in (lambda b: b[:, 2] * b[:, 3] / side**2, lambda b: b[:, 3] / b[:, 2], lambda b: b[:, 0] + b[:, 2] / 2):
        ours, theirs = stat(boxes.double()), stat(ref.double())
        assert torch.allclose(ours.quantile(q), theirs.quantile(q), rtol=0.05, atol=0.5 / side), (ours, theirs)
    # zoomed crops, not translations: a broad spread of areas
    area = (h * w).double() / side**2
    assert float(area.min()) < 0.1 and float(area.max()) > 0.95 and 0.45 < float(area.median()) < 0.6


def test_fallback_box_when_no_attempt_fits():
    # an aspect range no box of a square image can meet with area <= 1: torchvision's centred fallback
    boxes = random_boxes(5, 10, 10, (0.9, 1.0), (3.0, 4.0), torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[3, 0, 3, 10]] * 5


def test_resized_crop_resamples_each_box_as_torchvision_does():
    x = _batch(n=6, s=32)
    spec = AugmentSpec(pad=4, crop="resized")
    out = augment(x, spec, torch.Generator().manual_seed(5))
    boxes = random_boxes(6, 40, 40, spec.scale, spec.ratio, torch.Generator().manual_seed(5))
    padded = F.pad(x, (4, 4, 4, 4))
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(padded[i].float(), top, left, h, w, [32, 32],
                              interpolation=T.InterpolationMode.BILINEAR, antialias=False)
        assert (out[i].float() - ref.round()).abs().max() <= 1, (i, h, w)


def test_resized_crop_is_deterministic_flips_and_keeps_identity_boxes():
    x = _batch(n=64, s=16)
    spec = AugmentSpec(pad=2, crop="resized", flip=True)
    a = augment(x, spec, torch.Generator().manual_seed(3))
    assert torch.equal(a, augment(x, spec, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment(x, spec, torch.Generator().manual_seed(4)))
    whole = AugmentSpec(crop="resized", flip=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = augment(x, whole, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54


def test_augment_modes_per_dataset():
    assert training_augment("cifar100", "facil", 32) == AugmentSpec(pad=4, crop="resized", flip=True)
    assert training_augment("cifar100", "crop", 32) == AugmentSpec(pad=4, crop="shift", flip=True)
    assert training_augment("imagenet100", "facil", 224) == AugmentSpec(crop="resized", flip=True)
    assert training_augment("imagenet100", "crop", 224) == AugmentSpec(pad=28, crop="shift", flip=True)
    for name in ("mnist", "svhn", "digits"):
        assert not training_augment(name, "facil", 32).active and not training_augment(name, "crop", 32).active
    assert not training_augment("cifar100", "none", 32).active
    with pytest.raises(ValueError, match="'zoom' is not valid: choose one of facil, crop, none"):
        training_augment("cifar100", "zoom", 32)
    with pytest.raises(ValueError, match="crop = 'zoom'"):
        AugmentSpec(crop="zoom")
