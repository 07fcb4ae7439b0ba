"""Write a CIFAR-100-shaped data set in torchvision's on-disk layout, for timing and tests without a download.

``DIR/cifar-100-python/{train,test,meta}`` are pickles laid out as torchvision's CIFAR100 reads them
(``data``: uint8 ``[N, 3072]`` in CHW order, ``fine_labels``, ``coarse_labels``, ``filenames``; ``meta``:
``fine_label_names``, ``coarse_label_names``). Each class has its own coarse 4x4 colour pattern, blown
up to 32x32, plus pixel noise: learnable, so a timed epoch does real work, but not real images. The
files are not torchvision's, so its md5 check rejects them (``cil.data`` reads them directly).

Usage: ``python -m benchmarks.fake_cifar100 DIR [--train 50000] [--test 10000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import numpy as np

NUM_CLASSES = 100
NUM_SUPERCLASSES = 20
SIDE = 32


def _images(labels: np.ndarray, patterns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[N, 3072]``: the class pattern of each label plus Gaussian noise (std 32), clipped."""
    base = patterns[labels].astype(np.float32)                      # [N, 3, 32, 32]
    noisy = base + rng.normal(0.0, 32.0, size=base.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8).reshape(len(labels), -1)


def _dump(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def write_fake_cifar100(root: str | os.PathLike, n_train: int = 50_000, n_test: int = 10_000,
                        seed: int = 0) -> Path:
    """Write the set under ``root/cifar-100-python`` and return that folder.

    ``n_train`` and ``n_test`` must be multiples of 100: every class gets the same number of images,
    in a seeded random order.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n <= 0 or n % NUM_CLASSES:
            raise ValueError(f"{name} = {n!r} is not valid: a positive multiple of {NUM_CLASSES}")
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, size=(NUM_CLASSES, 3, 4, 4))
    patterns = coarse.repeat(SIDE // 4, axis=2).repeat(SIDE // 4, axis=3)   # [100, 3, 32, 32]
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.tile(np.arange(NUM_CLASSES), n // NUM_CLASSES))
        _dump(folder / split, {
            "batch_label": f"fake {split}",
            "filenames": [f"{split}_{i:05d}.png" for i in range(n)],
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels % NUM_SUPERCLASSES).tolist(),
            "data": _images(labels, patterns, rng),
        })
    _dump(folder / "meta", {"fine_label_names": [f"class_{i:02d}" for i in range(NUM_CLASSES)],
                            "coarse_label_names": [f"super_{i:02d}" for i in range(NUM_SUPERCLASSES)]})
    return folder


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fake_cifar100", description=__doc__.split("\n")[0])
    p.add_argument("root", help="data root; the set goes to ROOT/cifar-100-python")
    p.add_argument("--train", type=int, default=50_000, help="training images (multiple of 100)")
    p.add_argument("--test", type=int, default=10_000, help="test images (multiple of 100)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_fake_cifar100(a.root, a.train, a.test, a.seed))


if __name__ == "__main__":
    main()
