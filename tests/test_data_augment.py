"""On-device batch augmentation of cil.data: true shifted crops, flips, determinism, normalisation."""

import pytest
import torch
import torch.nn.functional as F

from cil.data import AugmentSpec, augment, normalize


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_its_own_generator():
    x = _batch(n=64, s=32).cuda()
    spec = AugmentSpec(pad=4, flip=True)
    a = augment(x, spec, torch.Generator(device="cuda").manual_seed(0))
    b = augment(x, spec, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(4):
        assert any(torch.equal(a[i], padded[i, :, dy:dy + 32, dx:dx + 32].flip(-1) if f else
                               padded[i, :, dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9) for f in (0, 1))
