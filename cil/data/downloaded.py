"""Data sets torchvision downloads on first use: CIFAR-100, MNIST, SVHN (all held in memory as uint8).

Where torchvision's integrity check (md5) would reject a folder that is otherwise well formed (e.g.
the CIFAR-shaped fake that ``benchmarks/fake_cifar100.py`` writes), the files are read directly; torchvision
is called only to fetch what is missing.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cil.data.dataset import Dataset, LoadRequest
from cil.data.errors import DataError
from cil.data.imageset import TensorImageSet, resize_images


def _fetch(what: str, root: Path, download: bool, expected: str, fetch: Callable[[], object]) -> None:
    """Run torchvision's downloader, or explain which files are missing when we may not download."""
    if not download:
        raise DataError(f"{what} not found under {str(root)!r}: expected {expected} "
                        f"(pass download=True to fetch it)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Trials sharing a node may all reach here on first use: one downloads, the others wait for the
        # lock and then find the files (torchvision checks them and skips the download).
        with open(root / ".cil-download.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                fetch()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise DataError(f"could not download {what} into {str(root)!r} ({e}); "
                        f"place {expected} there by hand") from e


def _sets(x_train, y_train, x_test, y_test, image_size: int | None
          ) -> tuple[TensorImageSet, TensorImageSet, int]:
    if image_size is not None:
        x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
    return TensorImageSet(x_train, y_train), TensorImageSet(x_test, y_test), int(x_train.shape[-1])


def load_cifar100(request: LoadRequest) -> Dataset:
    """CIFAR-100 from ``root/cifar-100-python/{train,test}`` (torchvision's layout), read with pickle.

    FACIL's augmentation (see :func:`~cil.data.dataset.training_augment`): pad 4, random resized crop
    back to 32x32, horizontal flip.
    """
    root, download, image_size = request.root, request.download, request.image_size
    folder = root / "cifar-100-python"
    files = [folder / "train", folder / "test"]
    if not all(f.is_file() for f in files):
        from torchvision.datasets import CIFAR100

        _fetch("CIFAR-100", root, download, "cifar-100-python/{train,test,meta}",
               lambda: CIFAR100(str(root), train=True, download=True))
    (x_tr, y_tr), (x_te, y_te) = (_read_cifar_pickle(f) for f in files)
    names = _read_cifar_names(folder / "meta")
    train, test, size = _sets(x_tr, y_tr, x_te, y_te, image_size)
    return Dataset("cifar100", train, test, num_classes=100, channels=3, image_size=size, class_names=names)


def _read_cifar_pickle(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"{str(path)!r} is not a CIFAR-100 pickle with 'data' and 'fine_labels': {e}") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.size:
        raise DataError(f"{str(path)!r}: expected data [N, 3072] and N fine_labels, "
                        f"got {data.shape} and {labels.size}")
    if labels.size and (labels.min() < 0 or labels.max() > 99):
        raise DataError(f"{str(path)!r}: fine_labels must lie in 0..99")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _read_cifar_names(path: Path) -> list[str] | None:
    try:
        with open(path, "rb") as f:
            return list(pickle.load(f, encoding="latin1")["fine_label_names"])
    except Exception:  # names are cosmetic; a missing meta file must not stop training
        return None


def load_mnist(request: LoadRequest) -> Dataset:
    """MNIST through torchvision (``root/MNIST/raw/*-ubyte``). FACIL: no augmentation."""
    root, download, image_size = request.root, request.download, request.image_size
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    if not all((raw / n).is_file() for n in names):
        _fetch("MNIST", root, download, "MNIST/raw/{" + ",".join(names) + "}",
               lambda: MNIST(str(root), train=True, download=True))
    try:
        tr, te = MNIST(str(root), train=True), MNIST(str(root), train=False)
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"cannot read MNIST under {str(raw)!r}: {e}") from e
    train, test, size = _sets(tr.data.unsqueeze(1), tr.targets, te.data.unsqueeze(1), te.targets, image_size)
    return Dataset("mnist", train, test, num_classes=10, channels=1, image_size=size,
                   class_names=[str(i) for i in range(10)])


def load_svhn(request: LoadRequest) -> Dataset:
    """SVHN from ``root/{train,test}_32x32.mat`` (torchvision's layout); label 10 means digit 0.

    The .mat files are read with scipy directly once present (torchvision's md5 check would reject
    anything but the official files). FACIL: no crop, no flip. Its own statistics (see cil.catalog).
    """
    root, download, image_size = request.root, request.download, request.image_size
    splits = []
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            from torchvision.datasets import SVHN

            _fetch("SVHN", root, download, "train_32x32.mat and test_32x32.mat",
                   lambda split=split: SVHN(str(root), split=split, download=True))
        splits.append(_read_svhn_mat(path))
    (x_tr, y_tr), (x_te, y_te) = splits
    train, test, size = _sets(x_tr, y_tr, x_te, y_te, image_size)
    return Dataset("svhn", train, test, num_classes=10, channels=3, image_size=size,
                   class_names=[str(i) for i in range(10)])


def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(os.fspath(path))
        x = np.asarray(mat["X"], dtype=np.uint8)
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{str(path)!r} is not an SVHN .mat file with X [32, 32, 3, N] "
                        f"and y [N, 1]: {e}") from e
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.size:
        raise DataError(f"{str(path)!r}: expected X [32, 32, 3, N] and y [N, 1], got {x.shape}, {y.shape}")
    y[y == 10] = 0
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{str(path)!r}: labels must lie in 1..10 (10 = digit 0)")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)
