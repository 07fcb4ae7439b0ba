"""Write an ImageNet-shaped JPEG tree (ImageFolder layout), for timing and tests without the real set.

``DIR/train/<class>/<i>.JPEG`` and ``DIR/val/<class>/<i>.JPEG``, class folders named like ImageNet's
WordNet ids (``n00000000``, ``n00000001`` ...), every image ``width`` x ``height`` (ImageNet's typical
500x375 by default), JPEG quality 90. Each class has its own coarse 4x3 colour pattern blown up to the
image size, plus seeded pixel noise: learnable, and as costly to decode as a photo of that size.
``imagenet100`` and ``folder`` read it as it is.

Usage: ``python -m benchmarks.fake_imagenet DIR [--classes 100] [--train 40] [--test 10] [--width 500]
[--height 375] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def write_fake_imagenet(root: str | os.PathLike, classes: int = 100, train: int = 40, test: int = 10,
                        width: int = 500, height: int = 375, seed: int = 0, threads: int = 4) -> Path:
    """Write the tree under ``root`` and return it; the same arguments write the same bytes."""
    for name, n in (("classes", classes), ("train", train), ("test", test), ("width", width), ("height", height)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} = {n!r} is not valid: a positive integer")
    root = Path(root)
    rng = np.random.default_rng(seed)
    patterns = rng.integers(30, 226, size=(classes, 3, 4, 3), dtype=np.uint8)  # [class, rows, cols, rgb]
    jobs = [(split, c, i, int(rng.integers(2**31)))
            for split, n in (("train", train), ("val", test)) for c in range(classes) for i in range(n)]

    def write(job: tuple[str, int, int, int]) -> None:
        split, c, i, image_seed = job
        folder = root / split / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = Image.fromarray(patterns[c]).resize((width, height), Image.BILINEAR)
        noise = np.random.default_rng(image_seed).normal(0.0, 24.0, size=(height, width, 3))
        pixels = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(write, jobs))
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--train", type=int, default=40, help="training images per class")
    p.add_argument("--test", type=int, default=10, help="test (val/) images per class")
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = write_fake_imagenet(a.root, a.classes, a.train, a.test, a.width, a.height, a.seed)
    print(f"wrote {a.classes * (a.train + a.test)} JPEGs under {out}")


if __name__ == "__main__":
    main()
