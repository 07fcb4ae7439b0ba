"""File-backed data sets: an ImageFolder tree or FACIL's ``train.txt``/``test.txt`` lists.

The layout is checked completely (folders, list lines, that every listed file exists) before any
image is decoded, so a wrong path fails in a second with a message that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cil.data.cache import DecodeCache
from cil.data.dataset import Dataset, LoadRequest
from cil.data.errors import DataError
from cil.data.imageset import FileImageSet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_SIZE = 224  # FACIL's crop for ImageNet
FOLDER_SIZE = 32  # small enough for the CIFAR-sized networks; override with image_size
LAYOUTS = "train/<class>/<image> with test/<class>/... or val/<class>/..., or train.txt and test.txt"

Split = tuple[list[str], list[int]]


def load_imagenet100(request: LoadRequest) -> Dataset:
    """An ImageNet subset as an ImageFolder tree or FACIL's lists, at ``root`` or ``root/imagenet100``.

    Images are decoded on demand, once per node into ``cache`` (shorter side resized to ``image_size``,
    default 224, then centre crop). FACIL trains on RandomResizedCrop(224) of 256-pixel images; we
    pre-resize once and take the random resized crop of the stored image on the device, then flip.
    Its fixed class order (FACIL's ``imagenet_subset``, iCaRL's list) is a row of the catalog.
    """
    root = request.root
    if not _has_layout(root) and _has_layout(root / "imagenet100"):
        root = root / "imagenet100"
    return _load_files("imagenet100", root, request.image_size or IMAGENET_SIZE, lists_allowed=True,
                       cache=DecodeCache(request.cache_dir))


def load_folder(request: LoadRequest) -> Dataset:
    """Any ImageFolder tree with ``train/`` and ``test/`` (or ``val/``); class ids = sorted folder names.

    Default size 32 (CIFAR-sized networks); augmentation as imagenet100 (random resized crop, flip);
    ImageNet's normalisation (a neutral choice for natural RGB photos).
    """
    return _load_files("folder", request.root, request.image_size or FOLDER_SIZE, lists_allowed=False,
                       cache=DecodeCache(request.cache_dir))


def _has_layout(root: Path) -> bool:
    return (root / "train.txt").is_file() or (root / "train").is_dir()


def _load_files(name: str, root: Path, size: int, lists_allowed: bool, cache: DecodeCache | None) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{name}: data folder {str(root)!r} does not exist; expected {LAYOUTS}")
    if lists_allowed and (root / "train.txt").is_file():
        train, test, names = _read_lists(root)
    elif (root / "train").is_dir():
        train, test, names = _read_image_folders(root)
    else:
        expected = LAYOUTS if lists_allowed else LAYOUTS.split(", or")[0]
        raise DataError(f"{name}: {str(root)!r} has no training data; expected {expected}")
    sets = [FileImageSet(paths, torch.tensor(labels, dtype=torch.int64), size, cache)
            for paths, labels in (train, test)]
    return Dataset(name, sets[0], sets[1], num_classes=len(names), channels=3, image_size=size, class_names=names)


def _read_image_folders(root: Path) -> tuple[Split, Split, list[str]]:
    """ImageFolder: class id = index of the class folder name in sorted order of train's folders."""
    train_dir = root / "train"
    test_dir = next((d for d in (root / "test", root / "val") if d.is_dir()), None)
    if test_dir is None:
        raise DataError(f"{str(root)!r} has train/ but neither test/ nor val/ (class folders of test images)")
    names = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not names:
        raise DataError(f"{str(train_dir)!r} has no class folders; expected train/<class>/<image>")
    ids = {n: i for i, n in enumerate(names)}
    train = _scan_classes(train_dir, names, ids, require_all=True)
    test_names = sorted(e.name for e in os.scandir(test_dir) if e.is_dir())
    unknown = [n for n in test_names if n not in ids]
    if unknown:
        raise DataError(f"{str(test_dir)!r} has class folders not in train/: {unknown[:5]}")
    test = _scan_classes(test_dir, test_names, ids, require_all=False)
    if not test[0]:
        raise DataError(f"{str(test_dir)!r} holds no images; expected {test_dir.name}/<class>/<image>")
    return train, test, names


def _scan_classes(folder: Path, names: list[str], ids: dict[str, int], require_all: bool) -> Split:
    paths: list[str] = []
    labels: list[int] = []
    for n in names:
        files = sorted(
            os.path.join(d, f)
            for d, _, fs in os.walk(folder / n, followlinks=True)
            for f in fs
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files and require_all:
            raise DataError(f"class folder {str(folder / n)!r} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        paths += files
        labels += [ids[n]] * len(files)
    return paths, labels


def _read_lists(root: Path) -> tuple[Split, Split, list[str]]:
    """FACIL's lists: one ``relative/or/absolute/path label`` per line; labels must be 0..K-1."""
    if not (root / "test.txt").is_file():
        raise DataError(f"{str(root)!r} has train.txt but no test.txt")
    train = _read_list(root, root / "train.txt")
    test = _read_list(root, root / "test.txt")
    classes = sorted(set(train[1]))
    if classes != list(range(len(classes))):
        raise DataError(f"{str(root / 'train.txt')!r}: labels must be 0..K-1 with every class present, got "
                        f"{len(classes)} distinct labels from {classes[0]} to {classes[-1]}")
    extra = sorted(set(test[1]) - set(classes))
    if extra:
        raise DataError(f"{str(root / 'test.txt')!r}: labels {extra[:5]} do not occur in train.txt")
    return train, test, [str(c) for c in classes]


def _read_list(root: Path, path: Path) -> Split:
    paths: list[str] = []
    labels: list[int] = []
    with open(path, encoding="utf-8") as f:
        for num, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
                raise DataError(f"{str(path)!r} line {num}: {line!r} is not 'path label' "
                                f"(label a non-negative integer)")
            file = os.path.join(root, parts[0])  # an absolute path stays as it is
            if not os.path.isfile(file):
                raise DataError(f"{str(path)!r} line {num}: image {file!r} does not exist")
            paths.append(file)
            labels.append(int(parts[1]))
    if not paths:
        raise DataError(f"{str(path)!r} lists no images")
    return paths, labels
