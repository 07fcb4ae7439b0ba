"""Data sets that need no download: scikit-learn's digits and a seeded synthetic set."""

from __future__ import annotations

import numpy as np
import torch

from cil.data.dataset import Dataset, LoadRequest, channel_stats
from cil.data.imageset import TensorImageSet, resize_images

DIGITS_TEST_EVERY = 5  # within each class, every 5th image (in file order) is a test image: ~20% test


def load_digits(request: LoadRequest) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits; pixel values 0..16 scaled to 0..255.

    The set has no official test split, so a fixed one is made without randomness: every 5th
    image of each class goes to test (~20%). Mean/std are computed from the train images. No
    augmentation: 8x8 images leave no room for crops, and flips change digits.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    rank = torch.zeros_like(y)  # position of each image within its class
    for c in range(10):
        idx = (y == c).nonzero().squeeze(1)
        rank[idx] = torch.arange(idx.numel())
    is_test = rank % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    if request.image_size is not None:
        x = resize_images(x, request.image_size)
    train = TensorImageSet(x[~is_test], y[~is_test])
    test = TensorImageSet(x[is_test], y[is_test])
    mean, std = channel_stats(train.images)
    size = int(x.shape[-1])
    return Dataset("digits", train, test, num_classes=10, channels=1, image_size=size, mean=mean, std=std,
                   class_names=[str(i) for i in range(10)])


def load_synthetic(request: LoadRequest) -> Dataset:
    """Random images around class-dependent mean patterns, generated in memory from a seed.

    Defaults: 10 classes of 3x32x32, 100 train and 20 test images per class (``synthetic:classes=20,
    train=50`` changes them; ``image_size`` overrides ``size``). Each class has a random 4x4 mean
    pattern per channel (values 40..215, upsampled), plus Gaussian noise (std 40): learnable, yet not
    trivial. Mean/std are computed from the train images; augmentation: pad size//8 (4 at 32x32),
    random translation-only crop, flip (the translation-only variant of CIFAR's).
    """
    p = dict(request.params)  # parsed by the catalog (cil.catalog.parse_synthetic)
    if request.image_size is not None:
        p["size"] = request.image_size
    k, c, s = p["classes"], p["channels"], p["size"]
    rng = np.random.default_rng(p["seed"])
    patterns = torch.from_numpy(rng.integers(40, 216, size=(k, c, 4, 4)).astype(np.float32))
    patterns = torch.nn.functional.interpolate(patterns, size=(s, s), mode="nearest")

    def split(per_class: int) -> TensorImageSet:
        y = np.repeat(np.arange(k), per_class)
        rng.shuffle(y)
        noise = torch.from_numpy(rng.normal(0.0, 40.0, size=(y.size, c, s, s)).astype(np.float32))
        yt = torch.from_numpy(y.astype(np.int64))
        x = (patterns[yt] + noise).round_().clamp_(0, 255).to(torch.uint8)
        return TensorImageSet(x, yt)

    train, test = split(p["train"]), split(p["test"])
    mean, std = channel_stats(train.images)
    return Dataset("synthetic", train, test, num_classes=k, channels=c, image_size=s, mean=mean, std=std)
